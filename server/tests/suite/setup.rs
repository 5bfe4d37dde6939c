//! Company defaults, the holiday calendar, tariff plans with versions, and the preview.

use crate::helpers::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn tou_version(effective: &str) -> Value {
    let s = |h: u32, p: &str| json!({"minute": h * 60, "period": p});
    json!({
        "effective": effective,
        "prices": {"peak": 14800, "flat": 8000, "valley": 3200},
        "seasons": [{"from": [1, 1], "to": [12, 31],
                     "workday": {"switches": [s(0, "valley"), s(8, "flat"), s(18, "peak"), s(22, "valley")]},
                     "holiday": null}]
    })
}

#[tokio::test]
async fn company_defaults_are_validated_and_audited() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, defaults) = app.get("/api/v1/settings", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(defaults["restore_level_fen"], 100);
    let mut bad = defaults.clone();
    bad["alarm1_fen"] = json!(100);
    bad["quiet_start_minute"] = json!(1320);
    let (status, body) = app
        .call(Method::PUT, "/api/v1/settings", Some(&admin), Some(bad))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&String> = body["error"]["fields"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(fields, ["alarm1_fen", "quiet_start_minute"]);
    let mut good = defaults.clone();
    good["overdraft_limit_fen"] = json!(2000);
    good["restore_level_fen"] = json!(0);
    good["quiet_start_minute"] = json!(22 * 60);
    good["quiet_end_minute"] = json!(7 * 60);
    let (status, saved) = app
        .call(
            Method::PUT,
            "/api/v1/settings",
            Some(&admin),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved, good);
    let (_, log) = app.get("/api/v1/audit-log?action=settings.", &admin).await;
    assert_eq!(log["items"][0]["after"]["overdraft_limit_fen"], 2000);
    let (_, auditor) = app.user(&admin, "acme", "aud", "auditor", &[]).await;
    assert_eq!(
        app.call(Method::PUT, "/api/v1/settings", Some(&auditor), Some(good))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_holiday_calendar_marks_and_clears_days() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    for (day, kind) in [
        ("2026-10-01", "holiday"),
        ("2026-10-10", "workday"),
        ("2027-01-01", "holiday"),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/calendar",
                &admin,
                json!({"day": day, "kind": kind, "name": "国庆"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, year) = app.get("/api/v1/calendar?year=2026", &admin).await;
    assert_eq!(year["items"].as_array().unwrap().len(), 2);
    let (status, _) = app
        .post(
            "/api/v1/calendar",
            &admin,
            json!({"day": "2026-10-02", "kind": "party"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.call(
            Method::DELETE,
            "/api/v1/calendar/2026-10-10",
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
            "/api/v1/calendar/2026-10-10",
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn tariff_plans_keep_their_history() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, plan) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "商铺分时", "version": tou_version("2020-01-01")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let id = plan["id"].as_str().unwrap();
    // Overlapping switch points and a missing price are named per field.
    let mut broken = tou_version("2020-01-01");
    broken["seasons"][0]["workday"]["switches"][1]["minute"] = json!(0);
    broken["prices"] = json!({"flat": 8000});
    let (status, body) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "broken", "version": broken}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = body["error"]["fields"].as_object().unwrap();
    assert!(
        fields.contains_key("version.seasons.0.workday")
            && fields.contains_key("version.prices.peak"),
        "{body}"
    );
    // A version in force is history: it cannot be added or replaced for today or earlier.
    let (status, body) = app
        .post(
            &format!("/api/v1/tariff-plans/{id}/versions"),
            &admin,
            tou_version("2024-01-01"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["effective"].is_string());
    let (status, plan) = app
        .post(
            &format!("/api/v1/tariff-plans/{id}/versions"),
            &admin,
            json!({"effective": "2099-01-01", "prices": {"flat": 9000}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let effective: Vec<&str> = plan["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["effective"].as_str().unwrap())
        .collect();
    assert_eq!(effective, ["2020-01-01", "2099-01-01"]);
    let response = app
        .http
        .get(app.url("/api/v1/tariff-plans.xlsx?lang=en"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_preview_compares_plans_on_one_usage_profile() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, flat) = app
        .post("/api/v1/tariff-plans", &admin, json!({"name": "flat", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}))
        .await;
    let (_, tou) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "tou", "version": tou_version("2020-01-01")}),
        )
        .await;
    let (status, results) = app
        .post(
            "/api/v1/tariff-plans/preview",
            &admin,
            json!({"plan_ids": [flat["id"], tou["id"]], "start": "2026-11-02", "days": 1, "hourly_wh": vec![1000; 24]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    // 24 kWh at 0.8123 yuan = 1949.52 fen: 1949 debited, the 0.52 rounds up at close.
    assert_eq!(results[0]["energy_wh"], 24_000);
    assert_eq!(results[0]["total_fen"], 1950);
    // Valley 10 h × 0.32 + flat 10 h × 0.80 + peak 4 h × 1.48 yuan = 17.12 yuan.
    assert_eq!(results[1]["total_fen"], 1712);
    assert_eq!(results[1]["by_period"]["peak"], json!([4000, 592]));
    let (status, _) = app
        .post(
            "/api/v1/tariff-plans/preview",
            &admin,
            json!({"plan_ids": [flat["id"]], "start": "2026-11-02", "days": 1, "hourly_wh": [1]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
