//! Request extractors: the authenticated [`Session`] (principal plus a transaction already
//! scoped to the caller's company), and JSON/query extractors whose rejections use our error
//! body. A token comes from `Authorization: Bearer …` (API clients) or the `pt_access` cookie
//! (the web app); cookie-authenticated changes must repeat the CSRF cookie in `X-CSRF-Token`.

use super::error::ApiError;
use crate::app::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method};
use powertab_core::auth::{self, Principal, ACCESS_COOKIE};
use powertab_core::db::Tx;
use powertab_core::CoreError;
use std::net::SocketAddr;

/// The caller and a transaction in the caller's schema. Handlers that change data commit it;
/// dropping it rolls back.
pub struct Session {
    pub principal: Principal,
    pub tx: Tx,
}

/// Paths a user who must change the initial password may still use.
const PASSWORD_CHANGE_PATHS: [&str; 3] =
    ["/api/v1/me", "/api/v1/me/password", "/api/v1/auth/logout"];

/// The client's address: the socket peer, or the first `X-Forwarded-For` entry when configured
/// to trust a proxy.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> Option<String> {
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    auth::client_address(forwarded, peer, trust_forwarded_for)
}

fn cookie_header(parts: &Parts) -> &str {
    parts
        .headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let claims = match bearer {
            Some(token) => auth::decode_access(&state.auth, &token)?,
            None => {
                let cookies = cookie_header(parts);
                let token = auth::cookie_value(cookies, ACCESS_COOKIE)
                    .ok_or_else(|| CoreError::Unauthorized("sign in first".into()))?;
                let claims = auth::decode_access(&state.auth, token)?;
                let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
                if !safe {
                    // The token must be the one bound to this very session (not merely equal
                    // to a cookie, which others may be able to plant).
                    let given = parts
                        .headers
                        .get("x-csrf-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !auth::csrf_matches(&state.auth, &claims, given) {
                        return Err(ApiError::CsrfMismatch);
                    }
                }
                claims
            }
        };
        let ip = client_ip(parts, state.config.trust_forwarded_for);
        let (principal, tx) = auth::resolve(&state.pool, &claims, ip, &state.auth.clock).await?;
        if principal.must_change_password && !PASSWORD_CHANGE_PATHS.contains(&parts.uri.path()) {
            return Err(ApiError::PasswordChangeRequired);
        }
        Ok(Session { principal, tx })
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// `Json` whose rejection is our error body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejection is our error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
