//! Server functions of the tenant's pages. The landing page's forms work signed out (like the
//! login form); everything under `/my` needs the tenant's session.

use super::views::*;
use crate::web::WebError;
use leptos::prelude::*;

#[server(prefix = "/sfn", endpoint = "tenant_landing")]
pub async fn get_landing(slug: String) -> Result<LandingView, WebError> {
    super::server::get_landing(slug).await
}

#[server(prefix = "/sfn", endpoint = "tenant_send_code")]
pub async fn tenant_send_code(
    company: String,
    phone: String,
    purpose: String,
    meter: String,
) -> Result<(), WebError> {
    super::server::send_code(company, phone, purpose, meter).await
}

#[server(prefix = "/sfn", endpoint = "tenant_code_login")]
pub async fn tenant_code_login(
    company: String,
    phone: String,
    code: String,
    meter: String,
) -> Result<(), WebError> {
    super::server::code_login(company, phone, code, meter).await
}

#[server(prefix = "/sfn", endpoint = "tenant_reset_password")]
pub async fn tenant_reset_password(
    company: String,
    phone: String,
    code: String,
    new_password: String,
) -> Result<(), WebError> {
    super::server::reset_password(company, phone, code, new_password).await
}

#[server(prefix = "/sfn", endpoint = "my_home")]
pub async fn get_my_home(account: String, meter: String) -> Result<MyHomeView, WebError> {
    super::server::get_my_home(account, meter).await
}

#[server(prefix = "/sfn", endpoint = "my_emergency")]
pub async fn my_emergency(csrf: String, account_id: String) -> Result<(), WebError> {
    super::server::my_emergency(csrf, account_id).await
}

#[server(prefix = "/sfn", endpoint = "my_top_up_page")]
pub async fn get_my_top_up(account: String, meter: String) -> Result<TopUpView, WebError> {
    super::server::get_my_top_up(account, meter).await
}

#[server(prefix = "/sfn", endpoint = "my_top_up")]
pub async fn my_top_up(
    csrf: String,
    account_id: String,
    amount: String,
    meter_id: Option<String>,
) -> Result<(), WebError> {
    super::server::my_top_up(csrf, account_id, amount, meter_id).await
}

#[server(prefix = "/sfn", endpoint = "my_order")]
pub async fn get_my_order(id: String) -> Result<MyOrderView, WebError> {
    super::server::get_my_order(id).await
}

#[server(prefix = "/sfn", endpoint = "my_preferences")]
pub async fn get_my_preferences() -> Result<MyPreferencesView, WebError> {
    super::server::get_my_preferences().await
}

#[server(prefix = "/sfn", endpoint = "my_preferences_save")]
pub async fn save_my_preferences(
    csrf: String,
    #[server(default)] on: Vec<String>,
) -> Result<(), WebError> {
    super::server::save_my_preferences(csrf, on).await
}
