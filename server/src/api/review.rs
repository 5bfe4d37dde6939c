//! `/api/v1/held-readings*`, `/api/v1/meters/{id}/held/release`, `/api/v1/approvals*`: the
//! review of held readings (right `readings_review`) and the maker-checker requests other than
//! reversals — corrections above the company's energy threshold and write-offs — approved or
//! rejected by another holder of the `approve` right.

use super::billing::IdempotencyKey;
use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx;
use crate::app::AppState;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use powertab_core::billing::approvals::{self, ApprovalKind, ApprovalRequest};
use powertab_core::billing::review::{self, HeldReading, ReleaseOutcome};
use powertab_core::kernel::money::EnergyWh;
use powertab_core::kernel::xlsx::{Cell, Column, Sheet};
use powertab_core::tenancy::roles::{Need, Right};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(held_readings))
        .routes(routes!(export_held_readings))
        .routes(routes!(release_held))
        .routes(routes!(waiting_approvals))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldList {
    pub items: Vec<HeldReading>,
    pub next_cursor: Option<String>,
}

/// Meters whose rating waits for a review of a held reading, oldest hold first.
#[utoipa::path(get, path = "/api/v1/held-readings", tag = "billing", responses((status = 200, body = HeldList)))]
async fn held_readings(mut session: Session) -> ApiResult<Json<HeldList>> {
    let items = review::held(&mut session.tx, &session.principal).await?;
    Ok(Json(HeldList {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LangQuery {
    /// `en` for English column names; Chinese otherwise.
    lang: Option<String>,
}

/// The held readings as Excel.
#[utoipa::path(get, path = "/api/v1/held-readings.xlsx", tag = "billing", params(LangQuery),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_held_readings(
    mut session: Session,
    ApiQuery(q): ApiQuery<LangQuery>,
) -> ApiResult<Response> {
    let items = review::held(&mut session.tx, &session.principal).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let zh = q.lang.as_deref() != Some("en");
    let h = |a: &str, b: &str| if zh { a.to_owned() } else { b.to_owned() };
    let wh = |e: Option<EnergyWh>| e.map_or(Cell::Empty, |e| Cell::Int(e.wh()));
    let rows = items
        .iter()
        .map(|r| {
            vec![
                Cell::Text(r.meter_number.clone()),
                Cell::Text(r.shop_number.clone().unwrap_or_default()),
                Cell::Text(r.held_reason.clone().unwrap_or_default()),
                Cell::Time(r.held_at),
                Cell::Time(r.previous_read_at),
                Cell::Int(r.previous_energy_wh.wh()),
                r.read_at.map_or(Cell::Empty, Cell::Time),
                wh(r.energy_wh),
                wh(r.energy_as_read_wh),
            ]
        })
        .collect();
    let sheet = Sheet {
        name: h("待审读数", "Held readings"),
        columns: vec![
            Column::new(h("表号", "Meter"), 16.0),
            Column::new(h("商铺", "Shop"), 10.0),
            Column::new(h("原因", "Reason"), 14.0),
            Column::new(h("暂停时间", "Held at"), 20.0),
            Column::new(h("上次读数时间", "Previous reading"), 20.0),
            Column::new(h("上次读数(Wh)", "Previous (Wh)"), 14.0),
            Column::new(h("暂停读数时间", "Held reading"), 20.0),
            Column::new(h("暂停读数(Wh)", "Held (Wh)"), 14.0),
            Column::new(h("按读数电量(Wh)", "As read (Wh)"), 14.0),
        ],
        rows,
        totals: None,
    };
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(sheet, tz, "held-readings.xlsx").await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReleaseInput {
    /// The held interval's energy, when the operator corrects it; else as the flag table says.
    #[serde(default)]
    pub energy_wh: Option<EnergyWh>,
    /// Why (required when the energy is above the company's threshold and waits for an approver).
    #[serde(default)]
    pub reason: String,
}

/// Release (or correct) the held reading that stopped this meter's rating (right
/// `readings_review`); rating continues from it. Energy above the company's
/// `correction_approval_above_wh` answers 202 with the request an approver decides.
/// An `Idempotency-Key` makes asking twice one request.
#[utoipa::path(post, path = "/api/v1/meters/{id}/held/release", tag = "billing", request_body = ReleaseInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "optional: asking again with it answers with the same request")),
    responses((status = 200, body = ReleaseOutcome), (status = 202, body = ReleaseOutcome), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn release_held(
    mut session: Session,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<ReleaseInput>,
) -> ApiResult<(StatusCode, Json<ReleaseOutcome>)> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 100 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    let outcome = review::release(
        &mut session.tx,
        &session.principal,
        id,
        input.energy_wh,
        &input.reason,
        &key,
    )
    .await?;
    session.tx.commit().await?;
    let status = if outcome.request.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalList {
    pub items: Vec<ApprovalRequest>,
    pub next_cursor: Option<String>,
}

/// Corrections and write-offs waiting for an approver, oldest first (reversals: `/api/v1/reversals`).
#[utoipa::path(get, path = "/api/v1/approvals", tag = "billing", responses((status = 200, body = ApprovalList)))]
async fn waiting_approvals(mut session: Session) -> ApiResult<Json<ApprovalList>> {
    let items = approvals::waiting(&mut session.tx, &session.principal).await?;
    Ok(Json(ApprovalList {
        items,
        next_cursor: None,
    }))
}

/// Approve a request (an approver other than the requester): a correction is rated, a
/// write-off posted.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "billing",
    params(("Idempotency-Key" = String, Header, description = "one per approval")),
    responses((status = 200, body = ApprovalRequest), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
) -> ApiResult<Json<ApprovalRequest>> {
    let request = match approvals::kind_of(&mut session.tx, id).await? {
        ApprovalKind::ReadingCorrection => {
            review::approve_correction(&mut session.tx, &session.principal, id, &key).await?
        }
        ApprovalKind::WriteOff => {
            powertab_core::billing::closing::approve_write_off(
                &mut session.tx,
                &session.principal,
                id,
                &key,
            )
            .await?
        }
        ApprovalKind::PurchaseCancel => {
            powertab_core::secure::cancel::approve(&mut session.tx, &session.principal, id, &key)
                .await?
        }
    };
    session.tx.commit().await?;
    Ok(Json(request))
}

/// Reject a request: nothing takes effect.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/reject", tag = "billing",
    responses((status = 200, body = ApprovalRequest), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reject(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<ApprovalRequest>> {
    let request = approvals::reject(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(Json(request))
}
