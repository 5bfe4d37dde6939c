//! Shop tenants and accounts: access follows the account — a tenant linked to an account reads
//! it and its statement (never moves money), keeps that read-only history after the account
//! closes, and never sees the next tenant's account of the same shop.

use crate::helpers::spawn_app;
use crate::money::{open_account, shop_with_meter};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_former_tenant_keeps_their_history_and_never_sees_the_next_tenants_account() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "951").await;
    let first = open_account(&app, &admin, &shop, &meter).await;
    let (t1_id, t1) = app
        .user(&admin, "acme", "13900000001", "shop_tenant", &[])
        .await;
    let (t2_id, t2) = app
        .user(&admin, "acme", "13900000002", "shop_tenant", &[])
        .await;
    // Not linked yet: nothing to see.
    let (status, list) = app.get("/api/v1/accounts", &t1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{first}"), &t1).await.0,
        StatusCode::NOT_FOUND
    );
    // Only tenant users are linked, by someone with the accounts right.
    let (status, _) = app
        .post(
            &format!("/api/v1/accounts/{first}/users"),
            &t1,
            json!({"user_id": t1_id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a tenant links nobody");
    let (_, operator) = app.user(&admin, "acme", "op1", "operator", &[]).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/accounts/{first}/users"),
            &operator,
            json!({"user_id": t1_id}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the accounts right links");
    let (status, linked) = app
        .post(
            &format!("/api/v1/accounts/{first}/users"),
            &admin,
            json!({"user_id": t1_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{linked}");
    assert_eq!(linked["items"][0]["username"], "13900000001");
    app.post_keyed(
        &format!("/api/v1/accounts/{first}/top-up"),
        &admin,
        "t1",
        json!({"amount_fen": 1_000, "method": "card"}),
    )
    .await;
    // The tenant reads the account and its statement, and moves no money.
    let (status, account) = app.get(&format!("/api/v1/accounts/{first}"), &t1).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["wallet_fen"], 1_000);
    let (status, statement) = app
        .get(&format!("/api/v1/accounts/{first}/statement"), &t1)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statement["lines"].as_array().unwrap().len(), 1);
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/accounts/{first}/top-up"),
            &t1,
            "t-self",
            json!({"amount_fen": 1, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The shop changes hands.
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/accounts/{first}/close"),
            &admin,
            "close",
            json!({"final_readings": [{"meter_id": meter, "energy_wh": 1_000_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, second) = app
        .post_keyed(
            "/api/v1/accounts",
            &admin,
            "open-2",
            json!({"shop_id": shop, "holder_name": "李四", "meters": [{"meter_id": meter, "manual_energy_wh": 1_000_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(
            &format!("/api/v1/accounts/{second}/users"),
            &admin,
            json!({"user_id": t2_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            &format!("/api/v1/accounts/{first}/users"),
            &admin,
            json!({"user_id": t2_id}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "nobody joins a closed account"
    );

    // The former tenant: their closed account, read-only; never the next one.
    let (_, list) = app.get("/api/v1/accounts", &t1).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![first.as_str()]);
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{first}"), &t1).await.1["state"],
        "closed"
    );
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{second}"), &t1).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{second}/statement"), &t1)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // The next tenant sees only theirs.
    let (_, list) = app.get("/api/v1/accounts", &t2).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], second.as_str());
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{first}"), &t2).await.0,
        StatusCode::NOT_FOUND
    );
    // Staff pages and lists stay closed to tenants.
    assert_eq!(
        app.get("/api/v1/held-readings", &t1).await.0,
        StatusCode::NOT_FOUND
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_account_page_links_a_tenant_by_their_login_with_a_plain_form() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "953").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (_, tenant) = app
        .user(&admin, "acme", "13900000003", "shop_tenant", &[])
        .await;
    app.user(&admin, "acme", "op9", "operator", &[]).await;
    let client = logged_in_as(&app, "acme", "boss").await;
    let path = format!("/accounts/{id}");
    let html = page(&app, &client, &path).await;
    assert!(html.contains("id=\"tenant-form\""), "the form to link one");
    let csrf = csrf_of(&html);
    let link = |username: &'static str| {
        let (app, client, path, csrf, id) = (&app, &client, &path, &csrf, &id);
        async move {
            post_form(
                app,
                client,
                path,
                "/sfn/account_link_tenant",
                &[("csrf", csrf), ("account_id", id), ("username", username)],
            )
            .await
            .1
        }
    };
    // An operator's login, or a name that is no phone, is no tenant: the field is named and
    // nothing is linked.
    for wrong in ["op9", "shop-boss"] {
        let refused = link(wrong).await;
        assert!(
            refused.contains("error=validation_failed") && refused.contains("fields=username"),
            "{wrong}: {refused}"
        );
    }
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{id}"), &tenant).await.0,
        StatusCode::NOT_FOUND,
        "not linked yet"
    );
    let linked = link("13900000003").await;
    assert_eq!(linked, format!("/accounts/{id}?ok=account.tenant_linked"));
    let html = page(&app, &client, &path).await;
    let tenants = html
        .split("id=\"tenants\"")
        .nth(1)
        .expect("the linked list");
    assert!(tenants.contains("13900000003"), "{tenants}");
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{id}"), &tenant).await.0,
        StatusCode::OK,
        "the tenant reads it now"
    );
    // A phone nobody logs in with yet is invited: a tenant login without a password, and an SMS.
    assert_eq!(
        link("13999999999").await,
        format!("/accounts/{id}?ok=account.tenant_linked")
    );
    let invited: (String, String) = sqlx::query_as(&format!(
        "select u.role, u.password_hash from c_{company}.users u where u.username = '13999999999'"
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(invited, ("shop_tenant".to_owned(), "!".to_owned()));
    let sms: i64 = sqlx::query_scalar(&format!(
        "select count(*) from c_{company}.notifications where kind = 'invitation' and recipient = '13999999999'"
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(sms, 1);
}
