//! Company defaults every meter inherits unless it overrides them (alarm levels, overdraft,
//! restore level, quiet hours, holiday rules) and the company's holiday calendar with make-up
//! workdays. Admins and operators with the `settings` right change them; every change is audited.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::{AmountFen, EnergyWh};
use crate::tariff::Calendar;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;

/// Money limits: 1,000,000 yuan is far beyond any shop's alarm level.
const LEVEL_FEN_MAX: i64 = 100_000_000;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompanySettings {
    /// First low-balance warning at or below this available balance.
    pub alarm1_fen: AmountFen,
    /// Second warning; alarm 1 ≥ alarm 2 ≥ 0.
    pub alarm2_fen: AmountFen,
    /// Trip when the available balance is at or below −overdraft limit.
    pub overdraft_limit_fen: AmountFen,
    /// Close again when the available balance is at or above this; > −overdraft limit.
    pub restore_level_fen: AmountFen,
    /// Quiet hours (no automatic trips), local minutes of the day; both or neither.
    pub quiet_start_minute: Option<i32>,
    pub quiet_end_minute: Option<i32>,
    /// No automatic trips on holidays and weekends.
    pub no_trip_on_holidays: bool,
    /// Most arrears a postponed trip may let a shop run up.
    pub arrears_cap_fen: AmountFen,
    /// A meter without a new reading for longer is stale (alarm), seconds.
    #[serde(default = "default_alarm_after_s")]
    pub stale_meter_s: i32,
    /// A gateway with every bus offline for longer is offline (alarm), seconds.
    #[serde(default = "default_alarm_after_s")]
    pub offline_gateway_s: i32,
    /// Counter movements older than this many days are not reversed (1–366).
    #[serde(default = "default_reversal_window_days")]
    pub reversal_window_days: i32,
    /// A reversal above this amount waits for another approver.
    #[serde(default = "default_reversal_approval_above_fen")]
    pub reversal_approval_above_fen: AmountFen,
    /// A held reading released or corrected with more energy than this waits for another
    /// approver.
    #[serde(default = "default_correction_approval_above_wh")]
    pub correction_approval_above_wh: EnergyWh,
    /// Seconds between the trip notice and the trip (0–86,400; DESIGN.md: `trip_notice_s`).
    #[serde(default = "default_trip_notice_s")]
    pub trip_notice_s: i32,
    /// Emergency credit a shop tenant may grant themselves on their phone, at most once a month
    /// (0: only the property office grants it; at most ¥10,000).
    #[serde(default)]
    pub tenant_emergency_fen: AmountFen,
    /// How long the tenant's own emergency credit lasts, hours (1–72).
    #[serde(default = "default_tenant_emergency_hours")]
    pub tenant_emergency_hours: i32,
    /// The amounts the tenant's top-up page offers (1–8 of them, ¥1 to ¥50,000 each).
    #[serde(default = "default_top_up_presets_fen")]
    pub top_up_presets_fen: Vec<AmountFen>,
}

fn default_tenant_emergency_hours() -> i32 {
    24
}

/// ¥50, ¥100, ¥200, ¥500.
pub fn default_top_up_presets_fen() -> Vec<AmountFen> {
    [5_000, 10_000, 20_000, 50_000]
        .into_iter()
        .map(AmountFen::from_fen)
        .collect()
}

fn default_trip_notice_s() -> i32 {
    600
}

fn default_alarm_after_s() -> i32 {
    300
}

fn default_reversal_window_days() -> i32 {
    30
}

fn default_reversal_approval_above_fen() -> AmountFen {
    AmountFen::from_fen(50_000)
}

fn default_correction_approval_above_wh() -> EnergyWh {
    EnergyWh::from_wh(100_000)
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CalendarDay {
    pub day: NaiveDate,
    /// `holiday` or `workday` (a make-up workday on a weekend).
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[tracing::instrument(skip_all)]
pub async fn get(conn: &mut PgConnection, principal: &Principal) -> CoreResult<CompanySettings> {
    principal.require_read_company()?;
    load(conn).await
}

/// The settings without a permission check (for workers and other services).
#[tracing::instrument(skip_all)]
pub async fn load(conn: &mut PgConnection) -> CoreResult<CompanySettings> {
    let r = sqlx::query(
        "select alarm1_fen, alarm2_fen, overdraft_limit_fen, restore_level_fen, quiet_start_minute,
                quiet_end_minute, no_trip_on_holidays, arrears_cap_fen, stale_meter_s, offline_gateway_s,
                reversal_window_days, reversal_approval_above_fen, correction_approval_above_wh, trip_notice_s,
                tenant_emergency_fen, tenant_emergency_hours, top_up_presets_fen
         from settings",
    )
    .fetch_one(conn)
    .await?;
    Ok(CompanySettings {
        alarm1_fen: r.try_get("alarm1_fen")?,
        alarm2_fen: r.try_get("alarm2_fen")?,
        overdraft_limit_fen: r.try_get("overdraft_limit_fen")?,
        restore_level_fen: r.try_get("restore_level_fen")?,
        quiet_start_minute: r.try_get("quiet_start_minute")?,
        quiet_end_minute: r.try_get("quiet_end_minute")?,
        no_trip_on_holidays: r.try_get("no_trip_on_holidays")?,
        arrears_cap_fen: r.try_get("arrears_cap_fen")?,
        stale_meter_s: r.try_get("stale_meter_s")?,
        offline_gateway_s: r.try_get("offline_gateway_s")?,
        reversal_window_days: r.try_get("reversal_window_days")?,
        reversal_approval_above_fen: r.try_get("reversal_approval_above_fen")?,
        correction_approval_above_wh: r.try_get("correction_approval_above_wh")?,
        trip_notice_s: r.try_get("trip_notice_s")?,
        tenant_emergency_fen: r.try_get("tenant_emergency_fen")?,
        tenant_emergency_hours: r.try_get("tenant_emergency_hours")?,
        top_up_presets_fen: r
            .try_get::<Vec<i64>, _>("top_up_presets_fen")?
            .into_iter()
            .map(AmountFen::from_fen)
            .collect(),
    })
}

/// Checks the levels' order (DESIGN.md: alarm 1 ≥ alarm 2 ≥ 0 ≥ −overdraft limit; restore level
/// > −overdraft limit); every problem is named by field.
pub fn validate(s: &CompanySettings) -> Result<(), BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    for (field, value) in [
        ("alarm1_fen", s.alarm1_fen),
        ("alarm2_fen", s.alarm2_fen),
        ("overdraft_limit_fen", s.overdraft_limit_fen),
        ("arrears_cap_fen", s.arrears_cap_fen),
    ] {
        if !(AmountFen::ZERO..=AmountFen::from_fen(LEVEL_FEN_MAX)).contains(&value) {
            fields.insert(field.to_owned(), "between 0 and 1,000,000 yuan".to_owned());
        }
    }
    if s.alarm1_fen < s.alarm2_fen {
        fields.insert(
            "alarm1_fen".into(),
            "alarm 1 must be at least alarm 2".into(),
        );
    }
    // Checked: the overdraft limit comes from the request and may be i64::MIN.
    let above_overdraft = s
        .overdraft_limit_fen
        .checked_neg()
        .is_some_and(|floor| s.restore_level_fen > floor);
    let level_range = AmountFen::from_fen(-LEVEL_FEN_MAX)..=AmountFen::from_fen(LEVEL_FEN_MAX);
    if !level_range.contains(&s.restore_level_fen) || !above_overdraft {
        fields.insert(
            "restore_level_fen".into(),
            "must be above minus the overdraft limit".into(),
        );
    }
    match (s.quiet_start_minute, s.quiet_end_minute) {
        (None, None) => {}
        (Some(a), Some(b)) if (0..1440).contains(&a) && (0..1440).contains(&b) && a != b => {}
        _ => {
            fields.insert(
                "quiet_start_minute".into(),
                "give both ends of the quiet hours, as different times of day".into(),
            );
        }
    }
    for (field, value) in [
        ("stale_meter_s", s.stale_meter_s),
        ("offline_gateway_s", s.offline_gateway_s),
    ] {
        if !(60..=86_400).contains(&value) {
            fields.insert(field.to_owned(), "60 seconds to 1 day".to_owned());
        }
    }
    if !(0..=86_400).contains(&s.trip_notice_s) {
        fields.insert("trip_notice_s".into(), "0 seconds to 1 day".into());
    }
    if !(1..=366).contains(&s.reversal_window_days) {
        fields.insert("reversal_window_days".into(), "1 to 366 days".into());
    }
    if !(AmountFen::ZERO..=AmountFen::from_fen(LEVEL_FEN_MAX))
        .contains(&s.reversal_approval_above_fen)
    {
        fields.insert(
            "reversal_approval_above_fen".into(),
            "between 0 and 1,000,000 yuan".into(),
        );
    }
    // 0 asks an approver for every release with energy; 100 MWh is beyond any shop's interval.
    if !(EnergyWh::ZERO..=EnergyWh::from_wh(100_000_000)).contains(&s.correction_approval_above_wh)
    {
        fields.insert(
            "correction_approval_above_wh".into(),
            "between 0 and 100,000 kWh".into(),
        );
    }
    if !(AmountFen::ZERO..=AmountFen::from_fen(1_000_000)).contains(&s.tenant_emergency_fen) {
        fields.insert(
            "tenant_emergency_fen".into(),
            "between 0 and 10,000 yuan".into(),
        );
    }
    if !(1..=72).contains(&s.tenant_emergency_hours) {
        fields.insert("tenant_emergency_hours".into(), "1 to 72 hours".into());
    }
    let preset_range = AmountFen::from_fen(100)..=AmountFen::from_fen(5_000_000);
    let mut presets = s.top_up_presets_fen.clone();
    presets.sort();
    presets.dedup();
    if !(1..=8).contains(&s.top_up_presets_fen.len())
        || presets.len() != s.top_up_presets_fen.len()
        || !s
            .top_up_presets_fen
            .iter()
            .all(|p| preset_range.contains(p))
    {
        fields.insert(
            "top_up_presets_fen".into(),
            "1 to 8 different amounts of 1 to 50,000 yuan".into(),
        );
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(fields)
    }
}

#[tracing::instrument(skip_all)]
pub async fn update(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &CompanySettings,
) -> CoreResult<CompanySettings> {
    let before = get(conn, principal).await?;
    principal.require(Need::Act(Right::Settings))?;
    validate(input).map_err(|fields| CoreError::Validation {
        message: "please correct the highlighted fields".into(),
        fields,
    })?;
    sqlx::query(
        "update settings set alarm1_fen = $1, alarm2_fen = $2, overdraft_limit_fen = $3, restore_level_fen = $4,
             quiet_start_minute = $5, quiet_end_minute = $6, no_trip_on_holidays = $7, arrears_cap_fen = $8,
             stale_meter_s = $9, offline_gateway_s = $10, reversal_window_days = $11,
             reversal_approval_above_fen = $12, correction_approval_above_wh = $13, trip_notice_s = $14,
             tenant_emergency_fen = $15, tenant_emergency_hours = $16, top_up_presets_fen = $17,
             updated_at = now()",
    )
    .bind(input.alarm1_fen)
    .bind(input.alarm2_fen)
    .bind(input.overdraft_limit_fen)
    .bind(input.restore_level_fen)
    .bind(input.quiet_start_minute)
    .bind(input.quiet_end_minute)
    .bind(input.no_trip_on_holidays)
    .bind(input.arrears_cap_fen)
    .bind(input.stale_meter_s)
    .bind(input.offline_gateway_s)
    .bind(input.reversal_window_days)
    .bind(input.reversal_approval_above_fen)
    .bind(input.correction_approval_above_wh)
    .bind(input.trip_notice_s)
    .bind(input.tenant_emergency_fen)
    .bind(input.tenant_emergency_hours)
    .bind(
        input
            .top_up_presets_fen
            .iter()
            .map(|p| p.fen())
            .collect::<Vec<i64>>(),
    )
    .execute(&mut *conn)
    .await?;
    let after = load(conn).await?;
    audit::record(
        conn,
        principal,
        "settings.update",
        "settings",
        None,
        Some(audit::snapshot(&before)),
        Some(audit::snapshot(&after)),
    )
    .await?;
    Ok(after)
}

/// The calendar days of `year` (all years when `None`).
#[tracing::instrument(skip_all)]
pub async fn calendar_days(
    conn: &mut PgConnection,
    principal: &Principal,
    year: Option<i32>,
) -> CoreResult<Vec<CalendarDay>> {
    principal.require_read_company()?;
    let rows = sqlx::query(
        "select day, kind, name from calendar_days
         where $1::int is null or extract(year from day) = $1 order by day",
    )
    .bind(year)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(CalendarDay {
                day: r.try_get("day")?,
                kind: r.try_get("kind")?,
                name: r.try_get("name")?,
            })
        })
        .collect()
}

/// The whole calendar, for rating and trip rules.
#[tracing::instrument(skip_all)]
pub async fn calendar(conn: &mut PgConnection) -> CoreResult<Calendar> {
    let rows = sqlx::query("select day, kind from calendar_days")
        .fetch_all(conn)
        .await?;
    let mut calendar = Calendar::default();
    for r in rows {
        let day: NaiveDate = r.try_get("day")?;
        if r.try_get::<String, _>("kind")? == "workday" {
            calendar.workdays.insert(day);
        } else {
            calendar.holidays.insert(day);
        }
    }
    Ok(calendar)
}

/// Marks (or re-marks) a day as a holiday or a make-up workday.
#[tracing::instrument(skip_all)]
pub async fn set_day(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &CalendarDay,
) -> CoreResult<CalendarDay> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    if input.kind != "holiday" && input.kind != "workday" {
        return Err(CoreError::field("kind", "holiday or workday"));
    }
    if input.name.chars().count() > 50 {
        return Err(CoreError::field("name", "at most 50 characters"));
    }
    sqlx::query(
        "insert into calendar_days (day, kind, name) values ($1, $2, $3)
         on conflict (day) do update set kind = excluded.kind, name = excluded.name",
    )
    .bind(input.day)
    .bind(&input.kind)
    .bind(input.name.trim())
    .execute(&mut *conn)
    .await?;
    let json = audit::snapshot(input);
    audit::record(
        conn,
        principal,
        "calendar.set",
        "calendar_day",
        Some(input.day.to_string()),
        None,
        Some(json),
    )
    .await?;
    Ok(input.clone())
}

/// Returns a day to its ordinary weekday/weekend rule.
#[tracing::instrument(skip_all)]
pub async fn clear_day(
    conn: &mut PgConnection,
    principal: &Principal,
    day: NaiveDate,
) -> CoreResult<()> {
    principal.require_read_company()?;
    // Existence first: a day the company never marked is 404 for everyone.
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from calendar_days where day = $1)")
            .bind(day)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(CoreError::NotFound("calendar day"));
    }
    principal.require(Need::Act(Right::Settings))?;
    sqlx::query("delete from calendar_days where day = $1")
        .bind(day)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "calendar.clear",
        "calendar_day",
        Some(day.to_string()),
        None,
        None,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> CompanySettings {
        CompanySettings {
            alarm1_fen: AmountFen::from_fen(5000),
            alarm2_fen: AmountFen::from_fen(2000),
            overdraft_limit_fen: AmountFen::from_fen(0),
            restore_level_fen: AmountFen::from_fen(100),
            quiet_start_minute: None,
            quiet_end_minute: None,
            no_trip_on_holidays: true,
            arrears_cap_fen: AmountFen::from_fen(100_000),
            stale_meter_s: 300,
            offline_gateway_s: 300,
            reversal_window_days: 30,
            reversal_approval_above_fen: AmountFen::from_fen(50_000),
            correction_approval_above_wh: EnergyWh::from_wh(100_000),
            trip_notice_s: 600,
            tenant_emergency_fen: AmountFen::ZERO,
            tenant_emergency_hours: 24,
            top_up_presets_fen: default_top_up_presets_fen(),
        }
    }

    #[test]
    fn tenant_rules_are_bounded() {
        assert!(validate(&defaults()).is_ok());
        let fen = AmountFen::from_fen;
        for (s, field) in [
            (
                CompanySettings {
                    tenant_emergency_fen: fen(1_000_001),
                    ..defaults()
                },
                "tenant_emergency_fen",
            ),
            (
                CompanySettings {
                    tenant_emergency_hours: 0,
                    ..defaults()
                },
                "tenant_emergency_hours",
            ),
            (
                CompanySettings {
                    top_up_presets_fen: vec![],
                    ..defaults()
                },
                "top_up_presets_fen",
            ),
            (
                CompanySettings {
                    top_up_presets_fen: vec![fen(5_000), fen(5_000)],
                    ..defaults()
                },
                "top_up_presets_fen",
            ),
            (
                CompanySettings {
                    top_up_presets_fen: vec![fen(99)],
                    ..defaults()
                },
                "top_up_presets_fen",
            ),
        ] {
            let fields = validate(&s).unwrap_err();
            assert!(fields.contains_key(field), "{field}: {fields:?}");
        }
    }

    #[test]
    fn money_rules_are_bounded() {
        let s = CompanySettings {
            reversal_window_days: 0,
            reversal_approval_above_fen: AmountFen::from_fen(-1),
            correction_approval_above_wh: EnergyWh::from_wh(100_000_001),
            ..defaults()
        };
        let errors = validate(&s).unwrap_err();
        for field in [
            "reversal_window_days",
            "reversal_approval_above_fen",
            "correction_approval_above_wh",
        ] {
            assert!(errors.contains_key(field), "{field}: {errors:?}");
        }
        assert!(validate(&defaults()).is_ok());
    }

    #[test]
    fn alarm_limits_are_bounded() {
        let s = CompanySettings {
            stale_meter_s: 59,
            offline_gateway_s: 86_401,
            ..defaults()
        };
        let errors = validate(&s).unwrap_err();
        assert!(errors.contains_key("stale_meter_s") && errors.contains_key("offline_gateway_s"));
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(validate(&defaults()), Ok(()));
    }

    #[test]
    fn levels_must_be_in_order() {
        let s = CompanySettings {
            alarm1_fen: AmountFen::from_fen(1000),
            alarm2_fen: AmountFen::from_fen(2000),
            ..defaults()
        };
        assert!(validate(&s).unwrap_err().contains_key("alarm1_fen"));
        let s = CompanySettings {
            overdraft_limit_fen: AmountFen::from_fen(500),
            restore_level_fen: AmountFen::from_fen(-500),
            ..defaults()
        };
        assert!(validate(&s).unwrap_err().contains_key("restore_level_fen"));
        let s = CompanySettings {
            overdraft_limit_fen: AmountFen::from_fen(500),
            restore_level_fen: AmountFen::from_fen(-499),
            ..defaults()
        };
        assert_eq!(validate(&s), Ok(()));
        // Hostile extremes are field errors, not an overflow (found by the API fuzzer).
        let s = CompanySettings {
            overdraft_limit_fen: AmountFen::from_fen(i64::MIN),
            restore_level_fen: AmountFen::from_fen(i64::MAX),
            ..defaults()
        };
        let errors = validate(&s).unwrap_err();
        assert!(
            errors.contains_key("overdraft_limit_fen") && errors.contains_key("restore_level_fen")
        );
        let s = CompanySettings {
            quiet_start_minute: Some(22 * 60),
            ..defaults()
        };
        assert!(validate(&s).unwrap_err().contains_key("quiet_start_minute"));
        let s = CompanySettings {
            quiet_start_minute: Some(22 * 60),
            quiet_end_minute: Some(6 * 60),
            ..defaults()
        };
        assert_eq!(validate(&s), Ok(()));
    }
}
