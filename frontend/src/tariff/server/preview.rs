//! The server side of the tariff preview: a sample month priced with a plan's version. Text from
//! the form is parsed here (kWh); the rules live in `powertab_core::tariff::plans`.

use crate::tariff::views::{PreviewQuery, PreviewRow, PreviewView};
use crate::web::server::yuan;
use crate::web::server::{non_empty, read_err, read_session};
use crate::web::WebError;
use chrono::NaiveDate;
use powertab_core::kernel::money::{format_wh_as_kwh, parse_kwh_as_wh, AmountFen};
use powertab_core::tariff::profile::ShopType;
use powertab_core::tenancy::settings;
use uuid::Uuid;

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
