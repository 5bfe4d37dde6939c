//! Managing a company's users: rights, building limits, filters, pagination, password reset,
//! the audit trail of every change and the Excel exports.

use crate::helpers::{spawn_app, Caller, PASSWORD};
use calamine::{Data, Reader, Xlsx};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::io::Cursor;

#[tokio::test]
async fn admins_grant_rights_and_limit_buildings_and_every_change_is_audited() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (id, _) = app
        .user(&admin, "acme", "op1", "operator", &["top_up"])
        .await;
    let building = uuid::Uuid::now_v7();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({"rights": ["refund", "top_up", "refund"], "building_ids": [building], "display_name": "张三"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rights"], json!(["refund", "top_up"]));
    assert_eq!(body["building_ids"], json!([building]));
    assert_eq!(body["display_name"], "张三");
    let (_, log) = app
        .get(
            &format!("/api/v1/audit-log?action=user.update&target_id={id}"),
            &admin,
        )
        .await;
    let entry = &log["items"][0];
    assert_eq!(entry["before"]["rights"], json!(["top_up"]), "{log}");
    assert_eq!(entry["after"]["rights"], json!(["refund", "top_up"]));
    assert!(entry["actor_name"].as_str().unwrap().starts_with("boss"));
    assert!(entry["source_ip"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("127.")));
}

#[tokio::test]
async fn lists_filter_and_page_with_a_cursor() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    for i in 0..5 {
        let (status, _) = app
            .post("/api/v1/users", &admin, json!({"username": format!("op{i}"), "role": "operator", "password": "initial-pass-1"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, first) = app.get("/api/v1/users?role=operator&limit=3", &admin).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let (_, second) = app
        .get(
            &format!("/api/v1/users?role=operator&limit=3&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
    let mut names: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["op0", "op1", "op2", "op3", "op4"]);
    let (_, found) = app.get("/api/v1/users?q=op3", &admin).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/api/v1/users?limit=501", &admin).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get("/api/v1/users?cursor=garbage!", &admin).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get("/api/v1/users?role=emperor", &admin).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_password_reset_forces_a_change_and_ends_sessions() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (id, operator) = app.user(&admin, "acme", "op1", "operator", &[]).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/users/{id}/reset-password"),
            &admin,
            json!({"password": "temporary-pass-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["must_change_password"], true);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": operator.refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.try_login("acme", "op1", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, login) = app.try_login("acme", "op1", "temporary-pass-9").await;
    assert_eq!(login["must_change_password"], true);
    let first = Caller {
        token: login["access_token"].as_str().unwrap().into(),
        refresh: String::new(),
    };
    assert_eq!(
        app.get("/api/v1/users", &first).await.0,
        StatusCode::FORBIDDEN
    );
}

async fn download(
    app: &crate::helpers::TestApp,
    path: &str,
    caller: &Caller,
) -> Xlsx<Cursor<Vec<u8>>> {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(&caller.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let bytes = response.bytes().await.unwrap().to_vec();
    Xlsx::new(Cursor::new(bytes)).expect("a readable workbook")
}

#[tokio::test]
async fn the_user_list_and_audit_log_export_to_excel_with_typed_cells() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    app.user(&admin, "acme", "op1", "operator", &["export"])
        .await;
    let mut book = download(&app, "/api/v1/users.xlsx?lang=en", &admin).await;
    let sheet = book.worksheet_range("Users").expect("a Users sheet");
    assert_eq!(sheet.get((0, 0)), Some(&Data::String("Username".into())));
    let usernames: Vec<String> = (1..sheet.height())
        .map(|r| sheet.get((r, 0)).unwrap().to_string())
        .collect();
    assert!(
        usernames.contains(&"op1".to_owned()) && usernames.contains(&"boss".to_owned()),
        "{usernames:?}"
    );
    assert!(
        matches!(sheet.get((1, 6)), Some(Data::Float(_))),
        "building count is a number"
    );
    assert!(
        matches!(sheet.get((1, 7)), Some(Data::DateTime(_))),
        "created is a date-time"
    );

    let mut book = download(&app, "/api/v1/audit-log.xlsx", &admin).await;
    let sheet = book
        .worksheet_range("操作日志")
        .expect("Chinese sheet name by default");
    assert_eq!(sheet.get((0, 0)), Some(&Data::String("时间".into())));
    let actions: Vec<String> = (1..sheet.height())
        .map(|r| sheet.get((r, 4)).unwrap().to_string())
        .collect();
    assert!(actions.contains(&"user.create".to_owned()), "{actions:?}");
}

/// An admin's own password changes only with the current one: the admin reset refuses one's
/// own id, so a stolen access token cannot be turned into the account.
#[tokio::test]
async fn an_admin_cannot_reset_their_own_password() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, me) = app.get("/api/v1/me", &admin).await;
    let own_id = me["id"]
        .as_str()
        .or(me["user_id"].as_str())
        .unwrap()
        .to_owned();
    let (status, body) = app
        .post(
            &format!("/api/v1/users/{own_id}/reset-password"),
            &admin,
            json!({"password": "attacker-pass-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        app.try_login("acme", "boss", "attacker-pass-9").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.try_login("acme", "boss", PASSWORD).await.0,
        StatusCode::OK
    );
}

/// A NUL byte in any text field is the caller's mistake (422), never a server error.
#[tokio::test]
async fn text_with_a_nul_byte_is_refused_with_422_everywhere() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, _) = app.try_login("acme", "bo\u{0}ss", PASSWORD).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.try_login("ac\u{0}me", "boss", PASSWORD).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for (path, body) in [
        ("/api/v1/buildings", json!({"name": "A\u{0}座"})),
        (
            "/api/v1/users",
            json!({"username": "op\u{0}1", "role": "operator", "password": "initial-pass-1"}),
        ),
        (
            "/api/v1/gateways",
            json!({"identity": "dtu\u{0}1", "kind": "dtu", "registration": "REG-\u{0}0001", "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        ),
    ] {
        let (status, answer) = app.post(path, &admin, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
    }
    let (status, _) = app.get("/api/v1/shops?q=%00", &admin).await;
    assert!(
        status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::OK,
        "{status}"
    );
}
