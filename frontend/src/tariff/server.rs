//! The server side of the tariff pages: plans and versions read and added (the repeated form
//! rows parsed in [`form`]) and the preview in [`preview`]; rules in `powertab_core::tariff`.

mod form;
pub mod preview;

use super::views::VersionForm;
use crate::web::server::{finish_keeping, read_err, read_session, session_for_change, ui, UiError};
use crate::web::WebError;
use chrono::NaiveDate;
use uuid::Uuid;

fn segments(schedule: &powertab_core::tariff::DaySchedule) -> Vec<(u16, u16, String)> {
    schedule
        .switches
        .iter()
        .enumerate()
        .map(|(i, sw)| {
            let end = schedule
                .switches
                .get(i + 1)
                .map_or(powertab_core::tariff::MINUTES_PER_DAY, |n| n.minute);
            (sw.minute, end, sw.period.as_str().to_owned())
        })
        .collect()
}

pub async fn list_plans() -> Result<Vec<super::views::PlanView>, WebError> {
    use powertab_core::tariff::{format_price_units, DaySchedule, Period};
    let (principal, mut tx) = read_session().await?;
    let plans = powertab_core::tariff::plans::list(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    Ok(plans
        .into_iter()
        .map(|p| super::views::PlanView {
            id: p.id.to_string(),
            name: p.name,
            description: p.description,
            versions: p
                .versions
                .iter()
                .rev()
                .map(|v| super::views::VersionView {
                    effective: v.effective.to_string(),
                    prices: v
                        .prices
                        .iter()
                        .map(|(k, u)| (k.as_str().to_owned(), format_price_units(*u)))
                        .collect(),
                    seasons: if v.seasons.is_empty() {
                        vec![super::views::SeasonView {
                            range: "01-01 – 12-31".into(),
                            workday: segments(&DaySchedule::all_day(Period::Flat)),
                            holiday: None,
                        }]
                    } else {
                        v.seasons
                            .iter()
                            .map(|season| super::views::SeasonView {
                                range: format!(
                                    "{:02}-{:02} – {:02}-{:02}",
                                    season.from.0, season.from.1, season.to.0, season.to.1
                                ),
                                workday: segments(&season.workday),
                                holiday: season.holiday.as_ref().map(segments),
                            })
                            .collect()
                    },
                    tiers: form::describe_tiers(v.tiers.as_ref()),
                    fees: v
                        .fees
                        .iter()
                        .map(|f| {
                            let (per, fen) = match f {
                                powertab_core::tariff::Fee::Day(fen) => ("day", *fen),
                                powertab_core::tariff::Fee::Month(fen) => ("month", *fen),
                            };
                            (
                                per.to_owned(),
                                powertab_core::kernel::money::AmountFen::from_fen(fen).to_string(),
                            )
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect())
}

/// A version from the form, or the fields in error.
fn version_from(
    form: &super::views::VersionForm,
) -> Result<powertab_core::tariff::TariffVersion, UiError> {
    use powertab_core::tariff::{parse_price_units, Period, TariffVersion};
    let mut fields = Vec::new();
    let effective =
        NaiveDate::parse_from_str(form.effective.trim(), "%Y-%m-%d").unwrap_or_else(|_| {
            fields.push("effective".to_owned());
            NaiveDate::MIN
        });
    let mut prices = std::collections::BTreeMap::new();
    for (period, text, field) in [
        (Period::Sharp, &form.price_sharp, "price_sharp"),
        (Period::Peak, &form.price_peak, "price_peak"),
        (Period::Flat, &form.price_flat, "price_flat"),
        (Period::Valley, &form.price_valley, "price_valley"),
        (
            Period::DeepValley,
            &form.price_deep_valley,
            "price_deep_valley",
        ),
    ] {
        if text.trim().is_empty() {
            continue;
        }
        match parse_price_units(text) {
            Ok(units) => {
                prices.insert(period, units);
            }
            Err(_) => fields.push(field.to_owned()),
        }
    }
    let seasons = form::seasons(&form.seasons, &mut fields);
    let tiers = form::tiers(&form.tier_basis, &form.tiers, &mut fields);
    let fees = form::fees(&form.fees, &mut fields);
    if !fields.is_empty() {
        return Err(UiError {
            code: "validation_failed".into(),
            fields,
            detail: None,
        });
    }
    let version = TariffVersion {
        effective,
        prices,
        seasons,
        tiers,
        fees,
    };
    version.validate().map_err(|f| UiError {
        code: "validation_failed".into(),
        detail: Some(
            f.iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        fields: f.into_keys().collect(),
    })?;
    Ok(version)
}

/// What a version form keeps when refused: its own fields (the repeated season, tier and fee
/// rows are not kept) and the plan's name and description.
fn version_snapshot(form: &VersionForm, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut snapshot = serde_json::to_value(form).unwrap_or_default();
    if let Some(values) = snapshot.as_object_mut() {
        for (name, value) in extra {
            values.insert((*name).to_owned(), (*value).into());
        }
    }
    snapshot
}

pub async fn create_plan(
    csrf: String,
    name: String,
    description: String,
    form: VersionForm,
) -> Result<(), WebError> {
    let kept = version_snapshot(&form, &[("name", &name), ("description", &description)]);
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let input = powertab_core::tariff::plans::NewPlan {
            name,
            description,
            version: version_from(&form)?,
        };
        powertab_core::tariff::plans::create(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok("/tariffs?ok=common.saved".to_owned())
    }
    .await;
    finish_keeping(result, "plan-form", &kept)
}

pub async fn add_plan_version(
    csrf: String,
    plan_id: String,
    form: VersionForm,
) -> Result<(), WebError> {
    let kept = version_snapshot(&form, &[]);
    let form_id = format!("version-form-{}", plan_id.trim());
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = plan_id.parse().map_err(|_| ui("not_found"))?;
        powertab_core::tariff::plans::add_version(&mut tx, &principal, id, &version_from(&form)?)
            .await?;
        tx.commit().await?;
        Ok("/tariffs?ok=common.saved".to_owned())
    }
    .await;
    finish_keeping(result, &form_id, &kept)
}
