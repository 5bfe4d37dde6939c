//! Mid-account changes: a meter swap carries the account's rating state to the new meter, a plan
//! change prices only what comes after the latest reading, and energy no account holds is
//! reported as unbilled. Every test ends with the ledger check.

use crate::helpers::{spawn_app, Caller, TestApp};
use crate::money::{fen, open_account, rating_pass, shop_with_meter, store_reading};
use chrono::{Duration, Utc};
use powertab_core::kernel::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::json;

async fn plan(app: &TestApp, admin: &Caller, name: &str, price: i64) -> String {
    let (status, plan) = app
        .post(
            "/api/v1/tariff-plans",
            admin,
            json!({"name": name, "version": {"effective": "2020-01-01", "prices": {"flat": price}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    plan["id"].as_str().unwrap().to_owned()
}

async fn set_plan(app: &TestApp, admin: &Caller, meter: &str, plan: &str) -> StatusCode {
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/meters/{meter}"),
            Some(admin),
            Some(json!({"tariff_plan_id": plan})),
        )
        .await;
    assert!(status.is_success() || status.is_client_error(), "{body}");
    status
}

async fn remainder(app: &TestApp, meter: &str) -> i64 {
    sqlx::query_scalar("select remainder_e5 from c_1.rating_state where meter_id = $1")
        .bind(meter.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_meter_swap_carries_the_rest_of_a_fen_and_the_account_to_the_new_meter() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let flat = plan(&app, &admin, "flat", 8123).await;
    let (shop, old) = shop_with_meter(&app, &admin, "901").await;
    assert_eq!(set_plan(&app, &admin, &old, &flat).await, StatusCode::OK);
    let id = open_account(&app, &admin, &shop, &old).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "t1",
        json!({"amount_fen": 100_000, "method": "card"}),
    )
    .await;
    // A reading after the opening and before the swap (a swap is never in the future).
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    store_reading(
        &app,
        &old,
        Utc::now() - Duration::milliseconds(300),
        1_001_234,
    )
    .await;
    // The old meter comes off at 1,002,000 Wh; the new one goes on at 10 Wh.
    let (status, swap) = app
        .post(
            &format!("/api/v1/meters/{old}/swap"),
            &admin,
            json!({"meter_number": "99010", "old_final_energy_wh": 1_002_000, "new_initial_energy_wh": 10, "reason": "烧表"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{swap}");
    let new = swap["new"]["id"].as_str().unwrap().to_owned();
    // DESIGN.md's worked example on the old meter: 100 + 62 fen, posted at the swap; 0.46 fen
    // carried over to the new meter.
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 100_000 - 162, "{account}");
    assert_eq!(account["meters"][0]["meter_id"], new.as_str(), "{account}");
    assert_eq!(account["meters"].as_array().unwrap().len(), 1);
    assert_eq!(remainder(&app, &new).await, 46_000);
    assert_eq!(remainder(&app, &old).await, 0, "the rest moved, not copied");

    // 2,000 Wh on the new meter: 162.46 fen + the carried 0.46 = 162 fen, 0.92 carried.
    let t = Utc::now();
    store_reading(&app, &new, t + Duration::seconds(30), 2_010).await;
    let clock = ManualClock::at(t + Duration::seconds(400));
    let report = rating_pass(&app, &clock).await;
    assert_eq!(report.readings_rated, 1, "{report:?}");
    clock.advance(Duration::seconds(400));
    rating_pass(&app, &clock).await;
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 100_000 - 162 - 162);
    assert_eq!(remainder(&app, &new).await, 92_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_plan_change_prices_only_what_comes_after_the_latest_reading() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (cheap, dear) = (
        plan(&app, &admin, "cheap", 8123).await,
        plan(&app, &admin, "dear", 10_000).await,
    );
    let (shop, meter) = shop_with_meter(&app, &admin, "902").await;
    set_plan(&app, &admin, &meter, &cheap).await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let t0 = Utc::now();
    store_reading(&app, &meter, t0 + Duration::seconds(60), 1_001_234).await;
    // The change lands now: the stored 1,234 Wh are the old plan's (100 fen, 0.23782 carried).
    assert_eq!(set_plan(&app, &admin, &meter, &dear).await, StatusCode::OK);
    store_reading(&app, &meter, t0 + Duration::seconds(120), 1_002_000).await;
    let clock = ManualClock::at(t0 + Duration::seconds(600));
    rating_pass(&app, &clock).await;
    // 766 Wh at 1.0000 yuan/kWh = 76.6 fen + 0.23782 = 76 fen (both at the new plan: 123 + 76).
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "available_fen"), -(100 + 76), "{account}");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn energy_of_a_meter_without_an_account_is_reported_unbilled() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, idle) = shop_with_meter(&app, &admin, "903").await;
    let (shop, held) = shop_with_meter(&app, &admin, "904").await;
    open_account(&app, &admin, &shop, &held).await;
    let t0 = Utc::now();
    for meter in [&idle, &held] {
        store_reading(&app, meter, t0, 1_000_000).await;
        store_reading(&app, meter, t0 + Duration::seconds(60), 1_000_500).await;
    }
    let (status, report) = app.get("/api/v1/unbilled-energy", &admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the meter no account holds: {report}");
    assert_eq!(items[0]["meter_id"], idle.as_str());
    assert_eq!(items[0]["energy_wh"], 500);
    let (status, _) = app
        .get(
            "/api/v1/unbilled-energy?from=2026-01-02&to=2026-01-01",
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.assert_ledger_clean().await;
}
