//! The server side of the settings page (company defaults, holiday calendar). Text from forms is
//! parsed here (yuan, `HH:MM`); the rules live in `powertab_core::tenancy::settings`.

use crate::tenancy::views::{SettingsForm, SettingsView};
use crate::web::server::yuan;
use crate::web::server::{
    company_tz, field_error, finish, finish_keeping, read_err, read_session, session_for_change,
    UiError,
};
use crate::web::WebError;
use chrono::{Datelike, NaiveDate};
use powertab_core::kernel::money::{AmountFen, EnergyWh};
use powertab_core::tenancy::settings::{self, CalendarDay, CompanySettings};

fn hh_mm(minute: Option<i32>) -> String {
    minute
        .map(|m| format!("{:02}:{:02}", m / 60, m % 60))
        .unwrap_or_default()
}

fn this_year(principal: &powertab_core::auth::Principal) -> i32 {
    principal.now().with_timezone(&principal.tz()).year()
}

pub async fn get_settings(year: String) -> Result<SettingsView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let s = settings::get(&mut tx, &principal).await.map_err(read_err)?;
    let tz = company_tz(&principal);
    let year = year
        .parse()
        .ok()
        .filter(|y| (2000..=2100).contains(y))
        .unwrap_or_else(|| this_year(&principal));
    let days = settings::calendar_days(&mut tx, &principal, Some(year))
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|d| (d.day.to_string(), d.kind, d.name))
        .collect();
    Ok(SettingsView {
        alarm1: yuan(s.alarm1_fen),
        alarm2: yuan(s.alarm2_fen),
        overdraft_limit: yuan(s.overdraft_limit_fen),
        restore_level: yuan(s.restore_level_fen),
        quiet_start: hh_mm(s.quiet_start_minute),
        quiet_end: hh_mm(s.quiet_end_minute),
        no_trip_on_holidays: s.no_trip_on_holidays,
        arrears_cap: yuan(s.arrears_cap_fen),
        stale_meter_min: (s.stale_meter_s / 60).to_string(),
        offline_gateway_min: (s.offline_gateway_s / 60).to_string(),
        trip_notice_min: (s.trip_notice_s / 60).to_string(),
        reversal_window_days: s.reversal_window_days.to_string(),
        reversal_approval_above: yuan(s.reversal_approval_above_fen),
        correction_approval_above_kwh: s.correction_approval_above_wh.to_string(),
        tenant_emergency: yuan(s.tenant_emergency_fen),
        tenant_emergency_hours: s.tenant_emergency_hours.to_string(),
        top_up_presets: s
            .top_up_presets_fen
            .iter()
            .map(|p| p.to_string().trim_end_matches(".00").to_owned())
            .collect::<Vec<_>>()
            .join(", "),
        time_zone: tz.name().to_owned(),
        year,
        days,
    })
}

fn fen(text: &str, field: &str) -> Result<AmountFen, UiError> {
    AmountFen::parse_yuan(text).map_err(|_| field_error(field))
}

/// Whole minutes as seconds; empty is the default 5 minutes.
fn minutes_as_s(text: &str, field: &str) -> Result<i32, UiError> {
    match text.trim() {
        "" => Ok(300),
        t => t
            .parse::<i32>()
            .ok()
            .and_then(|m| m.checked_mul(60))
            .ok_or_else(|| field_error(field)),
    }
}

/// `HH:MM` as minutes of the day; empty is none.
fn minute_of_day(text: &str, field: &str) -> Result<Option<i32>, UiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (h, m) = text.split_once(':').ok_or_else(|| field_error(field))?;
    match (h.parse::<i32>(), m.parse::<i32>()) {
        (Ok(h), Ok(m)) if (0..24).contains(&h) && (0..60).contains(&m) => Ok(Some(h * 60 + m)),
        _ => Err(field_error(field)),
    }
}

/// Core's names of the settings fields and the form's.
const SETTINGS_FORM_NAMES: &[(&str, &str)] = &[
    ("alarm1_fen", "alarm1"),
    ("alarm2_fen", "alarm2"),
    ("overdraft_limit_fen", "overdraft_limit"),
    ("restore_level_fen", "restore_level"),
    ("quiet_start_minute", "quiet_start"),
    ("quiet_end_minute", "quiet_end"),
    ("arrears_cap_fen", "arrears_cap"),
    ("stale_meter_s", "stale_meter_min"),
    ("offline_gateway_s", "offline_gateway_min"),
    ("trip_notice_s", "trip_notice_min"),
    ("reversal_window_days", "reversal_window_days"),
    ("reversal_approval_above_fen", "reversal_approval_above"),
    (
        "correction_approval_above_wh",
        "correction_approval_above_kwh",
    ),
    ("tenant_emergency_fen", "tenant_emergency"),
    ("tenant_emergency_hours", "tenant_emergency_hours"),
    ("top_up_presets_fen", "top_up_presets"),
];

/// `50, 100, 200.50` (commas, Chinese commas or spaces) as fen; empty is the built-in presets.
fn presets(text: &str) -> Result<Vec<AmountFen>, UiError> {
    let parts: Vec<&str> = text
        .split([',', '，', ' ', '、'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .take(9)
        .collect();
    if parts.is_empty() {
        return Ok(powertab_core::tenancy::settings::default_top_up_presets_fen());
    }
    parts
        .into_iter()
        .map(|p| fen(p, "top_up_presets_fen"))
        .collect()
}

pub async fn save_settings(csrf: String, form: SettingsForm) -> Result<(), WebError> {
    let kept = form.clone();
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let input = CompanySettings {
            alarm1_fen: fen(&form.alarm1, "alarm1_fen")?,
            alarm2_fen: fen(&form.alarm2, "alarm2_fen")?,
            overdraft_limit_fen: fen(&form.overdraft_limit, "overdraft_limit_fen")?,
            restore_level_fen: fen(&form.restore_level, "restore_level_fen")?,
            quiet_start_minute: minute_of_day(&form.quiet_start, "quiet_start_minute")?,
            quiet_end_minute: minute_of_day(&form.quiet_end, "quiet_end_minute")?,
            no_trip_on_holidays: form.no_trip_on_holidays.is_some(),
            arrears_cap_fen: fen(&form.arrears_cap, "arrears_cap_fen")?,
            stale_meter_s: minutes_as_s(&form.stale_meter_min, "stale_meter_s")?,
            offline_gateway_s: minutes_as_s(&form.offline_gateway_min, "offline_gateway_s")?,
            // An empty field keeps the built-in 10 minutes.
            trip_notice_s: match form.trip_notice_min.trim() {
                "" => 600,
                t => minutes_as_s(t, "trip_notice_s")?,
            },
            // An empty field keeps the built-in default (30 days, ¥500, 100 kWh).
            reversal_window_days: match form.reversal_window_days.trim() {
                "" => 30,
                t => t.parse().map_err(|_| field_error("reversal_window_days"))?,
            },
            reversal_approval_above_fen: match form.reversal_approval_above.trim() {
                "" => AmountFen::from_fen(50_000),
                t => fen(t, "reversal_approval_above_fen")?,
            },
            correction_approval_above_wh: match form.correction_approval_above_kwh.trim() {
                "" => EnergyWh::from_wh(100_000),
                t => EnergyWh::parse_kwh(t)
                    .map_err(|_| field_error("correction_approval_above_wh"))?,
            },
            // Empty: tenants grant none themselves; a day; ¥50, ¥100, ¥200, ¥500.
            tenant_emergency_fen: match form.tenant_emergency.trim() {
                "" => AmountFen::ZERO,
                t => fen(t, "tenant_emergency_fen")?,
            },
            tenant_emergency_hours: match form.tenant_emergency_hours.trim() {
                "" => 24,
                t => t
                    .parse()
                    .map_err(|_| field_error("tenant_emergency_hours"))?,
            },
            top_up_presets_fen: presets(&form.top_up_presets)?,
        };
        settings::update(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok("/settings?ok=common.saved".to_owned())
    }
    .await
    .map_err(|e: UiError| e.renamed(SETTINGS_FORM_NAMES));
    finish_keeping(result, "settings-form", &kept)
}

fn parse_day(text: &str) -> Result<NaiveDate, UiError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| field_error("day"))
}

pub async fn set_calendar_day(
    csrf: String,
    day: String,
    kind: String,
    name: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "day": &day, "kind": &kind, "name": &name });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let day = parse_day(&day)?;
        settings::set_day(&mut tx, &principal, &CalendarDay { day, kind, name }).await?;
        tx.commit().await?;
        Ok(format!("/settings?year={}&ok=common.saved", day.year()))
    }
    .await;
    finish_keeping(result, "calendar-form", &kept)
}

pub async fn clear_calendar_day(csrf: String, day: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let day = parse_day(&day)?;
        settings::clear_day(&mut tx, &principal, day).await?;
        tx.commit().await?;
        Ok(format!("/settings?year={}&ok=common.saved", day.year()))
    }
    .await;
    finish(result)
}
