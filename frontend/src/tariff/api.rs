//! Server functions of the tariff pages: plans and versions, and the preview that prices a
//! sample month.

use super::views::*;
use crate::web::WebError;
use leptos::prelude::*;

#[server(prefix = "/sfn", endpoint = "plans")]
pub async fn list_plans() -> Result<Vec<PlanView>, WebError> {
    super::server::list_plans().await
}

#[server(prefix = "/sfn", endpoint = "plan_create")]
pub async fn create_plan(
    csrf: String,
    name: String,
    description: String,
    #[server(flatten)] version: VersionForm,
) -> Result<(), WebError> {
    super::server::create_plan(csrf, name, description, version).await
}

#[server(prefix = "/sfn", endpoint = "plan_version")]
pub async fn add_plan_version(
    csrf: String,
    plan_id: String,
    #[server(flatten)] version: VersionForm,
) -> Result<(), WebError> {
    super::server::add_plan_version(csrf, plan_id, version).await
}

#[server(prefix = "/sfn", endpoint = "tariff_preview")]
pub async fn tariff_preview(
    #[server(flatten)] query: PreviewQuery,
) -> Result<PreviewView, WebError> {
    super::server::preview::tariff_preview(query).await
}
