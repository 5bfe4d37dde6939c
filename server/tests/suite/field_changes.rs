//! The field over time: editing a gateway's buses, removing gateways and meters, meter swaps
//! with their readings, and the platform directory following each change.

use crate::helpers::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn dtu(identity: &str, registration: &str) -> Value {
    json!({"identity": identity, "kind": "dtu", "registration": registration,
           "buses": [{"number": 1, "protocol": "modbus_rtu"}, {"number": 2, "protocol": "dlt645"}]})
}

#[tokio::test]
async fn buses_are_added_changed_and_removed_only_when_empty() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-1", "REG-0001"))
        .await;
    let id = g["id"].as_str().unwrap();
    let bus1 = g["buses"][0]["id"].clone();
    let (status, _) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": bus1, "model": "dtsy1352", "address": "1", "meter_number": "1001"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/api/v1/gateways/{id}/buses");

    // Port 1 carries a meter: it cannot go, nor change its protocol.
    let (status, body) = app
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"buses": [{"number": 2, "protocol": "dlt645"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["buses"]
        .as_str()
        .unwrap()
        .contains("port 1"));
    let (status, body) = app
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"buses": [{"number": 1, "protocol": "dlt645"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"]["buses.0.protocol"].is_string(),
        "{body}"
    );

    // Change port 1's speed, drop port 2 (empty), add port 3.
    let (status, after) = app
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(json!({"buses": [
            {"number": 1, "protocol": "modbus_rtu", "baud": 4800, "gap_ms": 120},
            {"number": 3, "protocol": "dlt645"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let buses = after["buses"].as_array().unwrap();
    assert_eq!(buses.len(), 2);
    assert_eq!(
        (
            buses[0]["number"].clone(),
            buses[0]["baud"].clone(),
            buses[0]["gap_ms"].clone()
        ),
        (json!(1), json!(4800), json!(120))
    );
    assert_eq!(
        buses[0]["id"], bus1,
        "a changed bus keeps its id, so its meters stay on it"
    );
    assert_eq!(buses[0]["meter_count"], 1);
    assert_eq!(
        (buses[1]["number"].clone(), buses[1]["parity"].clone()),
        (json!(3), json!("E"))
    );

    // Port 2 can come back: a removed port number is free again.
    let (status, after) = app
        .call(Method::PUT, &path, Some(&admin), Some(json!({"buses": [
            {"number": 1, "protocol": "modbus_rtu", "baud": 4800}, {"number": 2, "protocol": "modbus_rtu"}]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["buses"][1]["number"], 2);
    let (_, audit) = app
        .get("/api/v1/audit-log?action=gateway.buses", &admin)
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
}

#[tokio::test]
async fn removing_a_gateway_frees_its_identity_and_leaves_the_directory() {
    let app = spawn_app().await;
    let (_, alpha) = app.company_with_admin("alpha").await;
    let (_, bravo) = app.company_with_admin("bravo").await;
    let (_, g) = app
        .post("/api/v1/gateways", &alpha, dtu("dtu-1", "REG-0001"))
        .await;
    let id = g["id"].as_str().unwrap().to_owned();
    let (_, m) = app
        .post("/api/v1/meters", &alpha, json!({"bus_id": g["buses"][0]["id"], "model": "dtsy1352", "address": "1", "meter_number": "1001"}))
        .await;

    // Still carrying a meter: refused.
    let path = format!("/api/v1/gateways/{id}");
    let (status, body) = app.call(Method::DELETE, &path, Some(&alpha), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = app
        .post(
            &format!("/api/v1/meters/{}/remove", m["id"].as_str().unwrap()),
            &alpha,
            json!({"final_energy_wh": 5000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::DELETE, &path, Some(&alpha), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    assert_eq!(app.get(&path, &alpha).await.0, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/api/v1/gateways", &alpha).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let directory: i64 = sqlx::query_scalar(
        "select count(*) from control.gateway_directory where identity = 'dtu-1'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(directory, 0, "ingest no longer finds the removed gateway");
    // The identity and registration are free for anyone, even another company.
    let (status, body) = app
        .post("/api/v1/gateways", &bravo, dtu("dtu-1", "REG-0001"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The removed meter still names its old gateway.
    let (_, old) = app
        .get(
            &format!("/api/v1/meters/{}", m["id"].as_str().unwrap()),
            &alpha,
        )
        .await;
    assert_eq!(
        (
            old["status"].clone(),
            old["gateway_identity"].clone(),
            old["final_energy_wh"].clone()
        ),
        (json!("removed"), json!("dtu-1"), json!(5000))
    );
}

#[tokio::test]
async fn a_meter_swap_keeps_both_readings_and_the_place() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-1", "REG-0001"))
        .await;
    let bus = g["buses"][0]["id"].clone();
    let (_, feeder) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": bus, "model": "dtsy1352", "address": "1", "meter_number": "1000", "role": "main", "ct_ratio": 40, "initial_energy_wh": 1000}))
        .await;
    let feeder_id = feeder["id"].as_str().unwrap().to_owned();
    let (_, child) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": bus, "model": "dtsy1352", "address": "2", "meter_number": "1001", "parent_id": feeder_id, "alarm1_fen": 2000, "alarm2_fen": 500}))
        .await;

    // The final reading cannot be below what the meter already showed.
    let swap_path = format!("/api/v1/meters/{feeder_id}/swap");
    let (status, body) = app
        .post(
            &swap_path,
            &admin,
            json!({"meter_number": "2000", "old_final_energy_wh": 999, "new_initial_energy_wh": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["old_final_energy_wh"].is_string());
    // Another meter's number is taken.
    let (status, body) = app
        .post(
            &swap_path,
            &admin,
            json!({"meter_number": "1001", "old_final_energy_wh": 5000}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"]["meter_number"].is_string(),
        "{body}"
    );

    let (status, swap) = app
        .post(&swap_path, &admin, json!({"meter_number": "2000", "old_final_energy_wh": 123456, "new_initial_energy_wh": 10, "reason": "display broken"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{swap}");
    let (old, new) = (&swap["old"], &swap["new"]);
    assert_eq!(
        (old["status"].clone(), old["final_energy_wh"].clone()),
        (json!("removed"), json!(123456))
    );
    assert_eq!(
        (
            new["status"].clone(),
            new["address"].clone(),
            new["bus_id"].clone(),
            new["role"].clone(),
            new["ct_ratio"].clone(),
            new["initial_energy_wh"].clone()
        ),
        (
            json!("active"),
            json!("1"),
            bus.clone(),
            json!("main"),
            json!(40),
            json!(10)
        ),
        "the new meter takes the old one's place and settings"
    );
    assert!(new["install_date"].is_string());
    let new_id = new["id"].as_str().unwrap();
    let (_, child_now) = app
        .get(
            &format!("/api/v1/meters/{}", child["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(
        child_now["parent_id"],
        json!(new_id),
        "sub-meters follow their feeder"
    );

    // A second swap; the history of any meter in the chain shows both, oldest first.
    let (status, second) = app
        .post(
            &format!("/api/v1/meters/{new_id}/swap"),
            &admin,
            json!({"meter_number": "3000", "old_final_energy_wh": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    for id in [
        feeder_id.as_str(),
        new_id,
        second["new"]["id"].as_str().unwrap(),
    ] {
        let (_, history) = app
            .get(&format!("/api/v1/meters/{id}/history"), &admin)
            .await;
        let numbers: Vec<(String, String, i64, i64)> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["old_meter_number"].as_str().unwrap().into(),
                    s["new_meter_number"].as_str().unwrap().into(),
                    s["old_final_energy_wh"].as_i64().unwrap(),
                    s["new_initial_energy_wh"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            numbers,
            vec![
                ("1000".into(), "2000".into(), 123456, 10),
                ("2000".into(), "3000".into(), 50, 0)
            ]
        );
    }
    // A removed meter cannot be swapped or edited again.
    let (status, _) = app
        .post(
            &swap_path,
            &admin,
            json!({"meter_number": "4000", "old_final_energy_wh": 200000}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/meters/{feeder_id}"),
            Some(&admin),
            Some(json!({"ct_ratio": 50})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The quota counts active meters only: the swaps did not use any.
    let (_, active) = app.get("/api/v1/meters?status=active", &admin).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_feeder_with_sub_meters_is_not_removed() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-1", "REG-0001"))
        .await;
    let bus = g["buses"][0]["id"].clone();
    let (_, feeder) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": bus, "model": "dtsy1352", "address": "1", "meter_number": "1000", "role": "main"}))
        .await;
    let (_, _child) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": bus, "model": "dtsy1352", "address": "2", "meter_number": "1001", "parent_id": feeder["id"]}))
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/meters/{}/remove", feeder["id"].as_str().unwrap()),
            &admin,
            json!({"final_energy_wh": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("feeder"));
    // A future removal time is refused.
    let (status, body) = app
        .post(
            &format!("/api/v1/meters/{}/remove", _child["id"].as_str().unwrap()),
            &admin,
            json!({"final_energy_wh": 10, "removed_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn the_gateway_list_filters_by_status_and_kind() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, a) = app
        .post("/api/v1/gateways", &admin, dtu("dtu-1", "REG-0001"))
        .await;
    app.post("/api/v1/gateways", &admin, dtu("dtu-2", "REG-0002"))
        .await;
    app.post(
        "/api/v1/gateways",
        &admin,
        json!({"identity": "mb-1", "kind": "modbus_tcp", "host": "10.0.0.5",
        "buses": [{"number": 1, "protocol": "modbus_rtu", "tcp_port": 502}]}),
    )
    .await;
    app.post(
        &format!("/api/v1/gateways/{}/suspend", a["id"].as_str().unwrap()),
        &admin,
        json!({}),
    )
    .await;
    let identities = |list: Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["identity"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, suspended) = app.get("/api/v1/gateways?status=suspended", &admin).await;
    assert_eq!(identities(suspended), vec!["dtu-1"]);
    let (_, dtus) = app
        .get("/api/v1/gateways?kind=dtu&status=enabled", &admin)
        .await;
    assert_eq!(identities(dtus), vec!["dtu-2"]);
    let (_, first) = app.get("/api/v1/gateways?limit=2", &admin).await;
    assert_eq!(identities(first.clone()), vec!["mb-1", "dtu-2"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/api/v1/gateways?limit=2&cursor={cursor}"), &admin)
        .await;
    assert_eq!(identities(second), vec!["dtu-1"]);
}
