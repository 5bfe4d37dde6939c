//! `/api/v1/secure/…`: meter-side prepayment for operators (issue 13: Pages) — every meter-side
//! meter's secure state with its drift and purchase-count reconciliation (JSON and `.xlsx`), one
//! meter's secure command history with each frame's state, and the audited export of one
//! meter's key for loading a meter or gateway (company admins); and for platform admins the
//! rotation of a company's master key (`/api/v1/platform/companies/{id}/secure/rotate`).

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use powertab_core::secure::reports::{self, SecureCommand, SecureState};
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::CoreError;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_states))
        .routes(routes!(export_states))
        .routes(routes!(meter_history))
        .routes(routes!(export_key))
        .routes(routes!(rotate_master_key))
        .routes(routes!(request_cancel))
        .routes(routes!(take_back))
        .routes(routes!(rekey_start))
        .routes(routes!(rekey_verify))
        .routes(routes!(rekey_abandon))
}

/// Start re-keying a meter onto the company's newest master key version (company admins;
/// audited). The meter takes no purchase or deduct until the new key is verified; export its new
/// key with `key-export`, load it in the field, then `rekey/verify`.
#[utoipa::path(post, path = "/api/v1/secure/meters/{id}/rekey", tag = "secure",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = powertab_core::secure::rekey::KeyVersions), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rekey_start(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<powertab_core::secure::rekey::KeyVersions>> {
    let keyring = keyring(&state)?;
    let versions =
        powertab_core::secure::rekey::start(&mut session.tx, keyring, &session.principal, id)
            .await?;
    session.tx.commit().await?;
    Ok(Json(versions))
}

/// Prove the field loaded the new key: a set-price frame at the meter's price under the new
/// version; when its counters verify it the meter holds the new version (follow the command). A
/// meter still on its old key fails it, and the re-key keeps waiting.
#[utoipa::path(post, path = "/api/v1/secure/meters/{id}/rekey/verify", tag = "secure",
    params(("id" = Uuid, Path)),
    responses((status = 202, body = powertab_core::commands::Command), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rekey_verify(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<(
    axum::http::StatusCode,
    Json<powertab_core::commands::Command>,
)> {
    let keyring = keyring(&state)?;
    let command =
        powertab_core::secure::rekey::verify(&mut session.tx, keyring, &session.principal, id)
            .await?;
    session.tx.commit().await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(command)))
}

/// Abandon a waiting re-key: the meter keeps its version and takes money again.
#[utoipa::path(post, path = "/api/v1/secure/meters/{id}/rekey/abandon", tag = "secure",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = powertab_core::secure::rekey::KeyVersions), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rekey_abandon(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<powertab_core::secure::rekey::KeyVersions>> {
    let versions =
        powertab_core::secure::rekey::abandon(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(Json(versions))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct DeductInput {
    amount_fen: powertab_core::kernel::money::AmountFen,
    reason: String,
}

/// Take credit back off a meter-side meter (right `refund`, a reason): a `deduct` frame on the
/// purchase count; once the meter's counters verify it the amount moves from the meter to the
/// account's wallet, to be refunded at the counter. At most what the meter holds and the
/// platform reckons is on it; 409 while another purchase or deduct is unfinished on the meter.
#[utoipa::path(post, path = "/api/v1/secure/meters/{id}/deduct", tag = "secure",
    request_body = DeductInput, params(("id" = Uuid, Path)),
    responses((status = 202, body = powertab_core::commands::Command), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn take_back(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
    super::session::ApiJson(input): super::session::ApiJson<DeductInput>,
) -> ApiResult<(
    axum::http::StatusCode,
    Json<powertab_core::commands::Command>,
)> {
    let keyring = keyring(&state)?;
    let command = powertab_core::secure::deduct::take_back(
        &mut session.tx,
        keyring,
        &session.principal,
        id,
        input.amount_fen,
        &input.reason,
    )
    .await?;
    session.tx.commit().await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(command)))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct CancelInput {
    reason: String,
}

/// Ask to cancel a failed purchase (right `accounts`, a reason): once an approver other than the
/// asker approves it under `/api/v1/approvals`, its money goes from `in_transit` back to the
/// wallet. Refused while the meter's counters count the purchase (its credit is on the meter).
#[utoipa::path(post, path = "/api/v1/secure/commands/{id}/cancel", tag = "secure",
    request_body = CancelInput, params(("id" = Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "asking again with it answers with the same request")),
    responses((status = 202, body = powertab_core::billing::approvals::ApprovalRequest),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn request_cancel(
    mut session: Session,
    Path(id): Path<Uuid>,
    super::billing::IdempotencyKey(key): super::billing::IdempotencyKey,
    super::session::ApiJson(input): super::session::ApiJson<CancelInput>,
) -> ApiResult<(
    axum::http::StatusCode,
    Json<powertab_core::billing::approvals::ApprovalRequest>,
)> {
    let request = powertab_core::secure::cancel::request(
        &mut session.tx,
        &session.principal,
        id,
        &input.reason,
        &key,
    )
    .await?;
    session.tx.commit().await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(request)))
}

/// Every meter-side meter: counters the platform verified and the meter reads back, key version,
/// commands in flight, shadow balance, read-back remaining amount and drift.
#[utoipa::path(get, path = "/api/v1/secure/meters", tag = "secure",
    responses((status = 200, body = Vec<SecureState>), (status = 404, body = ErrorBody)))]
async fn list_states(mut session: Session) -> ApiResult<Json<Vec<SecureState>>> {
    Ok(Json(
        reports::states(&mut session.tx, &session.principal).await?,
    ))
}

/// The same list as `.xlsx`: the drift and purchase-count reconciliation report (right `export`).
#[utoipa::path(get, path = "/api/v1/secure/meters.xlsx", params(ExportLang), tag = "secure",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_states(
    mut session: Session,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    session.principal.require(Need::Act(Right::Export))?;
    let states = reports::states(&mut session.tx, &session.principal).await?;
    let tz = session.principal.company()?.time_zone.clone();
    let sheet = reports::states_sheet(&states, lang.lang.as_deref().unwrap_or("zh"));
    xlsx::respond(sheet, tz, "meter-side.xlsx").await
}

/// One meter's secure commands (purchases, deducts, set price, secure control), newest first,
/// with the sequence each frame carries, its amount, state and the meter's acknowledgement.
#[utoipa::path(get, path = "/api/v1/secure/meters/{id}/commands", tag = "secure",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<SecureCommand>), (status = 404, body = ErrorBody)))]
async fn meter_history(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Vec<SecureCommand>>> {
    Ok(Json(
        reports::history(&mut session.tx, &session.principal, id).await?,
    ))
}

/// A meter's key, as exported.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExportedKey {
    key_version: i32,
    /// KM, 16 bytes as hex: load it into the meter or its gateway; never stored in clear.
    meter_key_hex: String,
}

/// Export one meter's key KM (company admins only; every export is in the audit log — who,
/// which meter, which version — never the key).
#[utoipa::path(post, path = "/api/v1/secure/meters/{id}/key-export", tag = "secure",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ExportedKey), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn export_key(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ExportedKey>> {
    let keyring = keyring(&state)?;
    let (key_version, hex) = powertab_core::secure::keys::export_meter_key(
        &mut session.tx,
        keyring,
        &session.principal,
        id,
    )
    .await?;
    session.tx.commit().await?;
    Ok(Json(ExportedKey {
        key_version,
        meter_key_hex: hex.to_string(),
    }))
}

/// The new master key version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Rotated {
    version: i32,
}

/// Rotate a company's master key (platform admins): meters commissioned from now on get the new
/// version; existing meters keep theirs until re-keyed. Audited in the company (the versions,
/// never a key).
#[utoipa::path(post, path = "/api/v1/platform/companies/{id}/secure/rotate", tag = "platform",
    params(("id" = i64, Path)),
    responses((status = 200, body = Rotated), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn rotate_master_key(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> ApiResult<Json<Rotated>> {
    let version = powertab_core::secure::keys::rotate_company_master(
        &state.pool,
        state.keyring.as_deref(),
        &session.principal,
        id,
    )
    .await?;
    Ok(Json(Rotated { version }))
}

fn keyring(state: &AppState) -> ApiResult<&powertab_core::kernel::secrets::Keyring> {
    state.keyring.as_deref().ok_or_else(|| {
        CoreError::Conflict(
            "no keyring is configured (POWERTAB_SECRET_KEYS): meter keys cannot be opened".into(),
        )
        .into()
    })
}
