//! Every role's permissions: what it may read (200), what it may not do (403), and what it may
//! not see at all (404).

use crate::helpers::{spawn_app, Caller};
use reqwest::StatusCode;
use serde_json::json;

fn new_user(name: &str) -> serde_json::Value {
    json!({"username": name, "role": "operator", "password": "initial-pass-1"})
}

#[tokio::test]
async fn operators_read_but_only_act_with_granted_rights() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, plain) = app.user(&admin, "acme", "plain", "operator", &[]).await;
    let (_, exporter) = app
        .user(&admin, "acme", "exporter", "operator", &["export"])
        .await;
    assert_eq!(app.get("/api/v1/users", &plain).await.0, StatusCode::OK);
    assert_eq!(app.get("/api/v1/audit-log", &plain).await.0, StatusCode::OK);
    assert_eq!(
        app.post("/api/v1/users", &plain, new_user("x1")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v1/users.xlsx", &plain).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v1/users.xlsx", &exporter).await.0,
        StatusCode::OK
    );
    let me = app.get("/api/v1/me", &exporter).await.1;
    assert_eq!(me["rights"], json!(["export"]));
}

#[tokio::test]
async fn auditors_read_and_export_but_change_nothing() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (op_id, _) = app.user(&admin, "acme", "op1", "operator", &[]).await;
    let (_, auditor) = app.user(&admin, "acme", "audit1", "auditor", &[]).await;
    assert_eq!(app.get("/api/v1/users", &auditor).await.0, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/audit-log.xlsx", &auditor).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.post("/api/v1/users", &auditor, new_user("x1")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(
            &format!("/api/v1/users/{op_id}/deactivate"),
            &auditor,
            json!({})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn shop_tenants_see_only_themselves() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (op_id, _) = app.user(&admin, "acme", "op1", "operator", &[]).await;
    let (tenant_id, tenant) = app
        .user(&admin, "acme", "13800138000", "shop_tenant", &[])
        .await;
    assert_eq!(app.get("/api/v1/me", &tenant).await.0, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/api/v1/users/{tenant_id}"), &tenant)
            .await
            .0,
        StatusCode::OK
    );
    for path in [
        "/api/v1/users".to_owned(),
        format!("/api/v1/users/{op_id}"),
        "/api/v1/audit-log".into(),
        "/api/v1/users.xlsx".into(),
    ] {
        assert_eq!(
            app.get(&path, &tenant).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Their landlord's name, slug, time zone and contact; nothing of quotas or staff.
    let (status, company) = app.get("/api/v1/company", &tenant).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(company["slug"], "acme");
    assert!(company.get("contact_phone").is_some() && company.get("time_zone").is_some());
    for hidden in [
        "id",
        "status",
        "max_meters",
        "max_gateways",
        "max_operators",
        "active_staff",
    ] {
        assert!(company.get(hidden).is_none(), "{hidden}: {company}");
    }
    let (_, full) = app.get("/api/v1/company", &admin).await;
    assert!(full["max_meters"].is_number() && full["id"].is_number());
    // A shop tenant's username must be a mobile number.
    let (status, body) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "shopkeeper", "role": "shop_tenant", "password": "initial-pass-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["username"].is_string());
}

#[tokio::test]
async fn company_users_never_see_platform_resources() {
    let app = spawn_app().await;
    let (id, admin) = app.company_with_admin("acme").await;
    for path in [
        "/api/v1/platform/companies".to_owned(),
        format!("/api/v1/platform/companies/{id}"),
        "/api/v1/platform/audit-log".into(),
    ] {
        assert_eq!(
            app.get(&path, &admin).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let (status, _) = app
        .post(
            &format!("/api/v1/platform/companies/{id}/enter"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn enter(app: &crate::helpers::TestApp, caller: &Caller, id: i64) -> Caller {
    let (status, body) = app
        .post(
            &format!("/api/v1/platform/companies/{id}/enter"),
            caller,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Caller {
        token: body["access_token"].as_str().unwrap().into(),
        refresh: body["refresh_token"].as_str().unwrap().into(),
    }
}

#[tokio::test]
async fn platform_support_is_read_only_everywhere() {
    let app = spawn_app().await;
    let (id, _) = app.company_with_admin("acme").await;
    let support = app.login("", "helpdesk").await;
    assert_eq!(
        app.get("/api/v1/platform/companies", &support).await.0,
        StatusCode::OK
    );
    let (status, _) = app
        .post(
            "/api/v1/platform/companies",
            &support,
            json!({"slug": "other", "name": "Other"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.post(
            &format!("/api/v1/platform/companies/{id}/suspend"),
            &support,
            json!({})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let inside = enter(&app, &support, id).await;
    assert_eq!(app.get("/api/v1/users", &inside).await.0, StatusCode::OK);
    assert_eq!(
        app.post("/api/v1/users", &inside, new_user("x1")).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn platform_admins_enter_a_company_and_it_is_audited_on_both_sides() {
    let app = spawn_app().await;
    let (id, admin) = app.company_with_admin("acme").await;
    let root = app.root().await;
    // Outside a company, company resources do not exist for platform staff.
    assert_eq!(
        app.get("/api/v1/users", &root).await.0,
        StatusCode::NOT_FOUND
    );
    let inside = enter(&app, &root, id).await;
    let (status, body) = app
        .post("/api/v1/users", &inside, new_user("made-by-platform"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, company_log) = app
        .get("/api/v1/audit-log?action=platform.enter", &admin)
        .await;
    assert_eq!(
        company_log["items"].as_array().unwrap().len(),
        1,
        "{company_log}"
    );
    assert!(company_log["items"][0]["actor_name"]
        .as_str()
        .unwrap()
        .starts_with("root"));
    let (_, platform_log) = app
        .get("/api/v1/platform/audit-log?action=company.enter", &root)
        .await;
    assert_eq!(
        platform_log["items"].as_array().unwrap().len(),
        1,
        "{platform_log}"
    );
    assert_eq!(platform_log["items"][0]["target_id"], id.to_string());
}

#[tokio::test]
async fn logins_are_audited_with_their_source_address() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, log) = app.get("/api/v1/audit-log?action=user.login", &admin).await;
    let logins = log["items"].as_array().unwrap();
    assert!(
        logins.len() >= 2,
        "first login and the one after the password change: {log}"
    );
    assert!(logins[0]["source_ip"].as_str().unwrap().starts_with("127."));
    let root = app.root().await;
    let (_, platform) = app
        .get("/api/v1/platform/audit-log?action=platform.login", &root)
        .await;
    assert!(
        !platform["items"].as_array().unwrap().is_empty(),
        "{platform}"
    );
}

#[tokio::test]
async fn a_company_admin_cannot_create_platform_staff() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, body) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "sneaky", "role": "platform_admin", "password": "initial-pass-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["role"].is_string());
}
