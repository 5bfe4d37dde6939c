//! Login, tokens, refresh rotation, throttling, forced password change, suspension and
//! deactivation.

use crate::helpers::{spawn_app, spawn_app_with, Caller, PASSWORD};
use base64::Engine;
use powertab_core::auth::ThrottleConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn wrong_credentials_get_one_answer_that_reveals_nothing() {
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let (s1, wrong_password) = app.try_login("acme", "boss", "not-the-password-1").await;
    let (s2, unknown_user) = app.try_login("acme", "nobody", PASSWORD).await;
    let (s3, unknown_company) = app.try_login("nope", "boss", PASSWORD).await;
    for status in [s1, s2, s3] {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(wrong_password, unknown_user);
    assert_eq!(wrong_password, unknown_company);
    assert_eq!(wrong_password["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn expired_tampered_and_unsigned_tokens_are_refused() {
    let app = spawn_app().await;
    let root = app.root().await;
    assert_eq!(app.get("/api/v1/me", &root).await.0, StatusCode::OK);

    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = root.token.split('.').collect();
    let payload = String::from_utf8(engine.decode(parts[1]).unwrap()).unwrap();
    let forged_payload = engine.encode(payload.replace("platform_admin", "company_admin"));
    let tampered = Caller {
        token: format!("{}.{}.{}", parts[0], forged_payload, parts[2]),
        refresh: String::new(),
    };
    let none = Caller {
        token: format!(
            "{}.{}.",
            engine.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        ),
        refresh: String::new(),
    };
    let config = crate::helpers::test_config(ThrottleConfig::default());
    let mut auth = config.auth().unwrap();
    auth.access_ttl_s = -120;
    let claims = powertab_core::auth::decode_access(&config.auth().unwrap(), &root.token).unwrap();
    let expired = Caller {
        token: powertab_core::auth::issue_access(&auth, claims.sub, None, claims.role).unwrap(),
        refresh: String::new(),
    };
    for caller in [tampered, none, expired] {
        let (status, body) = app.get("/api/v1/me", &caller).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, _) = app.call(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    let root = app.root().await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": token})),
            )
            .await
        }
    };
    let (status, second) = refresh(root.refresh.clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, root.refresh);
    let new_access = Caller {
        token: second["access_token"].as_str().unwrap().into(),
        refresh: String::new(),
    };
    assert_eq!(app.get("/api/v1/me", &new_access).await.0, StatusCode::OK);

    // The first token was used (longer ago than the grace for parallel refreshes): presenting
    // it again revokes the family, including the second.
    sqlx::query("update control.refresh_token set used_at = now() - interval '1 minute' where used_at is not null")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        refresh(root.refresh.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(refresh(second_refresh).await.0, StatusCode::UNAUTHORIZED);
}

/// Two requests (two tabs) refreshing with the same cookie at once both get a session; the user
/// is not logged out.
#[tokio::test]
async fn parallel_refreshes_with_one_token_do_not_end_the_session() {
    let app = spawn_app().await;
    let root = app.root().await;
    let refresh = || {
        app.call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": root.refresh.clone()})),
        )
    };
    let ((a, first), (b, second)) = tokio::join!(refresh(), refresh());
    assert_eq!((a, b), (StatusCode::OK, StatusCode::OK), "{first} {second}");
    for pair in [first, second] {
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": pair["refresh_token"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "the family was not revoked");
    }
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            Some(json!({"refresh_token": root.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": root.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_even_for_the_right_password() {
    let app = spawn_app_with(ThrottleConfig {
        account_failures_max: 3,
        address_failures_max: 1000,
        window_s: 900,
        lockout_s: 900,
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.try_login("", "root", "wrong-password-1").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, body) = app.try_login("", "root", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // Another account is not affected.
    assert_eq!(
        app.try_login("", "helpdesk", PASSWORD).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_lock_that_address() {
    let app = spawn_app_with(ThrottleConfig {
        account_failures_max: 1000,
        address_failures_max: 4,
        window_s: 900,
        lockout_s: 900,
    })
    .await;
    let login_from = |ip: &'static str, user: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/api/v1/auth/login"))
                .header("x-forwarded-for", ip)
                .json(&json!({"company": "", "username": user, "password": password}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for user in ["a1", "a2", "a3", "a4"] {
        assert_eq!(
            login_from("203.0.113.9", user, "wrong-password-1").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from("203.0.113.9", "root", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_from("198.51.100.7", "root", PASSWORD).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_initial_password_must_be_changed_before_anything_else() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, user) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "newbie", "role": "operator", "password": "initial-pass-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["must_change_password"], true);
    let (_, login) = app.try_login("acme", "newbie", "initial-pass-1").await;
    assert_eq!(login["must_change_password"], true);
    let first = Caller {
        token: login["access_token"].as_str().unwrap().into(),
        refresh: String::new(),
    };
    let (status, body) = app.get("/api/v1/users", &first).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "password_change_required");
    assert_eq!(app.get("/api/v1/me", &first).await.0, StatusCode::OK);
    // A weak new password is refused with a field message.
    let (status, body) = app
        .post(
            "/api/v1/me/password",
            &first,
            json!({"current_password": "initial-pass-1", "new_password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["fields"]["new_password"].is_string(),
        "{body}"
    );
    let (status, _) = app
        .post(
            "/api/v1/me/password",
            &first,
            json!({"current_password": "initial-pass-1", "new_password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let operator = app.login("acme", "newbie").await;
    assert_eq!(app.get("/api/v1/users", &operator).await.0, StatusCode::OK);
}

#[tokio::test]
async fn suspension_ends_sessions_at_once_and_reactivation_restores_login() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (id, admin) = app.company_with_admin("acme").await;
    assert_eq!(app.get("/api/v1/users", &admin).await.0, StatusCode::OK);

    let (status, body) = app
        .post(
            &format!("/api/v1/platform/companies/{id}/suspend"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "suspended");
    assert_eq!(
        app.get("/api/v1/users", &admin).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.try_login("acme", "boss", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": admin.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Suspending twice is a conflict, not a silent success.
    assert_eq!(
        app.post(
            &format!("/api/v1/platform/companies/{id}/suspend"),
            &root,
            json!({})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );

    let (status, _) = app
        .post(
            &format!("/api/v1/platform/companies/{id}/reactivate"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let admin = app.login("acme", "boss").await;
    assert_eq!(app.get("/api/v1/users", &admin).await.0, StatusCode::OK);
}

#[tokio::test]
async fn deactivation_ends_the_users_sessions_on_the_next_request() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (id, operator) = app.user(&admin, "acme", "op1", "operator", &[]).await;
    assert_eq!(app.get("/api/v1/me", &operator).await.0, StatusCode::OK);
    let (status, body) = app
        .post(&format!("/api/v1/users/{id}/deactivate"), &admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.get("/api/v1/me", &operator).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": operator.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app.try_login("acme", "op1", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // An admin cannot lock themselves out.
    let me = app.get("/api/v1/me", &admin).await.1;
    let my_id = me["user_id"].as_str().unwrap();
    assert_eq!(
        app.post(
            &format!("/api/v1/users/{my_id}/deactivate"),
            &admin,
            json!({})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
}
