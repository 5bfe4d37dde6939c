//! The server side of the settings page (company defaults, holiday calendar) and of the tariff
//! preview. Text from forms is parsed here (yuan, `HH:MM`, kWh); the rules live in
//! `powertab_core::tenancy::settings` and `powertab_core::tariff::plans`.

use super::{
    company_tz, field_error, finish, non_empty, read_err, read_session, session_for_change, UiError,
};
use crate::api::WebError;
use crate::api::{PreviewQuery, PreviewRow, PreviewView, SettingsForm, SettingsView};
use chrono::{Datelike, NaiveDate};
use powertab_core::kernel::money::{format_wh_as_kwh, parse_kwh_as_wh, AmountFen};
use powertab_core::tariff::profile::ShopType;
use powertab_core::tenancy::settings::{self, CalendarDay, CompanySettings};
use uuid::Uuid;

fn yuan(fen: AmountFen) -> String {
    fen.to_string()
}

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

pub async fn save_settings(csrf: String, form: SettingsForm) -> Result<(), WebError> {
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
        };
        settings::update(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok("/settings?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
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
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let day = parse_day(&day)?;
        settings::set_day(&mut tx, &principal, &CalendarDay { day, kind, name }).await?;
        tx.commit().await?;
        Ok(format!("/settings?year={}&ok=common.saved", day.year()))
    }
    .await;
    finish(result)
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

/// The 24 hourly Wh of the query: typed values, or a shop type's shape scaled to the daily kWh.
fn hourly_profile(query: &PreviewQuery) -> Result<Vec<i64>, WebError> {
    let bad = |what: &str| WebError::new(format!("validation_failed: {what}"));
    if !query.hourly_kwh.trim().is_empty() {
        let values = query
            .hourly_kwh
            .split([',', ' ', '\n', '，'])
            .filter(|v| !v.trim().is_empty())
            .map(|v| parse_kwh_as_wh(v).map_err(|_| bad("hourly_kwh")))
            .collect::<Result<Vec<i64>, _>>()?;
        if values.len() != 24 {
            return Err(bad("hourly_kwh"));
        }
        return Ok(values);
    }
    let shop_type = ShopType::parse(&query.profile).unwrap_or(ShopType::Retail);
    let daily_wh = match query.daily_kwh.trim() {
        "" => 100_000,
        text => parse_kwh_as_wh(text).map_err(|_| bad("daily_kwh"))?,
    };
    Ok(shop_type.hourly_wh(daily_wh).to_vec())
}

pub async fn tariff_preview(query: PreviewQuery) -> Result<PreviewView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let plans: Vec<(String, String)> = powertab_core::tariff::plans::list(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|p| (p.id.to_string(), p.name))
        .collect();
    let meters = powertab_core::field::meters(
        &mut tx,
        &principal,
        &powertab_core::field::MeterFilter {
            status: Some("active".into()),
            ..Default::default()
        },
    )
    .await
    .map_err(read_err)?;
    let shops: Vec<(String, String, String)> =
        powertab_core::property::shops(&mut tx, &principal, &Default::default())
            .await
            .map_err(read_err)?
            .into_iter()
            .map(|s| {
                let plan = meters
                    .iter()
                    .find(|m| m.shop_id == Some(s.id))
                    .and_then(|m| m.tariff_plan_id)
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                (
                    s.id.to_string(),
                    format!("{} · {} {}", s.building_name, s.number, s.name),
                    plan,
                )
            })
            .collect();
    let shop_plan = shops
        .iter()
        .find(|(id, _, _)| *id == query.shop)
        .map(|(_, _, plan)| plan.clone())
        .unwrap_or_default();
    let plan_a = non_empty(query.plan_a.clone()).unwrap_or(shop_plan);
    let chosen: Vec<String> = [plan_a, query.plan_b.clone(), query.plan_c.clone()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let hourly_wh = hourly_profile(&query)?;
    let mut view = PreviewView {
        plans,
        shops,
        results: vec![],
        chosen: chosen.clone(),
        hourly_wh: hourly_wh.clone(),
    };
    if chosen.is_empty() {
        return Ok(view);
    }
    let start = NaiveDate::parse_from_str(query.start.trim(), "%Y-%m-%d")
        .unwrap_or_else(|_| principal.today());
    let input = powertab_core::tariff::plans::PreviewInput {
        plan_ids: chosen
            .iter()
            .filter_map(|p| p.parse::<Uuid>().ok())
            .collect(),
        start,
        days: query.days.trim().parse().unwrap_or(30),
        hourly_wh,
    };
    let calendar = settings::calendar(&mut tx).await.map_err(read_err)?;
    let results = powertab_core::tariff::plans::preview(&mut tx, &principal, &input, &calendar)
        .await
        .map_err(read_err)?;
    let first_total = results.first().map_or(AmountFen::ZERO, |r| r.total_fen);
    view.results = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| PreviewRow {
            plan: r.plan_name,
            energy_kwh: format_wh_as_kwh(r.energy_wh),
            total_yuan: yuan(r.total_fen),
            difference_yuan: if i == 0 {
                String::new()
            } else {
                // Both totals are bounded by the preview's checked sums; a difference that
                // still overflowed shows as nothing rather than a wrapped number.
                r.total_fen
                    .checked_sub(first_total)
                    .map(|diff| {
                        let sign = if diff >= AmountFen::ZERO { "+" } else { "" };
                        format!("{sign}{}", yuan(diff))
                    })
                    .unwrap_or_default()
            },
            by_period: r
                .by_period
                .into_iter()
                .map(|(p, (wh, fen))| (p.as_str().to_owned(), format_wh_as_kwh(wh), yuan(fen)))
                .collect(),
        })
        .collect();
    Ok(view)
}
