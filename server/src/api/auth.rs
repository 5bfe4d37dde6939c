//! `/api/v1/auth/*` and `/api/v1/me*`: login, refresh, logout, the caller, password change.

use super::error::{ApiResult, ErrorBody};
use super::session::{client_ip, ApiJson, Session};
use crate::app::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use powertab_core::auth::tenant_code::{self, CodeLogin, CodeRequest};
use powertab_core::auth::{self, LoginInput, LoginOutcome, Principal, TokenPair};
use powertab_core::tenancy::roles::Role;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(tenant_code))
        .routes(routes!(tenant_login))
        .routes(routes!(tenant_password_reset))
}

/// What a successful login answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    pub role: Role,
    pub company: Option<String>,
    pub must_change_password: bool,
}

/// The client address, for throttling and the audit log.
pub struct ClientIp(pub Option<String>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state.config.trust_forwarded_for)))
    }
}

/// Log in with company slug (empty for platform staff), username and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginInput,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(input): ApiJson<LoginInput>,
) -> ApiResult<Json<LoginResponse>> {
    let outcome = auth::login(&state.pool, &state.auth, &input, ip.as_deref()).await?;
    Ok(Json(LoginResponse::from(outcome)))
}

impl From<LoginOutcome> for LoginResponse {
    fn from(outcome: LoginOutcome) -> Self {
        LoginResponse {
            access_token: outcome.tokens.access_token,
            refresh_token: outcome.tokens.refresh_token,
            expires_in: outcome.tokens.expires_in,
            refresh_expires_in: outcome.tokens.refresh_expires_in,
            role: outcome.role,
            company: outcome.company_slug,
            must_change_password: outcome.must_change_password,
        }
    }
}

/// Ask for a shop tenant's SMS code (login, or `purpose: reset` for a new password). The answer
/// is the same whether or not the phone is registered; 429 past the per-phone and per-address
/// limits.
#[utoipa::path(post, path = "/api/v1/auth/tenant-codes", tag = "auth", request_body = CodeRequest,
    responses((status = 202), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn tenant_code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(input): ApiJson<CodeRequest>,
) -> ApiResult<StatusCode> {
    tenant_code::send_code(&state.pool, &state.auth, &input, ip.as_deref()).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Log a shop tenant in with an SMS code: the first login creates the tenant's user and links
/// every open account registered with the phone. Wrong codes count as failed logins.
#[utoipa::path(post, path = "/api/v1/auth/tenant-login", tag = "auth", request_body = CodeLogin,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn tenant_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(input): ApiJson<CodeLogin>,
) -> ApiResult<Json<LoginResponse>> {
    let outcome =
        tenant_code::login_with_code(&state.pool, &state.auth, &input, ip.as_deref()).await?;
    Ok(Json(LoginResponse::from(outcome)))
}

/// Set a shop tenant's password with a reset code (`purpose: reset`); every session ends.
#[utoipa::path(post, path = "/api/v1/auth/tenant-password-reset", tag = "auth", request_body = CodeLogin,
    responses((status = 204), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn tenant_password_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(input): ApiJson<CodeLogin>,
) -> ApiResult<StatusCode> {
    tenant_code::reset_password(&state.pool, &state.auth, &input, ip.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefreshInput {
    pub refresh_token: String,
}

/// Exchange a refresh token for a new pair; the old refresh token is used up.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshInput,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<RefreshInput>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(
        auth::refresh(&state.pool, &state.auth, &input.refresh_token).await?,
    ))
}

/// End a session: its refresh token (and every rotation of it) is revoked.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshInput,
    responses((status = 204)))]
async fn logout(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<RefreshInput>,
) -> ApiResult<StatusCode> {
    auth::logout(&state.pool, &input.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller: user, role, rights and company.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, description = "the caller"), (status = 401, body = ErrorBody)))]
async fn me(session: Session) -> ApiResult<Json<Principal>> {
    Ok(Json(session.principal))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// Change one's own password (required after an initial or reset password). Ends the caller's
/// sessions: log in again with the new password.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204), (status = 422, body = ErrorBody)))]
async fn change_password(
    mut session: Session,
    ApiJson(input): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    auth::change_own_password(
        &mut session.tx,
        &session.principal,
        &input.current_password,
        &input.new_password,
    )
    .await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
