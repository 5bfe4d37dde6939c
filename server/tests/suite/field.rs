//! Gateways, buses and meters: kinds, platform-wide identities, validation, quotas.

use crate::helpers::{spawn_app, TEST_GATEWAY_SECRET};
use powertab_core::auth::Secret;
use powertab_core::field::credentials;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn dtu(identity: &str, registration: &str) -> Value {
    json!({"identity": identity, "kind": "dtu", "registration": registration, "heartbeat": "FE", "heartbeat_is_hex": true,
           "buses": [{"number": 1, "protocol": "modbus_rtu"}, {"number": 2, "protocol": "dlt645"}]})
}

#[tokio::test]
async fn gateways_of_each_kind_with_protocol_defaults() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, g) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-0001", "IMEI861234"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    assert!(
        g["registration_hex"].is_null() && g["registration_set"] == true,
        "{g}"
    );
    let (_, shown) = app
        .get(
            &format!(
                "/api/v1/gateways/{}/registration",
                g["id"].as_str().unwrap()
            ),
            &admin,
        )
        .await;
    assert_eq!(shown["registration_hex"], "494d4549383631323334");
    assert_eq!(shown["registration_text"], "IMEI861234");
    assert_eq!(g["heartbeat_hex"], "fe");
    assert_eq!(
        (
            g["buses"][0]["baud"].clone(),
            g["buses"][0]["parity"].clone()
        ),
        (json!(9600), json!("N"))
    );
    assert_eq!(
        (
            g["buses"][1]["baud"].clone(),
            g["buses"][1]["parity"].clone()
        ),
        (json!(2400), json!("E"))
    );
    let (status, body) = app
        .post("/api/v1/gateways", &admin, json!({"identity": "mb-1", "kind": "modbus_tcp", "host": "10.0.0.5", "buses": [{"number": 1, "protocol": "modbus_rtu", "tcp_port": 502}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post("/api/v1/gateways", &admin, json!({"identity": "mq-1", "kind": "mqtt", "buses": [{"number": 1, "protocol": "modbus_rtu"}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["mqtt_credential_generation"], 1);
    let (_, list) = app.get("/api/v1/gateways", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn mqtt_gateways_get_a_derived_credential_that_admins_can_look_up_and_rotate() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, created) = app
        .post("/api/v1/gateways", &admin, json!({"identity": "mq-1", "kind": "mqtt", "buses": [{"number": 1, "protocol": "modbus_rtu"}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/gateways/{id}/mqtt-credential");
    let (status, shown) = app.get(&path, &admin).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let expected = credentials::derive(
        &Secret::new(TEST_GATEWAY_SECRET),
        id.parse().unwrap(),
        "mq-1",
        1,
    );
    assert_eq!(
        (
            shown["username"].as_str(),
            shown["client_id"].as_str(),
            shown["password"].as_str(),
            shown["generation"].as_i64()
        ),
        (Some("mq-1"), Some("mq-1"), Some(expected.as_str()), Some(1))
    );
    let (_, again) = app.get(&path, &admin).await;
    assert_eq!(
        again["password"], shown["password"],
        "the same until rotated"
    );

    let (status, rotated) = app.post(&path, &admin, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["generation"], 2);
    assert_ne!(rotated["password"], shown["password"]);
    let (_, now) = app.get(&path, &admin).await;
    assert_eq!(now["password"], rotated["password"]);
    let generation: i32 = sqlx::query_scalar(
        "select mqtt_credential_gen from control.gateway_directory where identity = 'mq-1'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(generation, 2, "ingest provisions from the directory");

    // Looks and rotations are audited; nobody without the settings right sees it.
    let (_, audit) = app
        .get("/api/v1/audit-log?action=gateway.credential", &admin)
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("gateway.credential"))
        .collect();
    // Two looks at generation 1 within minutes are one entry.
    assert_eq!(
        actions,
        [
            "gateway.credential_view",
            "gateway.credential_rotate",
            "gateway.credential_view"
        ],
        "{actions:?}"
    );
    assert!(
        !audit.to_string().contains(&expected),
        "the audit never holds the password"
    );
    let (_, operator) = app.user(&admin, "acme", "op", "operator", &[]).await;
    assert_eq!(app.get(&path, &operator).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.post(&path, &operator, json!({})).await.0,
        StatusCode::FORBIDDEN
    );

    // Other kinds of gateway have no credential; MQTT identities must be topic-safe.
    let (_, dtu_gateway) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-0001", "REG-AAAA"))
        .await;
    let dtu_path = format!(
        "/api/v1/gateways/{}/mqtt-credential",
        dtu_gateway["id"].as_str().unwrap()
    );
    assert_eq!(app.get(&dtu_path, &admin).await.0, StatusCode::CONFLICT);
    let (status, body) = app
        .post("/api/v1/gateways", &admin, json!({"identity": "mq/2", "kind": "mqtt", "buses": [{"number": 1, "protocol": "modbus_rtu"}]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["fields"]["identity"]
            .as_str()
            .unwrap()
            .contains("letters"),
        "{body}"
    );
}

#[tokio::test]
async fn identities_are_unique_across_the_platform_without_saying_whose() {
    let app = spawn_app().await;
    let (_, alpha) = app.company_with_admin("alpha").await;
    let (_, bravo) = app.company_with_admin("bravo").await;
    assert_eq!(
        app.post("/api/v1/gateways", &alpha, dtu("dtu-0001", "REG-AAAA"))
            .await
            .0,
        StatusCode::CREATED
    );
    for (body, field) in [
        (dtu("dtu-0001", "REG-BBBB"), "identity"),
        (dtu("dtu-0002", "REG-AAAA"), "registration"),
    ] {
        let (status, answer) = app.post("/api/v1/gateways", &bravo, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            answer["error"]["fields"][field]
                .as_str()
                .unwrap()
                .contains("taken"),
            "{answer}"
        );
        assert!(!answer.to_string().contains("alpha"), "{answer}");
    }
}

#[tokio::test]
async fn gateway_validation_names_each_field() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, body) = app
        .post("/api/v1/gateways", &admin, json!({"identity": "", "kind": "dtu", "registration": "5", "registration_is_hex": true,
            "buses": [{"number": 0, "protocol": "can", "baud": 1234, "parity": "X", "tcp_port": 502}]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&String> = body["error"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    for f in [
        "identity",
        "registration",
        "buses.0.number",
        "buses.0.protocol",
        "buses.0.baud",
        "buses.0.parity",
        "buses.0.tcp_port",
    ] {
        assert!(fields.contains(&&f.to_owned()), "{f}: {body}");
    }
}

#[tokio::test]
async fn meters_are_checked_against_their_bus_and_the_quota() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (company, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-0001", "REG-AAAA"))
        .await;
    let (modbus_bus, dlt_bus) = (g["buses"][0]["id"].clone(), g["buses"][1]["id"].clone());
    let (status, m) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": modbus_bus, "model": "dtsy1352", "address": "017", "meter_number": "202611250001", "ct_ratio": 40}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    assert_eq!(
        (m["address"].clone(), m["gateway_identity"].clone()),
        (json!("17"), json!("dtu-0001"))
    );
    // Same address on the bus, wrong protocol, meter-side on a DL/T 645 meter, bad number.
    let (status, body) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": modbus_bus, "model": "dtsy1352", "address": "17", "meter_number": "202611250002"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["address"]
        .as_str()
        .unwrap()
        .contains("this address"));
    let (_, body) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": modbus_bus, "model": "dlt645", "address": "202611250003", "meter_number": "x"}))
        .await;
    let fields = body["error"]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("model") && fields.contains_key("meter_number"),
        "{body}"
    );
    let (_, body) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": dlt_bus, "model": "dlt645", "address": "202611250003", "meter_number": "3", "prepayment_mode": "meter"}))
        .await;
    assert!(
        body["error"]["fields"]["prepayment_mode"].is_string(),
        "{body}"
    );
    // Quota: one more meter is allowed, then 409.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/platform/companies/{company}/quotas"),
            Some(&root),
            Some(json!({"max_meters": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": dlt_bus, "model": "dlt645", "address": "202611250003", "meter_number": "3"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": dlt_bus, "model": "dlt645", "address": "202611250004", "meter_number": "4"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let response = app
        .http
        .get(app.url("/api/v1/meters.xlsx"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_crowded_bus_needs_confirmation() {
    let app = spawn_app().await;
    let root = app.root().await;
    let (company, admin) = app.company_with_admin("acme").await;
    app.call(
        Method::PATCH,
        &format!("/api/v1/platform/companies/{company}/quotas"),
        Some(&root),
        Some(json!({"max_meters": 100})),
    )
    .await;
    let (_, g) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-0001", "REG-AAAA"))
        .await;
    let bus = g["buses"][0]["id"].clone();
    for address in 1..=32 {
        let (status, body) = app
            .post("/api/v1/meters", &admin, json!({"bus_id": bus, "model": "ddsy1352", "address": address.to_string(), "meter_number": address.to_string()}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let meter = json!({"bus_id": bus, "model": "ddsy1352", "address": "33", "meter_number": "33"});
    let (status, body) = app.post("/api/v1/meters", &admin, meter.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["accept_crowded_bus"].is_string());
    let mut confirmed = meter;
    confirmed["accept_crowded_bus"] = json!(true);
    assert_eq!(
        app.post("/api/v1/meters", &admin, confirmed).await.0,
        StatusCode::CREATED
    );
}

async fn three_meters(
    app: &crate::helpers::TestApp,
    admin: &crate::helpers::Caller,
) -> (Vec<String>, String) {
    let (_, g) = app
        .post("/api/v1/gateways", admin, dtu("dtu-0001", "REG-AAAA"))
        .await;
    let (modbus_bus, dlt_bus) = (g["buses"][0]["id"].clone(), g["buses"][1]["id"].clone());
    let mut ids = Vec::new();
    for (bus, model, address) in [
        (&modbus_bus, "dtsy1352", "1"),
        (&modbus_bus, "ddsy1352", "2"),
        (&dlt_bus, "dlt645", "202611250003"),
    ] {
        let (status, m) = app
            .post(
                "/api/v1/meters",
                admin,
                json!({"bus_id": bus, "model": model, "address": address, "meter_number": address}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    let (_, plan) = app
        .post("/api/v1/tariff-plans", admin, json!({"name": "flat", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}))
        .await;
    (ids, plan["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn meters_are_edited_with_the_same_rules_as_creation() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (ids, plan) = three_meters(&app, &admin).await;
    let path = format!("/api/v1/meters/{}", ids[0]);
    let (status, m) = app
        .call(Method::PATCH, &path, Some(&admin), Some(json!({"tariff_plan_id": plan, "alarm1_fen": 5000, "alarm2_fen": 1000, "prepayment_mode": "meter"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        (m["tariff_plan_id"].as_str(), m["prepayment_mode"].as_str()),
        (Some(plan.as_str()), Some("meter"))
    );
    // null clears, absent keeps.
    let (_, m) = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"alarm1_fen": null, "alarm2_fen": null})),
        )
        .await;
    assert!(
        m["alarm1_fen"].is_null() && m["tariff_plan_id"].as_str() == Some(plan.as_str()),
        "{m}"
    );
    // Whether the meter's TOU registers split its energy: off by default, a setting, audited.
    assert_eq!(m["tou_registers_match"], false);
    let (status, m) = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"tou_registers_match": true})),
        )
        .await;
    assert_eq!(
        (status, &m["tou_registers_match"]),
        (StatusCode::OK, &json!(true))
    );
    let (_, log) = app
        .get("/api/v1/audit-log?action=meter.update", &admin)
        .await;
    assert!(
        log.to_string().contains("\"tou_registers_match\":true"),
        "the change is audited: {log}"
    );
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"parent_id": ids[0]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let dlt = format!("/api/v1/meters/{}", ids[2]);
    let (status, body) = app
        .call(
            Method::PATCH,
            &dlt,
            Some(&admin),
            Some(json!({"prepayment_mode": "meter"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["prepayment_mode"].is_string());
    let (_, log) = app
        .get(
            &format!("/api/v1/audit-log?action=meter.update&target_id={}", ids[0]),
            &admin,
        )
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_bulk_change_applies_to_every_meter_or_to_none() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (ids, plan) = three_meters(&app, &admin).await;
    // Meter-side mode is refused for the DL/T 645 meter, so no meter changes.
    let (status, report) = app
        .post(
            "/api/v1/meters/bulk",
            &admin,
            json!({"meter_ids": ids, "prepayment_mode": "meter"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (report["updated"].clone(), report["committed"].clone()),
        (json!(2), json!(false))
    );
    assert_eq!(report["errors"][0][0], ids[2].as_str());
    let (_, list) = app
        .get("/api/v1/meters?prepayment_mode=meter", &admin)
        .await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "all or nothing"
    );
    let (_, report) = app
        .post("/api/v1/meters/bulk", &admin, json!({"meter_ids": ids, "tariff_plan_id": plan, "alarm1_fen": 3000, "alarm2_fen": 1000}))
        .await;
    assert_eq!(
        (
            report["updated"].clone(),
            report["errors"].as_array().unwrap().len()
        ),
        (json!(3), 0),
        "{report}"
    );
    let (_, list) = app.get("/api/v1/meters", &admin).await;
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["tariff_plan_id"].as_str() == Some(plan.as_str()) && m["alarm1_fen"] == 3000));
    let (_, operator) = app.user(&admin, "acme", "op", "operator", &[]).await;
    assert_eq!(
        app.post(
            "/api/v1/meters/bulk",
            &operator,
            json!({"meter_ids": ids, "alarm1_fen": 1})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn gateways_are_edited_and_registrations_stay_unique_across_the_platform() {
    let app = spawn_app().await;
    let (_, alpha) = app.company_with_admin("alpha").await;
    let (_, bravo) = app.company_with_admin("bravo").await;
    app.post("/api/v1/gateways", &alpha, dtu("dtu-a", "REG-AAAA"))
        .await;
    let (_, g) = app
        .post("/api/v1/gateways", &bravo, dtu("dtu-b", "REG-BBBB"))
        .await;
    let path = format!("/api/v1/gateways/{}", g["id"].as_str().unwrap());
    let (status, edited) = app
        .call(Method::PATCH, &path, Some(&bravo), Some(json!({"name": "二楼配电房", "heartbeat": "", "registration": "52 45 47 2d 43 43 43 43", "registration_is_hex": true, "registration_repeats": true})))
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let (_, shown) = app.get(&format!("{path}/registration"), &bravo).await;
    assert_eq!(shown["registration_hex"], "5245472d43434343");
    assert!(edited["heartbeat_hex"].is_null() && edited["registration_repeats"] == true);
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&bravo),
            Some(json!({"registration": "REG-AAAA"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["registration"]
        .as_str()
        .unwrap()
        .contains("taken"));
    assert!(!body.to_string().contains("alpha"));
    let (status, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(&bravo),
            Some(json!({"host": "10.0.0.9"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a DTU is not dialled"
    );
    let (_, log) = app
        .get(
            &format!(
                "/api/v1/audit-log?action=gateway.update&target_id={}",
                g["id"].as_str().unwrap()
            ),
            &bravo,
        )
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn gateway_and_meter_lists_page_with_a_cursor() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (ids, _) = three_meters(&app, &admin).await;
    app.post("/api/v1/gateways", &admin, dtu("dtu-0002", "REG-0002"))
        .await;
    let (_, first) = app.get("/api/v1/meters?limit=2", &admin).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = app
        .get(&format!("/api/v1/meters?limit=2&cursor={cursor}"), &admin)
        .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "every meter exactly once");
    let (_, gateways) = app.get("/api/v1/gateways?limit=1", &admin).await;
    assert_eq!(gateways["items"][0]["identity"], "dtu-0002", "newest first");
    assert!(gateways["next_cursor"].is_string());
    assert_eq!(
        app.get("/api/v1/meters?limit=501", &admin).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn no_registration_may_begin_another_companys_and_refusals_are_limited_and_reported() {
    let app = spawn_app().await;
    let (_, alpha) = app.company_with_admin("alpha").await;
    let (bravo_id, bravo) = app.company_with_admin("bravo").await;
    let (status, _) = app
        .post(
            "/api/v1/gateways",
            &bravo,
            dtu("bravo-dtu", "SECB-REG-SECRET-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Shorter (a prefix of bravo's), longer (bravo's is a prefix of it), equal, and with port
    // digits: all refused, none saying whose.
    for (i, registration) in [
        "SECB-REG-SECRET-",
        "SECB-REG-SECRET-12",
        "SECB-REG-SECRET-1",
        "SECB-R",
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = app
            .post(
                "/api/v1/gateways",
                &alpha,
                dtu(&format!("alpha-{i}"), registration),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{registration}: {body}"
        );
        let text = body.to_string();
        assert!(
            !text.contains("bravo") && !text.contains(&bravo_id.to_string()),
            "{text}"
        );
    }
    // Too short to be safe, whatever else exists.
    let (status, body) = app
        .post("/api/v1/gateways", &alpha, dtu("alpha-s", "S"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["registration"]
        .as_str()
        .unwrap()
        .contains("6"));
    // Ten refusals an hour; then even a free registration is refused unchecked (no oracle).
    for i in 0..6 {
        app.post(
            "/api/v1/gateways",
            &alpha,
            dtu(&format!("alpha-x{i}"), "SECB-REG-SECRET-1"),
        )
        .await;
    }
    let (status, body) = app
        .post(
            "/api/v1/gateways",
            &alpha,
            dtu("alpha-free", "ALPHA-OWN-0001"),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Bravo is not limited by alpha's refusals.
    let (status, _) = app
        .post("/api/v1/gateways", &bravo, dtu("bravo-2", "BRAVO-OWN-0002"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Audited for alpha (without the bytes) and reported to platform staff (with them).
    let (_, log) = app
        .get(
            "/api/v1/audit-log?action=gateway.registration_refused",
            &alpha,
        )
        .await;
    let entries = log["items"].as_array().unwrap();
    assert!(entries.len() >= 10, "{log}");
    assert!(
        !log.to_string().contains("5345434"),
        "no bytes in the company's log"
    );
    let root = app.root().await;
    let (status, refusals) = app
        .get("/api/v1/platform/registration-refusals", &root)
        .await;
    assert_eq!(status, StatusCode::OK);
    let refusals = refusals.as_array().unwrap();
    assert!(refusals.iter().any(|r| r["reason"] == "throttled"));
    assert!(refusals.iter().filter(|r| r["reason"] == "overlap").count() >= 10);
    let (status, _) = app
        .get("/api/v1/platform/registration-refusals", &alpha)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registrations_entered_before_the_rule_are_listed_to_change() {
    let app = spawn_app().await;
    let (alpha_id, alpha) = app.company_with_admin("alpha").await;
    let (bravo_id, bravo) = app.company_with_admin("bravo").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &bravo,
            dtu("bravo-dtu", "SECB-REG-SECRET-1"),
        )
        .await;
    // As the rule was not there: alpha's registration is a prefix of bravo's.
    sqlx::query(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
         values ('alpha-old', encode('SECB-REG-SECRET-', 'hex'), $1, gen_random_uuid(), 'dtu', 'enabled')",
    )
    .bind(alpha_id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (_, mine) = app
        .get("/api/v1/gateways/registration-problems", &bravo)
        .await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["gateway_id"], g["id"]);
    assert_eq!(mine[0]["problem"], "overlaps");
    assert!(
        !mine.to_string().contains("alpha"),
        "whose is not said: {mine}"
    );
    let (_, theirs) = app
        .get("/api/v1/gateways/registration-problems", &alpha)
        .await;
    assert_eq!(theirs[0]["identity"], "alpha-old");
    let root = app.root().await;
    let (_, all) = app
        .get("/api/v1/platform/registration-problems", &root)
        .await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert!(all.to_string().contains(&format!("{bravo_id}:bravo-dtu")));
}

/// Registration bytes are a credential: no read-only role sees them, gateway answers, exports
/// and audit snapshots never carry them, and every look by a settings user is audited.
#[tokio::test]
async fn registration_bytes_are_shown_only_with_the_settings_right_and_every_look_is_audited() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &admin,
            dtu("dtu-0001", "SECRET-REG-0001"),
        )
        .await;
    let id = g["id"].as_str().unwrap().to_owned();
    let secret_hex = "5345435245542d5245472d30303031";
    let (_, auditor) = app.user(&admin, "acme", "aud", "auditor", &[]).await;
    let (_, plain) = app
        .user(&admin, "acme", "plain", "operator", &["export"])
        .await;
    let (_, company) = app.get("/api/v1/company", &admin).await;
    let support = app.login("", "helpdesk").await;
    let (status, entered) = app
        .post(
            &format!("/api/v1/platform/companies/{}/enter", company["id"]),
            &support,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{entered}");
    let support_inside = crate::helpers::Caller {
        token: entered["access_token"].as_str().unwrap().into(),
        refresh: entered["refresh_token"].as_str().unwrap().into(),
    };
    let readers = vec![auditor, plain, support_inside];
    for reader in &readers {
        for path in [
            format!("/api/v1/gateways/{id}"),
            "/api/v1/gateways".to_owned(),
            "/api/v1/audit-log".to_owned(),
        ] {
            let (_, body) = app.get(&path, reader).await;
            assert!(!body.to_string().contains(secret_hex), "{path}: {body}");
            assert!(!body.to_string().contains("SECRET-REG"), "{path}: {body}");
        }
        let (status, _) = app
            .get(&format!("/api/v1/gateways/{id}/registration"), reader)
            .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{status}"
        );
    }
    // The export carries no bytes, even for an admin.
    let export = app
        .http
        .get(app.url("/api/v1/gateways.xlsx"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    use calamine::Reader;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(export.to_vec())).unwrap();
    let text: String = book
        .worksheet_range_at(0)
        .unwrap()
        .unwrap()
        .rows()
        .flatten()
        .map(|c| c.to_string())
        .collect();
    assert!(
        text.contains("dtu-0001") && !text.contains(secret_hex) && !text.contains("SECRET-REG")
    );
    // The admin's look is audited (once within a few minutes), and the snapshot of the creation
    // holds a fingerprint, not the bytes.
    for _ in 0..2 {
        let (status, shown) = app
            .get(&format!("/api/v1/gateways/{id}/registration"), &admin)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shown["registration_hex"], secret_hex);
    }
    let (_, log) = app.get("/api/v1/audit-log?action=gateway.", &admin).await;
    let views = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "gateway.registration_view")
        .count();
    assert_eq!(views, 1);
    assert!(!log.to_string().contains(secret_hex), "{log}");
    assert!(log.to_string().contains("sha256:"), "{log}");
    let stored: String =
        sqlx::query_scalar("select after::text from c_1.audit_log where action = 'gateway.create'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(
        !stored.contains(secret_hex),
        "nothing to leak in the table either: {stored}"
    );
}
