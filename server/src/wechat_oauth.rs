//! Linking a shop tenant's WeChat from their phone (issue 14: Tenant experience; the WeChat side
//! is `core::notify::oauth`). `GET /wechat/oauth/start` (signed in) sends the phone to the
//! company official account's silent authorisation; WeChat sends it back to
//! `GET /wechat/oauth/callback?code=…&state=…`, where the code becomes the tenant's openid. The
//! `state` is bound to the signed-in user and lives ten minutes, so the callback needs no CSRF
//! field: a link made for someone else, or an old one, links nothing. Either way the phone lands
//! on `/my` with what happened.

use crate::app::AppState;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use powertab_core::auth::boundary::{Intent, Refused};
use powertab_core::auth::Principal;
use powertab_core::db::Tx;
use powertab_core::notify::oauth;
use powertab_frontend::web::boundary;
use serde::Deserialize;
use std::net::SocketAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wechat/oauth/start", get(start))
        .route("/wechat/oauth/callback", get(callback))
}

fn back(code: &str) -> Response {
    Redirect::to(&format!("/my?error={code}")).into_response()
}

async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(Principal, Tx), Response> {
    let request = boundary::request_auth(headers, Some(peer.ip()), None);
    match powertab_core::auth::boundary::open(
        &state.pool,
        &state.auth,
        state.config.trust_forwarded_for,
        &request,
        Intent::Read,
    )
    .await
    {
        Ok(found) => Ok(found),
        Err(Refused::SignedOut(_)) => Err(Redirect::to("/login").into_response()),
        Err(Refused::PasswordChangeRequired) => Err(Redirect::to("/password").into_response()),
        Err(Refused::CsrfMismatch) => Err(back("csrf_mismatch")),
        Err(Refused::Failed(e)) => {
            tracing::error!(cause = %e, "wechat oauth");
            Err(back("internal"))
        }
    }
}

/// Where WeChat sends the phone back: the configured public address, else this request's host.
fn callback_url(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let base = match &state.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get("host")?.to_str().ok()?;
            let scheme = if state.config.cookie_secure {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}")
        }
    };
    Some(format!("{base}/wechat/oauth/callback"))
}

async fn start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (principal, mut tx) = match signed_in(&state, &headers, peer).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let app = match oauth::wechat_app(&mut tx, &state.vendors).await {
        Ok(Some(app)) => app,
        Ok(None) => return back("wechat_not_set_up"),
        Err(e) => {
            tracing::error!(cause = %e, "wechat oauth");
            return back("internal");
        }
    };
    let Some(redirect_uri) = callback_url(&state, &headers) else {
        return back("validation_failed");
    };
    let oauth_state = oauth::state_for(
        &state.auth.jwt_secret,
        principal.user_id,
        state.auth.clock.now(),
    );
    Redirect::to(&oauth::authorize_url(
        &state.vendors.urls,
        &app,
        &redirect_uri,
        &oauth_state,
    ))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
}

async fn callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Response {
    let (principal, mut tx) = match signed_in(&state, &headers, peer).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    if !oauth::state_ok(
        &state.auth.jwt_secret,
        principal.user_id,
        &answer.state,
        state.auth.clock.now(),
    ) {
        return back("wechat_link_failed");
    }
    let linked = async {
        let Some(app) = oauth::wechat_app(&mut tx, &state.vendors).await? else {
            return Ok(false);
        };
        let openid = oauth::openid_for_code(&state.vendors, &app, &answer.code).await?;
        oauth::link_openid(&mut tx, &principal, &openid).await?;
        tx.commit().await?;
        Ok::<_, powertab_core::CoreError>(true)
    }
    .await;
    match linked {
        Ok(true) => Redirect::to("/my?ok=tenant.wechat_linked").into_response(),
        Ok(false) => back("wechat_not_set_up"),
        Err(e) => {
            tracing::warn!(cause = %e, "wechat oauth refused");
            back("wechat_link_failed")
        }
    }
}
