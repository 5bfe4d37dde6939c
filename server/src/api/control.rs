//! `/api/v1/commands` and `/api/v1/control-batches`: the command centre (open, failed and stuck
//! commands across the company, one meter's or one batch's history, send again, cancel, Excel)
//! and batch control (preview a selection, start with the confirmed count, follow progress).

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use powertab_core::commands::Command;
use powertab_core::power::batch::{self, Preview, Progress, Selection};
use powertab_core::power::centre::{self, CentreFilter, CentreRow};
use powertab_core::power::messages::{self, LoggedMessage, MessageFilter};
use powertab_core::tenancy::roles::{Need, Right};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_commands))
        .routes(routes!(export_commands))
        .routes(routes!(retry_command))
        .routes(routes!(cancel_command))
        .routes(routes!(preview_batch))
        .routes(routes!(start_batch))
        .routes(routes!(get_batch))
        .routes(routes!(list_messages))
        .routes(routes!(export_messages))
}

/// Commands across the company, newest first: `view=open` (default: queued, sent,
/// acknowledged), `failed` (failed, expired), `stuck` (open for more than 5 minutes since asked
/// for or last sent) or `all`; `meter_id` and `batch_id` narrow it; `limit` ≤ 2,000.
#[utoipa::path(get, path = "/api/v1/commands", tag = "control", params(CentreFilter),
    responses((status = 200, body = Vec<CentreRow>), (status = 422, body = ErrorBody)))]
async fn list_commands(
    mut session: Session,
    ApiQuery(filter): ApiQuery<CentreFilter>,
) -> ApiResult<Json<Vec<CentreRow>>> {
    Ok(Json(
        centre::list(&mut session.tx, &session.principal, &filter).await?,
    ))
}

/// The same list as `.xlsx` (right `export`).
#[utoipa::path(get, path = "/api/v1/commands.xlsx", tag = "control", params(CentreFilter, ExportLang),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_commands(
    mut session: Session,
    ApiQuery(filter): ApiQuery<CentreFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    session.principal.require(Need::Act(Right::Export))?;
    let rows = centre::list(&mut session.tx, &session.principal, &filter).await?;
    let tz = session.principal.company()?.time_zone.clone();
    let sheet = centre::sheet(&rows, lang.lang.as_deref().unwrap_or("zh"));
    xlsx::respond(sheet, tz, "commands.xlsx").await
}

/// Send a failed, expired or cancelled command again: a new command (`retry_of` = this one)
/// under the rights and keep-power rule of a fresh one; 409 for purchases and deducts (their
/// stored bytes are resent until verified) and when a retry is already open.
#[utoipa::path(post, path = "/api/v1/commands/{id}/retry", tag = "control", params(("id" = Uuid, Path)),
    responses((status = 202, body = Command), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn retry_command(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Command>)> {
    let command = centre::retry(
        &mut session.tx,
        &session.principal,
        state.keyring.as_deref(),
        id,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(command)))
}

/// Cancel a command that has not reached its meter (queued → cancelled; one waiting for its
/// retry after no answer → failed); 409 once it is on its way.
#[utoipa::path(post, path = "/api/v1/commands/{id}/cancel", tag = "control", params(("id" = Uuid, Path)),
    responses((status = 200, body = Command), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn cancel_command(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Command>> {
    let command = centre::cancel(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(Json(command))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct BatchInput {
    /// `trip`, `close`, `release`, `keep_power_on` or `keep_power_off`.
    op: String,
    #[serde(flatten)]
    selection: Selection,
    /// For a start: the meter count the preview showed (the start is refused when the
    /// selection holds another number now).
    #[serde(default)]
    confirm_meters: Option<usize>,
}

/// What a batch would command now: how many meters (active shop meters matching building,
/// floor, gateway and `q`), how many keep-power leaves out of a trip, which shops.
#[utoipa::path(post, path = "/api/v1/control-batches/preview", tag = "control", request_body = BatchInput,
    responses((status = 200, body = Preview), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn preview_batch(
    mut session: Session,
    ApiJson(input): ApiJson<BatchInput>,
) -> ApiResult<Json<Preview>> {
    Ok(Json(
        batch::preview(
            &mut session.tx,
            &session.principal,
            &input.op,
            &input.selection,
        )
        .await?,
    ))
}

/// Start a batch: one command per meter (source `operator:<you>`), with `confirm_meters` from
/// the preview; 409 when the selection changed since. Follow it at `/control-batches/{id}`.
#[utoipa::path(post, path = "/api/v1/control-batches", tag = "control", request_body = BatchInput,
    responses((status = 202, body = Progress), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn start_batch(
    State(state): State<AppState>,
    mut session: Session,
    ApiJson(input): ApiJson<BatchInput>,
) -> ApiResult<(StatusCode, Json<Progress>)> {
    let Some(confirmed) = input.confirm_meters else {
        return Err(powertab_core::CoreError::field(
            "confirm_meters",
            "the meter count the preview showed",
        )
        .into());
    };
    let progress = batch::start(
        &mut session.tx,
        &session.principal,
        state.keyring.as_deref(),
        &input.op,
        &input.selection,
        confirmed,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

/// A batch and its commands per state (the newest command per meter: a retry stands for the
/// one it sends again); `finished` once every one is final.
#[utoipa::path(get, path = "/api/v1/control-batches/{id}", tag = "control", params(("id" = Uuid, Path)),
    responses((status = 200, body = Progress), (status = 404, body = ErrorBody)))]
async fn get_batch(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Progress>> {
    Ok(Json(
        batch::progress(&mut session.tx, &session.principal, id).await?,
    ))
}

/// The notification log, newest first: every message the rules wrote for tenants (recipient,
/// channel, when written, not before when — the night window — and state); `account_id`,
/// `kind`, `limit` ≤ 5,000.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "control", params(MessageFilter),
    responses((status = 200, body = Vec<LoggedMessage>), (status = 422, body = ErrorBody)))]
async fn list_messages(
    mut session: Session,
    ApiQuery(filter): ApiQuery<MessageFilter>,
) -> ApiResult<Json<Vec<LoggedMessage>>> {
    Ok(Json(
        messages::list(&mut session.tx, &session.principal, &filter).await?,
    ))
}

/// The same log as `.xlsx` (right `export`).
#[utoipa::path(get, path = "/api/v1/notifications.xlsx", tag = "control", params(MessageFilter, ExportLang),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_messages(
    mut session: Session,
    ApiQuery(filter): ApiQuery<MessageFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    session.principal.require(Need::Act(Right::Export))?;
    let rows = messages::list(&mut session.tx, &session.principal, &filter).await?;
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(
        messages::sheet(&rows, lang.lang.as_deref().unwrap_or("zh")),
        tz,
        "notifications.xlsx",
    )
    .await
}
