//! The web side of the server: mounts the Leptos app (server-side rendering, server functions,
//! the hydration bundle under `/pkg`) and keeps browser sessions alive by rotating the refresh
//! cookie when the short-lived access cookie has expired.

use crate::app::{api_not_found, AppState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use powertab_core::auth::{self, ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE};
use powertab_frontend::app::{shell, App};
use powertab_frontend::server::WebContext;
use tower_http::services::ServeDir;

/// The stylesheet, compiled in so the server needs no files besides the wasm bundle.
const STYLESHEET: &str = include_str!("../../frontend/style/powertab.css");

/// Web routes: pages, server functions, the stylesheet and the hydration bundle.
pub fn router(state: AppState) -> Router<AppState> {
    let routes = generate_route_list(App);
    let web_context = WebContext {
        pool: state.pool.clone(),
        auth: state.auth.clone(),
        cookie_secure: state.config.cookie_secure,
        trust_forwarded_for: state.config.trust_forwarded_for,
    };
    let options = state.leptos.clone();
    let pkg_dir = state.config.site_root.join("pkg");
    Router::new()
        .route(
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLESHEET,
                )
            }),
        )
        .nest_service("/pkg", ServeDir::new(pkg_dir))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(web_context.clone()),
            move || shell(options.clone()),
        )
        .fallback(fallback)
}

async fn fallback(request: Request) -> Response {
    if request.uri().path().starts_with("/api/") {
        return api_not_found().await;
    }
    (axum::http::StatusCode::NOT_FOUND, "not found").into_response()
}

/// When a browser's access cookie is missing or expired but its refresh cookie is present,
/// rotates the refresh token, lets this request through with the new access token, and sets
/// the new cookies on the response. Bearer-token requests and static files are left alone.
pub async fn refresh_web_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let is_static = path.starts_with("/pkg/") || path == "/favicon.ico";
    let has_bearer = request.headers().contains_key(header::AUTHORIZATION);
    let cookies = request
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let refresh_token = auth::cookie_value(&cookies, REFRESH_COOKIE).filter(|t| !t.is_empty());
    let access_valid = auth::cookie_value(&cookies, ACCESS_COOKIE)
        .is_some_and(|token| auth::decode_access(&state.auth, token).is_ok());
    let (Some(refresh_token), false, false, false) =
        (refresh_token, access_valid, has_bearer, is_static)
    else {
        return next.run(request).await;
    };
    match auth::refresh(&state.pool, &state.auth, refresh_token).await {
        Ok(pair) => {
            let csrf = auth::cookie_value(&cookies, CSRF_COOKIE)
                .map(str::to_owned)
                .unwrap_or_else(auth::new_csrf_token);
            // The rest of this request sees the new access token.
            let rewritten: Vec<String> = cookies
                .split(';')
                .map(str::trim)
                .filter(|c| {
                    !c.starts_with(&format!("{ACCESS_COOKIE}="))
                        && !c.starts_with(&format!("{REFRESH_COOKIE}="))
                })
                .map(str::to_owned)
                .chain([
                    format!("{ACCESS_COOKIE}={}", pair.access_token),
                    format!("{REFRESH_COOKIE}={}", pair.refresh_token),
                ])
                .collect();
            if let Ok(value) = HeaderValue::from_str(&rewritten.join("; ")) {
                request.headers_mut().insert(header::COOKIE, value);
            }
            let mut response = next.run(request).await;
            for cookie in auth::session_cookie_headers(&pair, &csrf, state.config.cookie_secure) {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(_) => {
            let mut response = next.run(request).await;
            for cookie in auth::clear_cookie_headers() {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
    }
}
