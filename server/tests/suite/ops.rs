//! Operations endpoints and API conventions: health, readiness, metrics, the OpenAPI document,
//! JSON errors for unknown routes and bad bodies, and CSRF protection for cookie sessions.

use crate::helpers::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.0,
        StatusCode::OK
    );
    app.try_login("", "nobody", "wrong-password-1").await;
    // Without the scraper's token there is nothing to see.
    let (status, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let wrong = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let response = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(crate::helpers::TEST_METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("powertab_http_requests_total"), "{text}");
    assert!(text.contains("powertab_login_failed_total"), "{text}");
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.db.pool.close().await;
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_api_and_its_error_codes() {
    let app = spawn_app().await;
    let (status, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/auth/login",
        "/api/v1/users/{id}",
        "/api/v1/platform/companies/{id}/enter",
        "/api/v1/audit-log.xlsx",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn unknown_routes_and_malformed_bodies_get_json_errors() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (status, body) = app.get("/api/v1/no-such-thing", &root).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let response = app
        .http
        .post(app.url("/api/v1/platform/companies"))
        .bearer_auth(&root.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

/// The CSRF token bound to the session of `access_token`, as the server computes it.
fn bound_csrf(access_token: &str) -> String {
    use base64::Engine;
    let payload = access_token.split('.').nth(1).unwrap();
    let claims: powertab_core::auth::Claims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let config = powertab_core::auth::AuthConfig {
        jwt_secret: powertab_core::auth::Secret::new(crate::helpers::TEST_JWT_SECRET),
        access_ttl_s: 900,
        refresh_ttl_s: 3600,
        throttle: Default::default(),
        clock: powertab_core::kernel::clock::system(),
    };
    powertab_core::auth::csrf_token_for(&config, claims.fam.expect("a session token"))
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_bound_to_the_session_for_changes() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    // A cookie planted by someone else (a sibling subdomain can set one) does not help.
    let cookies = format!("pt_access={}; pt_csrf=token123", admin.token);
    let get = app
        .http
        .get(app.url("/api/v1/users"))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let body = json!({"username": "op1", "role": "operator", "password": "initial-pass-1"});
    let post = |token: Option<String>, site: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.url("/api/v1/users"))
            .header("cookie", &cookies)
            .json(&body);
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        request.send()
    };
    assert_eq!(
        post(None, None).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(Some("token123".into()), None).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "equal to the cookie is not enough"
    );
    let bound = bound_csrf(&admin.token);
    // From another site, even the right token is refused.
    assert_eq!(
        post(Some(bound.clone()), Some("cross-site"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(Some(bound), Some("same-origin"))
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_login_form_posted_from_another_site_is_refused() {
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let response = app
        .http
        .post(app.url("/sfn/login"))
        .header("origin", "https://evil.example")
        .form(&[
            ("company", "acme"),
            ("username", "boss"),
            ("password", crate::helpers::PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no session was made"
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app().await;
    let root = app.root().await;
    for (path, page) in [("/login", true), ("/api/v1/me", false), ("/healthz", false)] {
        let response = app
            .http
            .get(app.url(path))
            .bearer_auth(&root.token)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "same-origin", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        if page {
            assert!(csp.contains("script-src 'self' 'nonce-"), "{path}: {csp}");
            let nonce = csp
                .split("'nonce-")
                .nth(1)
                .unwrap()
                .split('\'')
                .next()
                .unwrap()
                .to_owned();
            let html = response.text().await.unwrap();
            assert!(
                html.contains(&format!("nonce=\"{nonce}\"")),
                "the page's scripts carry the nonce"
            );
        }
        if path.starts_with("/api/") {
            assert_eq!(header("cache-control"), "no-store", "{path}");
        }
    }
    // Session cookies: the access cookie lives as long as its token.
    let response = crate::web::browser_like()
        .post(app.url("/sfn/login"))
        .form(&[
            ("company", ""),
            ("username", "root"),
            ("password", crate::helpers::PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let access = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("pt_access="))
        .expect("an access cookie");
    assert!(access.contains("Max-Age=900"), "{access}");
}

#[tokio::test]
async fn a_browser_with_an_expired_access_cookie_is_refreshed_by_its_refresh_cookie() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    // Only the refresh cookie: the access cookie has expired and the browser dropped it.
    let response = app
        .http
        .get(app.url("/users"))
        .header("accept", "text/html")
        .header(
            "cookie",
            format!("pt_refresh={}; pt_csrf=abc", admin.refresh),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set_cookies.iter().any(|c| c.starts_with("pt_access=ey")),
        "{set_cookies:?}"
    );
    assert!(set_cookies
        .iter()
        .any(|c| c.starts_with("pt_refresh=") && !c.contains(&admin.refresh)));
    let page = response.text().await.unwrap();
    assert!(
        page.contains("id=\"users\""),
        "the page rendered for the refreshed session"
    );
    // The old refresh token is used up (once the grace for parallel refreshes has passed).
    sqlx::query("update control.refresh_token set used_at = now() - interval '1 minute' where used_at is not null")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": admin.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_login_page_prefills_the_company_of_a_login_link() {
    let app = spawn_app().await;
    let page = app
        .http
        .get(app.url("/login?company=acme-plaza"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"acme-plaza\""), "{page}");
    assert!(page.contains("lang=\"zh-CN\""), "Chinese by default");
}

#[tokio::test]
async fn the_openapi_document_lists_every_query_parameter() {
    let app = spawn_app().await;
    let (_, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    let names = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (path, expected) in [
        (
            "/api/v1/meters",
            &["gateway_id", "building_id", "q", "cursor", "limit"][..],
        ),
        ("/api/v1/fleet", &["problems", "q", "limit", "offset"][..]),
        ("/api/v1/audit-log", &["action", "actor", "from", "to"][..]),
        (
            "/api/v1/meters/{id}/readings",
            &["from", "to", "flagged", "limit"][..],
        ),
        ("/api/v1/import", &["kind", "filename", "dry_run"][..]),
        ("/api/v1/meters.xlsx", &["lang", "q"][..]),
    ] {
        let method = if path == "/api/v1/import" {
            "post"
        } else {
            "get"
        };
        let listed = names(path, method);
        for name in expected {
            assert!(
                listed.iter().any(|l| l == name),
                "{path}: {name} missing from {listed:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_schema_the_document_refers_to_is_in_it() {
    let app = spawn_app().await;
    let (_, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referred to but not defined"
        );
    }
}

/// The API fuzzer's find: an overdraft limit of i64::MIN overflowed the level check and dropped
/// the connection. It is a field error now, and the server keeps serving.
#[tokio::test]
async fn extreme_numbers_are_field_errors_not_crashes() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let body = json!({"alarm1_fen": 0, "alarm2_fen": 0, "arrears_cap_fen": 0, "no_trip_on_holidays": false,
        "offline_gateway_s": 0, "overdraft_limit_fen": i64::MIN, "quiet_end_minute": 0, "quiet_start_minute": 0,
        "restore_level_fen": 0, "stale_meter_s": 0});
    let (status, answer) = app
        .call(Method::PUT, "/api/v1/settings", Some(&admin), Some(body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(app.get("/api/v1/settings", &admin).await.0, StatusCode::OK);
}

/// Behind HTTPS (`cookie_secure`) every cookie PowerTab sets is `Secure` and answers carry HSTS.
#[tokio::test]
async fn behind_https_every_cookie_is_secure_and_hsts_is_sent() {
    let app = crate::helpers::spawn_app_changed(|config| config.cookie_secure = true).await;
    let client = crate::web::browser_like();
    let login = client
        .post(app.url("/sfn/login"))
        .form(&[
            ("company", ""),
            ("username", "root"),
            ("password", crate::helpers::PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert!(login.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let language = client
        .post(app.url("/sfn/language"))
        .form(&[("lang", "en")])
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = [login, language]
        .iter()
        .flat_map(|r| {
            r.headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(cookies.len() >= 5, "{cookies:?}");
    for cookie in &cookies {
        assert!(cookie.contains("; Secure"), "{cookie}");
    }
}

/// Every answer carries the request's id (made when the caller sent none), the id every log
/// line of the request carries.
#[tokio::test]
async fn every_answer_carries_its_request_id() {
    let app = spawn_app().await;
    let made = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let given = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
}
