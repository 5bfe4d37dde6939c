//! Shop tenants' own REST (issue 14: Tenant experience), what their phone pages also show:
//! `GET /api/v1/accounts/{id}/home` (balance, meters' read-back, power state, alarm level, days
//! left, the company's rules), `GET /api/v1/accounts/{id}/usage` (by day or month, TOU split),
//! `POST /api/v1/accounts/{id}/emergency-credit/self` (the tenant's own 应急电, within the
//! company's rules), and their payment orders. Every id of an account the caller may not see
//! answers 404.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiQuery, Session};
use crate::app::AppState;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use powertab_core::payments::orders::{self, Order};
use powertab_core::power::emergency::EmergencyCredit;
use powertab_core::selfservice::{self, Home, UsageBy, UsageSlot};
use powertab_core::CoreError;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(home))
        .routes(routes!(usage))
        .routes(routes!(self_emergency))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
}

/// An account's home as its tenant sees it.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/home", tag = "tenant", params(("id" = Uuid, Path)),
    responses((status = 200, body = Home), (status = 404, body = ErrorBody)))]
async fn home(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Home>> {
    Ok(Json(
        selfservice::home(&mut session.tx, &session.principal, id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct UsageQuery {
    /// `day` (default) or `month`.
    #[serde(default)]
    by: Option<String>,
    /// How many days or months up to today (1–62; default 14 days or 12 months).
    #[serde(default)]
    count: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UsageList {
    items: Vec<UsageSlot>,
}

/// Usage by local day or month with the TOU split (empty slots are 0).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/usage", tag = "tenant",
    params(("id" = Uuid, Path), UsageQuery),
    responses((status = 200, body = UsageList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn usage(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageList>> {
    let (by, default_count) = match q.by.as_deref() {
        None | Some("day") => (UsageBy::Day, 14),
        Some("month") => (UsageBy::Month, 12),
        Some(_) => return Err(CoreError::field("by", "day or month").into()),
    };
    let items = selfservice::usage(
        &mut session.tx,
        &session.principal,
        id,
        by,
        q.count.unwrap_or(default_count),
    )
    .await?;
    Ok(Json(UsageList { items }))
}

/// The tenant grants themselves the company's emergency credit (only where the company allows
/// it; once a month; audited).
#[utoipa::path(post, path = "/api/v1/accounts/{id}/emergency-credit/self", tag = "tenant",
    params(("id" = Uuid, Path)),
    responses((status = 201, body = EmergencyCredit), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn self_emergency(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<EmergencyCredit>)> {
    let granted = selfservice::grant_emergency(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(granted)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OrderList {
    items: Vec<Order>,
}

/// An account's newest payment orders (50).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/payment-orders", tag = "payments",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderList), (status = 404, body = ErrorBody)))]
async fn list_orders(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<OrderList>> {
    let items = orders::of_account(&mut session.tx, &session.principal, id, 50).await?;
    Ok(Json(OrderList { items }))
}

/// One payment order (its progress: created → paid → credited → delivered).
#[utoipa::path(get, path = "/api/v1/payment-orders/{id}", tag = "payments",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody)))]
async fn get_order(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Order>> {
    Ok(Json(
        orders::get(&mut session.tx, &session.principal, id).await?,
    ))
}
