//! The HTTP application: shared state, the router (REST API, OpenAPI document, health and
//! metrics endpoints, web pages), and the `run(listener, shutdown)` seam that `main` and the
//! tests both use.

use crate::api;
use crate::config::Config;
use crate::web;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use leptos::config::LeptosOptions;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use powertab_core::auth::AuthConfig;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub auth: Arc<AuthConfig>,
    pub config: Arc<Config>,
    /// Where the web app's hydration bundle is served from.
    pub leptos: LeptosOptions,
    /// Key-encryption keys for secrets at rest (none configured: secrets cannot be stored).
    pub keyring: Option<Arc<powertab_core::kernel::secrets::Keyring>>,
    /// Notification vendors: their URLs, an HTTP client, the keyring.
    pub vendors: powertab_core::notify::accounts::Vendors,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl AppState {
    pub fn new(pool: PgPool, config: Config) -> anyhow::Result<AppState> {
        let auth = config.auth()?;
        let keyring = config.keyring()?.map(Arc::new);
        // Install the recorder before anything counts, or early counts are lost.
        metrics_handle();
        let leptos = LeptosOptions::builder()
            .output_name(crate::web::bundle_name(&config.site_root))
            .site_root(config.site_root.to_string_lossy().to_string())
            .site_pkg_dir("pkg")
            .build();
        let vendors =
            powertab_core::notify::accounts::Vendors::new(config.notify.urls(), keyring.clone());
        Ok(AppState {
            pool,
            auth: Arc::new(auth),
            config: Arc::new(config),
            leptos,
            keyring,
            vendors,
        })
    }
}

/// The process-wide Prometheus recorder, installed on first use (tests start many apps in one
/// process, and a global recorder can be installed only once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding program; then ours only
            // renders what it sees.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The whole router, ready to serve.
pub fn router(state: AppState) -> Router {
    let (api_routes, openapi) = api::api_router().split_for_parts();
    let openapi = Arc::new(openapi);
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { Json((*doc).clone()) }
            }),
        );
    Router::new()
        .merge(ops)
        .merge(api_routes)
        .merge(crate::sandbox_pay::router().with_state(state.clone()))
        .merge(crate::wechat_oauth::router().with_state(state.clone()))
        .merge(web::router(state.clone()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            web::refresh_web_session,
        ))
        .layer(middleware::from_fn(web::refuse_cross_site))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            web::security_headers,
        ))
        .layer(middleware::from_fn(track_metrics))
        // A bug that panics in one request answers 500 to that request; the connection and
        // the process stay up (tokio would otherwise drop the connection without an answer).
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        // Every log line of a request carries its id (sent back as `x-request-id`), and once
        // the session is resolved the company and the user (core::auth::resolve records them).
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Prometheus figures, for a scraper that sends the configured `metrics_token`.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match &state.config.metrics_token {
        Some(token)
            if !given.is_empty()
                && powertab_core::auth::constant_time_eq(token.expose(), given) =>
        {
            metrics_handle().render().into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The span of one request: method, path, request id; company and user filled in later.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id,
        company_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    )
}

/// The answer for an unknown `/api/…` path: our JSON 404, not a web page.
pub async fn api_not_found() -> Response {
    api::error::ApiError::Core(powertab_core::CoreError::NotFound("route")).into_response()
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if powertab_core::db::ping(&state.pool).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}

/// Counts requests and their latency by route template and status.
async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("powertab_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("powertab_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves the app on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
