//! View types of the tariff pages: plans with their versions, the version form's repeated rows
//! (seasons, tiers, fees) and the tariff preview.

use serde::{Deserialize, Serialize};

/// A tariff plan for the tariff page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub versions: Vec<VersionView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VersionView {
    pub effective: String,
    /// (period, yuan/kWh)
    pub prices: Vec<(String, String)>,
    /// One line per season: ("01-01 – 12-31", workday segments, holiday segments).
    pub seasons: Vec<SeasonView>,
    /// "from 240 kWh (monthly): +0.0500" per tier.
    pub tiers: Vec<String>,
    /// "2.00 yuan per day" per fee, as (per, yuan).
    pub fees: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeasonView {
    pub range: String,
    /// (start minute, end minute, period)
    pub workday: Vec<(u16, u16, String)>,
    pub holiday: Option<Vec<(u16, u16, String)>>,
}

/// The form fields of a tariff version (prices in yuan/kWh; empty = period unused). Repeated
/// rows are named `seasons[0][from]`, `tiers[1][price]`, `fees[0][amount]`; empty rows are
/// ignored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VersionForm {
    pub effective: String,
    #[serde(default)]
    pub price_sharp: String,
    #[serde(default)]
    pub price_peak: String,
    #[serde(default)]
    pub price_flat: String,
    #[serde(default)]
    pub price_valley: String,
    #[serde(default)]
    pub price_deep_valley: String,
    /// No seasons at all: flat all day, all year.
    #[serde(default)]
    pub seasons: Vec<SeasonForm>,
    /// `monthly`, `annual`, or empty for no tiers.
    #[serde(default)]
    pub tier_basis: String,
    #[serde(default)]
    pub tiers: Vec<TierForm>,
    #[serde(default)]
    pub fees: Vec<FeeForm>,
}

/// One season: a date range (`MM-DD`) with its day schedules as switch points
/// (`00:00 谷, 08:00 平`); an empty holiday schedule means "as on workdays".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SeasonForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub schedule: String,
    #[serde(default)]
    pub holiday: String,
}

/// A tier from `from_kwh` of cumulative energy: `add_on` to the period price or `absolute`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TierForm {
    #[serde(default)]
    pub from_kwh: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub price: String,
}

/// A fixed service fee in yuan `per` `day` or `month`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeeForm {
    #[serde(default)]
    pub per: String,
    #[serde(default)]
    pub amount: String,
}

/// One plan's result in the preview.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PreviewRow {
    pub plan: String,
    pub energy_kwh: String,
    pub total_yuan: String,
    /// Against the first plan, e.g. `+12.30`; empty for the first.
    pub difference_yuan: String,
    /// (period, kWh, yuan)
    pub by_period: Vec<(String, String, String)>,
}

/// The preview page: what it offers to choose and, when asked, the results.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PreviewView {
    pub plans: Vec<(String, String)>,
    /// (shop id, label, the plan of its first meter)
    pub shops: Vec<(String, String, String)>,
    pub results: Vec<PreviewRow>,
    /// The plans compared (after a shop filled in its own plan).
    pub chosen: Vec<String>,
    /// The 24 hourly Wh used, for the profile bar.
    pub hourly_wh: Vec<i64>,
}

/// The preview query: a shop (its plan is plan A when none is chosen), up to three plans, a
/// shop type's daily shape scaled to `daily_kwh` (or 24 custom hourly kWh), a start date and a
/// number of days.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PreviewQuery {
    pub shop: String,
    pub plan_a: String,
    pub plan_b: String,
    pub plan_c: String,
    pub profile: String,
    pub daily_kwh: String,
    pub hourly_kwh: String,
    pub start: String,
    pub days: String,
}
