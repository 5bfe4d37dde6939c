//! The HTTP error boundary: maps core errors to status codes and the JSON error body of
//! DESIGN.md (`{"error": {"code", "message", "fields"}}`). Internal errors are logged once here
//! with their cause and answered with an opaque 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use powertab_core::CoreError;
use serde::Serialize;
use std::collections::BTreeMap;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    Core(CoreError),
    /// The user must change the initial password before doing anything else.
    PasswordChangeRequired,
    /// A cookie-authenticated change without the matching CSRF header.
    CsrfMismatch,
    /// A malformed request body or query.
    BadRequest(String),
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        ApiError::Core(err)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::Core(err.into())
    }
}

/// The JSON error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code: unauthorized, forbidden, not_found, validation_failed, conflict,
    /// too_many_attempts, quota_exceeded, password_change_required, csrf_mismatch, bad_request,
    /// internal.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl ApiError {
    pub fn status_code_and_body(&self) -> (StatusCode, ErrorBody) {
        let (status, code, message, fields) = match self {
            ApiError::Core(err) => {
                let status = StatusCode::from_u16(err.http_status())
                    .expect("core answers only standard status codes");
                let message = err.public_message();
                let fields = match err {
                    CoreError::Validation { fields, .. } => fields.clone(),
                    _ => BTreeMap::new(),
                };
                (status, err.code(), message, fields)
            }
            ApiError::PasswordChangeRequired => (
                StatusCode::FORBIDDEN,
                "password_change_required",
                "change your initial password first".to_owned(),
                BTreeMap::new(),
            ),
            ApiError::CsrfMismatch => (
                StatusCode::FORBIDDEN,
                "csrf_mismatch",
                "missing or wrong X-CSRF-Token header".to_owned(),
                BTreeMap::new(),
            ),
            ApiError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                message.clone(),
                BTreeMap::new(),
            ),
        };
        (
            status,
            ErrorBody {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message,
                    fields,
                },
            },
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Core(err) = &self {
            if err.is_internal() {
                tracing::error!(cause = %err, "internal error");
                metrics::counter!("powertab_http_internal_errors_total").increment(1);
            }
        }
        let (status, body) = self.status_code_and_body();
        (status, Json(body)).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
