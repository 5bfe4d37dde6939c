//! The one error type of core services. It says *what kind* of failure happened so that each
//! boundary (REST handler, server function, CLI) can map it to its own form: a status code, a
//! message on a page, an exit code. It never exposes `sqlx::Error`; database failures become
//! `Internal` with their cause kept for the log.

use std::collections::BTreeMap;

/// Result of a core service call.
pub type CoreResult<T> = Result<T, CoreError>;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No credentials, bad credentials, or an expired, tampered or revoked token.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may see the resource but not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist, or the caller may not see it at all.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Input that fails validation; `fields` maps field names to messages.
    #[error("{message}")]
    Validation {
        message: String,
        fields: BTreeMap<String, String>,
    },
    /// A uniqueness or state conflict (the username is taken, the company is already suspended).
    #[error("{0}")]
    Conflict(String),
    /// Too many failed attempts; the caller must wait.
    #[error("{0}")]
    Throttled(String),
    /// A company quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Anything the caller cannot fix: database down, a bug. Logged once at the boundary.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// A validation error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut fields = BTreeMap::new();
        fields.insert(field.to_owned(), message.clone());
        CoreError::Validation { message, fields }
    }

    /// `Ok` when `fields` is empty, else a validation error naming each field.
    pub fn check_fields(fields: BTreeMap<String, String>) -> CoreResult<()> {
        if fields.is_empty() {
            Ok(())
        } else {
            Err(CoreError::Validation {
                message: "please correct the highlighted fields".into(),
                fields,
            })
        }
    }

    /// Stable snake_case code for API error bodies and translations.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Unauthorized(_) => "unauthorized",
            CoreError::Forbidden(_) => "forbidden",
            CoreError::NotFound(_) => "not_found",
            CoreError::Validation { .. } => "validation_failed",
            CoreError::Conflict(_) => "conflict",
            CoreError::Throttled(_) => "too_many_attempts",
            CoreError::QuotaExceeded(_) => "quota_exceeded",
            CoreError::Internal(_) => "internal",
        }
    }
}

#[cfg(feature = "db")]
impl From<sqlx::Error> for CoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            // 23505 unique_violation: callers that expect one check first and give a better
            // message; this is the fallback when two requests race.
            if db.code().as_deref() == Some("23505") {
                return CoreError::Conflict("already exists".into());
            }
            // 22021 character_not_in_repertoire: PostgreSQL text cannot hold a NUL byte, which
            // any text field (a login name included) may carry. The caller's input, not a fault.
            if db.code().as_deref() == Some("22021") {
                return CoreError::Validation {
                    message: "text may not contain NUL characters".into(),
                    fields: BTreeMap::new(),
                };
            }
        }
        if matches!(err, sqlx::Error::RowNotFound) {
            return CoreError::NotFound("record");
        }
        CoreError::Internal(format!("database: {err}"))
    }
}
