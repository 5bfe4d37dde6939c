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

#[tokio::test]
async fn the_tenants_home_shows_balance_power_usage_by_tou_period_and_grants_emergency_credit_within_the_rules(
) {
    use crate::money::{fen, rating_pass, store_reading};
    let app = spawn_app().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (_, rival) = app.company_with_admin("rival").await;
    let (_, plan) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "flat", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}),
        )
        .await;
    let (shop, meter) = shop_with_meter(&app, &admin, "105").await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/meters/{meter}"),
            Some(&admin),
            Some(json!({"tariff_plan_id": plan["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let account = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{account}/top-up"),
        &admin,
        "home-1",
        json!({"amount_fen": 10_000, "method": "card"}),
    )
    .await;
    let (tenant_id, tenant) = app
        .user(&admin, "acme", "13900000006", "shop_tenant", &[])
        .await;
    let (status, _) = app
        .post(
            &format!("/api/v1/accounts/{account}/users"),
            &admin,
            json!({"user_id": tenant_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // DESIGN.md's worked example: 1,234 Wh then 766 Wh at 0.8123 yuan/kWh → 100 + 62 fen.
    let t0 = chrono::Utc::now();
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(60), 1_001_234).await;
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(120), 1_002_000).await;
    let clock = ManualClock::at(t0 + chrono::Duration::seconds(150));
    assert_eq!(rating_pass(&app, &clock).await.readings_rated, 2);

    let (status, home) = app
        .get(&format!("/api/v1/accounts/{account}/home"), &tenant)
        .await;
    assert_eq!(status, StatusCode::OK, "{home}");
    assert_eq!(fen(&home["account"], "available_fen"), 10_000 - 162);
    assert_eq!(home["power"], "on");
    assert_eq!(home["alarm_level"], 0);
    assert_eq!(home["meters"][0]["energy_wh"], 1_002_000, "{home}");
    assert_eq!(
        home["meters"][0]["remaining_fen"],
        Value::Null,
        "platform-side"
    );
    assert_eq!(
        home["rules"]["presets_fen"],
        json!([5000, 10000, 20000, 50000])
    );
    assert_eq!(home["rules"]["providers"], json!([]), "no sandbox here");
    assert_eq!(home["may_grant_emergency"], false);
    // Another company's admin: the account does not exist.
    for path in ["home", "usage", "payment-orders"] {
        let (status, _) = app
            .get(&format!("/api/v1/accounts/{account}/{path}"), &rival)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }

    // Usage by day: 7 slots ending today; the 2 kWh all in the flat period, 162 fen.
    let (status, days) = app
        .get(
            &format!("/api/v1/accounts/{account}/usage?by=day&count=7"),
            &tenant,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{days}");
    let items = days["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    let sum = |key: &str| items.iter().map(|s| s[key].as_i64().unwrap()).sum::<i64>();
    assert_eq!(
        (sum("energy_wh"), sum("charge_fen")),
        (2_000, 162),
        "{days}"
    );
    let flat: i64 = items
        .iter()
        .map(|s| s["by_period_wh"][2].as_i64().unwrap())
        .sum();
    assert_eq!(flat, 2_000);
    let today = (t0 + chrono::Duration::seconds(120))
        .with_timezone(&powertab_core::kernel::clock::time_zone("Asia/Shanghai"))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(items[6]["label"], today.as_str());
    assert_eq!(items[6]["energy_wh"], 2_000);
    let (_, months) = app
        .get(
            &format!("/api/v1/accounts/{account}/usage?by=month"),
            &tenant,
        )
        .await;
    assert_eq!(months["items"].as_array().unwrap().len(), 12);
    assert_eq!(months["items"][11]["energy_wh"], 2_000);
    for bad in ["by=week", "count=100", "count=0"] {
        let (status, _) = app
            .get(&format!("/api/v1/accounts/{account}/usage?{bad}"), &tenant)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    // Days left: the average of the account's life so far (at least a day), floored.
    let opened_at: chrono::DateTime<chrono::Utc> = home["account"]["opened_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = app.db.pool.acquire().await.unwrap();
    sqlx::query(&format!("set search_path to c_{acme}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let id: uuid::Uuid = account.parse().unwrap();
    let average = powertab_core::selfservice::average_daily_charge(
        &mut conn,
        id,
        opened_at,
        t0 + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(
        average,
        Some(powertab_core::kernel::money::AmountFen::from_fen(162))
    );
    assert_eq!(
        powertab_core::selfservice::days_left(
            powertab_core::kernel::money::AmountFen::from_fen(10_000 - 162),
            average
        ),
        Some(60)
    );
    let later = powertab_core::selfservice::average_daily_charge(
        &mut conn,
        id,
        opened_at,
        t0 + chrono::Duration::days(10),
    )
    .await
    .unwrap();
    assert_eq!(later, None, "nothing charged in the last 7 days");
    drop(conn);

    // Emergency credit: refused until the company allows tenants to grant it, then once.
    let grant = format!("/api/v1/accounts/{account}/emergency-credit/self");
    let (status, body) = app.post(&grant, &tenant, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // The company's rules, as its admin sets them: bad ones refused by field, then ¥20 for 12 h.
    let (_, mut rules) = app.get("/api/v1/settings", &admin).await;
    rules["tenant_emergency_fen"] = json!(2_000_000);
    rules["top_up_presets_fen"] = json!([5_000, 5_000]);
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/settings",
            Some(&admin),
            Some(rules.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for field in ["tenant_emergency_fen", "top_up_presets_fen"] {
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field}: {body}"
        );
    }
    rules["tenant_emergency_fen"] = json!(2_000);
    rules["tenant_emergency_hours"] = json!(12);
    rules["top_up_presets_fen"] = json!([3_000, 8_000]);
    let (status, body) = app
        .call(Method::PUT, "/api/v1/settings", Some(&admin), Some(rules))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, home) = app
        .get(&format!("/api/v1/accounts/{account}/home"), &tenant)
        .await;
    assert_eq!(home["may_grant_emergency"], true, "{home}");
    assert_eq!(home["rules"]["presets_fen"], json!([3000, 8000]));
    assert_eq!(home["rules"]["emergency_hours"], 12);
    let (status, _) = app.post(&grant, &admin, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "staff use the account page");
    let (status, _) = app.post(&grant, &rival, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, credit) = app.post(&grant, &tenant, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{credit}");
    assert_eq!(credit["amount_fen"], 2_000);
    let granted: chrono::DateTime<chrono::Utc> =
        credit["granted_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        credit["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - granted, chrono::Duration::hours(12));
    let (status, _) = app.post(&grant, &tenant, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "once a month");
    let (_, home) = app
        .get(&format!("/api/v1/accounts/{account}/home"), &tenant)
        .await;
    assert_eq!(home["may_grant_emergency"], false);
    assert_eq!(home["emergency"]["amount_fen"], 2_000);
    let audited: i64 = sqlx::query_scalar(&format!(
        "select count(*) from c_{acme}.audit_log where action = 'account.emergency_credit'
         and actor_id = $1::uuid"
    ))
    .bind(&tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap_or(-1);
    assert_eq!(audited, 1, "audited as the tenant's");
    let (status, orders) = app
        .get(
            &format!("/api/v1/accounts/{account}/payment-orders"),
            &tenant,
        )
        .await;
    assert_eq!(
        (status, orders["items"].clone()),
        (StatusCode::OK, json!([]))
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_phone_pages_work_without_javascript_and_keep_what_was_typed() {
    use crate::web::{browser_like, csrf_of, page, post_form};
    let app = spawn_app().await;
    let root = app.root().await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (_, rival) = app.company_with_admin("rival").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "106").await;
    let account = open_account(&app, &admin, &shop, &meter).await;
    let (rival_shop, rival_meter) = shop_with_meter(&app, &rival, "601").await;
    let rival_account = open_account(&app, &rival, &rival_shop, &rival_meter).await;
    app.post(
        &format!("/api/v1/platform/companies/{acme}/sandbox-payments"),
        &root,
        json!({"enabled": true}),
    )
    .await;
    let client = browser_like();

    // The QR page of a company that does not exist says so and offers nothing; a hostile slug
    // is never echoed.
    let html = page(&app, &client, "/t/%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert!(html.contains("id=\"no-company\""), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    let html = page(&app, &client, "/t/acme?meter=M-1").await;
    assert!(
        html.contains("acme plaza") && html.contains("id=\"code-form\""),
        "{html}"
    );

    // A malformed phone: back to the page with the error at the field and the input kept.
    let (status, location) = post_form(
        &app,
        &client,
        "/t/acme",
        "/sfn/tenant_send_code",
        &[
            ("company", "acme"),
            ("phone", "12-34"),
            ("purpose", "login"),
            ("meter", "M-1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(
        location.starts_with("/t/acme?")
            && location.contains("phone=12-34")
            && location.contains("meter=M-1")
            && location.contains("fields=phone"),
        "{location}"
    );
    let (_, location) = post_form(
        &app,
        &client,
        "/t/acme",
        "/sfn/tenant_send_code",
        &[
            ("company", "acme"),
            ("phone", "13800138000"),
            ("purpose", "login"),
            ("meter", "M-1"),
        ],
    )
    .await;
    assert!(location.contains("sent=1"), "{location}");
    let html = page(&app, &client, &location).await;
    assert!(
        html.contains("id=\"code-login-form\"") && html.contains("13800138000"),
        "{html}"
    );
    let code = sent_code(&app, acme, "13800138000").await.unwrap();
    let wrong = if code == "111111" { "111112" } else { "111111" };
    let (_, location) = post_form(
        &app,
        &client,
        "/t/acme",
        "/sfn/tenant_code_login",
        &[
            ("company", "acme"),
            ("phone", "13800138000"),
            ("code", wrong),
            ("meter", "M-1"),
        ],
    )
    .await;
    assert!(
        location.contains("fields=code") && location.contains("sent=1"),
        "{location}"
    );
    let (_, location) = post_form(
        &app,
        &client,
        "/t/acme",
        "/sfn/tenant_code_login",
        &[
            ("company", "acme"),
            ("phone", "13800138000"),
            ("code", &code),
            ("meter", "M-1"),
        ],
    )
    .await;
    assert_eq!(location, "/my?meter=M-1");

    // The home, the switcher-less single account, and nobody else's account.
    let html = page(&app, &client, "/my").await;
    assert!(
        html.contains("id=\"balance-card\"") && html.contains("id=\"usage-days\""),
        "{html}"
    );
    assert!(html.contains("106 奶茶店"), "{html}");
    let html = page(&app, &client, &format!("/my?account={rival_account}")).await;
    assert!(
        html.contains("106 奶茶店") && !html.contains("601"),
        "falls back to their own"
    );
    let html = page(
        &app,
        &client,
        &format!("/my/top-up?account={rival_account}"),
    )
    .await;
    assert!(
        !html.contains("id=\"presets\""),
        "another company's account: {html}"
    );

    // Top up: out of range refused at the field; ¥88 goes to the sandbox's page.
    let html = page(&app, &client, &format!("/my/top-up?account={account}")).await;
    assert!(html.contains("data-amount=\"50.00\""), "{html}");
    let csrf = csrf_of(&html);
    let top_up = |amount: &'static str| {
        let (app, client, csrf, account) = (&app, &client, csrf.clone(), account.clone());
        async move {
            post_form(
                app,
                client,
                "/my/top-up",
                "/sfn/my_top_up",
                &[
                    ("csrf", &csrf),
                    ("account_id", &account),
                    ("amount", amount),
                ],
            )
            .await
            .1
        }
    };
    for bad in ["0.50", "50001", "abc"] {
        let location = top_up(bad).await;
        assert!(location.contains("fields=amount"), "{bad}: {location}");
    }
    let location = top_up("88").await;
    assert!(location.starts_with("/sandbox/pay/acme/PT"), "{location}");
    let (status, back) = post_form(&app, &client, &location, &location, &[]).await;
    assert!(status.is_redirection(), "{status}");
    assert!(back.starts_with("/my/orders/"), "{back}");
    let credited = powertab_testkit::wait_until(std::time::Duration::from_secs(10), || async {
        page(&app, &client, &back)
            .await
            .contains("data-state=\"credited\"")
    })
    .await;
    assert!(credited, "the order page shows it credited");
    let html = page(&app, &client, &back).await;
    assert!(
        !html.contains("http-equiv=\"refresh\""),
        "a settled order stops refreshing"
    );
    assert!(html.contains("id=\"receipt\""), "{html}");
    // Another tenant's order id, or a made-up one: not found.
    let html = page(
        &app,
        &client,
        &format!("/my/orders/{}", uuid::Uuid::now_v7()),
    )
    .await;
    assert!(html.contains("flash error"), "{html}");

    // Preferences: turning a kind off is kept.
    let html = page(&app, &client, "/my/preferences").await;
    let csrf = csrf_of(&html);
    let (_, location) = post_form(
        &app,
        &client,
        "/my/preferences",
        "/sfn/my_preferences_save",
        &[("csrf", &csrf), ("on[0]", "alarm2"), ("on[1]", "restored")],
    )
    .await;
    assert!(
        location.contains("ok=tenant.preferences_saved"),
        "{location}"
    );
    let muted: Vec<String> = sqlx::query_scalar(&format!(
        "select kind from c_{acme}.notify_preferences order by kind"
    ))
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(muted, ["alarm1", "top_up"]);
    app.assert_ledger_clean().await;
}

/// WeChat's OAuth token endpoint as a fake: `good-code` for app `wx-tenant` with its secret is
/// the tenant's openid; anything else is WeChat's "invalid code".
async fn fake_wechat_oauth() -> String {
    use axum::extract::Query;
    use axum::routing::get;
    async fn token(
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> axum::Json<Value> {
        let right = q.get("appid").map(String::as_str) == Some("wx-tenant")
            && q.get("secret").map(String::as_str) == Some("wx-tenant-secret")
            && q.get("grant_type").map(String::as_str) == Some("authorization_code");
        axum::Json(
            if right && q.get("code").map(String::as_str) == Some("good-code") {
                json!({"access_token": "at", "expires_in": 7200, "openid": "oTenantOpenId_1", "scope": "snsapi_base"})
            } else {
                json!({"errcode": 40029, "errmsg": "invalid code"})
            },
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/sns/oauth2/access_token", get(token)),
        )
        .await
        .unwrap()
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn inside_wechat_the_tenants_login_is_linked_to_their_openid_by_the_official_accounts_oauth()
{
    use crate::web::{logged_in_as, page};
    let wechat = fake_wechat_oauth().await;
    let app = crate::helpers::spawn_app_changed(|c| {
        c.notify.wechat_url = wechat.clone();
        c.notify.wechat_open_url = "http://wechat-open.test".into();
    })
    .await;
    let (acme, admin) = app.company_with_admin("acme").await;
    let (tenant_id, _) = app
        .user(&admin, "acme", "13900000007", "shop_tenant", &[])
        .await;
    let client = logged_in_as(&app, "acme", "13900000007").await;
    let location = |response: reqwest::Response| {
        response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    // No official account yet: nothing to link with, and /my offers nothing.
    let start = client
        .get(app.url("/wechat/oauth/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(start), "/my?error=wechat_not_set_up");
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/notify/accounts/wechat",
            Some(&admin),
            Some(json!({"config": {"app_id": "wx-tenant"}, "templates": {}, "secret": "wx-tenant-secret"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Opened inside WeChat, /my sends the phone through the authorisation once.
    let in_wechat = |path: &str| {
        client
            .get(app.url(path))
            .header("accept", "text/html")
            .header(
                "user-agent",
                "Mozilla/5.0 (Linux; Android 14) MicroMessenger/8.0.50",
            )
    };
    let html = in_wechat("/my").send().await.unwrap().text().await.unwrap();
    assert!(html.contains("url=/wechat/oauth/start"), "{html}");
    let html = in_wechat("/my?error=wechat_link_failed")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("url=/wechat/oauth/start") && html.contains("id=\"wechat-link\""),
        "no loop after a failure"
    );
    let start = location(
        client
            .get(app.url("/wechat/oauth/start"))
            .send()
            .await
            .unwrap(),
    );
    let prefix = format!(
        "http://wechat-open.test/connect/oauth2/authorize?appid=wx-tenant&redirect_uri=http%3A%2F%2F{}%2Fwechat%2Foauth%2Fcallback&response_type=code&scope=snsapi_base&state=",
        app.addr.to_string().replace(':', "%3A")
    );
    assert!(
        start.starts_with(&prefix) && start.ends_with("#wechat_redirect"),
        "{start}"
    );
    assert!(!start.contains("secret"));
    let state = start[prefix.len()..start.len() - "#wechat_redirect".len()].to_owned();

    let callback = |code: &str, state: &str| {
        let url = app.url(&format!("/wechat/oauth/callback?code={code}&state={state}"));
        let client = client.clone();
        async move { location(client.get(url).send().await.unwrap()) }
    };
    let openid = || async {
        sqlx::query_scalar::<_, Option<String>>(&format!(
            "select wechat_openid from c_{acme}.users where id = $1::uuid"
        ))
        .bind(&tenant_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
    };
    // A code WeChat refuses, a forged or another user's state: nothing linked.
    assert_eq!(
        callback("bad-code", &state).await,
        "/my?error=wechat_link_failed"
    );
    assert_eq!(
        callback("good-code", "1.00").await,
        "/my?error=wechat_link_failed"
    );
    let (_, other) = app
        .user(&admin, "acme", "13900000008", "shop_tenant", &[])
        .await;
    drop(other);
    let other_client = logged_in_as(&app, "acme", "13900000008").await;
    let stolen = other_client
        .get(app.url(&format!(
            "/wechat/oauth/callback?code=good-code&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(stolen),
        "/my?error=wechat_link_failed",
        "a state is its user's"
    );
    assert_eq!(openid().await, None);
    // The right code and state: linked, audited, and /my stops asking.
    assert_eq!(
        callback("good-code", &state).await,
        "/my?ok=tenant.wechat_linked"
    );
    assert_eq!(openid().await.as_deref(), Some("oTenantOpenId_1"));
    let audited: i64 = sqlx::query_scalar(&format!(
        "select count(*) from c_{acme}.audit_log where action = 'user.wechat_link' and actor_id = $1::uuid"
    ))
    .bind(&tenant_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let html = in_wechat("/my").send().await.unwrap().text().await.unwrap();
    assert!(
        !html.contains("wechat-link") && !html.contains("url=/wechat/oauth/start"),
        "{html}"
    );
    // Signed out: the login page, nothing else.
    let anonymous = crate::web::browser_like();
    let start = anonymous
        .get(app.url("/wechat/oauth/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(start), "/login");
    let _ = page;
}
