//! `/api/v1/buildings*`, `/api/v1/floors/*`, `/api/v1/shops*`: the property tree.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use powertab_core::property::{
    self, Building, BuildingInput, Floor, FloorInput, Shop, ShopFilter, ShopInput,
};
use powertab_core::tenancy::roles::{Need, Right};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_buildings, create_building))
        .routes(routes!(get_building, update_building, delete_building))
        .routes(routes!(create_floor))
        .routes(routes!(update_floor, delete_floor))
        .routes(routes!(list_shops, create_shop))
        .routes(routes!(export_shops))
        .routes(routes!(get_shop, update_shop))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildingList {
    pub items: Vec<Building>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShopList {
    pub items: Vec<Shop>,
    pub next_cursor: Option<String>,
}

/// Buildings with their floors and shop counts.
#[utoipa::path(get, path = "/api/v1/buildings", tag = "property", responses((status = 200, body = BuildingList)))]
async fn list_buildings(mut session: Session) -> ApiResult<Json<BuildingList>> {
    let items = property::tree(&mut session.tx, &session.principal).await?;
    Ok(Json(BuildingList {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(post, path = "/api/v1/buildings", tag = "property", request_body = BuildingInput,
    responses((status = 201, body = Building), (status = 422, body = ErrorBody)))]
async fn create_building(
    mut session: Session,
    ApiJson(input): ApiJson<BuildingInput>,
) -> ApiResult<(StatusCode, Json<Building>)> {
    let building = property::create_building(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(building)))
}

#[utoipa::path(get, path = "/api/v1/buildings/{id}", tag = "property", params(("id" = Uuid, Path)),
    responses((status = 200, body = Building), (status = 404, body = ErrorBody)))]
async fn get_building(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Building>> {
    Ok(Json(
        property::building(&mut session.tx, &session.principal, id).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/buildings/{id}", tag = "property", params(("id" = Uuid, Path)),
    request_body = BuildingInput, responses((status = 200, body = Building)))]
async fn update_building(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<BuildingInput>,
) -> ApiResult<Json<Building>> {
    let building =
        property::update_building(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(building))
}

/// Delete an empty building (409 while it has shops).
#[utoipa::path(delete, path = "/api/v1/buildings/{id}", tag = "property", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_building(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    property::delete_building(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/buildings/{id}/floors", tag = "property", params(("id" = Uuid, Path)),
    request_body = FloorInput, responses((status = 201, body = Floor)))]
async fn create_floor(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<FloorInput>,
) -> ApiResult<(StatusCode, Json<Floor>)> {
    let floor = property::create_floor(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(floor)))
}

#[utoipa::path(patch, path = "/api/v1/floors/{id}", tag = "property", params(("id" = Uuid, Path)),
    request_body = FloorInput, responses((status = 200, body = Floor)))]
async fn update_floor(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<FloorInput>,
) -> ApiResult<Json<Floor>> {
    let floor = property::update_floor(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(floor))
}

#[utoipa::path(delete, path = "/api/v1/floors/{id}", tag = "property", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn delete_floor(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    property::delete_floor(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Shops filtered by `building_id`, `floor_id`, `status` and `q` (number, name, contact).
#[utoipa::path(get, path = "/api/v1/shops", params(ShopFilter), tag = "property", responses((status = 200, body = ShopList)))]
async fn list_shops(
    mut session: Session,
    ApiQuery(filter): ApiQuery<ShopFilter>,
) -> ApiResult<Json<ShopList>> {
    let items = property::shops(&mut session.tx, &session.principal, &filter).await?;
    Ok(Json(ShopList {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(post, path = "/api/v1/shops", tag = "property", request_body = ShopInput,
    responses((status = 201, body = Shop), (status = 422, body = ErrorBody)))]
async fn create_shop(
    mut session: Session,
    ApiJson(input): ApiJson<ShopInput>,
) -> ApiResult<(StatusCode, Json<Shop>)> {
    let shop = property::create_shop(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(shop)))
}

#[utoipa::path(get, path = "/api/v1/shops.xlsx", params(ShopFilter, ExportLang), tag = "property",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_shops(
    mut session: Session,
    ApiQuery(filter): ApiQuery<ShopFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let items = property::shops(&mut session.tx, &session.principal, &filter).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(
        powertab_core::import::shops_sheet(&items, lang.lang.as_deref().unwrap_or("zh")),
        tz,
        "shops.xlsx",
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/shops/{id}", tag = "property", params(("id" = Uuid, Path)),
    responses((status = 200, body = Shop), (status = 404, body = ErrorBody)))]
async fn get_shop(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Shop>> {
    Ok(Json(
        property::shop(&mut session.tx, &session.principal, id).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/shops/{id}", tag = "property", params(("id" = Uuid, Path)),
    request_body = ShopInput, responses((status = 200, body = Shop)))]
async fn update_shop(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<ShopInput>,
) -> ApiResult<Json<Shop>> {
    let shop = property::update_shop(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(shop))
}
