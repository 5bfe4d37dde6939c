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
    let (status, body) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
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

#[tokio::test]
async fn cookie_sessions_need_the_csrf_header_for_changes() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
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
    let without = app
        .http
        .post(app.url("/api/v1/users"))
        .header("cookie", &cookies)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let wrong = app
        .http
        .post(app.url("/api/v1/users"))
        .header("cookie", &cookies)
        .header("x-csrf-token", "other")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let right = app
        .http
        .post(app.url("/api/v1/users"))
        .header("cookie", &cookies)
        .header("x-csrf-token", "token123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::CREATED);
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
    // The old refresh token is used up.
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
