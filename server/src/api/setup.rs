//! `/api/v1/settings`, `/api/v1/calendar*`, `/api/v1/tariff-plans*`: company defaults, the
//! holiday calendar, and versioned tariff plans with the comparison preview.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::NaiveDate;
use powertab_core::kernel::xlsx::{Cell, Column, Sheet};
use powertab_core::tariff::plans::{self, NewPlan, PreviewInput, PreviewResult, TariffPlan};
use powertab_core::tariff::TariffVersion;
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::tenancy::settings::{self, CalendarDay, CompanySettings};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_calendar, set_calendar_day))
        .routes(routes!(clear_calendar_day))
        .routes(routes!(list_plans, create_plan))
        .routes(routes!(export_plans))
        .routes(routes!(get_plan))
        .routes(routes!(add_version))
        .routes(routes!(preview))
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "setup", responses((status = 200, body = CompanySettings)))]
async fn get_settings(mut session: Session) -> ApiResult<Json<CompanySettings>> {
    Ok(Json(
        settings::get(&mut session.tx, &session.principal).await?,
    ))
}

/// Replace the company defaults (alarm levels, overdraft, restore level, quiet hours, holidays).
#[utoipa::path(put, path = "/api/v1/settings", tag = "setup", request_body = CompanySettings,
    responses((status = 200, body = CompanySettings), (status = 422, body = ErrorBody)))]
async fn put_settings(
    mut session: Session,
    ApiJson(input): ApiJson<CompanySettings>,
) -> ApiResult<Json<CompanySettings>> {
    let saved = settings::update(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok(Json(saved))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct YearQuery {
    year: Option<i32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CalendarList {
    pub items: Vec<CalendarDay>,
    pub next_cursor: Option<String>,
}

/// Holidays and make-up workdays, optionally of one `year`.
#[utoipa::path(get, path = "/api/v1/calendar", params(YearQuery), tag = "setup", responses((status = 200, body = CalendarList)))]
async fn list_calendar(
    mut session: Session,
    ApiQuery(q): ApiQuery<YearQuery>,
) -> ApiResult<Json<CalendarList>> {
    let items = settings::calendar_days(&mut session.tx, &session.principal, q.year).await?;
    Ok(Json(CalendarList {
        items,
        next_cursor: None,
    }))
}

/// Mark a day as a holiday or a make-up workday.
#[utoipa::path(post, path = "/api/v1/calendar", tag = "setup", request_body = CalendarDay,
    responses((status = 200, body = CalendarDay)))]
async fn set_calendar_day(
    mut session: Session,
    ApiJson(input): ApiJson<CalendarDay>,
) -> ApiResult<Json<CalendarDay>> {
    let day = settings::set_day(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok(Json(day))
}

/// Return a day to the ordinary weekday/weekend rule.
#[utoipa::path(delete, path = "/api/v1/calendar/{day}", tag = "setup", params(("day" = NaiveDate, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn clear_calendar_day(
    mut session: Session,
    Path(day): Path<NaiveDate>,
) -> ApiResult<StatusCode> {
    settings::clear_day(&mut session.tx, &session.principal, day).await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanList {
    pub items: Vec<TariffPlan>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tariff-plans", tag = "setup", responses((status = 200, body = PlanList)))]
async fn list_plans(mut session: Session) -> ApiResult<Json<PlanList>> {
    let items = plans::list(&mut session.tx, &session.principal).await?;
    Ok(Json(PlanList {
        items,
        next_cursor: None,
    }))
}

/// Create a plan with its first version.
#[utoipa::path(post, path = "/api/v1/tariff-plans", tag = "setup", request_body = NewPlan,
    responses((status = 201, body = TariffPlan), (status = 422, body = ErrorBody)))]
async fn create_plan(
    mut session: Session,
    ApiJson(input): ApiJson<NewPlan>,
) -> ApiResult<(StatusCode, Json<TariffPlan>)> {
    let plan = plans::create(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// The plans and their versions as Excel: one row per version.
#[utoipa::path(get, path = "/api/v1/tariff-plans.xlsx", params(ExportLang), tag = "setup",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_plans(
    mut session: Session,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let plans = plans::list(&mut session.tx, &session.principal).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let zh = lang.lang.as_deref() != Some("en");
    let h = |a: &str, b: &str| if zh { a.to_owned() } else { b.to_owned() };
    let mut rows = Vec::new();
    for plan in &plans {
        for v in &plan.versions {
            // Prices in yuan/kWh with four decimals, as the plan states them.
            let price = |p| {
                v.prices.get(&p).map_or(Cell::Empty, |units| {
                    Cell::Text(format!("{}.{:04}", units / 10_000, units % 10_000))
                })
            };
            use powertab_core::tariff::Period::*;
            rows.push(vec![
                Cell::Text(plan.name.clone()),
                Cell::Text(v.effective.to_string()),
                price(Sharp),
                price(Peak),
                price(Flat),
                price(Valley),
                price(DeepValley),
                Cell::Int(v.seasons.len() as i64),
                Cell::Int(v.tiers.as_ref().map_or(0, |t| t.tiers.len() as i64)),
            ]);
        }
    }
    let sheet = Sheet {
        name: h("电价方案", "Tariff plans"),
        columns: vec![
            Column::new(h("方案", "Plan"), 20.0),
            Column::new(h("生效日期", "Effective"), 12.0),
            Column::new(h("尖(元/kWh)", "Sharp (yuan/kWh)"), 12.0),
            Column::new(h("峰(元/kWh)", "Peak (yuan/kWh)"), 12.0),
            Column::new(h("平(元/kWh)", "Flat (yuan/kWh)"), 12.0),
            Column::new(h("谷(元/kWh)", "Valley (yuan/kWh)"), 12.0),
            Column::new(h("深谷(元/kWh)", "Deep valley (yuan/kWh)"), 12.0),
            Column::new(h("季节数", "Seasons"), 8.0),
            Column::new(h("阶梯数", "Tiers"), 8.0),
        ],
        rows,
        totals: None,
    };
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(sheet, tz, "tariff-plans.xlsx").await
}

#[utoipa::path(get, path = "/api/v1/tariff-plans/{id}", tag = "setup", params(("id" = Uuid, Path)),
    responses((status = 200, body = TariffPlan), (status = 404, body = ErrorBody)))]
async fn get_plan(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<TariffPlan>> {
    Ok(Json(
        plans::get(&mut session.tx, &session.principal, id).await?,
    ))
}

/// Add a version from a future date (or replace a future one).
#[utoipa::path(post, path = "/api/v1/tariff-plans/{id}/versions", tag = "setup", params(("id" = Uuid, Path)),
    request_body = TariffVersion, responses((status = 200, body = TariffPlan), (status = 422, body = ErrorBody)))]
async fn add_version(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(version): ApiJson<TariffVersion>,
) -> ApiResult<Json<TariffPlan>> {
    let plan = plans::add_version(&mut session.tx, &session.principal, id, &version).await?;
    session.tx.commit().await?;
    Ok(Json(plan))
}

/// What a usage profile would cost under each plan.
#[utoipa::path(post, path = "/api/v1/tariff-plans/preview", tag = "setup", request_body = PreviewInput,
    responses((status = 200, body = Vec<PreviewResult>), (status = 422, body = ErrorBody)))]
async fn preview(
    mut session: Session,
    ApiJson(input): ApiJson<PreviewInput>,
) -> ApiResult<Json<Vec<PreviewResult>>> {
    let calendar = settings::calendar(&mut session.tx).await?;
    Ok(Json(
        plans::preview(&mut session.tx, &session.principal, &input, &calendar).await?,
    ))
}
