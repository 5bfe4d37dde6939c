//! What a shop tenant sees and does on their phone (issue 14: Tenant experience): the home of
//! one account (available balance, each meter-side meter's read-back remaining amount with its
//! age, power state, alarm level, days left), usage by day and month with the TOU split, the
//! company's rules for top-ups and emergency credit, and the emergency credit a tenant grants
//! themselves.
//!
//! - Every read goes through [`accounts::get`], so a tenant reaches only accounts linked to them
//!   (a former tenant their closed ones, read-only) and anyone else gets 404.
//! - Days left = available balance ÷ average daily charge of the last 7 days
//!   ([`average_daily_charge`], [`days_left`]); the report centre uses the same functions.
//! - Usage comes from the rated charge lines (what the tenant pays for), bucketed by the local
//!   day of each reading in the property's time zone.

use crate::auth::Principal;
use crate::billing::accounts::{self, AccountState, ShopAccount};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::power::emergency::{self, EmergencyCredit};
use crate::tariff::Period;
use crate::tenancy::roles::Role;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The window the average daily charge is taken over.
pub const AVERAGE_WINDOW_DAYS: i64 = 7;

/// One meter of the account as the tenant sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HomeMeter {
    pub meter_id: Uuid,
    pub meter_number: String,
    /// The newest reading.
    pub read_at: Option<DateTime<Utc>>,
    pub energy_wh: Option<i64>,
    pub relay_closed: Option<bool>,
    pub keep_power: bool,
    /// Meter-side meters: the remaining amount the meter itself reported, and when.
    pub remaining_fen: Option<AmountFen>,
    pub remaining_read_at: Option<DateTime<Utc>>,
}

/// The company's rules for what a tenant does themselves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRules {
    /// Emergency credit a tenant may grant themselves (0: only the property office grants it).
    pub emergency_fen: AmountFen,
    pub emergency_hours: i64,
    /// Amounts offered on the top-up page.
    pub presets_fen: Vec<AmountFen>,
    pub top_up_min_fen: AmountFen,
    pub top_up_max_fen: AmountFen,
    /// Payment providers the company takes (`sandbox` in demos).
    pub providers: Vec<String>,
}

/// The home of one account.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Home {
    pub account: ShopAccount,
    /// `on`, `off` (tripped) or `keep_power` (保电: never tripped).
    pub power: String,
    /// 0 (fine), 1 (below alarm level 1) or 2 (below alarm level 2).
    pub alarm_level: u8,
    pub average_daily_charge_fen: Option<AmountFen>,
    /// Whole days the available balance lasts at that average; `None` without usage.
    pub days_left: Option<i64>,
    pub meters: Vec<HomeMeter>,
    /// The newest emergency credit, in force or not.
    pub emergency: Option<EmergencyCredit>,
    /// Whether the tenant may grant emergency credit now.
    pub may_grant_emergency: bool,
    pub rules: TenantRules,
}

/// Usage in one day or month.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageSlot {
    /// `2026-12-04` for a day, `2026-12` for a month (local).
    pub label: String,
    pub energy_wh: i64,
    pub charge_fen: AmountFen,
    /// Wh per TOU period, in the order of [`Period::ALL`] (sharp, peak, flat, valley, deep valley).
    pub by_period_wh: [i64; 5],
}

/// Days or months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Day,
    Month,
}

/// Whole days `available` lasts at `average` a day: `None` without usage, 0 when nothing is left.
pub fn days_left(available: AmountFen, average: Option<AmountFen>) -> Option<i64> {
    let average = average.filter(|a| *a > AmountFen::ZERO)?;
    if available <= AmountFen::ZERO {
        return Some(0);
    }
    Some(available.fen() / average.fen())
}

/// The average daily charge of `account` over the last [`AVERAGE_WINDOW_DAYS`] before `now`, or
/// over its life when it is younger (at least one day, so an hour's use is not made a day's);
/// `None` when nothing was charged.
pub async fn average_daily_charge(
    conn: &mut PgConnection,
    account: Uuid,
    opened_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> CoreResult<Option<AmountFen>> {
    let start = (now - Duration::days(AVERAGE_WINDOW_DAYS)).max(opened_at);
    let charged: i64 = sqlx::query_scalar(
        "select coalesce(sum(debit_fen), 0)::bigint from charge_lines
         where account_id = $1 and read_at > $2 and read_at <= $3",
    )
    .bind(account)
    .bind(start)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if charged <= 0 {
        return Ok(None);
    }
    let span_s = (now - start).num_seconds().max(86_400);
    // fen × s ÷ s: integer, floored; checked so a corrupt sum cannot wrap.
    let average = charged
        .checked_mul(86_400)
        .map(|x| x / span_s)
        .ok_or_else(|| CoreError::Internal("average daily charge overflows".into()))?;
    Ok(Some(AmountFen::from_fen(average)))
}

/// The company's rules for what its tenants do themselves (settings, and the providers it takes).
pub async fn rules(conn: &mut PgConnection, principal: &Principal) -> CoreResult<TenantRules> {
    let settings = crate::tenancy::settings::load(conn).await?;
    let (emergency_fen, emergency_hours, presets) = (
        settings.tenant_emergency_fen,
        i64::from(settings.tenant_emergency_hours),
        settings.top_up_presets_fen,
    );
    let mut providers = vec![];
    if crate::payments::orders::takes(conn, principal, crate::payments::orders::Provider::Sandbox)
        .await?
    {
        providers.push("sandbox".to_owned());
    }
    Ok(TenantRules {
        emergency_fen,
        emergency_hours,
        presets_fen: presets
            .into_iter()
            .filter(|p| {
                *p >= crate::payments::orders::ONLINE_MIN
                    && *p <= crate::payments::orders::ONLINE_MAX
            })
            .collect(),
        top_up_min_fen: crate::payments::orders::ONLINE_MIN,
        top_up_max_fen: crate::payments::orders::ONLINE_MAX,
        providers,
    })
}

async fn meters(conn: &mut PgConnection, account: &ShopAccount) -> CoreResult<Vec<HomeMeter>> {
    let ids: Vec<Uuid> = account.meters.iter().map(|m| m.meter_id).collect();
    let rows = sqlx::query(
        "select m.id, m.meter_number, m.keep_power, l.read_at, l.energy_wh, l.relay_closed,
                b.remaining_fen, b.read_at as remaining_read_at
         from meters m
         left join meter_latest l on l.meter_id = m.id
         left join meter_secure_readback b on b.meter_id = m.id
         where m.id = any($1) order by m.meter_number",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let meter_side = account.prepayment_mode == "meter";
    rows.iter()
        .map(|r| {
            Ok(HomeMeter {
                meter_id: r.try_get("id")?,
                meter_number: r.try_get("meter_number")?,
                read_at: r.try_get("read_at")?,
                energy_wh: r.try_get("energy_wh")?,
                relay_closed: r.try_get("relay_closed")?,
                keep_power: r.try_get("keep_power")?,
                remaining_fen: if meter_side {
                    r.try_get::<Option<i64>, _>("remaining_fen")?
                        .map(AmountFen::from_fen)
                } else {
                    None
                },
                remaining_read_at: if meter_side {
                    r.try_get("remaining_read_at")?
                } else {
                    None
                },
            })
        })
        .collect()
}

/// The home of `account` for the caller (its tenant, or staff who may read it).
#[tracing::instrument(skip_all, fields(%account))]
pub async fn home(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<Home> {
    let found = accounts::get(conn, principal, account).await?;
    let now = principal.now();
    let power = sqlx::query(
        "select alarm1_fired, alarm2_fired, tripped_at is not null as tripped from account_power
         where account_id = $1",
    )
    .bind(account)
    .fetch_optional(&mut *conn)
    .await?;
    let (alarm1, alarm2, tripped) = match power {
        Some(r) => (
            r.try_get::<bool, _>("alarm1_fired")?,
            r.try_get::<bool, _>("alarm2_fired")?,
            r.try_get::<bool, _>("tripped")?,
        ),
        None => (false, false, false),
    };
    let meters = meters(conn, &found).await?;
    let power = if !meters.is_empty() && meters.iter().all(|m| m.keep_power) {
        "keep_power"
    } else if tripped {
        "off"
    } else {
        "on"
    };
    let average = average_daily_charge(conn, account, found.opened_at, now).await?;
    let emergency = emergency::latest(conn, principal, account).await?;
    let rules = rules(conn, principal).await?;
    let month = now.with_timezone(&principal.tz());
    let used_this_month = emergency.as_ref().is_some_and(|e| {
        let granted = e.granted_at.with_timezone(&principal.tz());
        (granted.year(), granted.month()) == (month.year(), month.month())
    });
    Ok(Home {
        power: power.to_owned(),
        alarm_level: if alarm2 {
            2
        } else if alarm1 {
            1
        } else {
            0
        },
        average_daily_charge_fen: average,
        days_left: days_left(found.available_fen, average),
        may_grant_emergency: principal.role == Role::ShopTenant
            && found.state == AccountState::Open
            && rules.emergency_fen > AmountFen::ZERO
            && !used_this_month,
        account: found,
        meters,
        emergency,
        rules,
    })
}

/// The local dates (or months' first days) of the last `count` slots ending at `today`.
fn slot_starts(today: NaiveDate, by: UsageBy, count: u32) -> Vec<NaiveDate> {
    let mut starts = Vec::with_capacity(count as usize);
    let mut at = match by {
        UsageBy::Day => today,
        UsageBy::Month => today.with_day(1).unwrap_or(today),
    };
    for _ in 0..count {
        starts.push(at);
        at = match by {
            UsageBy::Day => at.pred_opt().unwrap_or(at),
            UsageBy::Month => at.pred_opt().and_then(|d| d.with_day(1)).unwrap_or(at),
        };
    }
    starts.reverse();
    starts
}

/// The instant local `date` begins (the next hour's where a DST gap swallows midnight; the
/// day's UTC start minus a day, a safe lower bound, if even that does not exist).
fn local_midnight(tz: chrono_tz::Tz, date: NaiveDate) -> DateTime<Utc> {
    use chrono::TimeZone;
    let naive = date.and_time(chrono::NaiveTime::MIN);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc() - Duration::days(1))
}

fn label(start: NaiveDate, by: UsageBy) -> String {
    match by {
        UsageBy::Day => start.format("%Y-%m-%d").to_string(),
        UsageBy::Month => start.format("%Y-%m").to_string(),
    }
}

/// `account`'s usage in the last `count` (1–62) days or months up to today, local; empty slots
/// are 0, so a chart shows the gap.
pub async fn usage(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    by: UsageBy,
    count: u32,
) -> CoreResult<Vec<UsageSlot>> {
    accounts::get(conn, principal, account).await?;
    if !(1..=62).contains(&count) {
        return Err(CoreError::field("count", "from 1 to 62"));
    }
    let tz = principal.tz();
    let today = principal.now().with_timezone(&tz).date_naive();
    let starts = slot_starts(today, by, count);
    let first = starts[0];
    let from = local_midnight(tz, first);
    let unit = match by {
        UsageBy::Day => "day",
        UsageBy::Month => "month",
    };
    // Each reading's charge in the local day (or month) it was read; its TOU pieces summed.
    let rows = sqlx::query(
        "select date_trunc($4, c.read_at at time zone $2)::date as slot,
                sum(c.energy_wh)::bigint as wh, sum(c.debit_fen)::bigint as fen
         from charge_lines c
         where c.account_id = $1 and c.read_at >= $3
         group by 1",
    )
    .bind(account)
    .bind(tz.name())
    .bind(from)
    .bind(unit)
    .fetch_all(&mut *conn)
    .await?;
    let period_rows = sqlx::query(
        "select date_trunc($4, c.read_at at time zone $2)::date as slot, l->>'period' as period,
                sum((l->>'energy_wh')::bigint)::bigint as wh
         from charge_lines c, jsonb_array_elements(c.lines) l
         where c.account_id = $1 and c.read_at >= $3
         group by 1, 2",
    )
    .bind(account)
    .bind(tz.name())
    .bind(from)
    .bind(unit)
    .fetch_all(&mut *conn)
    .await?;
    let mut slots: Vec<UsageSlot> = starts
        .iter()
        .map(|s| UsageSlot {
            label: label(*s, by),
            energy_wh: 0,
            charge_fen: AmountFen::ZERO,
            by_period_wh: [0; 5],
        })
        .collect();
    let index = |slot: NaiveDate| starts.iter().position(|s| *s == slot);
    for r in &rows {
        if let Some(i) = index(r.try_get("slot")?) {
            slots[i].energy_wh = r.try_get::<Option<i64>, _>("wh")?.unwrap_or(0);
            slots[i].charge_fen =
                AmountFen::from_fen(r.try_get::<Option<i64>, _>("fen")?.unwrap_or(0));
        }
    }
    for r in &period_rows {
        let period: Option<String> = r.try_get("period")?;
        let position = period
            .as_deref()
            .and_then(|p| Period::ALL.iter().position(|x| x.as_str() == p));
        if let (Some(i), Some(p)) = (index(r.try_get("slot")?), position) {
            slots[i].by_period_wh[p] += r.try_get::<Option<i64>, _>("wh")?.unwrap_or(0);
        }
    }
    Ok(slots)
}

/// The tenant grants themselves the company's emergency credit (应急电) on `account`: only where
/// the company allows it (`settings.tenant_emergency_fen` > 0), on an open account of theirs,
/// once per local month (as every grant). Audited as theirs; the power rules run at once.
#[tracing::instrument(skip_all, fields(%account))]
pub async fn grant_emergency(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<EmergencyCredit> {
    accounts::get(conn, principal, account).await?;
    if principal.role != Role::ShopTenant {
        return Err(CoreError::Forbidden(
            "staff grant emergency credit on the account page".into(),
        ));
    }
    let rules = rules(conn, principal).await?;
    if rules.emergency_fen <= AmountFen::ZERO {
        return Err(CoreError::Forbidden(
            "the property office grants emergency credit; ask them".into(),
        ));
    }
    emergency::grant_allowed(
        conn,
        principal,
        account,
        rules.emergency_fen,
        rules.emergency_hours,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_is_the_balance_over_the_average_floored() {
        let fen = AmountFen::from_fen;
        assert_eq!(days_left(fen(10_000), Some(fen(3_000))), Some(3));
        assert_eq!(days_left(fen(10_000), None), None);
        assert_eq!(days_left(fen(10_000), Some(fen(0))), None);
        assert_eq!(days_left(fen(-500), Some(fen(3_000))), Some(0));
        assert_eq!(days_left(fen(2_999), Some(fen(3_000))), Some(0));
    }

    #[test]
    fn slots_end_today_and_months_start_on_the_first() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(
            slot_starts(d("2026-03-02"), UsageBy::Day, 3),
            vec![d("2026-02-28"), d("2026-03-01"), d("2026-03-02")]
        );
        assert_eq!(
            slot_starts(d("2026-01-15"), UsageBy::Month, 3),
            vec![d("2025-11-01"), d("2025-12-01"), d("2026-01-01")]
        );
    }
}
