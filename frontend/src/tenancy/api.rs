//! Server functions of sign-in, the platform's companies, users and rights, the audit log and
//! the company settings page. Reads return plain view types; changes are posted by ordinary HTML
//! forms (so they work without JavaScript), check the CSRF field, call a core service, and answer
//! with a redirect (see `crate::web::server`).

use super::views::*;
use crate::web::PageView;
use crate::web::WebError;
use leptos::prelude::*;

// ---------------------------------------------------------------------------------------------
// Reads

/// The current session, or `None` when nobody is logged in.
#[server(prefix = "/sfn", endpoint = "session")]
pub async fn get_session() -> Result<Option<SessionView>, WebError> {
    super::server::session_view().await
}

#[server(prefix = "/sfn", endpoint = "companies")]
pub async fn list_companies(q: String, status: String) -> Result<Vec<CompanyRow>, WebError> {
    super::server::list_companies(q, status).await
}

#[server(prefix = "/sfn", endpoint = "company")]
pub async fn get_company(id: i64) -> Result<CompanyRow, WebError> {
    super::server::get_company(id).await
}

/// The company's newest master key version for meter-side meters.
#[server(prefix = "/sfn", endpoint = "company_master_key")]
pub async fn get_company_master_key(id: i64) -> Result<Option<i32>, WebError> {
    super::server::get_company_master_key(id).await
}

/// Rotates the company's master key (platform admins).
#[server(prefix = "/sfn", endpoint = "company_master_key_rotate")]
pub async fn rotate_company_master_key(
    csrf: String,
    id: i64,
    confirm: String,
) -> Result<(), WebError> {
    super::server::rotate_company_master_key(csrf, id, confirm).await
}

#[server(prefix = "/sfn", endpoint = "users")]
pub async fn list_users(
    q: String,
    role: String,
    status: String,
    cursor: String,
) -> Result<PageView<UserRow>, WebError> {
    super::server::list_users(q, role, status, cursor).await
}

#[server(prefix = "/sfn", endpoint = "user")]
pub async fn get_user(id: String) -> Result<UserRow, WebError> {
    super::server::get_user(id).await
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
    super::server::list_audit(platform, action, actor, from, to, cursor).await
}

#[server(prefix = "/sfn", endpoint = "login")]
pub async fn login(company: String, username: String, password: String) -> Result<(), WebError> {
    super::server::login(company, username, password).await
}

#[server(prefix = "/sfn", endpoint = "logout")]
pub async fn logout(csrf: String) -> Result<(), WebError> {
    super::server::logout(csrf).await
}

#[server(prefix = "/sfn", endpoint = "language")]
pub async fn set_language(lang: String) -> Result<(), WebError> {
    super::server::set_language(lang)
}

#[server(prefix = "/sfn", endpoint = "password")]
pub async fn change_password(
    csrf: String,
    current_password: String,
    new_password: String,
) -> Result<(), WebError> {
    super::server::change_password(csrf, current_password, new_password).await
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
    super::server::create_company(
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
    super::server::company_status(csrf, id, action).await
}

#[server(prefix = "/sfn", endpoint = "company_admin")]
pub async fn create_company_admin(
    csrf: String,
    id: i64,
    username: String,
    display_name: String,
    password: String,
) -> Result<(), WebError> {
    super::server::create_company_admin(csrf, id, username, display_name, password).await
}

#[server(prefix = "/sfn", endpoint = "company_enter")]
pub async fn enter_company(csrf: String, id: i64) -> Result<(), WebError> {
    super::server::enter_company(csrf, id).await
}

/// Platform staff inside a company go back to the platform view.
#[server(prefix = "/sfn", endpoint = "company_leave")]
pub async fn leave_company(csrf: String) -> Result<(), WebError> {
    super::server::leave_company(csrf).await
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
    super::server::create_user(
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
    super::server::update_user(
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
    super::server::user_status(csrf, id, action).await
}

#[server(prefix = "/sfn", endpoint = "user_password")]
pub async fn reset_user_password(
    csrf: String,
    id: String,
    password: String,
) -> Result<(), WebError> {
    super::server::reset_user_password(csrf, id, password).await
}

#[server(prefix = "/sfn", endpoint = "settings_get")]
pub async fn get_settings(year: String) -> Result<SettingsView, WebError> {
    super::server::settings::get_settings(year).await
}

#[server(prefix = "/sfn", endpoint = "settings_save")]
pub async fn save_settings(
    csrf: String,
    #[server(flatten)] form: SettingsForm,
) -> Result<(), WebError> {
    super::server::settings::save_settings(csrf, form).await
}

#[server(prefix = "/sfn", endpoint = "calendar_set")]
pub async fn set_calendar_day(
    csrf: String,
    day: String,
    kind: String,
    #[server(default)] name: String,
) -> Result<(), WebError> {
    super::server::settings::set_calendar_day(csrf, day, kind, name).await
}

#[server(prefix = "/sfn", endpoint = "calendar_clear")]
pub async fn clear_calendar_day(csrf: String, day: String) -> Result<(), WebError> {
    super::server::settings::clear_calendar_day(csrf, day).await
}
