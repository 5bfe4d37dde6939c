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
    /// A money movement that would take an available balance below what the overdraft rule
    /// allows (DESIGN.md: Money and the ledger).
    #[error("{0}")]
    InsufficientBalance(String),
    /// An Idempotency-Key already used for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    /// Too many failed attempts; the caller must wait.
    #[error("{0}")]
    Throttled(String),
    /// A company quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Anything the caller cannot fix: a bug, an impossible state. Logged once at the boundary.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database refused or failed. The SQLSTATE and the constraint are kept, so callers can
    /// retry a serialization failure or deadlock ([`CoreError::is_retryable`],
    /// `db::retrying`) and recognise their own unique constraint (an idempotency key's replay:
    /// [`CoreError::violates`]); a unique violation nobody expected answers 409, anything else
    /// 500 (logged with `message`).
    #[error("database: {message}")]
    Database {
        sqlstate: Option<String>,
        constraint: Option<String>,
        message: String,
    },
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

    /// Whether trying the whole transaction again may succeed: a serialization failure
    /// (40001) or a deadlock (40P01).
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoreError::Database { sqlstate: Some(code), .. } if code == "40001" || code == "40P01")
    }

    /// Whether this is a unique violation of the named constraint.
    pub fn violates(&self, constraint_name: &str) -> bool {
        matches!(self, CoreError::Database { sqlstate: Some(code), constraint: Some(c), .. }
            if code == "23505" && c == constraint_name)
    }

    fn is_unique_violation(&self) -> bool {
        matches!(self, CoreError::Database { sqlstate: Some(code), .. } if code == "23505")
    }

    /// The HTTP status every boundary (REST, server functions) answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            CoreError::Unauthorized(_) => 401,
            CoreError::Forbidden(_) => 403,
            CoreError::NotFound(_) => 404,
            CoreError::Validation { .. } => 422,
            CoreError::Conflict(_)
            | CoreError::QuotaExceeded(_)
            | CoreError::InsufficientBalance(_)
            | CoreError::IdempotencyKeyReused => 409,
            CoreError::Throttled(_) => 429,
            CoreError::Database { .. } if self.is_unique_violation() => 409,
            CoreError::Internal(_) | CoreError::Database { .. } => 500,
        }
    }

    /// Whether the cause must be logged (the caller gets an opaque answer).
    pub fn is_internal(&self) -> bool {
        self.http_status() == 500
    }

    /// The message for the caller: the error itself, or an opaque one for internal failures.
    pub fn public_message(&self) -> String {
        if self.is_internal() {
            "internal error; it has been logged".to_owned()
        } else if self.is_unique_violation() {
            // Says nothing of what else exists (another company's name, say).
            "already exists".to_owned()
        } else {
            self.to_string()
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
            CoreError::InsufficientBalance(_) => "insufficient_balance",
            CoreError::IdempotencyKeyReused => "idempotency_key_reused",
            CoreError::Throttled(_) => "too_many_attempts",
            CoreError::QuotaExceeded(_) => "quota_exceeded",
            CoreError::Database { .. } if self.is_unique_violation() => "conflict",
            CoreError::Internal(_) | CoreError::Database { .. } => "internal",
        }
    }
}

#[cfg(feature = "db")]
impl From<sqlx::Error> for CoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
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
        // 23505 unique_violation: callers that expect one check first and give a better
        // message, or recognise their constraint ([`CoreError::violates`]); otherwise it is
        // the fallback when two requests race, answered 409.
        let (sqlstate, constraint) = match &err {
            sqlx::Error::Database(db) => (
                db.code().map(|c| c.into_owned()),
                db.constraint().map(str::to_owned),
            ),
            _ => (None, None),
        };
        CoreError::Database {
            sqlstate,
            constraint,
            message: err.to_string(),
        }
    }
}
