//! Cross-company isolation, generated from the router: every operation in the OpenAPI document
//! (which utoipa builds from the handlers, so new endpoints appear automatically) is called by
//! company A's admin with company B's resource ids. Operations on a B resource must answer 404;
//! operations without an id must never show any of B's data.

use crate::helpers::{spawn_app, Caller, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Operations that take no session (or only a refresh token in the body) and so have no
/// company to leak.
const PUBLIC: [&str; 6] = [
    "/api/v1/auth/login",
    "/api/v1/auth/tenant-codes",
    "/api/v1/auth/tenant-login",
    "/api/v1/auth/tenant-password-reset",
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
    batch_id: String,
    alarm_id: String,
    account_id: String,
    txn_id: String,
    reversal_id: String,
    approval_id: String,
    invoice_id: String,
    order_id: String,
    markers: Vec<String>,
}

/// Opens an account for `shop` with `meter` (opening reading typed in); its id.
async fn open_account(
    app: &TestApp,
    admin: &Caller,
    shop: &str,
    meter: &str,
    holder: &str,
) -> String {
    let (status, account) = app
        .post_keyed(
            "/api/v1/accounts",
            admin,
            &format!("open-{shop}"),
            json!({"shop_id": shop, "holder_name": holder, "meters": [{"meter_id": meter, "manual_energy_wh": 1000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    account["id"].as_str().unwrap().to_owned()
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
            json!({"bus_id": gateway["buses"][0]["id"], "model": "dtsy1352", "address": "7", "meter_number": "9876543210", "shop_id": shop_id}),
        )
        .await;
    let meter_id = meter["id"].as_str().expect("B's meter").to_owned();
    let account_id = open_account(app, &admin, &shop_id, &meter_id, "bravo-holder-secret").await;
    let (_, sale) = app
        .post_keyed(
            &format!("/api/v1/accounts/{account_id}/top-up"),
            &admin,
            "bravo-sale",
            json!({"amount_fen": 90_000, "method": "card"}),
        )
        .await;
    let txn_id = sale["transaction"]["id"]
        .as_str()
        .expect("B's sale")
        .to_owned();
    let (_, asked) = app
        .post_keyed(
            &format!("/api/v1/transactions/{txn_id}/reversal"),
            &admin,
            "bravo-reversal",
            json!({"reason": "bravo-reason-secret"}),
        )
        .await;
    let reversal_id = asked["request"]["id"]
        .as_str()
        .expect("B's reversal request")
        .to_owned();
    let (_, invoice) = app
        .post_keyed(
            &format!("/api/v1/accounts/{account_id}/invoices"),
            &admin,
            "bravo-invoice",
            json!({"title": "bravo-invoice-secret", "amount_fen": 1_000}),
        )
        .await;
    let invoice_id = invoice["id"]
        .as_str()
        .expect("B's invoice request")
        .to_owned();
    // A write-off request of B's (made in the database: reaching arrears takes a whole close).
    let approval_id = uuid::Uuid::now_v7().to_string();
    sqlx::query(&format!(
        "insert into c_{company_id}.approval_requests (id, kind, target_id, amount_fen, reason, request_key, requested_by, requested_at)
         values ($1, 'write_off', $2, 100, 'bravo-write-off-secret', 'bravo-write-off', $3, now())"
    ))
    .bind(approval_id.parse::<uuid::Uuid>().unwrap())
    .bind(account_id.parse::<uuid::Uuid>().unwrap())
    .bind(user_id.parse::<uuid::Uuid>().unwrap())
    .execute(&app.db.pool)
    .await
    .unwrap();
    // A payment order of B's (made in the database: B takes no online payments).
    let order_id: String = sqlx::query_scalar(&format!(
        "insert into c_{company_id}.payment_orders (id, provider, out_trade_no, account_id, amount_fen,
             state, created_at, expires_at, updated_at)
         values (gen_random_uuid(), 'sandbox', 'PTBRAVOSECRET0001', $1, 500, 'created', now(),
                 now() + interval '15 minutes', now())
         returning id::text"
    ))
    .bind(account_id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let (_, command) = app
        .post(
            &format!("/api/v1/meters/{meter_id}/read-now"),
            &admin,
            json!({}),
        )
        .await;
    let command_id = command["id"].as_str().expect("B's command").to_owned();
    let (_, batch) = app
        .post(
            "/api/v1/control-batches",
            &admin,
            json!({"op": "release", "confirm_meters": 1}),
        )
        .await;
    let batch_id = batch["id"].as_str().expect("B's batch").to_owned();
    let alarm_id: String = sqlx::query_scalar(&format!(
        "insert into c_{company_id}.field_alarms (id, kind, target_id, detail)
         values (gen_random_uuid(), 'relay_mismatch', $1, 'bravo') returning id::text"
    ))
    .bind(meter_id.parse::<uuid::Uuid>().unwrap())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
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
            account_id.clone(),
            "bravo-holder-secret".into(),
            txn_id.clone(),
            reversal_id.clone(),
            "bravo-reason-secret".into(),
            approval_id.clone(),
            "bravo-write-off-secret".into(),
            invoice_id.clone(),
            "bravo-invoice-secret".into(),
            order_id.clone(),
            "PTBRAVOSECRET0001".into(),
        ],
        user_id,
        building_id,
        floor_id,
        shop_id,
        plan_id,
        gateway_id,
        meter_id,
        command_id,
        batch_id,
        alarm_id,
        account_id,
        txn_id,
        reversal_id,
        approval_id,
        invoice_id,
        order_id,
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
    } else if path.starts_with("/api/v1/meters/{id}")
        || path.starts_with("/api/v1/secure/meters/{id}")
    {
        b.meter_id.clone()
    } else if path.starts_with("/api/v1/commands/{id}")
        || path.starts_with("/api/v1/secure/commands/{id}")
    {
        b.command_id.clone()
    } else if path.starts_with("/api/v1/control-batches/{id}") {
        b.batch_id.clone()
    } else if path.starts_with("/api/v1/field-alarms/{id}") {
        b.alarm_id.clone()
    } else if path.starts_with("/api/v1/accounts/{id}") {
        b.account_id.clone()
    } else if path.starts_with("/api/v1/transactions/{id}") {
        b.txn_id.clone()
    } else if path.starts_with("/api/v1/reversals/{id}") {
        b.reversal_id.clone()
    } else if path.starts_with("/api/v1/approvals/{id}") {
        b.approval_id.clone()
    } else if path.starts_with("/api/v1/invoices/{id}") {
        b.invoice_id.clone()
    } else if path.starts_with("/api/v1/payment-orders/{id}") {
        b.order_id.clone()
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
        // As a real client sends money requests: with a key of its own.
        request = request
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(&body.unwrap_or_else(|| json!({})));
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
    let (_, auditor_a) = app
        .user(&admin_a, "alpha", "alpha-audit", "auditor", &[])
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
            for caller in [&admin_a, &operator_a, &auditor_a] {
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

/// Every right an operator can hold.
const ALL_RIGHTS: [&str; 13] = [
    "top_up",
    "refund",
    "reversal",
    "approve",
    "trip_close",
    "keep_power",
    "settings",
    "export",
    "accounts",
    "payout",
    "readings_review",
    "daily_close",
    "emergency_credit",
];

/// An operator limited to building X, with every right, calls every endpoint of the API with the
/// ids of building Y's shop, meter, gateway (which carries only Y's meters) and command: 404 on
/// each; and lists never show Y's resources (DESIGN.md: Tenancy, roles).
#[tokio::test]
async fn an_operator_limited_to_a_building_gets_404_for_every_resource_outside_it() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let mut ids = std::collections::HashMap::new();
    for name in ["x-tower", "y-tower-secret"] {
        let (_, building) = app
            .post("/api/v1/buildings", &admin, json!({"name": name}))
            .await;
        let building_id = building["id"].as_str().unwrap().to_owned();
        let (_, floor) = app
            .post(
                &format!("/api/v1/buildings/{building_id}/floors"),
                &admin,
                json!({"name": "1F"}),
            )
            .await;
        let (_, shop) = app
            .post(
                "/api/v1/shops",
                &admin,
                json!({"floor_id": floor["id"], "number": format!("{name}-shop")}),
            )
            .await;
        let (_, gateway) = app
            .post(
                "/api/v1/gateways",
                &admin,
                json!({"identity": format!("{name}-dtu"), "kind": "dtu", "registration": format!("{name}-registration"),
                       "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
            )
            .await;
        let number = if name == "x-tower" {
            "1111111111"
        } else {
            "7777777777"
        };
        let (status, meter) = app
            .post(
                "/api/v1/meters",
                &admin,
                json!({"bus_id": gateway["buses"][0]["id"], "model": "dtsy1352", "address": "7",
                       "meter_number": number, "shop_id": shop["id"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{meter}");
        let meter_id = meter["id"].as_str().unwrap().to_owned();
        let (_, command) = app
            .post(
                &format!("/api/v1/meters/{meter_id}/read-now"),
                &admin,
                json!({}),
            )
            .await;
        ids.insert(
            name,
            (
                building_id,
                floor["id"].as_str().unwrap().to_owned(),
                shop["id"].as_str().unwrap().to_owned(),
                gateway["id"].as_str().unwrap().to_owned(),
                meter_id,
                command["id"].as_str().unwrap().to_owned(),
            ),
        );
    }
    // A meter without a shop is outside every limit too.
    let (_, loose) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": app.get(&format!("/api/v1/gateways/{}", ids["x-tower"].3), &admin).await.1["buses"][0]["id"],
                   "model": "dtsy1352", "address": "8", "meter_number": "8888888888"}),
        )
        .await;
    let loose_id = loose["id"].as_str().unwrap().to_owned();
    let (limited_id, _) = app
        .user(&admin, "acme", "limited", "operator", &ALL_RIGHTS)
        .await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{limited_id}"),
            Some(&admin),
            Some(json!({"building_ids": [ids["x-tower"].0]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let limited = app.login("acme", "limited").await;
    let (y_building, y_floor, y_shop, y_gateway, y_meter, y_command) =
        ids["y-tower-secret"].clone();
    let y_account = open_account(&app, &admin, &y_shop, &y_meter, "y-holder-secret").await;
    let markers = [
        "y-tower-secret".to_owned(),
        "7777777777".to_owned(),
        "8888888888".to_owned(),
        y_building.clone(),
        y_shop.clone(),
        y_gateway.clone(),
        y_meter.clone(),
        loose_id.clone(),
        y_account.clone(),
        "y-holder-secret".to_owned(),
    ];

    let (_, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    let mut checked = 0;
    for (template, operations) in doc["paths"].as_object().unwrap() {
        if PUBLIC.contains(&template.as_str()) || template.starts_with("/api/v1/platform") {
            continue;
        }
        // Building-scoped resources only: users, plans and the calendar are the company's.
        let id = if template.starts_with("/api/v1/buildings/{id}") {
            Some(y_building.clone())
        } else if template.starts_with("/api/v1/floors/{id}") {
            Some(y_floor.clone())
        } else if template.starts_with("/api/v1/shops/{id}") {
            Some(y_shop.clone())
        } else if template.starts_with("/api/v1/gateways/{id}") {
            Some(y_gateway.clone())
        } else if template.starts_with("/api/v1/meters/{id}") {
            Some(y_meter.clone())
        } else if template.starts_with("/api/v1/commands/{id}") {
            Some(y_command.clone())
        } else if template.starts_with("/api/v1/accounts/{id}") {
            Some(y_account.clone())
        } else {
            None
        };
        for (method, operation) in operations.as_object().unwrap() {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            let body = (!schema.is_null()).then(|| example(&doc, schema));
            match &id {
                Some(id) => {
                    let mut targets = vec![id.as_str()];
                    if template.starts_with("/api/v1/meters/{id}") {
                        targets.push(loose_id.as_str());
                    }
                    for id in targets {
                        let path = template.replace("{id}", id);
                        let (status, answer) =
                            call_as(&app, &limited, method, &path, body.clone()).await;
                        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
                        checked += 1;
                    }
                }
                None if template.contains('{') => {}
                None => {
                    let (status, answer) =
                        call_as(&app, &limited, method, template, body.clone()).await;
                    assert!(
                        status != StatusCode::INTERNAL_SERVER_ERROR,
                        "{method} {template}: {answer}"
                    );
                    for marker in &markers {
                        assert!(
                            !answer.contains(marker.as_str()),
                            "{method} {template} shows {marker}: {answer}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "checked {checked} calls");
    // The Excel twins hold nothing outside the limit either.
    for path in ["/api/v1/meters.xlsx", "/api/v1/gateways.xlsx"] {
        let response = app
            .http
            .get(app.url(path))
            .bearer_auth(&limited.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = response.bytes().await.unwrap();
        let text = sheet_text(&bytes);
        assert!(
            text.contains("1111111111") || path.contains("gateways"),
            "{path}: {text}"
        );
        for marker in &markers {
            assert!(!text.contains(marker.as_str()), "{path} shows {marker}");
        }
    }
    // Their own building's meter can be read, and cannot be moved out of their buildings.
    let x_meter = ids["x-tower"].4.clone();
    let (status, _) = app
        .get(&format!("/api/v1/meters/{x_meter}"), &limited)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/meters/{x_meter}"),
            Some(&limited),
            Some(json!({"shop_id": y_shop})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/meters/{x_meter}"),
            Some(&limited),
            Some(json!({"shop_id": null})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a meter without a shop needs an unlimited user"
    );
    // Gateway edits need an unlimited user, even on a gateway they can see.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/gateways/{}", ids["x-tower"].3),
            Some(&limited),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// The text of every cell of the first sheet of an .xlsx.
fn sheet_text(bytes: &[u8]) -> String {
    use calamine::Reader;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let range = book.worksheet_range_at(0).unwrap().unwrap();
    range
        .rows()
        .flatten()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
