//! The one place a request becomes a session (DESIGN.md: Server). REST handlers, server
//! functions and the import upload each describe the request in a [`RequestAuth`] — no HTTP
//! types here, only the strings they carry — and call [`open`], which decides everything the
//! same way for all three:
//!
//! - the credential: a bearer token (API clients), else the access cookie (the web app);
//! - CSRF: a change made with the cookie must carry the token bound to this session (header or
//!   form field); bearer requests carry no ambient authority and need none;
//! - the client address (the peer, or the first `X-Forwarded-For` entry behind a trusted proxy);
//! - the company and the user still active ([`super::resolve`]);
//! - the forced change of an initial password: such a session may only change its password
//!   (and read who it is, and sign out).

use super::{
    client_address, cookie_value, csrf_matches, decode_access, resolve, AuthConfig, Principal,
    ACCESS_COOKIE,
};
use crate::db::Tx;
use crate::kernel::error::CoreError;
use sqlx::PgPool;
use std::net::IpAddr;

/// What a request says about who sends it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestAuth<'a> {
    /// The token of `Authorization: Bearer …`, if any.
    pub bearer: Option<&'a str>,
    /// The whole `Cookie` header ("" without one).
    pub cookies: &'a str,
    /// The CSRF token the request repeats (`X-CSRF-Token` or the form's `csrf` field).
    pub csrf: Option<&'a str>,
    /// The `X-Forwarded-For` header.
    pub forwarded_for: Option<&'a str>,
    /// The socket peer.
    pub peer: Option<IpAddr>,
}

/// What the request wants to do, which decides the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Read only (GET, page data).
    Read,
    /// Change something.
    Change,
    /// What a user who must change the initial password may still do: change it, read who
    /// they are, sign out. A change still needs CSRF.
    PasswordChange { changes: bool },
}

impl Intent {
    fn changes(self) -> bool {
        matches!(
            self,
            Intent::Change | Intent::PasswordChange { changes: true }
        )
    }
}

/// Why no session was opened.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No credential, or one that is bad, expired or revoked: sign in (again).
    #[error("{0}")]
    SignedOut(String),
    /// A cookie change without the token bound to this session.
    #[error("the form is out of date: reload the page and try again")]
    CsrfMismatch,
    /// The user must first change the initial password.
    #[error("change your initial password first")]
    PasswordChangeRequired,
    /// Anything else (the database).
    #[error(transparent)]
    Failed(CoreError),
}

impl From<CoreError> for Refused {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::Unauthorized(why) => Refused::SignedOut(why),
            other => Refused::Failed(other),
        }
    }
}

/// Opens the request's session: the principal and a transaction in its company's schema.
pub async fn open(
    pool: &PgPool,
    config: &AuthConfig,
    trust_forwarded_for: bool,
    request: &RequestAuth<'_>,
    intent: Intent,
) -> Result<(Principal, Tx), Refused> {
    let claims = match request.bearer {
        Some(token) => decode_access(config, token)?,
        None => {
            let token = cookie_value(request.cookies, ACCESS_COOKIE)
                .ok_or_else(|| Refused::SignedOut("sign in first".into()))?;
            let claims = decode_access(config, token)?;
            // The token must be the one bound to this very session (not merely equal to a
            // cookie, which a sibling subdomain may be able to plant).
            if intent.changes() && !csrf_matches(config, &claims, request.csrf.unwrap_or("")) {
                return Err(Refused::CsrfMismatch);
            }
            claims
        }
    };
    let ip = client_address(request.forwarded_for, request.peer, trust_forwarded_for);
    let (principal, tx) = resolve(pool, &claims, ip, &config.clock).await?;
    if principal.must_change_password && !matches!(intent, Intent::PasswordChange { .. }) {
        return Err(Refused::PasswordChangeRequired);
    }
    Ok((principal, tx))
}
