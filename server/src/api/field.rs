//! `/api/v1/gateways*` and `/api/v1/meters*`: the field as the company configures it.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use powertab_core::field::changes::{
    self, BusesInput, MeterRemoval, MeterSwap, MeterSwapInput, SwapResult,
};
use powertab_core::field::credentials::{self, MqttCredential};
use powertab_core::field::{
    self, BulkMeterChange, BulkReport, Gateway, GatewayFilter, GatewayInput, GatewayPatch, Meter,
    MeterFilter, MeterInput, MeterPatch,
};
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::{import, property, tariff::plans};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_gateways, create_gateway))
        .routes(routes!(export_gateways))
        .routes(routes!(get_gateway, update_gateway, remove_gateway))
        .routes(routes!(set_buses))
        .routes(routes!(suspend_gateway))
        .routes(routes!(enable_gateway))
        .routes(routes!(show_mqtt_credential, rotate_mqtt_credential))
        .routes(routes!(show_registration))
        .routes(routes!(list_meters, create_meter))
        .routes(routes!(export_meters))
        .routes(routes!(get_meter, update_meter))
        .routes(routes!(bulk_update))
        .routes(routes!(swap_meter))
        .routes(routes!(remove_meter))
        .routes(routes!(meter_history))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GatewayList {
    pub items: Vec<Gateway>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeterList {
    pub items: Vec<Meter>,
    pub next_cursor: Option<String>,
}

/// Gateways filtered by `status` and `kind`, newest first, paged with `limit` and `cursor`.
#[utoipa::path(get, path = "/api/v1/gateways", params(GatewayFilter), tag = "field", responses((status = 200, body = GatewayList)))]
async fn list_gateways(
    mut session: Session,
    ApiQuery(filter): ApiQuery<GatewayFilter>,
) -> ApiResult<Json<GatewayList>> {
    let page = field::gateways_page(&mut session.tx, &session.principal, &filter).await?;
    Ok(Json(GatewayList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Add a gateway (DTU, Modbus-TCP or MQTT) with its buses; its identity is unique platform-wide.
#[utoipa::path(post, path = "/api/v1/gateways", tag = "field", request_body = GatewayInput,
    responses((status = 201, body = Gateway), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_gateway(
    mut session: Session,
    ApiJson(input): ApiJson<GatewayInput>,
) -> ApiResult<(StatusCode, Json<Gateway>)> {
    let gateway = field::create_gateway(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(gateway)))
}

/// Gateways as Excel, one row per bus, in the import columns (MQTT credentials are not exported).
#[utoipa::path(get, path = "/api/v1/gateways.xlsx", params(ExportLang), tag = "field",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_gateways(
    mut session: Session,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let items = field::list_gateways(&mut session.tx, &session.principal).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(
        import::gateways_sheet(&items, lang.lang.as_deref().unwrap_or("zh")),
        tz,
        "gateways.xlsx",
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/gateways/{id}", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = Gateway), (status = 404, body = ErrorBody)))]
async fn get_gateway(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Gateway>> {
    Ok(Json(
        field::gateway(&mut session.tx, &session.principal, id).await?,
    ))
}

/// Suspend a gateway: ingest refuses its connections until it is enabled again.
#[utoipa::path(post, path = "/api/v1/gateways/{id}/suspend", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = Gateway)))]
async fn suspend_gateway(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Gateway>> {
    let gateway = field::set_gateway_status(&mut session.tx, &session.principal, id, false).await?;
    session.tx.commit().await?;
    Ok(Json(gateway))
}

#[utoipa::path(post, path = "/api/v1/gateways/{id}/enable", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = Gateway)))]
async fn enable_gateway(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Gateway>> {
    let gateway = field::set_gateway_status(&mut session.tx, &session.principal, id, true).await?;
    session.tx.commit().await?;
    Ok(Json(gateway))
}

/// An MQTT gateway's broker login (username = client id = identity), for configuring the
/// gateway; needs the settings right, and every look is audited. 409 for other kinds of gateway
/// or when the platform has no gateway secret.
#[utoipa::path(get, path = "/api/v1/gateways/{id}/mqtt-credential", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = MqttCredential), (status = 409, body = ErrorBody)))]
async fn show_mqtt_credential(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<MqttCredential>> {
    let secret = state.config.ingest.gateway_secret.as_ref();
    let credential = credentials::show(&mut session.tx, &session.principal, secret, id).await?;
    session.tx.commit().await?;
    Ok(Json(credential))
}

/// A DTU's registration bytes (a credential: they may hold a secret). Gateway answers, lists,
/// exports and audit snapshots never carry them; this needs the settings right of a user not
/// limited to buildings, and every look is audited.
#[utoipa::path(get, path = "/api/v1/gateways/{id}/registration", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = field::Registration), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn show_registration(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<field::Registration>> {
    let registration = field::reveal_registration(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(Json(registration))
}

/// Issue an MQTT gateway a new credential: ingest replaces it at the broker within seconds, and
/// the old one stops working (a connected gateway is disconnected).
#[utoipa::path(post, path = "/api/v1/gateways/{id}/mqtt-credential", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = MqttCredential), (status = 409, body = ErrorBody)))]
async fn rotate_mqtt_credential(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<MqttCredential>> {
    let secret = state.config.ingest.gateway_secret.as_ref();
    let credential = credentials::rotate(&mut session.tx, &session.principal, secret, id).await?;
    session.tx.commit().await?;
    Ok(Json(credential))
}

/// Meters filtered by `gateway_id`, `building_id`, `model`, `prepayment_mode`, `status`, `q`;
/// newest first, paged with `limit` (≤ 500) and `cursor`.
#[utoipa::path(get, path = "/api/v1/meters", params(MeterFilter), tag = "field", responses((status = 200, body = MeterList)))]
async fn list_meters(
    mut session: Session,
    ApiQuery(filter): ApiQuery<MeterFilter>,
) -> ApiResult<Json<MeterList>> {
    let page = field::meters_page(&mut session.tx, &session.principal, &filter).await?;
    Ok(Json(MeterList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Add a meter to a bus (422 per field; more than 32 on a bus needs `accept_crowded_bus`).
#[utoipa::path(post, path = "/api/v1/meters", tag = "field", request_body = MeterInput,
    responses((status = 201, body = Meter), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_meter(
    mut session: Session,
    ApiJson(input): ApiJson<MeterInput>,
) -> ApiResult<(StatusCode, Json<Meter>)> {
    let meter = field::create_meter(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(meter)))
}

#[utoipa::path(get, path = "/api/v1/meters.xlsx", params(MeterFilter, ExportLang), tag = "field",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_meters(
    mut session: Session,
    ApiQuery(filter): ApiQuery<MeterFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let items = field::meters(&mut session.tx, &session.principal, &filter).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let shops = property::shops(&mut session.tx, &session.principal, &Default::default())
        .await?
        .into_iter()
        .map(|s| (s.id, (s.building_name, s.number)))
        .collect();
    let plans = plans::list(&mut session.tx, &session.principal)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let sheet = import::meters_sheet(&items, &shops, &plans, lang.lang.as_deref().unwrap_or("zh"));
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(sheet, tz, "meters.xlsx").await
}

#[utoipa::path(get, path = "/api/v1/meters/{id}", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = Meter), (status = 404, body = ErrorBody)))]
async fn get_meter(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Meter>> {
    Ok(Json(
        field::meter(&mut session.tx, &session.principal, id).await?,
    ))
}

/// Change a meter: CT/PT, prepayment mode, role, feeder, shop, tariff plan, alarm levels
/// (`null` clears the optional ones).
#[utoipa::path(patch, path = "/api/v1/meters/{id}", tag = "field", params(("id" = Uuid, Path)),
    request_body = MeterPatch, responses((status = 200, body = Meter), (status = 422, body = ErrorBody)))]
async fn update_meter(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(patch): ApiJson<MeterPatch>,
) -> ApiResult<Json<Meter>> {
    let meter = field::update_meter(&mut session.tx, &session.principal, id, &patch).await?;
    session.tx.commit().await?;
    Ok(Json(meter))
}

/// Apply one change to many meters (tariff plan, alarm levels, prepayment mode): all or none.
#[utoipa::path(post, path = "/api/v1/meters/bulk", tag = "field", request_body = BulkMeterChange,
    responses((status = 200, body = BulkReport), (status = 422, body = ErrorBody)))]
async fn bulk_update(
    mut session: Session,
    ApiJson(change): ApiJson<BulkMeterChange>,
) -> ApiResult<Json<BulkReport>> {
    let report = field::bulk_update(&mut session.tx, &session.principal, &change).await?;
    if report.committed {
        session.tx.commit().await?;
    }
    Ok(Json(report))
}

/// Change a gateway's name, registration bytes, heartbeat or host.
#[utoipa::path(patch, path = "/api/v1/gateways/{id}", tag = "field", params(("id" = Uuid, Path)),
    request_body = GatewayPatch, responses((status = 200, body = Gateway), (status = 422, body = ErrorBody)))]
async fn update_gateway(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(patch): ApiJson<GatewayPatch>,
) -> ApiResult<Json<Gateway>> {
    let gateway = field::update_gateway(&mut session.tx, &session.principal, id, &patch).await?;
    session.tx.commit().await?;
    Ok(Json(gateway))
}

/// Replace a gateway's bus list: matched by port number, new ports added, missing ones removed
/// (refused while meters are on them), the others changed.
#[utoipa::path(put, path = "/api/v1/gateways/{id}/buses", tag = "field", params(("id" = Uuid, Path)),
    request_body = BusesInput, responses((status = 200, body = Gateway), (status = 422, body = ErrorBody)))]
async fn set_buses(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<BusesInput>,
) -> ApiResult<Json<Gateway>> {
    let gateway = changes::set_buses(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(gateway))
}

/// Remove a gateway that carries no meters; its identity is free again at once.
#[utoipa::path(delete, path = "/api/v1/gateways/{id}", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn remove_gateway(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<StatusCode> {
    changes::remove_gateway(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Swap a meter for a new one in the same place, with the old meter's final reading and the
/// new meter's initial reading.
#[utoipa::path(post, path = "/api/v1/meters/{id}/swap", tag = "field", params(("id" = Uuid, Path)),
    request_body = MeterSwapInput,
    responses((status = 201, body = SwapResult), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn swap_meter(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<MeterSwapInput>,
) -> ApiResult<(StatusCode, Json<SwapResult>)> {
    let result = changes::swap_meter(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(result)))
}

/// Remove a meter for good, with its final reading.
#[utoipa::path(post, path = "/api/v1/meters/{id}/remove", tag = "field", params(("id" = Uuid, Path)),
    request_body = MeterRemoval,
    responses((status = 200, body = Meter), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn remove_meter(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<MeterRemoval>,
) -> ApiResult<Json<Meter>> {
    let meter = changes::remove_meter(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(meter))
}

/// The swaps of the chain of meters this one belongs to, oldest first.
#[utoipa::path(get, path = "/api/v1/meters/{id}/history", tag = "field", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<MeterSwap>), (status = 404, body = ErrorBody)))]
async fn meter_history(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<MeterSwap>>> {
    Ok(Json(
        changes::meter_history(&mut session.tx, &session.principal, id).await?,
    ))
}
