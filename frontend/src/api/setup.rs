//! Server functions and view types of the company settings page (defaults every meter
//! inherits, the holiday calendar) and of the tariff preview.

use super::WebError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Company defaults as the form shows them: money in yuan, quiet hours as `HH:MM`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettingsView {
    pub alarm1: String,
    pub alarm2: String,
    pub overdraft_limit: String,
    pub restore_level: String,
    pub quiet_start: String,
    pub quiet_end: String,
    pub no_trip_on_holidays: bool,
    pub arrears_cap: String,
    /// Alarm limits, minutes.
    pub stale_meter_min: String,
    pub offline_gateway_min: String,
    pub time_zone: String,
    pub year: i32,
    /// (date, `holiday` | `workday`, name) of `year`.
    pub days: Vec<(String, String, String)>,
}

#[server(prefix = "/sfn", endpoint = "settings_get")]
pub async fn get_settings(year: String) -> Result<SettingsView, WebError> {
    crate::server::setup::get_settings(year).await
}

/// The defaults form (checkboxes are present only when ticked).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SettingsForm {
    pub alarm1: String,
    pub alarm2: String,
    pub overdraft_limit: String,
    pub restore_level: String,
    #[serde(default)]
    pub quiet_start: String,
    #[serde(default)]
    pub quiet_end: String,
    #[serde(default)]
    pub no_trip_on_holidays: Option<String>,
    pub arrears_cap: String,
    #[serde(default)]
    pub stale_meter_min: String,
    #[serde(default)]
    pub offline_gateway_min: String,
}

#[server(prefix = "/sfn", endpoint = "settings_save")]
pub async fn save_settings(
    csrf: String,
    #[server(flatten)] form: SettingsForm,
) -> Result<(), WebError> {
    crate::server::setup::save_settings(csrf, form).await
}

#[server(prefix = "/sfn", endpoint = "calendar_set")]
pub async fn set_calendar_day(
    csrf: String,
    day: String,
    kind: String,
    #[server(default)] name: String,
) -> Result<(), WebError> {
    crate::server::setup::set_calendar_day(csrf, day, kind, name).await
}

#[server(prefix = "/sfn", endpoint = "calendar_clear")]
pub async fn clear_calendar_day(csrf: String, day: String) -> Result<(), WebError> {
    crate::server::setup::clear_calendar_day(csrf, day).await
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

#[server(prefix = "/sfn", endpoint = "tariff_preview")]
pub async fn tariff_preview(
    #[server(flatten)] query: PreviewQuery,
) -> Result<PreviewView, WebError> {
    crate::server::setup::tariff_preview(query).await
}
