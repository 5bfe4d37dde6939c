//! Request extractors: the authenticated [`Session`] (principal plus a transaction already
//! scoped to the caller's company), and JSON/query extractors whose rejections use our error
//! body. A token comes from `Authorization: Bearer …` (API clients) or the `pt_access` cookie
//! (the web app); cookie-authenticated changes must repeat the CSRF cookie in `X-CSRF-Token`.

use super::error::ApiError;
use crate::app::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::Method;
use powertab_core::auth::boundary::{Intent, Refused};
use powertab_core::auth::Principal;
use powertab_core::db::Tx;
use powertab_core::CoreError;
use powertab_frontend::web::boundary;

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
    boundary::client_ip(&parts.headers, &parts.extensions, trust_forwarded_for)
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    /// Through the one boundary (`powertab_core::auth::boundary`): the same rules as the
    /// server functions and the import upload.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let changes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let intent = if PASSWORD_CHANGE_PATHS.contains(&parts.uri.path()) {
            Intent::PasswordChange { changes }
        } else if changes {
            Intent::Change
        } else {
            Intent::Read
        };
        let opened = boundary::open(
            &state.pool,
            &state.auth,
            state.config.trust_forwarded_for,
            &parts.headers,
            &parts.extensions,
            None,
            intent,
        )
        .await;
        match opened {
            Ok((principal, tx)) => Ok(Session { principal, tx }),
            Err(Refused::SignedOut(why)) => Err(CoreError::Unauthorized(why).into()),
            Err(Refused::CsrfMismatch) => Err(ApiError::CsrfMismatch),
            Err(Refused::PasswordChangeRequired) => Err(ApiError::PasswordChangeRequired),
            Err(Refused::Failed(e)) => Err(e.into()),
        }
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
