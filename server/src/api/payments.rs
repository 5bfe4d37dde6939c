//! `/api/v1/payments/…`: providers' asynchronous notifications, one URL per company
//! (`/api/v1/payments/{provider}/notify/{company_slug}`, issue 14), and payment orders for an
//! account (`/api/v1/accounts/{id}/payment-orders`). A notification is believed only after its
//! signature checks out under the company's own key and its timestamp is within 5 minutes; it is
//! then kept in the inbox, answered at once and booked after (`core::payments::inbox`). Only the
//! sandbox provider exists so far, and only for companies a platform admin switched it on for;
//! `POST /api/v1/platform/companies/{id}/sandbox-payments` does that (audited), and only where the
//! deployment configures `sandbox_payment_key`.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, Session};
use crate::app::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use powertab_core::kernel::money::AmountFen;
use powertab_core::payments::orders::{self, Order, Provider};
use powertab_core::payments::{inbox, sandbox};
use powertab_core::tenancy::roles::Role;
use powertab_core::CoreError;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(notify))
        .routes(routes!(create_order))
        .routes(routes!(set_sandbox))
}

/// What a provider's notification is answered (the providers' own shape: `SUCCESS` stops their
/// retries, `FAIL` makes them send it again later).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NotifyAnswer {
    code: &'static str,
    message: String,
}

fn answer(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> (StatusCode, Json<NotifyAnswer>) {
    (
        status,
        Json(NotifyAnswer {
            code,
            message: message.into(),
        }),
    )
}

/// A provider's payment notification for company `company_slug`. 200 `SUCCESS` once it is kept
/// (booked right after); 401 for a missing or wrong signature or a timestamp more than 5 minutes
/// off; 404 for a provider the company does not take; 400 for a body that is no paid notice.
#[utoipa::path(post, path = "/api/v1/payments/{provider}/notify/{company_slug}", tag = "payments",
    params(("provider" = String, Path), ("company_slug" = String, Path)),
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = NotifyAnswer), (status = 400, body = NotifyAnswer),
              (status = 401, body = NotifyAnswer), (status = 404, body = NotifyAnswer)))]
async fn notify(
    State(state): State<AppState>,
    Path((provider, slug)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<NotifyAnswer>) {
    accept(&state, &provider, &slug, &headers, &body).await
}

/// Notices booked at once right after their answer.
const BOOKINGS_AT_ONCE: usize = 4;

fn booking_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(BOOKINGS_AT_ONCE))
}

/// Believes, keeps and (right after) books one notification; what to answer the provider. The
/// sandbox's own pay page sends its notices through here too.
pub(crate) async fn accept(
    state: &AppState,
    provider: &str,
    slug: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Json<NotifyAnswer>) {
    let not_taken = || answer(StatusCode::NOT_FOUND, "FAIL", "no such payment endpoint");
    if Provider::parse(provider) != Some(Provider::Sandbox) || body.len() > 65_536 {
        return not_taken();
    }
    // The company by its slug, and whether it takes sandbox payments (a hostile slug finds
    // nothing: it is only ever compared, never used as a name).
    let company: Option<(i64, bool)> =
        match sqlx::query_as("select id, sandbox_payments from control.company where slug = $1")
            .bind(slug)
            .fetch_optional(&state.pool)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "reading a company for a payment notification failed");
                return answer(StatusCode::SERVICE_UNAVAILABLE, "FAIL", "try again");
            }
        };
    let (Some((company_id, true)), Some(sandbox_key)) =
        (company, state.config.sandbox_payment_key.as_ref())
    else {
        return not_taken();
    };
    let key = sandbox::company_key(sandbox_key, slug);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = state.auth.clock.now();
    if let Err(refusal) = sandbox::verify(
        &key,
        header(sandbox::SIGNATURE_HEADER),
        header(sandbox::TIMESTAMP_HEADER),
        header(sandbox::NONCE_HEADER),
        body,
        now,
    ) {
        metrics::counter!("payment_notices_refused_total", "why" => "signature").increment(1);
        tracing::warn!(company = %slug, %refusal, "a sandbox payment notification is refused");
        return answer(StatusCode::UNAUTHORIZED, "FAIL", refusal.to_string());
    }
    if let Err(refusal) = sandbox::parse(body) {
        return answer(StatusCode::BAD_REQUEST, "FAIL", refusal.to_string());
    }
    let stored = inbox::store(&state.pool, Provider::Sandbox, company_id, body, now).await;
    let id = match stored {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "keeping a payment notification failed");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "FAIL", "try again");
        }
    };
    // Booked after the answer: the provider waits for nobody's ledger. At most a few bookings
    // run at once, so a burst of notices (a thousand at the top of the hour) cannot take every
    // connection of the pool and make the answers themselves wait: the rest queue here, holding
    // no connection, and the payments worker's sweep books anything left behind.
    let (pool, clock) = (state.pool.clone(), state.auth.clock.clone());
    tokio::spawn(async move {
        let Ok(_permit) = booking_slots().acquire().await else {
            return;
        };
        if let Err(e) = inbox::process(&pool, &clock, id).await {
            tracing::warn!(%id, error = %e, "booking a payment notification failed; the sweep tries again");
        }
    });
    answer(StatusCode::OK, "SUCCESS", "")
}

/// An order as made, with where the tenant pays it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct MadeOrder {
    #[serde(flatten)]
    order: Order,
    /// The provider's page for this order (the sandbox's hosted page).
    pay_url: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct OrderInput {
    /// `sandbox` (where switched on), later `wechat` or `alipay`.
    provider: String,
    amount_fen: AmountFen,
    /// A meter-side account: the meter to credit.
    #[serde(default)]
    meter_id: Option<Uuid>,
}

/// Make a payment order for an account (its tenant, or an operator with `top_up`): ¥1 to
/// ¥50,000, valid 15 minutes. The provider must be one the company takes.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/payment-orders", tag = "payments",
    params(("id" = Uuid, Path)), request_body = OrderInput,
    responses((status = 201, body = MadeOrder), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_order(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<OrderInput>,
) -> ApiResult<(StatusCode, Json<MadeOrder>)> {
    let Some(provider) = Provider::parse(&input.provider) else {
        // 404 before 422: an account the caller may not see does not exist for them.
        powertab_core::billing::accounts::get(&mut session.tx, &session.principal, id).await?;
        return Err(CoreError::field("provider", "sandbox, wechat or alipay").into());
    };
    let (order, pay_url) = orders::start(
        &mut session.tx,
        &session.principal,
        id,
        provider,
        input.amount_fen,
        input.meter_id,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(MadeOrder { order, pay_url })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct SandboxInput {
    enabled: bool,
}

/// Switch the sandbox provider on or off for a company (platform admins; audited). Refused
/// where the deployment has no `sandbox_payment_key`: a sandbox is never simply on.
#[utoipa::path(post, path = "/api/v1/platform/companies/{id}/sandbox-payments", tag = "platform",
    params(("id" = i64, Path)), request_body = SandboxInput,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn set_sandbox(
    State(state): State<AppState>,
    mut session: Session,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<SandboxInput>,
) -> ApiResult<StatusCode> {
    match session.principal.role {
        Role::PlatformAdmin => {}
        Role::PlatformSupport => {
            return Err(
                CoreError::Forbidden("only platform admins switch sandbox payments".into()).into(),
            )
        }
        _ => return Err(CoreError::NotFound("company").into()),
    }
    if input.enabled && state.config.sandbox_payment_key.is_none() {
        return Err(CoreError::Conflict(
            "this deployment allows no sandbox payments (no sandbox_payment_key is configured)"
                .into(),
        )
        .into());
    }
    let before: Option<bool> = sqlx::query_scalar(
        "update control.company c set sandbox_payments = $2 from control.company old
         where c.id = $1 and old.id = c.id returning old.sandbox_payments",
    )
    .bind(id)
    .bind(input.enabled)
    .fetch_optional(&mut *session.tx)
    .await
    .map_err(CoreError::from)?;
    let before = before.ok_or(CoreError::NotFound("company"))?;
    powertab_core::tenancy::audit::record(
        &mut session.tx,
        &session.principal,
        "company.sandbox_payments",
        "company",
        Some(id.to_string()),
        Some(serde_json::json!({ "sandbox_payments": before })),
        Some(serde_json::json!({ "sandbox_payments": input.enabled })),
    )
    .await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
