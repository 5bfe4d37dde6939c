//! The field as ingest sees it, over the API: the fleet with reading ages and bus sessions, a
//! meter's readings (and their Excel twin) and daily energy, and refused registrations.

use crate::helpers::spawn_app;
use chrono::{Duration, Utc};
use powertab_core::kernel::names::SchemaName;
use powertab_ingest::driver::MeterValues;
use powertab_ingest::store::{store_batch, NewReading};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn the_fleet_shows_reading_ages_and_a_meter_its_history() {
    let app = spawn_app().await;
    let (company_id, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &admin,
            json!({"identity": "dtu-1", "kind": "dtu", "registration": "REG-0001",
            "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    let bus = g["buses"][0]["id"].clone();
    let (_, fresh) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": bus, "model": "dtsy1352", "address": "1", "meter_number": "1001"}),
        )
        .await;
    let (_, silent) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": bus, "model": "dtsy1352", "address": "2", "meter_number": "1002"}),
        )
        .await;
    let fresh_id: uuid::Uuid = fresh["id"].as_str().unwrap().parse().unwrap();
    let now = Utc::now();
    let reading = |at, wh, flagless: bool| NewReading {
        meter_id: fresh_id,
        read_at: at,
        values: MeterValues {
            energy_wh: wh,
            power_w: Some(1500),
            remaining_fen: Some(12_345),
            relay_closed: Some(true),
            alarms: if flagless { vec![] } else { vec!["alarm1"] },
            ..MeterValues::default()
        },
        raw: vec![],
        ratio_mismatch: false,
    };
    let schema = SchemaName::for_company(company_id);
    store_batch(
        &app.db.pool,
        &schema,
        &[
            reading(now - Duration::seconds(100), 10_000, true),
            // A reset (with an alarm): flagged, and the baseline of the next reading.
            reading(now - Duration::seconds(70), 5, false),
            reading(now - Duration::seconds(40), 20, true),
        ],
    )
    .await
    .unwrap();

    let (status, fleet) = app.get("/api/v1/fleet", &admin).await;
    assert_eq!(status, StatusCode::OK, "{fleet}");
    let meters = fleet["meters"].as_array().unwrap();
    let by_number = |n: &str| {
        meters
            .iter()
            .find(|m| m["meter_number"] == n)
            .unwrap()
            .clone()
    };
    let f = by_number("1001");
    assert_eq!(
        (
            f["energy_wh"].clone(),
            f["stale"].clone(),
            f["power_w"].clone()
        ),
        (json!(20), json!(false), json!(1500))
    );
    assert!((30..=60).contains(&f["age_s"].as_i64().unwrap()), "{f}");
    assert_eq!(by_number("1002")["stale"], true, "never read is stale");
    assert_eq!(fleet["meters_stale"], 1);
    assert_eq!(
        (
            fleet["meters_total"].clone(),
            fleet["meters_matching"].clone()
        ),
        (json!(2), json!(2))
    );
    assert_eq!(
        meters[0]["meter_number"], "1002",
        "problems first: the never-read meter leads"
    );

    // Big companies look at their problems and page through the rest.
    let (_, problems) = app.get("/api/v1/fleet?problems=true", &admin).await;
    let numbers: Vec<&str> = problems["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["meter_number"].as_str().unwrap())
        .collect();
    // 1001 is fresh and well (its newest reading counts again after the reset).
    assert_eq!(numbers, ["1002"]);
    let (_, page) = app.get("/api/v1/fleet?limit=1&offset=1", &admin).await;
    assert_eq!(
        (
            page["meters"].as_array().unwrap().len(),
            page["meters"][0]["meter_number"].clone(),
            page["meters_matching"].clone()
        ),
        (1, json!("1001"), json!(2))
    );
    let (_, found) = app.get("/api/v1/fleet?q=1001", &admin).await;
    assert_eq!(found["meters_matching"], 1);
    assert_eq!(found["meters"][0]["meter_number"], "1001");
    let (status, _) = app.get("/api/v1/fleet?limit=0", &admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (
            fleet["gateways_offline"].clone(),
            fleet["gateways"][0]["buses"][0]["online"].clone()
        ),
        (json!(1), json!(false))
    );

    let (_, history) = app
        .get(&format!("/api/v1/meters/{fresh_id}/readings"), &admin)
        .await;
    let energies: Vec<(i64, Option<String>)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["energy_wh"].as_i64().unwrap(),
                r["flag"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        energies,
        vec![(20, None), (5, Some("reset".into())), (10_000, None)]
    );
    // Each reading says what its interval counted; the meter's own registers are exposed too.
    let counted: Vec<Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["counted_wh"].clone())
        .collect();
    assert_eq!(counted, [json!(15), Value::Null, Value::Null]);
    for key in ["tou_wh", "purchase_count", "pf_milli"] {
        assert!(history[0].get(key).is_some(), "{key}");
    }
    let (_, flagged) = app
        .get(
            &format!("/api/v1/meters/{fresh_id}/readings?flagged=true"),
            &admin,
        )
        .await;
    assert_eq!(flagged.as_array().unwrap().len(), 1);
    let (_, daily) = app
        .get(
            &format!("/api/v1/meters/{fresh_id}/daily-energy?days=2"),
            &admin,
        )
        .await;
    let total: i64 = daily
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["energy_wh"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 15, "the reset is held; 15 Wh counted after it");
    let (status, _) = app
        .get(
            &format!(
                "/api/v1/meters/{}/daily-energy?days=0",
                silent["id"].as_str().unwrap()
            ),
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let response = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/meters/{fresh_id}/readings.xlsx")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("spreadsheetml"));
    assert!(
        response.bytes().await.unwrap().starts_with(b"PK"),
        "an xlsx (zip) file"
    );
}

#[tokio::test]
async fn refused_registrations_are_listed_to_the_right_people() {
    let app = spawn_app().await;
    let (alpha_id, alpha) = app.company_with_admin("alpha").await;
    let (_, bravo) = app.company_with_admin("bravo").await;
    for (hex, company) in [("4e4f2d31", None), ("53555350", Some(alpha_id))] {
        sqlx::query("insert into control.unclaimed_registrations (registration_hex, last_peer, company_id) values ($1, '10.0.0.9:5000', $2)")
            .bind(hex)
            .bind(company)
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    let listed = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["registration_hex"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, a) = app.get("/api/v1/unclaimed-registrations", &alpha).await;
    assert_eq!(
        listed(a),
        vec!["53555350"],
        "a company sees its own suspended gateway's refusals, not unknown DTUs"
    );
    let (_, b) = app.get("/api/v1/unclaimed-registrations", &bravo).await;
    assert!(
        listed(b).is_empty(),
        "unknown registrations are the platform's alone"
    );
    let (_, auditor) = app.user(&alpha, "alpha", "aud", "auditor", &[]).await;
    let (_, seen) = app.get("/api/v1/unclaimed-registrations", &auditor).await;
    assert!(
        listed(seen).is_empty(),
        "registration bytes need the settings right"
    );
    let root = app.root().await;
    let (_, all) = app.get("/api/v1/unclaimed-registrations", &root).await;
    assert_eq!(listed(all).len(), 2);
    // Platform staff hand the unknown one to bravo, whose admins then see it.
    let (_, bravo_company) = app.get("/api/v1/company", &bravo).await;
    let (status, _) = app
        .post(
            "/api/v1/platform/unclaimed-registrations/claim",
            &root,
            json!({"registration_hex": "4e4f2d31", "company_id": bravo_company["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, b) = app.get("/api/v1/unclaimed-registrations", &bravo).await;
    assert_eq!(listed(b.clone()), vec!["4e4f2d31"]);
    assert_eq!(b[0]["registration_text"], "NO-1");
    let (status, _) = app
        .post(
            "/api/v1/platform/unclaimed-registrations/claim",
            &alpha,
            json!({"registration_hex": "4e4f2d31", "company_id": alpha_id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "companies cannot claim");
}

#[tokio::test]
async fn read_now_is_queued_once_for_staff_who_may_act() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &admin,
            json!({"identity": "dtu-1", "kind": "dtu", "registration": "REG-0001",
            "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    let (_, meter) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": g["buses"][0]["id"], "model": "dtsy1352", "address": "1", "meter_number": "1001"}))
        .await;
    let path = format!("/api/v1/meters/{}/read-now", meter["id"].as_str().unwrap());
    let (status, first) = app.post(&path, &admin, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(
        (first["op"].clone(), first["state"].clone()),
        (json!("read_now"), json!("queued"))
    );
    let (_, again) = app.post(&path, &admin, json!({})).await;
    assert_eq!(again["id"], first["id"], "an open read-now is reused");
    let (status, got) = app
        .get(
            &format!("/api/v1/commands/{}", first["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(
        (status, got["meter_id"].clone()),
        (StatusCode::OK, meter["id"].clone())
    );
    let (_, auditor) = app.user(&admin, "acme", "audit-1", "auditor", &[]).await;
    let (status, _) = app.post(&path, &auditor, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn field_alarms_are_listed_and_their_limits_are_settings() {
    let app = spawn_app().await;
    let (company_id, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &admin,
            json!({"identity": "dtu-1", "kind": "dtu", "registration": "REG-0001",
            "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    app.post("/api/v1/meters", &admin, json!({"bus_id": g["buses"][0]["id"], "model": "dtsy1352", "address": "1", "meter_number": "1001"}))
        .await;
    // A 1-minute limit, and a meter and gateway that have been silent for 10.
    let (_, settings) = app.get("/api/v1/settings", &admin).await;
    let mut changed = settings.clone();
    changed["stale_meter_s"] = json!(60);
    changed["offline_gateway_s"] = json!(60);
    let (status, saved) = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/settings",
            Some(&admin),
            Some(changed),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["stale_meter_s"], 60);
    let mut bad = settings.clone();
    bad["stale_meter_s"] = json!(5);
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            "/api/v1/settings",
            Some(&admin),
            Some(bad),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let schema = SchemaName::for_company(company_id);
    for table in ["meters", "gateways"] {
        sqlx::query(&format!(
            "update {}.{table} set created_at = now() - interval '10 minutes'",
            schema.as_str()
        ))
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    powertab_ingest::alarms::check(&app.db.pool, &schema)
        .await
        .unwrap();
    let (_, alarms) = app.get("/api/v1/field-alarms", &admin).await;
    let mut kinds: Vec<(String, String)> = alarms
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                a["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("gateway_offline".into(), "dtu-1".into()),
            ("meter_stale".into(), "1001".into())
        ]
    );
    let (_, fleet) = app.get("/api/v1/fleet", &admin).await;
    assert_eq!(fleet["alarms"].as_array().unwrap().len(), 2);
}

/// The fleet calls a meter stale by the company's `stale_meter_s`, the limit its stale-meter
/// alarm uses: one setting for both.
#[tokio::test]
async fn the_fleet_calls_a_meter_stale_by_the_companys_setting() {
    let app = spawn_app().await;
    let (company_id, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &admin,
            json!({"identity": "dtu-1", "kind": "dtu", "registration": "REG-0001",
                   "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    let (_, meter) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": g["buses"][0]["id"], "model": "dtsy1352", "address": "1", "meter_number": "1001"}),
        )
        .await;
    let meter_id: uuid::Uuid = meter["id"].as_str().unwrap().parse().unwrap();
    store_batch(
        &app.db.pool,
        &SchemaName::for_company(company_id),
        &[NewReading {
            meter_id,
            read_at: Utc::now() - Duration::seconds(120),
            values: MeterValues {
                energy_wh: 1,
                ..MeterValues::default()
            },
            raw: vec![],
            ratio_mismatch: false,
        }],
    )
    .await
    .unwrap();
    let (_, settings) = app.get("/api/v1/settings", &admin).await;
    for (limit_s, expected) in [(300, false), (60, true)] {
        let mut changed = settings.clone();
        changed["stale_meter_s"] = json!(limit_s);
        let (status, body) = app
            .call(
                reqwest::Method::PUT,
                "/api/v1/settings",
                Some(&admin),
                Some(changed),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, fleet) = app.get("/api/v1/fleet", &admin).await;
        assert_eq!(fleet["meters"][0]["stale"], expected, "{limit_s} s");
        assert_eq!(fleet["meters_stale"], if expected { 1 } else { 0 });
    }
}
