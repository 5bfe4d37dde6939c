//! The repeated rows of the tariff version form (seasons, tiers, fees) turned into
//! `powertab_core::tariff` values. Each parse error is pushed as the field's form name
//! (`seasons.1.schedule`); the version's own rules are checked afterwards by
//! `TariffVersion::validate`.

use crate::tariff::views::{FeeForm, SeasonForm, TierForm};
use powertab_core::kernel::money::{parse_hundredths, parse_kwh_as_wh};
use powertab_core::tariff::{
    format_price_units, parse_price_units, parse_schedule, Fee, Season, TierBasis, TierPrice, Tiers,
};

/// `MM-DD` as (month, day).
fn month_day(text: &str) -> Option<(u32, u32)> {
    let (m, d) = text.trim().split_once('-')?;
    Some((m.parse().ok()?, d.parse().ok()?))
}

/// The filled-in season rows; none means flat all year.
pub fn seasons(rows: &[SeasonForm], fields: &mut Vec<String>) -> Vec<Season> {
    let mut seasons = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if row.schedule.trim().is_empty() && row.holiday.trim().is_empty() {
            continue;
        }
        let key = |f: &str| format!("seasons.{i}.{f}");
        let from = month_day(&row.from).or_else(|| {
            fields.push(key("from"));
            None
        });
        let to = month_day(&row.to).or_else(|| {
            fields.push(key("to"));
            None
        });
        let workday = parse_schedule(&row.schedule)
            .map_err(|_| fields.push(key("schedule")))
            .ok();
        let holiday = match row.holiday.trim() {
            "" => None,
            text => parse_schedule(text)
                .map_err(|_| fields.push(key("holiday")))
                .ok(),
        };
        if let (Some(from), Some(to), Some(workday)) = (from, to, workday) {
            seasons.push(Season {
                from,
                to,
                workday,
                holiday,
            });
        }
    }
    seasons
}

/// The tiers, when a basis is chosen.
pub fn tiers(basis: &str, rows: &[TierForm], fields: &mut Vec<String>) -> Option<Tiers> {
    let basis = match basis {
        "" => return None,
        "monthly" => TierBasis::Monthly,
        "annual" => TierBasis::Annual,
        _ => {
            fields.push("tier_basis".into());
            return None;
        }
    };
    let mut tiers = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if row.from_kwh.trim().is_empty() && row.price.trim().is_empty() {
            continue;
        }
        let key = |f: &str| format!("tiers.{i}.{f}");
        let from_wh = parse_kwh_as_wh(&row.from_kwh)
            .map_err(|_| fields.push(key("from_kwh")))
            .ok();
        let units = parse_price_units(&row.price)
            .map_err(|_| fields.push(key("price")))
            .ok();
        let price = match (row.kind.as_str(), units) {
            ("absolute", Some(u)) => Some(TierPrice::Absolute(u)),
            ("add_on" | "", Some(u)) => Some(TierPrice::AddOn(u)),
            (_, Some(_)) => {
                fields.push(key("kind"));
                None
            }
            (_, None) => None,
        };
        if let (Some(from_wh), Some(price)) = (from_wh, price) {
            tiers.push(powertab_core::tariff::Tier { from_wh, price });
        }
    }
    Some(Tiers { basis, tiers })
}

/// The filled-in fee rows.
pub fn fees(rows: &[FeeForm], fields: &mut Vec<String>) -> Vec<Fee> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| !r.amount.trim().is_empty())
        .filter_map(|(i, row)| {
            let fen = parse_hundredths(&row.amount)
                .map_err(|_| fields.push(format!("fees.{i}.amount")))
                .ok()?;
            match row.per.as_str() {
                "day" => Some(Fee::Day(fen)),
                "month" | "" => Some(Fee::Month(fen)),
                _ => {
                    fields.push(format!("fees.{i}.per"));
                    None
                }
            }
        })
        .collect()
}

/// One line per tier for the plan card.
pub fn describe_tiers(tiers: Option<&Tiers>) -> Vec<String> {
    let Some(tiers) = tiers else { return vec![] };
    let basis = match tiers.basis {
        TierBasis::Monthly => "monthly",
        TierBasis::Annual => "annual",
    };
    tiers
        .tiers
        .iter()
        .map(|t| {
            let kwh = powertab_core::kernel::money::format_wh_as_kwh(t.from_wh);
            match t.price {
                TierPrice::AddOn(u) => format!("{basis} ≥ {kwh} kWh: +{}", format_price_units(u)),
                TierPrice::Absolute(u) => format!("{basis} ≥ {kwh} kWh: {}", format_price_units(u)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_rows_are_ignored_and_bad_cells_named() {
        let mut fields = vec![];
        let rows = vec![
            SeasonForm {
                from: "07-01".into(),
                to: "08-31".into(),
                schedule: "00:00 谷, 12:00 尖, 14:00 谷".into(),
                holiday: String::new(),
            },
            SeasonForm::default(),
            SeasonForm {
                from: "9/1".into(),
                to: "06-30".into(),
                schedule: "00:00 谷".into(),
                holiday: "nonsense".into(),
            },
        ];
        let seasons = seasons(&rows, &mut fields);
        assert_eq!(seasons.len(), 1);
        assert_eq!((seasons[0].from, seasons[0].to), ((7, 1), (8, 31)));
        assert_eq!(fields, vec!["seasons.2.from", "seasons.2.holiday"]);

        let mut fields = vec![];
        let tier_rows = vec![
            TierForm {
                from_kwh: "0".into(),
                kind: "add_on".into(),
                price: "0".into(),
            },
            TierForm {
                from_kwh: "240".into(),
                kind: "add_on".into(),
                price: "0.05".into(),
            },
            TierForm::default(),
            TierForm {
                from_kwh: "400".into(),
                kind: "weird".into(),
                price: "0.3".into(),
            },
        ];
        let t = tiers("monthly", &tier_rows, &mut fields).unwrap();
        assert_eq!(t.tiers.len(), 2);
        assert_eq!(t.tiers[1].from_wh, 240_000);
        assert_eq!(t.tiers[1].price, TierPrice::AddOn(500));
        assert_eq!(fields, vec!["tiers.3.kind"]);
        assert!(tiers("", &tier_rows, &mut fields).is_none());

        let mut fields = vec![];
        let fee_rows = vec![
            FeeForm {
                per: "day".into(),
                amount: "2.5".into(),
            },
            FeeForm {
                per: "month".into(),
                amount: "".into(),
            },
            FeeForm {
                per: "month".into(),
                amount: "x".into(),
            },
        ];
        assert_eq!(fees(&fee_rows, &mut fields), vec![Fee::Day(250)]);
        assert_eq!(fields, vec!["fees.2.amount"]);
    }
}
