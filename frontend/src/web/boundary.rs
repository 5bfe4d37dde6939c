//! Reads what [`powertab_core::auth::boundary`] needs from an HTTP request. REST extractors
//! (server crate), server functions and the import upload all call [`open`] here, so a session
//! is resolved by one rule whichever door a request comes through.

use axum::extract::ConnectInfo;
use http::{header, HeaderMap};
use powertab_core::auth::boundary::{self, Intent, Refused, RequestAuth};
use powertab_core::auth::{AuthConfig, Principal};
use powertab_core::db::Tx;
use sqlx::PgPool;
use std::net::SocketAddr;

/// The peer address axum recorded for the connection.
pub fn peer(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The request's credentials: `csrf` is the token the request repeats, when it carries it
/// somewhere else than the `X-CSRF-Token` header (a form field).
pub fn request_auth<'a>(
    headers: &'a HeaderMap,
    peer: Option<std::net::IpAddr>,
    csrf: Option<&'a str>,
) -> RequestAuth<'a> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    RequestAuth {
        bearer: text(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")),
        cookies: text(header::COOKIE).unwrap_or(""),
        csrf: csrf.or_else(|| text(header::HeaderName::from_static("x-csrf-token"))),
        forwarded_for: text(header::HeaderName::from_static("x-forwarded-for")),
        peer,
    }
}

/// The client's address as sessions and the audit log see it: the socket peer, or the first
/// `X-Forwarded-For` entry when configured to trust a proxy (login uses it before any session).
pub fn client_ip(
    headers: &HeaderMap,
    extensions: &http::Extensions,
    trust_forwarded_for: bool,
) -> Option<String> {
    let request = request_auth(headers, peer(extensions), None);
    powertab_core::auth::client_address(request.forwarded_for, request.peer, trust_forwarded_for)
}

/// Opens the session of a request (see [`powertab_core::auth::boundary`]).
pub async fn open(
    pool: &PgPool,
    auth: &AuthConfig,
    trust_forwarded_for: bool,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    csrf: Option<&str>,
    intent: Intent,
) -> Result<(Principal, Tx), Refused> {
    let request = request_auth(headers, peer(extensions), csrf);
    boundary::open(pool, auth, trust_forwarded_for, &request, intent).await
}
