//! Cross-company isolation, generated from the router: every operation in the OpenAPI document
//! (which utoipa builds from the handlers, so new endpoints appear automatically) is called by
//! company A's admin with company B's resource ids. Operations on a B resource must answer 404;
//! operations without an id must never show any of B's data.

use crate::helpers::{spawn_app, Caller, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Operations that take no session (or only a refresh token in the body) and so have no
/// company to leak.
const PUBLIC: [&str; 3] = [
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
];

/// A day only company B marks in its holiday calendar.
const B_HOLIDAY: &str = "2031-10-01";

struct CompanyB {
    company_id: i64,
    user_id: String,
    building_id: String,
    floor_id: String,
    shop_id: String,
    plan_id: String,
    gateway_id: String,
    meter_id: String,
    command_id: String,
    markers: Vec<String>,
}

async fn company_b(app: &TestApp) -> CompanyB {
    let (company_id, admin) = app.company_with_admin("bravo-secret").await;
    let (user_id, _) = app
        .user(
            &admin,
            "bravo-secret",
            "bravo-operator-secret",
            "operator",
            &[],
        )
        .await;
    let (_, building) = app
        .post(
            "/api/v1/buildings",
            &admin,
            json!({"name": "bravo-tower-secret"}),
        )
        .await;
    let building_id = building["id"].as_str().unwrap().to_owned();
    let (_, floor) = app
        .post(
            &format!("/api/v1/buildings/{building_id}/floors"),
            &admin,
            json!({"name": "9F"}),
        )
        .await;
    let floor_id = floor["id"].as_str().unwrap().to_owned();
    let (_, shop) = app
        .post(
            "/api/v1/shops",
            &admin,
            json!({"floor_id": floor_id, "number": "bravo-shop-secret"}),
        )
        .await;
    let shop_id = shop["id"].as_str().expect("B's shop").to_owned();
    let (_, plan) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "bravo-plan-secret", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}),
        )
        .await;
    let plan_id = plan["id"].as_str().expect("B's plan").to_owned();
    let (_, gateway) = app
        .post(
            "/api/v1/gateways",
            &admin,
            json!({"identity": "bravo-dtu-secret", "kind": "dtu", "registration": "bravo-reg", "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    let gateway_id = gateway["id"].as_str().expect("B's gateway").to_owned();
    let (_, meter) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": gateway["buses"][0]["id"], "model": "dtsy1352", "address": "7", "meter_number": "9876543210"}),
        )
        .await;
    let meter_id = meter["id"].as_str().expect("B's meter").to_owned();
    let (_, command) = app
        .post(
            &format!("/api/v1/meters/{meter_id}/read-now"),
            &admin,
            json!({}),
        )
        .await;
    let command_id = command["id"].as_str().expect("B's command").to_owned();
    let (status, _) = app
        .post(
            "/api/v1/calendar",
            &admin,
            json!({"day": B_HOLIDAY, "kind": "holiday", "name": "bravo-day-secret"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    CompanyB {
        company_id,
        markers: vec![
            "bravo-secret".into(),
            "bravo-operator-secret".into(),
            user_id.clone(),
            building_id.clone(),
            floor_id.clone(),
            shop_id.clone(),
            plan_id.clone(),
            "bravo-day-secret".into(),
            "bravo-dtu-secret".into(),
            gateway_id.clone(),
            meter_id.clone(),
            "9876543210".into(),
        ],
        user_id,
        building_id,
        floor_id,
        shop_id,
        plan_id,
        gateway_id,
        meter_id,
        command_id,
    }
}

/// The id of B's resource for a path parameter, by the resource the path names.
fn b_id_for(path: &str, b: &CompanyB) -> String {
    if path.starts_with("/api/v1/platform/companies/{id}") {
        b.company_id.to_string()
    } else if path.starts_with("/api/v1/users/{id}") {
        b.user_id.clone()
    } else if path.starts_with("/api/v1/buildings/{id}") {
        b.building_id.clone()
    } else if path.starts_with("/api/v1/floors/{id}") {
        b.floor_id.clone()
    } else if path.starts_with("/api/v1/shops/{id}") {
        b.shop_id.clone()
    } else if path.starts_with("/api/v1/tariff-plans/{id}") {
        b.plan_id.clone()
    } else if path.starts_with("/api/v1/gateways/{id}") {
        b.gateway_id.clone()
    } else if path.starts_with("/api/v1/meters/{id}") {
        b.meter_id.clone()
    } else if path.starts_with("/api/v1/commands/{id}") {
        b.command_id.clone()
    } else {
        panic!("isolation test: no company-B resource id known for {path}; add one to b_id_for")
    }
}

/// A value for a schema that passes the body's validation, so the handler itself answers: every
/// required field filled with a plausible value (strings fit usernames, slugs and passwords).
fn example(doc: &Value, schema: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return example(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(first) = schema["oneOf"]
        .as_array()
        .or(schema["allOf"].as_array())
        .and_then(|s| s.first())
    {
        return example(doc, first);
    }
    if let Some(values) = schema["enum"].as_array() {
        return values[0].clone();
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds[0].as_str().unwrap_or("object").to_owned(),
        Value::String(kind) => kind.clone(),
        _ => "object".into(),
    };
    match kind.as_str() {
        "string" if schema["format"] == "uuid" => json!(uuid::Uuid::now_v7()),
        "string" if schema["format"] == "date" => json!("2099-01-01"),
        "string" => json!("iso-probe-1A"),
        "integer" | "number" => json!(1),
        "boolean" => json!(false),
        "array" => json!([]),
        _ => {
            let mut object = serde_json::Map::new();
            for field in schema["required"].as_array().into_iter().flatten() {
                let name = field.as_str().unwrap();
                object.insert(name.to_owned(), example(doc, &schema["properties"][name]));
            }
            Value::Object(object)
        }
    }
}

async fn call_as(
    app: &TestApp,
    caller: &Caller,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = app
        .http
        .request(method.clone(), app.url(path))
        .bearer_auth(&caller.token);
    if method != Method::GET {
        request = request.json(&body.unwrap_or_else(|| json!({})));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn company_a_gets_404_for_every_company_b_resource_on_every_endpoint() {
    let app = spawn_app().await;
    let b = company_b(&app).await;
    let (_, admin_a) = app.company_with_admin("alpha").await;
    let (_, operator_a) = app
        .user(&admin_a, "alpha", "alpha-op", "operator", &["export"])
        .await;

    let (_, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    let paths = doc["paths"].as_object().expect("openapi paths");
    assert!(
        paths.len() >= 15,
        "the document lists the API: {}",
        paths.len()
    );
    let mut checked = 0;
    for (template, operations) in paths {
        if PUBLIC.contains(&template.as_str()) {
            continue;
        }
        for (method, operation) in operations.as_object().unwrap() {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            let body = (!schema.is_null()).then(|| example(&doc, schema));
            for caller in [&admin_a, &operator_a] {
                if template.contains("{day}") {
                    let path = template.replace("{day}", B_HOLIDAY);
                    let (status, body) = call_as(&app, caller, method, &path, body.clone()).await;
                    assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
                    checked += 1;
                } else if template.contains("{id}") {
                    let path = template.replace("{id}", &b_id_for(template, &b));
                    let (status, body) = call_as(&app, caller, method, &path, body.clone()).await;
                    assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
                    checked += 1;
                } else {
                    let (status, body) =
                        call_as(&app, caller, method, template, body.clone()).await;
                    assert!(
                        status != StatusCode::INTERNAL_SERVER_ERROR,
                        "{method} {template}: {body}"
                    );
                    for marker in &b.markers {
                        assert!(
                            !body.contains(marker.as_str()),
                            "{method} {template} shows B's {marker}: {body}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "checked {checked} calls");
}

#[tokio::test]
async fn a_taken_username_in_another_company_is_not_revealed() {
    let app = spawn_app().await;
    let _b = company_b(&app).await;
    let (_, admin_a) = app.company_with_admin("alpha").await;
    // The same username is free in A: usernames are per company.
    let (status, body) = app
        .post("/api/v1/users", &admin_a, json!({"username": "bravo-operator-secret", "role": "operator", "password": "initial-pass-1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, list): (_, Value) = app.get("/api/v1/users", &admin_a).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}
