//! `/api/v1/notify/…`: the company's vendor accounts (secrets write-only), how its messages go
//! (SMS vendor, per-phone limit, escalation), each user's own preferences, and the WeChat
//! callback (`/api/v1/hooks/wechat/{company}`, signed by the account's callback token, no
//! session) through which WeChat reports template-message delivery.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, Session};
use crate::app::AppState;
use axum::extract::{Path, Query, State};
use axum::Json;
use powertab_core::notify::accounts::{self, AccountInput, AccountView, Delivery};
use powertab_core::notify::preferences::{self, Preferences};
use powertab_core::notify::sender::{self, CallbackQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest callback body taken (WeChat's events are a few hundred bytes).
const CALLBACK_BODY_MAX: usize = 16 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts))
        .routes(routes!(put_account))
        .routes(routes!(get_delivery, put_delivery))
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(wechat_verify, wechat_event))
}

/// The company's vendor accounts (`aliyun`, `tencent`, `wechat`): public settings, templates per
/// message kind, whether the secret is set (never the secret), and a refused-credentials mark.
/// Right `settings`.
#[utoipa::path(get, path = "/api/v1/notify/accounts", tag = "notify",
    responses((status = 200, body = Vec<AccountView>), (status = 403, body = ErrorBody)))]
async fn list_accounts(mut session: Session) -> ApiResult<Json<Vec<AccountView>>> {
    Ok(Json(
        accounts::list(&mut session.tx, &session.principal).await?,
    ))
}

/// Set up a vendor account. `secret` (and WeChat's `callback_token`) are sealed and never shown
/// again; leave them out to keep the stored ones. A new secret clears a refused-credentials
/// mark. Right `settings`; audited without the secrets.
#[utoipa::path(put, path = "/api/v1/notify/accounts/{channel}", tag = "notify",
    params(("channel" = String, Path, description = "aliyun, tencent or wechat")),
    request_body = AccountInput,
    responses((status = 200, body = AccountView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_account(
    State(state): State<AppState>,
    mut session: Session,
    Path(channel): Path<String>,
    ApiJson(input): ApiJson<AccountInput>,
) -> ApiResult<Json<AccountView>> {
    let view = accounts::put(
        &mut session.tx,
        &session.principal,
        state.keyring.as_deref(),
        &channel,
        &input,
    )
    .await?;
    session.tx.commit().await?;
    Ok(Json(view))
}

/// How the company's messages go.
#[utoipa::path(get, path = "/api/v1/notify/delivery", tag = "notify",
    responses((status = 200, body = Delivery)))]
async fn get_delivery(mut session: Session) -> ApiResult<Json<Delivery>> {
    session.principal.require_read_company()?;
    Ok(Json(accounts::delivery(&mut session.tx).await?))
}

/// Change how the company's messages go: `sms_channel` (sandbox, aliyun, tencent),
/// `per_phone_hour` (1–1,000), `escalate_after_min` (1–10,080). Right `settings`.
#[utoipa::path(put, path = "/api/v1/notify/delivery", tag = "notify", request_body = Delivery,
    responses((status = 200, body = Delivery), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_delivery(
    mut session: Session,
    ApiJson(wanted): ApiJson<Delivery>,
) -> ApiResult<Json<Delivery>> {
    let done = accounts::set_delivery(&mut session.tx, &session.principal, &wanted).await?;
    session.tx.commit().await?;
    Ok(Json(done))
}

/// The calling user's message preferences: the kinds they turned off.
#[utoipa::path(get, path = "/api/v1/notify/preferences", tag = "notify",
    responses((status = 200, body = Preferences)))]
async fn get_preferences(mut session: Session) -> ApiResult<Json<Preferences>> {
    Ok(Json(
        preferences::mine(&mut session.tx, &session.principal).await?,
    ))
}

/// Replace the calling user's preferences; `trip_notice` and `tripped` cannot be turned off (422).
#[utoipa::path(put, path = "/api/v1/notify/preferences", tag = "notify", request_body = Preferences,
    responses((status = 200, body = Preferences), (status = 422, body = ErrorBody)))]
async fn put_preferences(
    mut session: Session,
    ApiJson(wanted): ApiJson<Preferences>,
) -> ApiResult<Json<Preferences>> {
    let done = preferences::set_mine(&mut session.tx, &session.principal, &wanted).await?;
    session.tx.commit().await?;
    Ok(Json(done))
}

/// Opens company `company`'s schema for a callback; `NotFound` for an unknown company.
async fn company_tx(state: &AppState, company: i64) -> ApiResult<powertab_core::db::Tx> {
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(powertab_core::CoreError::from)?;
    let scope = powertab_core::auth::load_company(&mut conn, company)
        .await?
        .ok_or(powertab_core::CoreError::NotFound("company"))?;
    drop(conn);
    Ok(powertab_core::db::begin_in(&state.pool, &scope.schema).await?)
}

/// WeChat's server-address check: answers `echostr` when the signature (`sha1` of the sorted
/// callback token, `timestamp`, `nonce`) holds; 401 otherwise.
#[utoipa::path(get, path = "/api/v1/hooks/wechat/{company}", tag = "notify",
    params(("company" = i64, Path)),
    responses((status = 200, body = String), (status = 401, body = ErrorBody)))]
async fn wechat_verify(
    State(state): State<AppState>,
    Path(company): Path<i64>,
    Query(query): Query<CallbackQuery>,
) -> ApiResult<String> {
    let mut tx = company_tx(&state, company).await?;
    let vendors = state.vendors.clone();
    let now = state.auth.clock.now();
    sender::wechat_callback(&mut tx, &vendors, &query, "", now).await?;
    Ok(query.echostr.clone().unwrap_or_default())
}

/// A WeChat event pushed to the account (signed as above): `TEMPLATESENDJOBFINISH` moves the
/// template message it names to `delivered` or `failed`; other events are taken and ignored.
#[utoipa::path(post, path = "/api/v1/hooks/wechat/{company}", tag = "notify",
    params(("company" = i64, Path)), request_body(content = String, content_type = "text/xml"),
    responses((status = 200, body = String), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn wechat_event(
    State(state): State<AppState>,
    Path(company): Path<i64>,
    Query(query): Query<CallbackQuery>,
    body: axum::body::Bytes,
) -> ApiResult<&'static str> {
    if body.len() > CALLBACK_BODY_MAX {
        return Err(
            powertab_core::CoreError::QuotaExceeded("callback body too large".into()).into(),
        );
    }
    let text = String::from_utf8_lossy(&body);
    let mut tx = company_tx(&state, company).await?;
    let now = state.auth.clock.now();
    sender::wechat_callback(&mut tx, &state.vendors, &query, &text, now).await?;
    tx.commit().await.map_err(powertab_core::CoreError::from)?;
    // WeChat wants "success" (or an empty body) or it pushes again.
    Ok("success")
}
