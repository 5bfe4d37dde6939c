//! Onboarding companies: validation, one schema each, idempotent migrations, quotas.

use crate::helpers::spawn_app;
use powertab_core::db::migrate;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn onboarding_validates_each_field() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (status, body) = app
        .post(
            "/api/v1/platform/companies",
            &root,
            json!({"slug": "Bad Slug!", "name": "", "time_zone": "Mars/Base", "max_meters": -1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = &body["error"]["fields"];
    for field in ["slug", "name", "time_zone", "max_meters"] {
        assert!(fields[field].is_string(), "{field}: {body}");
    }
    assert_eq!(
        app.post(
            "/api/v1/platform/companies",
            &root,
            json!({"slug": "acme", "name": "Acme"})
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (status, body) = app
        .post(
            "/api/v1/platform/companies",
            &root,
            json!({"slug": "ACME", "name": "Again"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["slug"]
        .as_str()
        .unwrap()
        .contains("taken"));
}

#[tokio::test]
async fn each_company_gets_its_own_migrated_schema_and_migrate_is_idempotent() {
    let app = spawn_app().await;
    let (a, _) = app.company_with_admin("alpha").await;
    let (b, _) = app.company_with_admin("bravo").await;
    for id in [a, b] {
        let version: i32 = sqlx::query_scalar(&format!(
            "select max(version) from c_{id}.schema_migrations"
        ))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(version, migrate::COMPANY.last().unwrap().version);
    }
    let reports = migrate::migrate_all(&app.db.pool).await.unwrap();
    assert_eq!(reports.len(), 3, "control + two companies");
    assert!(reports.iter().all(|r| r.applied.is_empty()), "{reports:?}");
}

#[tokio::test]
async fn the_staff_quota_is_enforced() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (id, admin) = app.company_with_admin("acme").await;
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/platform/companies/{id}/quotas"),
            Some(&root),
            Some(json!({"max_operators": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["max_operators"], 2);
    app.user(&admin, "acme", "op1", "operator", &[]).await;
    let (status, body) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "op2", "role": "operator", "password": "initial-pass-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "quota_exceeded");
    // Shop tenants do not count toward the staff quota.
    let (status, _) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "13900139000", "role": "shop_tenant", "password": "initial-pass-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, info) = app.get("/api/v1/company", &admin).await;
    assert_eq!(info["active_staff"], 2);
}
