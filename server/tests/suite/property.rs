//! The property tree: buildings, floors, shops; validation, rights, operators limited to
//! buildings, deletion rules, the Excel export.

use crate::helpers::spawn_app;
use calamine::{Data, Reader, Xlsx};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Cursor;

async fn setup_building(
    app: &crate::helpers::TestApp,
    admin: &crate::helpers::Caller,
    name: &str,
) -> (String, String) {
    let (status, building) = app
        .post(
            "/api/v1/buildings",
            admin,
            json!({"name": name, "address": "人民路1号"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{building}");
    let id = building["id"].as_str().unwrap().to_owned();
    let (status, floor) = app
        .post(
            &format!("/api/v1/buildings/{id}/floors"),
            admin,
            json!({"name": "1F", "sort_order": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{floor}");
    (id, floor["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn admins_build_the_property_tree_and_find_shops() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (building, floor) = setup_building(&app, &admin, "A座").await;
    for (number, name) in [("101", "奶茶店"), ("102", "Bookshop"), ("103", "")] {
        let (status, body) = app
            .post("/api/v1/shops", &admin, json!({"floor_id": floor, "number": number, "name": name, "area_m2": "85.5", "contact_phone": "138 0013 8000"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["area_centi_m2"], 8550);
        assert_eq!(body["contact_phone"], "13800138000");
        assert_eq!(body["building_name"], "A座");
    }
    let (_, tree) = app.get("/api/v1/buildings", &admin).await;
    assert_eq!(tree["items"][0]["shop_count"], 3);
    assert_eq!(tree["items"][0]["floors"][0]["name"], "1F");
    let (_, found) = app.get("/api/v1/shops?q=奶茶", &admin).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let (_, by_floor) = app
        .get(
            &format!("/api/v1/shops?floor_id={floor}&building_id={building}"),
            &admin,
        )
        .await;
    assert_eq!(by_floor["items"].as_array().unwrap().len(), 3);
    let (_, log) = app.get("/api/v1/audit-log?action=shop.", &admin).await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn validation_speaks_per_field() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, floor) = setup_building(&app, &admin, "A").await;
    app.post(
        "/api/v1/shops",
        &admin,
        json!({"floor_id": floor, "number": "101"}),
    )
    .await;
    let (status, body) = app
        .post("/api/v1/shops", &admin, json!({"floor_id": floor, "number": "101", "area_m2": "12.345", "contact_phone": "12345", "status": "open"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&String> = body["error"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        fields,
        ["area_m2", "contact_phone", "number", "status"],
        "{body}"
    );
    let (status, body) = app
        .post("/api/v1/buildings", &admin, json!({"name": "A"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["name"]
        .as_str()
        .unwrap()
        .contains("exists"));
    let (status, body) = app
        .post(
            "/api/v1/shops",
            &admin,
            json!({"floor_id": uuid::Uuid::now_v7(), "number": "9"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["floor_id"].is_string());
}

#[tokio::test]
async fn the_settings_right_guards_changes_and_building_limits_hide_other_buildings() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (a, floor_a) = setup_building(&app, &admin, "A").await;
    let (_b, floor_b) = setup_building(&app, &admin, "B").await;
    let (_, shop_b) = app
        .post(
            "/api/v1/shops",
            &admin,
            json!({"floor_id": floor_b, "number": "201"}),
        )
        .await;
    let shop_b = shop_b["id"].as_str().unwrap().to_owned();

    let (_, plain) = app.user(&admin, "acme", "plain", "operator", &[]).await;
    assert_eq!(
        app.post(
            "/api/v1/shops",
            &plain,
            json!({"floor_id": floor_a, "number": "1"})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );

    let (limited_id, _) = app
        .user(&admin, "acme", "limited", "operator", &["settings"])
        .await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{limited_id}"),
            Some(&admin),
            Some(json!({"building_ids": [a]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let limited = app.login("acme", "limited").await;
    let (_, tree) = app.get("/api/v1/buildings", &limited).await;
    let names: Vec<&str> = tree["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A"]);
    assert_eq!(
        app.get(&format!("/api/v1/shops/{shop_b}"), &limited)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app
        .post(
            "/api/v1/shops",
            &limited,
            json!({"floor_id": floor_b, "number": "202"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another building's floor does not exist for them: {body}"
    );
    assert_eq!(
        app.post(
            "/api/v1/shops",
            &limited,
            json!({"floor_id": floor_a, "number": "102"})
        )
        .await
        .0,
        StatusCode::CREATED
    );
    assert_eq!(
        app.post("/api/v1/buildings", &limited, json!({"name": "C"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (_, shops): (_, Value) = app.get("/api/v1/shops", &limited).await;
    assert_eq!(shops["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn only_empty_floors_and_buildings_can_be_deleted() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (building, floor) = setup_building(&app, &admin, "A").await;
    let (_, shop) = app
        .post(
            "/api/v1/shops",
            &admin,
            json!({"floor_id": floor, "number": "101"}),
        )
        .await;
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/floors/{floor}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/buildings/{building}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    // Moving the shop to another building's floor moves it out.
    let (other, other_floor) = setup_building(&app, &admin, "B").await;
    let shop_id = shop["id"].as_str().unwrap();
    let (status, moved) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/shops/{shop_id}"),
            Some(&admin),
            Some(json!({"floor_id": other_floor, "number": "101"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["building_id"], other.as_str());
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/floors/{floor}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/buildings/{building}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/buildings/{building}"), &admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_shop_list_exports_to_excel() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, floor) = setup_building(&app, &admin, "A座").await;
    app.post(
        "/api/v1/shops",
        &admin,
        json!({"floor_id": floor, "number": "101", "name": "奶茶店", "area_m2": "85.5"}),
    )
    .await;
    let response = app
        .http
        .get(app.url("/api/v1/shops.xlsx"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut book = Xlsx::new(Cursor::new(response.bytes().await.unwrap().to_vec())).unwrap();
    let sheet = book.worksheet_range("商铺").unwrap();
    assert_eq!(sheet.get((1, 0)), Some(&Data::String("A座".into())));
    assert_eq!(sheet.get((1, 3)), Some(&Data::String("奶茶店".into())));
    assert_eq!(sheet.get((1, 4)), Some(&Data::Float(85.5)));
}
