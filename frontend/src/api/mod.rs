//! Server functions: the web app's only way to the server. Reads return plain view types;
//! changes are posted by ordinary HTML forms (so they work without JavaScript), check the CSRF
//! field, call a core service, and always answer with a redirect: to the next page on success,
//! or back to the form's page with `?error=<code>` (and field names) on failure.
//! Bodies stay thin: extract the session, call core, convert the error.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

mod error;
mod field;
mod setup;
pub use error::WebError;
pub use field::*;
pub use setup::*;

/// What a refused form had in it, handed back so the page shows it again (never passwords or
/// the CSRF token), with the fields the refusal named.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeptForm {
    pub values: std::collections::BTreeMap<String, String>,
}

impl KeptForm {
    /// The kept value of `field`, or `default` when nothing was kept.
    pub fn value_or(&self, field: &str, default: &str) -> String {
        self.values
            .get(field)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// Whether `field` was `value` in the refused form (for selects).
    pub fn chose(&self, field: &str, value: &str) -> bool {
        self.values.get(field).is_some_and(|v| v == value)
    }
}

/// Who is logged in, as pages need it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionView {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub company_slug: Option<String>,
    pub company_name: Option<String>,
    pub is_platform: bool,
    pub must_change_password: bool,
    /// Repeated in every form as the hidden `csrf` field.
    pub csrf: String,
    pub can_administer: bool,
    pub can_export: bool,
    pub can_write_platform: bool,
    /// May change the property setup (admins, operators with the `settings` right).
    pub can_settings: bool,
    /// Company staff: open field alarms (stale meters, offline gateways), shown in the header.
    pub field_alarms_open: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CompanyRow {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub time_zone: String,
    pub max_meters: i32,
    pub max_gateways: i32,
    pub max_operators: i32,
    pub created: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub phone: String,
    pub role: String,
    pub status: String,
    pub must_change_password: bool,
    pub rights: Vec<String>,
    pub building_ids: Vec<String>,
    pub created: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub source_ip: String,
    pub action: String,
    pub target: String,
    pub change: String,
}

/// The property tree for the property page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildingView {
    pub id: String,
    pub name: String,
    pub address: String,
    pub shop_count: i64,
    /// (floor id, name, shop count)
    pub floors: Vec<(String, String, i64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShopView {
    pub building: String,
    pub floor: String,
    pub number: String,
    pub name: String,
    pub area_m2: String,
    pub contact: String,
    pub status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PropertyView {
    pub buildings: Vec<BuildingView>,
    pub shops: Vec<ShopView>,
    /// What a refused add-shop form had in it.
    #[serde(default)]
    pub kept_shop: KeptForm,
}

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

/// An import wizard upload and its report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImportView {
    pub id: String,
    pub kind: String,
    pub filename: String,
    pub rows: usize,
    pub created: usize,
    /// (row, column, message)
    pub errors: Vec<(usize, String, String)>,
    pub confirmed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The rights an operator can be granted, in display order (names of `powertab_core::tenancy::roles::Right`).
pub const RIGHTS: [&str; 8] = [
    "top_up",
    "refund",
    "reversal",
    "approve",
    "trip_close",
    "keep_power",
    "settings",
    "export",
];

// ---------------------------------------------------------------------------------------------
// Reads

/// The current session, or `None` when nobody is logged in.
#[server(prefix = "/sfn", endpoint = "session")]
pub async fn get_session() -> Result<Option<SessionView>, WebError> {
    crate::server::session_view().await
}

#[server(prefix = "/sfn", endpoint = "companies")]
pub async fn list_companies(q: String, status: String) -> Result<Vec<CompanyRow>, WebError> {
    crate::server::list_companies(q, status).await
}

#[server(prefix = "/sfn", endpoint = "company")]
pub async fn get_company(id: i64) -> Result<CompanyRow, WebError> {
    crate::server::get_company(id).await
}

#[server(prefix = "/sfn", endpoint = "users")]
pub async fn list_users(
    q: String,
    role: String,
    status: String,
    cursor: String,
) -> Result<PageView<UserRow>, WebError> {
    crate::server::list_users(q, role, status, cursor).await
}

#[server(prefix = "/sfn", endpoint = "user")]
pub async fn get_user(id: String) -> Result<UserRow, WebError> {
    crate::server::get_user(id).await
}

#[server(prefix = "/sfn", endpoint = "audit")]
pub async fn list_audit(
    platform: bool,
    action: String,
    actor: String,
    from: String,
    to: String,
    cursor: String,
) -> Result<PageView<AuditRow>, WebError> {
    crate::server::list_audit(platform, action, actor, from, to, cursor).await
}

#[server(prefix = "/sfn", endpoint = "property")]
pub async fn get_property(q: String, building: String) -> Result<PropertyView, WebError> {
    crate::server::get_property(q, building).await
}

#[server(prefix = "/sfn", endpoint = "plans")]
pub async fn list_plans() -> Result<Vec<PlanView>, WebError> {
    crate::server::list_plans().await
}

#[server(prefix = "/sfn", endpoint = "import_upload")]
pub async fn get_import(id: String) -> Result<ImportView, WebError> {
    crate::server::get_import(id).await
}

// ---------------------------------------------------------------------------------------------
// Changes (HTML form posts)

#[server(prefix = "/sfn", endpoint = "building_create")]
pub async fn create_building(csrf: String, name: String, address: String) -> Result<(), WebError> {
    crate::server::create_building(csrf, name, address).await
}

#[server(prefix = "/sfn", endpoint = "floor_create")]
pub async fn create_floor(csrf: String, building_id: String, name: String) -> Result<(), WebError> {
    crate::server::create_floor(csrf, building_id, name).await
}

#[server(prefix = "/sfn", endpoint = "shop_create")]
pub async fn create_shop(
    csrf: String,
    floor_id: String,
    number: String,
    name: String,
    area_m2: String,
    contact_name: String,
    contact_phone: String,
) -> Result<(), WebError> {
    crate::server::create_shop(
        csrf,
        floor_id,
        number,
        name,
        area_m2,
        contact_name,
        contact_phone,
    )
    .await
}

#[server(prefix = "/sfn", endpoint = "plan_create")]
pub async fn create_plan(
    csrf: String,
    name: String,
    description: String,
    #[server(flatten)] version: VersionForm,
) -> Result<(), WebError> {
    crate::server::create_plan(csrf, name, description, version).await
}

#[server(prefix = "/sfn", endpoint = "plan_version")]
pub async fn add_plan_version(
    csrf: String,
    plan_id: String,
    #[server(flatten)] version: VersionForm,
) -> Result<(), WebError> {
    crate::server::add_plan_version(csrf, plan_id, version).await
}

/// Imports a checked upload for real.
#[server(prefix = "/sfn", endpoint = "import_confirm")]
pub async fn confirm_import(csrf: String, id: String) -> Result<(), WebError> {
    crate::server::confirm_import(csrf, id).await
}

#[server(prefix = "/sfn", endpoint = "login")]
pub async fn login(company: String, username: String, password: String) -> Result<(), WebError> {
    crate::server::login(company, username, password).await
}

#[server(prefix = "/sfn", endpoint = "logout")]
pub async fn logout(csrf: String) -> Result<(), WebError> {
    crate::server::logout(csrf).await
}

#[server(prefix = "/sfn", endpoint = "language")]
pub async fn set_language(lang: String) -> Result<(), WebError> {
    crate::server::set_language(lang)
}

#[server(prefix = "/sfn", endpoint = "password")]
pub async fn change_password(
    csrf: String,
    current_password: String,
    new_password: String,
) -> Result<(), WebError> {
    crate::server::change_password(csrf, current_password, new_password).await
}

#[server(prefix = "/sfn", endpoint = "company_create")]
pub async fn create_company(
    csrf: String,
    slug: String,
    name: String,
    time_zone: String,
    max_meters: String,
    max_gateways: String,
    max_operators: String,
) -> Result<(), WebError> {
    crate::server::create_company(
        csrf,
        slug,
        name,
        time_zone,
        [max_meters, max_gateways, max_operators],
    )
    .await
}

#[server(prefix = "/sfn", endpoint = "company_status")]
pub async fn company_status(csrf: String, id: i64, action: String) -> Result<(), WebError> {
    crate::server::company_status(csrf, id, action).await
}

#[server(prefix = "/sfn", endpoint = "company_admin")]
pub async fn create_company_admin(
    csrf: String,
    id: i64,
    username: String,
    display_name: String,
    password: String,
) -> Result<(), WebError> {
    crate::server::create_company_admin(csrf, id, username, display_name, password).await
}

#[server(prefix = "/sfn", endpoint = "company_enter")]
pub async fn enter_company(csrf: String, id: i64) -> Result<(), WebError> {
    crate::server::enter_company(csrf, id).await
}

/// Platform staff inside a company go back to the platform view.
#[server(prefix = "/sfn", endpoint = "company_leave")]
pub async fn leave_company(csrf: String) -> Result<(), WebError> {
    crate::server::leave_company(csrf).await
}

/// Rights arrive as one optional checkbox field each.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RightBoxes {
    #[serde(default)]
    pub right_top_up: Option<String>,
    #[serde(default)]
    pub right_refund: Option<String>,
    #[serde(default)]
    pub right_reversal: Option<String>,
    #[serde(default)]
    pub right_approve: Option<String>,
    #[serde(default)]
    pub right_trip_close: Option<String>,
    #[serde(default)]
    pub right_keep_power: Option<String>,
    #[serde(default)]
    pub right_settings: Option<String>,
    #[serde(default)]
    pub right_export: Option<String>,
}

impl RightBoxes {
    /// The names of the ticked rights.
    pub fn ticked(&self) -> Vec<&'static str> {
        let boxes = [
            &self.right_top_up,
            &self.right_refund,
            &self.right_reversal,
            &self.right_approve,
            &self.right_trip_close,
            &self.right_keep_power,
            &self.right_settings,
            &self.right_export,
        ];
        RIGHTS
            .iter()
            .zip(boxes)
            .filter(|(_, b)| b.is_some())
            .map(|(r, _)| *r)
            .collect()
    }
}

#[server(prefix = "/sfn", endpoint = "user_create")]
pub async fn create_user(
    csrf: String,
    username: String,
    display_name: String,
    phone: String,
    role: String,
    password: String,
    #[server(flatten)]
    #[server(default)]
    rights: RightBoxes,
) -> Result<(), WebError> {
    crate::server::create_user(
        csrf,
        username,
        display_name,
        phone,
        role,
        password,
        rights.ticked(),
    )
    .await
}

#[server(prefix = "/sfn", endpoint = "user_update")]
pub async fn update_user(
    csrf: String,
    id: String,
    display_name: String,
    phone: String,
    role: String,
    building_ids: String,
    #[server(flatten)]
    #[server(default)]
    rights: RightBoxes,
) -> Result<(), WebError> {
    crate::server::update_user(
        csrf,
        id,
        display_name,
        phone,
        role,
        building_ids,
        rights.ticked(),
    )
    .await
}

#[server(prefix = "/sfn", endpoint = "user_status")]
pub async fn user_status(csrf: String, id: String, action: String) -> Result<(), WebError> {
    crate::server::user_status(csrf, id, action).await
}

#[server(prefix = "/sfn", endpoint = "user_password")]
pub async fn reset_user_password(
    csrf: String,
    id: String,
    password: String,
) -> Result<(), WebError> {
    crate::server::reset_user_password(csrf, id, password).await
}
