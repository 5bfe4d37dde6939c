//! The web side of the server: mounts the Leptos app (server-side rendering, server functions,
//! the hydration bundle under `/pkg`) and keeps browser sessions alive by rotating the refresh
//! cookie when the short-lived access cookie has expired.

use crate::app::{api_not_found, AppState};
use axum::extract::{ConnectInfo, Multipart};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Redirect;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use powertab_core::auth::boundary::{Intent, Refused};
use powertab_core::auth::{self, ACCESS_COOKIE, REFRESH_COOKIE};
use powertab_core::import::{self, ImportKind};
use powertab_frontend::app::{shell, App};
use powertab_frontend::web::{boundary, server::WebContext};
use std::net::SocketAddr;
use tower_http::services::ServeDir;

/// The stylesheet, compiled in so the server needs no files besides the wasm bundle.
const STYLESHEET: &str = include_str!("../../frontend/style/powertab.css");
/// The web app manifest and its icon: the tenant's pages install on a phone's home screen.
const MANIFEST: &str = include_str!("../../frontend/style/manifest.webmanifest");
const ICON_SVG: &str = include_str!("../../frontend/style/icon.svg");

/// Web routes: pages, server functions, the stylesheet and the hydration bundle.
pub fn router(state: AppState) -> Router<AppState> {
    let routes = generate_route_list(App);
    let web_context = WebContext {
        pool: state.pool.clone(),
        auth: state.auth.clone(),
        cookie_secure: state.config.cookie_secure,
        trust_forwarded_for: state.config.trust_forwarded_for,
        gateway_secret: state.config.ingest.gateway_secret.clone(),
        mqtt_broker: state.config.ingest.mqtt_broker_for_gateways(),
        keyring: state.keyring.clone(),
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
        .route(
            "/manifest.webmanifest",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/manifest+json")],
                    MANIFEST,
                )
            }),
        )
        .route(
            "/icon.svg",
            get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], ICON_SVG) }),
        )
        .nest_service(
            "/pkg",
            Router::new()
                .fallback_service(
                    ServeDir::new(pkg_dir)
                        .precompressed_br()
                        .precompressed_gzip(),
                )
                .layer(axum::middleware::from_fn(pkg_cache_headers)),
        )
        .route(
            "/web/import",
            post(upload_import).layer(axum::extract::DefaultBodyLimit::max(
                IMPORT_UPLOAD_BYTES_MAX,
            )),
        )
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(web_context.clone()),
            move || shell(options.clone()),
        )
        .fallback(fallback)
}

/// The hydration bundle's file stem (`powertab.<hash>`), from `pkg/bundle.txt` that
/// infra/build-wasm.sh writes; `powertab` (the unhashed files) without one.
pub fn bundle_name(site_root: &std::path::Path) -> String {
    std::fs::read_to_string(site_root.join("pkg/bundle.txt"))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|name| {
            name.starts_with("powertab.")
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        })
        .unwrap_or_else(|| "powertab".to_owned())
}

/// Cache rules of `/pkg`: a content-hashed file never changes, so browsers keep it a year
/// without asking; anything else is revalidated each time.
async fn pkg_cache_headers(request: Request, next: Next) -> Response {
    let hashed = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .and_then(|file| file.strip_prefix("powertab."))
        .is_some_and(|rest| rest.contains('.'));
    let mut response = next.run(request).await;
    let value = if hashed && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static(value),
    );
    response
}

/// Largest file the import wizard takes.
const IMPORT_UPLOAD_BYTES_MAX: usize = 20 * 1024 * 1024;

/// The import wizard's upload (a multipart form, so it needs no JavaScript): checks the CSRF
/// field and the session cookie, stages the file with its dry-run report, and redirects to the
/// report page (or back to the form with `?error=`).
async fn upload_import(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let back = |code: &str| Redirect::to(&format!("/import?error={code}")).into_response();
    let (mut csrf, mut kind, mut file) = (String::new(), String::new(), None::<(String, Vec<u8>)>);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                let filename = field.file_name().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    return back("validation_failed");
                };
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
                    "kind" => kind = String::from_utf8_lossy(&bytes).into_owned(),
                    "file" => file = filename.map(|f| (f, bytes.to_vec())),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return back("validation_failed"),
        }
    }
    let Ok(kind) = serde_json::from_value::<ImportKind>(serde_json::Value::String(kind)) else {
        return back("validation_failed");
    };
    let Some((filename, bytes)) = file.filter(|(f, b)| !f.is_empty() && !b.is_empty()) else {
        return back("missing_file");
    };
    // The session through the one boundary, as REST and the server functions open theirs:
    // CSRF from the form field, the forwarded address only behind a trusted proxy, no work
    // for a user who must first change the initial password.
    let request = boundary::request_auth(&headers, Some(peer.ip()), Some(&csrf));
    let opened = auth::boundary::open(
        &state.pool,
        &state.auth,
        state.config.trust_forwarded_for,
        &request,
        Intent::Change,
    )
    .await;
    let (principal, mut tx) = match opened {
        Ok(found) => found,
        Err(Refused::SignedOut(_)) => return Redirect::to("/login").into_response(),
        Err(Refused::CsrfMismatch) => return back("csrf_mismatch"),
        Err(Refused::PasswordChangeRequired) => return Redirect::to("/password").into_response(),
        Err(Refused::Failed(err)) => {
            tracing::error!(cause = %err, "import upload");
            return back("internal");
        }
    };
    let staged = async {
        let upload = import::stage(&mut tx, &principal, kind, &filename, &bytes).await?;
        tx.commit().await?;
        Ok::<_, powertab_core::CoreError>(upload)
    }
    .await;
    match staged {
        Ok(upload) => Redirect::to(&format!("/import/{}", upload.id)).into_response(),
        Err(err) if err.is_internal() => {
            tracing::error!(cause = %err, "import upload");
            back("internal")
        }
        Err(powertab_core::CoreError::Validation { fields, .. }) => {
            let names: Vec<String> = fields.into_keys().collect();
            Redirect::to(&format!(
                "/import?error=validation_failed&fields={}",
                names.join(",")
            ))
            .into_response()
        }
        Err(err) => back(err.code()),
    }
}

/// Refuses cookie-authenticated changes that do not come from our own pages (DESIGN.md:
/// Server). Browsers say where a request comes from in `Sec-Fetch-Site` and `Origin`; a form
/// on another site posting to `/sfn/login`, a server function, the import upload or the REST
/// API with the victim's cookies is answered 403 before any handler runs. Requests with a
/// bearer token are not a browser's ambient authority and pass.
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let headers = request.headers();
    let bearer = headers.contains_key(header::AUTHORIZATION);
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if changes
        && !bearer
        && !auth::same_origin(text("origin"), text("sec-fetch-site"), text("host"))
    {
        metrics::counter!("powertab_cross_site_refused_total").increment(1);
        return (
            axum::http::StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":{"code":"cross_site_request","message":"this request did not come from PowerTab's own pages"}}"#,
        )
            .into_response();
    }
    next.run(request).await
}

/// Headers every answer carries: no MIME sniffing, no framing, referrers only to ourselves
/// (server functions read the `Referer` to send a form back to its page), HSTS behind HTTPS,
/// a closed Content-Security-Policy where a page has not set its own, and no caching of API
/// answers (tokens, credentials, per-user data).
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set =
        |headers: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str| {
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from_static(value));
            }
        };
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    );
    if state.config.cookie_secure {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    if path.starts_with("/api/") || path.starts_with("/sfn/") {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
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
            for cookie in auth::session_cookie_headers(&pair, state.config.cookie_secure) {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(_) => {
            let mut response = next.run(request).await;
            for cookie in auth::clear_cookie_headers(state.config.cookie_secure) {
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
    }
}
