//! `/api/v1/fleet`, a meter's readings and daily energy, and refused DTU registrations: the
//! field as ingest sees it, read-only.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use powertab_core::commands::{self, Command};
use powertab_core::field::fleet::{
    self, DailyEnergy, FieldAlarm, Fleet, FleetFilter, HourlyEnergy, Reading, ReadingFilter,
    Unclaimed,
};
use powertab_core::tenancy::roles::{Need, Right};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_fleet))
        .routes(routes!(meter_readings))
        .routes(routes!(export_readings))
        .routes(routes!(meter_daily_energy))
        .routes(routes!(meter_hourly_energy))
        .routes(routes!(unclaimed_registrations))
        .routes(routes!(registration_problems))
        .routes(routes!(read_now))
        .routes(routes!(control_meter))
        .routes(routes!(list_field_alarms))
        .routes(routes!(export_field_alarms))
        .routes(routes!(acknowledge_field_alarm))
        .routes(routes!(get_command))
}

/// Gateways (each bus online or offline, last heard) and a page of active meters (age of the
/// newest reading, stale beyond the company's `stale_meter_s`, relay, power, remaining amount, alarms, failing polls),
/// problems first. `problems=true` keeps only meters with a problem and offline gateways; `q`
/// searches meter numbers, gateway identities and shops; `limit` (≤ 5,000, default 500) and
/// `offset` page; `meters_total`, `meters_stale` and `meters_matching` count.
#[utoipa::path(get, path = "/api/v1/fleet", params(FleetFilter), tag = "fleet", responses((status = 200, body = Fleet)))]
async fn get_fleet(
    mut session: Session,
    ApiQuery(filter): ApiQuery<FleetFilter>,
) -> ApiResult<Json<Fleet>> {
    Ok(Json(
        fleet::fleet(&mut session.tx, &session.principal, &filter).await?,
    ))
}

/// A meter's readings, newest first: `from`, `to` (RFC 3339), `flagged=true`, `limit` (≤ 20,000).
#[utoipa::path(get, path = "/api/v1/meters/{id}/readings", tag = "fleet", params(ReadingFilter, ("id" = Uuid, Path)),
    responses((status = 200, body = Vec<Reading>), (status = 404, body = ErrorBody)))]
async fn meter_readings(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(filter): ApiQuery<ReadingFilter>,
) -> ApiResult<Json<Vec<Reading>>> {
    Ok(Json(
        fleet::readings(&mut session.tx, &session.principal, id, &filter).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/meters/{id}/readings.xlsx", tag = "fleet", params(ReadingFilter, ExportLang, ("id" = Uuid, Path)),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_readings(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(filter): ApiQuery<ReadingFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let meter = powertab_core::field::meter(&mut session.tx, &session.principal, id).await?;
    let filter = ReadingFilter {
        limit: Some(filter.limit.unwrap_or(20_000)),
        ..filter
    };
    let items = fleet::readings(&mut session.tx, &session.principal, id, &filter).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let tz = session.principal.company()?.time_zone.clone();
    let sheet = fleet::readings_sheet(
        &meter.meter_number,
        &items,
        lang.lang.as_deref().unwrap_or("zh"),
    );
    xlsx::respond(sheet, tz, "readings.xlsx").await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DaysQuery {
    days: Option<i64>,
}

/// Energy per local day and TOU period over the last `days` days (default 31).
#[utoipa::path(get, path = "/api/v1/meters/{id}/daily-energy", tag = "fleet", params(DaysQuery, ("id" = Uuid, Path)),
    responses((status = 200, body = Vec<DailyEnergy>), (status = 404, body = ErrorBody)))]
async fn meter_daily_energy(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(q): ApiQuery<DaysQuery>,
) -> ApiResult<Json<Vec<DailyEnergy>>> {
    Ok(Json(
        fleet::daily_energy(
            &mut session.tx,
            &session.principal,
            id,
            q.days.unwrap_or(31),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HoursQuery {
    hours: Option<i64>,
}

/// Energy per local hour over the last `hours` hours (default 24, at most 168).
#[utoipa::path(get, path = "/api/v1/meters/{id}/hourly-energy", tag = "fleet", params(HoursQuery, ("id" = Uuid, Path)),
    responses((status = 200, body = Vec<HourlyEnergy>), (status = 404, body = ErrorBody)))]
async fn meter_hourly_energy(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(q): ApiQuery<HoursQuery>,
) -> ApiResult<Json<Vec<HourlyEnergy>>> {
    Ok(Json(
        fleet::hourly_energy(
            &mut session.tx,
            &session.principal,
            id,
            q.hours.unwrap_or(24),
        )
        .await?,
    ))
}

/// The company's DTU registrations that break the platform's rule (6–128 bytes, none a prefix
/// of another; entered before the rule): change them. Whose registration one overlaps is not said.
#[utoipa::path(get, path = "/api/v1/gateways/registration-problems", tag = "fleet",
    responses((status = 200, body = Vec<powertab_core::field::registration::Problem>)))]
async fn registration_problems(
    mut session: Session,
) -> ApiResult<Json<Vec<powertab_core::field::registration::Problem>>> {
    session.principal.require_read_company()?;
    let company_id = session.principal.company()?.id;
    Ok(Json(
        powertab_core::field::registration::problems(&mut session.tx, Some(company_id)).await?,
    ))
}

/// Refused DTU registrations, newest first. Platform staff see all (those that match no gateway
/// are theirs to claim for a company); a company's settings users see those of its own suspended
/// gateways and those claimed for it.
#[utoipa::path(get, path = "/api/v1/unclaimed-registrations", tag = "fleet",
    responses((status = 200, body = Vec<Unclaimed>)))]
async fn unclaimed_registrations(mut session: Session) -> ApiResult<Json<Vec<Unclaimed>>> {
    Ok(Json(
        fleet::unclaimed(&mut session.tx, &session.principal).await?,
    ))
}

/// Read a meter now, ahead of its schedule: answers 202 with the command; follow it at
/// `/commands/{id}` (queued → sent → verified, or failed / expired after 2 minutes).
#[utoipa::path(post, path = "/api/v1/meters/{id}/read-now", tag = "fleet", params(("id" = Uuid, Path)),
    responses((status = 202, body = Command), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn read_now(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Command>)> {
    let command = commands::read_now(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(command)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct ControlInput {
    /// `trip`, `close`, `release`, `keep_power_on` or `keep_power_off`.
    op: String,
}

/// Remote control of one meter (right `trip_close` for trip, close and release; `keep_power`
/// for keep-power on and off): answers 202 with the command (source `operator:<you>`); follow it
/// at `/commands/{id}`. A trip of a meter under keep-power is refused (409).
#[utoipa::path(post, path = "/api/v1/meters/{id}/control", tag = "fleet", params(("id" = Uuid, Path)),
    request_body = ControlInput,
    responses((status = 202, body = Command), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn control_meter(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<ControlInput>,
) -> ApiResult<(StatusCode, Json<Command>)> {
    let command = powertab_core::power::control::operate(
        &mut session.tx,
        &session.principal,
        state.keyring.as_deref(),
        id,
        &input.op,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(command)))
}

#[utoipa::path(get, path = "/api/v1/commands/{id}", tag = "fleet", params(("id" = Uuid, Path)),
    responses((status = 200, body = Command), (status = 404, body = ErrorBody)))]
async fn get_command(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Command>> {
    Ok(Json(
        commands::get(&mut session.tx, &session.principal, id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AlarmsQuery {
    #[serde(default)]
    all: bool,
}

/// Stale meters and offline gateways (limits in the company settings), newest first; `all=true`
/// adds the last cleared ones.
#[utoipa::path(get, path = "/api/v1/field-alarms", params(AlarmsQuery), tag = "fleet", responses((status = 200, body = Vec<FieldAlarm>)))]
async fn list_field_alarms(
    mut session: Session,
    ApiQuery(q): ApiQuery<AlarmsQuery>,
) -> ApiResult<Json<Vec<FieldAlarm>>> {
    Ok(Json(
        fleet::field_alarms(&mut session.tx, &session.principal, q.all).await?,
    ))
}

/// The same list as `.xlsx` (right `export`): `all=true` adds the cleared ones.
#[utoipa::path(get, path = "/api/v1/field-alarms.xlsx", params(AlarmsQuery, ExportLang), tag = "fleet",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_field_alarms(
    mut session: Session,
    ApiQuery(q): ApiQuery<AlarmsQuery>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    session.principal.require(Need::Act(Right::Export))?;
    let alarms = fleet::field_alarms(&mut session.tx, &session.principal, q.all).await?;
    let tz = session.principal.company()?.time_zone.clone();
    let sheet = fleet::alarms_sheet(&alarms, lang.lang.as_deref().unwrap_or("zh"));
    xlsx::respond(sheet, tz, "alarms.xlsx").await
}

/// Acknowledge an open field alarm (staff with `trip_close`, `settings` or `readings_review`):
/// who saw it and when, audited; it stays open until its cause clears (409 once cleared or
/// acknowledged).
#[utoipa::path(post, path = "/api/v1/field-alarms/{id}/acknowledge", tag = "fleet", params(("id" = Uuid, Path)),
    responses((status = 200, body = FieldAlarm), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn acknowledge_field_alarm(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<FieldAlarm>> {
    let alarm = fleet::acknowledge_alarm(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(Json(alarm))
}
