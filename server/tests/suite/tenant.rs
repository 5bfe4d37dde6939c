//! Shop tenants on their phones (issue 14: Tenant experience): an SMS code sent to an account's
//! registered phone logs its owner in and links the phone to that company's open accounts; an
//! operator's invitation does the same for another phone; codes are single-use, die after five
//! wrong guesses or ten minutes, are limited per phone and address, and never say whether a
//! phone is registered; a password set with a reset code works; tenants of a suspended company
//! still log in and order a top-up while its staff cannot.

use crate::helpers::{spawn_app, TestApp, TEST_JWT_SECRET};
use crate::money::{open_account, shop_with_meter};
use powertab_core::auth::tenant_code::{
    self, CodeLogin, CodePurpose, CodeRequest, CODE_ATTEMPTS_MAX, CODE_TTL_S,
};
use powertab_core::auth::{AuthConfig, Secret, ThrottleConfig};
use powertab_core::kernel::clock::ManualClock;
use powertab_core::CoreError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The newest code the sandbox SMS channel holds for `phone` in company `company`.
async fn sent_code(app: &TestApp, company: i64, phone: &str) -> Option<String> {
    let params: Option<Value> = sqlx::query_scalar(&format!(
        "select params from c_{company}.notifications
         where kind = 'login_code' and recipient = $1 order by created_at desc limit 1"
    ))
    .bind(phone)
    .fetch_optional(&app.db.pool)
    .await
    .unwrap();
    let params = params?;
    params
        .as_array()
        .unwrap()
        .iter()
        .find_map(|pair| (pair[0] == "code").then(|| pair[1].as_str().unwrap().to_owned()))
}

async fn messages_to(app: &TestApp, company: i64, phone: &str, kind: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "select count(*) from c_{company}.notifications where kind = $2 and recipient = $1"
    ))
    .bind(phone)
    .bind(kind)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

async fn ask_code(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/auth/tenant-codes", None, Some(body))
        .await
}

async fn code_login(app: &TestApp, company: &str, phone: &str, code: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/auth/tenant-login",
        None,
        Some(json!({"company": company, "phone": phone, "code": code})),
    )
    .await
}

fn caller(body: &Value) -> crate::helpers::Caller {
    crate::helpers::Caller {
        token: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

fn account_ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_sms_code_to_the_registered_phone_logs_the_tenant_in_and_links_only_that_companys_accounts(
) {
    let app = spawn_app().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (other, other_admin) = app.company_with_admin("other").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "101").await;
    let account = open_account(&app, &admin, &shop, &meter).await;
    // The same phone rents a shop from another company too: a login here never shows it.
    let (other_shop, other_meter) = shop_with_meter(&app, &other_admin, "201").await;
    let other_account = open_account(&app, &other_admin, &other_shop, &other_meter).await;
    let phone = "13800138000";

    let (status, body) = ask_code(&app, json!({"company": "acme", "phone": phone})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let code = sent_code(&app, acme, phone).await.expect("a code was sent");
    assert_eq!(code.len(), 6);
    assert_eq!(sent_code(&app, other, phone).await, None);
    // At once again: refused, and no second message.
    let (status, body) = ask_code(&app, json!({"company": "acme", "phone": phone})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(messages_to(&app, acme, phone, "login_code").await, 1);

    // The code is this company's: another company's login refuses it.
    let (status, body) = code_login(&app, "other", phone, &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let (status, body) = code_login(&app, "acme", phone, wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["code"].is_string(), "{body}");
    let (status, body) = code_login(&app, "acme", phone, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "shop_tenant");
    assert_eq!(body["company"], "acme");
    let tenant = caller(&body);
    let (status, list) = app.get("/api/v1/accounts", &tenant).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(account_ids(&list), vec![account.clone()]);
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{other_account}"), &tenant)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // The link is audited as the tenant's own, by code.
    let audited: i64 = sqlx::query_scalar(&format!(
        "select count(*) from c_{acme}.audit_log
         where action = 'account.link_user' and after->>'by' = 'sms_code'"
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    // A used code does not work twice.
    let (status, _) = code_login(&app, "acme", phone, &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The staff of the other company see no user of this phone.
    let (_, users) = app.get("/api/v1/users", &other_admin).await;
    assert!(!users.to_string().contains(phone), "{users}");
}

#[tokio::test]
async fn asking_for_a_code_says_nothing_about_who_is_registered() {
    let app = spawn_app().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (_, operator) = app
        .user(&admin, "acme", "13700000001", "operator", &[])
        .await;
    drop(operator);
    for (company, phone) in [
        ("acme", "13900000009"),    // nobody's phone
        ("nowhere", "13800138000"), // no such company
        ("acme", "13700000001"),    // a staff login that is a phone number
    ] {
        let (status, body) = ask_code(&app, json!({"company": company, "phone": phone})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{company}/{phone}: {body}");
    }
    let sent: i64 = sqlx::query_scalar(&format!(
        "select count(*) from c_{acme}.notifications where kind = 'login_code'"
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sent, 0, "no message to a phone that is nobody's");
    // The unknown phone counts toward its limit like a real one.
    let (status, _) = ask_code(&app, json!({"company": "acme", "phone": "13900000009"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // A malformed phone is a clear error at the field.
    let (status, body) = ask_code(&app, json!({"company": "acme", "phone": "12-34"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["phone"].is_string(), "{body}");
    // A staff user's phone login never becomes a tenant session, even with a forged code row.
    let (status, _) = code_login(&app, "acme", "13700000001", "123456").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn an_operator_invites_a_phone_and_a_reset_code_sets_the_tenants_password() {
    let app = spawn_app().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "102").await;
    let account = open_account(&app, &admin, &shop, &meter).await;
    let invited = "13900000005";
    let (status, body) = app
        .post(
            &format!("/api/v1/accounts/{account}/users"),
            &admin,
            json!({"username": invited}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["items"][0]["username"], invited);
    assert_eq!(messages_to(&app, acme, invited, "invitation").await, 1);
    // A staff login cannot be linked as a tenant; a name that is no phone is refused.
    for username in ["boss", "not-a-phone"] {
        let (status, body) = app
            .post(
                &format!("/api/v1/accounts/{account}/users"),
                &admin,
                json!({"username": username}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{username}: {body}"
        );
    }
    // The invited tenant has no password: no password logs them in.
    let (status, _) = app.try_login("acme", invited, "!").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A weak new password is refused before the code is used up.
    let (status, _) = ask_code(
        &app,
        json!({"company": "acme", "phone": invited, "purpose": "reset"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = sent_code(&app, acme, invited).await.unwrap();
    let reset = |password: &str| json!({"company": "acme", "phone": invited, "code": code, "new_password": password});
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/tenant-password-reset",
            None,
            Some(reset("short")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"]["new_password"].is_string(),
        "{body}"
    );
    // A reset code is no login code.
    let (status, _) = code_login(&app, "acme", invited, &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/tenant-password-reset",
            None,
            Some(reset("my new shop pass 1")),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.try_login("acme", invited, "my new shop pass 1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tenant = caller(&body);
    let (_, list) = app.get("/api/v1/accounts", &tenant).await;
    assert_eq!(account_ids(&list), vec![account]);
}

#[tokio::test]
async fn a_suspended_companys_tenants_still_log_in_and_order_a_top_up_while_its_staff_cannot() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "103").await;
    let account = open_account(&app, &admin, &shop, &meter).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/platform/companies/{acme}/sandbox-payments"),
            &root,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let phone = "13800138000";
    ask_code(&app, json!({"company": "acme", "phone": phone})).await;
    let code = sent_code(&app, acme, phone).await.unwrap();
    let (status, body) = code_login(&app, "acme", phone, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tenant = caller(&body);

    let (status, _) = app
        .post(
            &format!("/api/v1/platform/companies/{acme}/suspend"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.try_login("acme", "boss", crate::helpers::PASSWORD)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/accounts", &admin).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The tenant's session goes on, refreshes, and orders a top-up.
    let (status, list) = app.get("/api/v1/accounts", &tenant).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": tenant.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, order) = app
        .post(
            &format!("/api/v1/accounts/{account}/payment-orders"),
            &tenant,
            json!({"provider": "sandbox", "amount_fen": 5_000}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["state"], "created");
    app.assert_ledger_clean().await;
}

/// The auth settings of the test app, on `clock`.
fn auth_on(clock: std::sync::Arc<ManualClock>) -> AuthConfig {
    AuthConfig {
        jwt_secret: Secret::new(TEST_JWT_SECRET),
        access_ttl_s: 900,
        refresh_ttl_s: 3600,
        throttle: ThrottleConfig {
            account_failures_max: 1000,
            address_failures_max: 1000,
            window_s: 900,
            lockout_s: 900,
        },
        clock,
    }
}

#[tokio::test]
async fn a_code_dies_after_five_wrong_guesses_or_ten_minutes_and_a_phone_gets_five_an_hour() {
    let app = spawn_app().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "104").await;
    open_account(&app, &admin, &shop, &meter).await;
    let phone = "13800138000";
    let clock = ManualClock::at("2026-12-04T02:00:00Z".parse().unwrap());
    let config = auth_on(clock.clone());
    let ask = || CodeRequest {
        company: "acme".into(),
        phone: phone.into(),
        purpose: CodePurpose::Login,
    };
    let attempt = |code: &str| CodeLogin {
        company: "acme".into(),
        phone: phone.into(),
        code: code.into(),
        new_password: String::new(),
    };
    let pool = &app.db.pool;
    let ip = Some("203.0.113.9");

    // Five wrong guesses kill the code: the right one fails after them.
    tenant_code::send_code(pool, &config, &ask(), ip)
        .await
        .unwrap();
    let code = sent_code(&app, acme, phone).await.unwrap();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    for _ in 0..CODE_ATTEMPTS_MAX {
        let err = tenant_code::login_with_code(pool, &config, &attempt(wrong), ip)
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::Validation { .. }), "{err:?}");
    }
    assert!(
        tenant_code::login_with_code(pool, &config, &attempt(&code), ip)
            .await
            .is_err()
    );

    // A new code a minute later works, but not after ten minutes.
    clock.advance(chrono::Duration::seconds(61));
    tenant_code::send_code(pool, &config, &ask(), ip)
        .await
        .unwrap();
    let code = sent_code(&app, acme, phone).await.unwrap();
    clock.advance(chrono::Duration::seconds(CODE_TTL_S));
    assert!(
        tenant_code::login_with_code(pool, &config, &attempt(&code), ip)
            .await
            .is_err()
    );
    clock.advance(chrono::Duration::seconds(1));
    tenant_code::send_code(pool, &config, &ask(), ip)
        .await
        .unwrap();
    let code = sent_code(&app, acme, phone).await.unwrap();
    clock.advance(chrono::Duration::seconds(CODE_TTL_S - 1));
    let outcome = tenant_code::login_with_code(pool, &config, &attempt(&code), ip)
        .await
        .unwrap();
    assert_eq!(outcome.company_slug.as_deref(), Some("acme"));

    // Three codes so far this hour; two more, then the hour's limit.
    for _ in 0..2 {
        clock.advance(chrono::Duration::seconds(61));
        tenant_code::send_code(pool, &config, &ask(), ip)
            .await
            .unwrap();
    }
    clock.advance(chrono::Duration::seconds(61));
    let err = tenant_code::send_code(pool, &config, &ask(), ip)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Throttled(_)), "{err:?}");
    clock.advance(chrono::Duration::hours(1));
    tenant_code::send_code(pool, &config, &ask(), ip)
        .await
        .unwrap();
    assert_eq!(messages_to(&app, acme, phone, "login_code").await, 6);

    // Only a hash of each code is stored.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar(&format!("select code_hash from c_{acme}.tenant_codes"))
            .fetch_all(pool)
            .await
            .unwrap();
    let latest = sent_code(&app, acme, phone).await.unwrap();
    assert!(stored
        .iter()
        .all(|h| h.len() == 32 && !h.windows(6).any(|w| w == latest.as_bytes())));
}
