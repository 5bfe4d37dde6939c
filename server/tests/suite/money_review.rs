//! What follows a held reading and a close: the review of held readings (release, correction,
//! the approver above the company's energy threshold, the held readings page) and a closed
//! account's arrears (collected at the counter, or written off by another approver). Every test
//! ends with the ledger check.

use crate::helpers::{spawn_app, Caller, TestApp};
use crate::money::{fen, key_after, open_account, rating_pass, shop_with_meter, store_reading};
use crate::web::{csrf_of, logged_in_as, page, post_form};
use reqwest::StatusCode;
use serde_json::json;

/// A shop whose meter is priced at DESIGN.md's 0.8123 yuan/kWh: (shop id, meter id).
async fn priced_shop(app: &TestApp, admin: &Caller, number: &str) -> (String, String) {
    let (_, plan) = app
        .post(
            "/api/v1/tariff-plans",
            admin,
            json!({"name": format!("flat {number}"), "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}),
        )
        .await;
    let (shop, meter) = shop_with_meter(app, admin, number).await;
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/meters/{meter}"),
            Some(admin),
            Some(json!({"tariff_plan_id": plan["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (shop, meter)
}

async fn scalar(app: &TestApp, sql: &str, meter: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(meter.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

const DAILY_WH: &str =
    "select coalesce(sum(energy_wh), 0)::bigint from c_1.daily_energy where meter_id = $1";

#[tokio::test]
async fn a_large_correction_of_a_held_reading_waits_for_another_approver_then_counts_everywhere() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = priced_shop(&app, &admin, "701").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "t1",
        json!({"amount_fen": 100_000, "method": "card"}),
    )
    .await;
    let t0 = chrono::Utc::now();
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(60), 1_001_234).await;
    // The meter was reset: the register reads 5 Wh.
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(120), 5).await;
    let clock = powertab_core::kernel::clock::ManualClock::at(t0 + chrono::Duration::seconds(150));
    let report = rating_pass(&app, &clock).await;
    assert_eq!((report.readings_rated, report.held), (1, 1), "{report:?}");

    let (status, held) = app.get("/api/v1/held-readings", &admin).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    let item = &held["items"][0];
    assert_eq!(held["items"].as_array().unwrap().len(), 1, "{held}");
    assert_eq!(item["meter_id"], meter.as_str());
    assert_eq!(item["flag"], "reset");
    assert_eq!(item["previous_energy_wh"], 1_001_234);
    assert!(
        item["energy_as_read_wh"].is_null(),
        "the register went back"
    );
    let daily_before = scalar(&app, DAILY_WH, &meter).await;

    // 150 kWh is above the default 100 kWh threshold: a reason is needed, and an approver.
    let release = format!("/api/v1/meters/{meter}/held/release");
    let (status, body) = app
        .post(&release, &admin, json!({"energy_wh": 150_000}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["reason"].is_string(), "{body}");
    let asked = json!({"energy_wh": 150_000, "reason": "换表前读数 1,151.234 kWh"});
    let (status, waiting) = app
        .post_keyed(&release, &admin, "corr-1", asked.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
    assert_eq!(waiting["request"]["state"], "requested");
    let (status, again) = app.post_keyed(&release, &admin, "corr-1", asked).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        again["request"]["id"], waiting["request"]["id"],
        "the same key asks once"
    );
    let request = waiting["request"]["id"].as_str().unwrap().to_owned();
    let (_, held) = app.get("/api/v1/held-readings", &admin).await;
    assert_eq!(held["items"][0]["waiting_request"], request.as_str());
    // Nothing is rated before the approval.
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "available_fen"), 100_000 - 100);

    let approve = format!("/api/v1/approvals/{request}/approve");
    let (status, body) = app.post_keyed(&approve, &admin, "a-1", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not the requester: {body}");
    let (_, checker) = app
        .user(&admin, "acme", "checker", "operator", &["approve"])
        .await;
    let (status, listed) = app.get("/api/v1/approvals", &checker).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"][0]["kind"], "reading_correction");
    let (status, done) = app.post_keyed(&approve, &checker, "a-2", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "done");
    let (status, _) = app.post_keyed(&approve, &checker, "a-3", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "decided once");

    // 150 kWh at 0.8123 = 12,184.5 fen + the carried 0.23782 fen: 12,184 debited.
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "available_fen"), 100_000 - 100 - 12_184);
    // The interval counts in the reading and in the daily energy now.
    let counted = scalar(
        &app,
        "select counted_wh from c_1.readings where meter_id = $1 and energy_wh = 5",
        &meter,
    )
    .await;
    assert_eq!(counted, 150_000);
    assert_eq!(scalar(&app, DAILY_WH, &meter).await, daily_before + 150_000);
    let (_, held) = app.get("/api/v1/held-readings", &admin).await;
    assert_eq!(held["items"].as_array().unwrap().len(), 0, "{held}");
    let (status, _) = app.post(&release, &admin, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing is held any more");
    // The audit keeps the reading as it was and who corrected it.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from c_1.audit_log where action = 'reading.correct' and before->>'flag' = 'reset'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_held_readings_page_releases_a_reading_with_a_plain_form() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = priced_shop(&app, &admin, "702").await;
    open_account(&app, &admin, &shop, &meter).await;
    let t0 = chrono::Utc::now();
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(60), 1_000_500).await;
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(120), 7).await;
    let clock = powertab_core::kernel::clock::ManualClock::at(t0 + chrono::Duration::seconds(150));
    assert_eq!(rating_pass(&app, &clock).await.held, 1);

    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, "/held-readings").await;
    assert!(html.contains("id=\"held\""), "{html}");
    assert!(html.contains("电表清零"), "the reason in words: {html}");
    let csrf = csrf_of(&html);
    let key = key_after(&html, "id=\"held\"");
    // A typo in the energy keeps the form's text and names the field.
    let (_, location) = post_form(
        &app,
        &boss,
        "/held-readings",
        "/sfn/held_release",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("meter_id", &meter),
            ("kwh", "12,5"),
            ("reason", "抄表核对"),
        ],
    )
    .await;
    let html = page(&app, &boss, &location).await;
    assert!(html.contains("value=\"12,5\""), "kept: {html}");
    // Released as the flag table says (0 Wh for a reset): rating goes on.
    let (_, location) = post_form(
        &app,
        &boss,
        "/held-readings",
        "/sfn/held_release",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("meter_id", &meter),
            ("kwh", ""),
            ("reason", ""),
        ],
    )
    .await;
    assert_eq!(location, "/held-readings?ok=held.released");
    let html = page(&app, &boss, &location).await;
    assert!(html.contains("id=\"no-held\""), "{html}");
    let counted = scalar(
        &app,
        "select counted_wh from c_1.readings where meter_id = $1 and energy_wh = 7",
        &meter,
    )
    .await;
    assert_eq!(counted, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn arrears_of_a_closed_account_are_collected_or_written_off_by_another_approver() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = priced_shop(&app, &admin, "703").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    // 2 kWh used without credit: 162 fen of arrears at the close (0.46 fen rounds down).
    let t0 = chrono::Utc::now();
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(60), 1_002_000).await;
    let (status, settled) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/close"),
            &admin,
            "close",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(settled["account"]["state"], "closed_in_arrears");
    assert_eq!(fen(&settled, "net_fen"), -162);
    assert_eq!(fen(&settled, "arrears_fen"), 162);
    assert_eq!(settled["final_readings"][0]["energy_wh"], 1_002_000);

    let collect = format!("/api/v1/accounts/{id}/arrears/collect");
    let (status, _) = app
        .post_keyed(
            &collect,
            &admin,
            "c-0",
            json!({"amount_fen": 163, "method": "card"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not more than owed"
    );
    let (status, paid) = app
        .post_keyed(
            &collect,
            &admin,
            "c-1",
            json!({"amount_fen": 62, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert!(paid["receipt_no"].as_str().unwrap().starts_with("PT"));
    let (status, replay) = app
        .post_keyed(
            &collect,
            &admin,
            "c-1",
            json!({"amount_fen": 62, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replay["id"], paid["id"], "one key, one collection");
    let (_, s) = app
        .get(&format!("/api/v1/accounts/{id}/settlement"), &admin)
        .await;
    assert_eq!(fen(&s, "arrears_fen"), 100);
    assert_eq!(s["account"]["state"], "closed_in_arrears");

    // The rest is written off: asked by one, approved by another.
    let write_off = format!("/api/v1/accounts/{id}/write-off");
    let (status, body) = app
        .post_keyed(&write_off, &admin, "w-0", json!({"reason": " "}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, request) = app
        .post_keyed(&write_off, &admin, "w-1", json!({"reason": "商户失联"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{request}");
    assert_eq!(fen(&request, "amount_fen"), 100);
    let approve = format!(
        "/api/v1/approvals/{}/approve",
        request["id"].as_str().unwrap()
    );
    let (status, _) = app.post_keyed(&approve, &admin, "wa-0", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, checker) = app
        .user(&admin, "acme", "checker", "operator", &["approve"])
        .await;
    let (status, done) = app.post_keyed(&approve, &checker, "wa-1", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "done");
    assert!(done["outcome_txn"].is_string());
    let (_, s) = app
        .get(&format!("/api/v1/accounts/{id}/settlement"), &admin)
        .await;
    assert_eq!(fen(&s, "arrears_fen"), 0);
    assert_eq!(s["account"]["state"], "closed", "nothing owed: closed");
    let (status, _) = app
        .post_keyed(
            &collect,
            &admin,
            "c-2",
            json!({"amount_fen": 1, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to collect");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_account_page_prints_the_settlement_slip_and_pays_out_with_a_plain_form() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = priced_shop(&app, &admin, "704").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "t1",
        json!({"amount_fen": 5_000, "method": "card"}),
    )
    .await;
    let (status, settled) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/close"),
            &admin,
            "close",
            json!({"final_readings": [{"meter_id": meter, "energy_wh": 1_000_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, &format!("/accounts/{id}")).await;
    assert!(html.contains("id=\"settlement\""), "{html}");
    assert!(html.contains("<dd>1000<"), "the final reading: {html}");
    assert!(html.contains("人工录入"), "typed by hand: {html}");
    assert!(html.contains("id=\"payout-form\""), "{html}");
    assert!(
        !html.contains("id=\"collect-form\""),
        "nothing owed by the tenant"
    );
    let csrf = csrf_of(&html);
    let key = key_after(&html, "id=\"payout-form\"");
    let (_, location) = post_form(
        &app,
        &boss,
        &format!("/accounts/{id}"),
        "/sfn/account_payout",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("account_id", &id),
            ("amount", "50.00"),
            ("method", "card"),
        ],
    )
    .await;
    assert!(location.contains("ok=counter.done"), "{location}");
    // The same click again pays nothing more.
    post_form(
        &app,
        &boss,
        &format!("/accounts/{id}"),
        "/sfn/account_payout",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("account_id", &id),
            ("amount", "50.00"),
            ("method", "card"),
        ],
    )
    .await;
    let (_, s) = app
        .get(&format!("/api/v1/accounts/{id}/settlement"), &admin)
        .await;
    assert_eq!(fen(&s, "payable_fen"), 0);
    let html = page(&app, &boss, &format!("/accounts/{id}")).await;
    assert!(!html.contains("id=\"payout-form\""), "nothing left to pay");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_receipt_printed_again_is_marked_as_a_reprint() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "705").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (_, sale) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &admin,
            "t1",
            json!({"amount_fen": 1_234, "method": "card"}),
        )
        .await;
    let txn = sale["transaction"]["id"].as_str().unwrap();
    let boss = logged_in_as(&app, "acme", "boss").await;
    let first = page(&app, &boss, &format!("/receipts/{txn}")).await;
    assert!(
        first.contains("12.34") && !first.contains("id=\"reprint\""),
        "{first}"
    );
    let second = page(&app, &boss, &format!("/receipts/{txn}?paper=80")).await;
    assert!(
        second.contains("id=\"reprint\"") && second.contains("补打"),
        "{second}"
    );
    let prints: i64 = sqlx::query_scalar("select count(*) from c_1.receipt_prints")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(prints, 2);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn one_meter_that_fails_to_rate_does_not_stop_the_others() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop_a, broken) = priced_shop(&app, &admin, "706").await;
    let (shop_b, fine) = priced_shop(&app, &admin, "707").await;
    open_account(&app, &admin, &shop_a, &broken).await;
    let id_b = open_account(&app, &admin, &shop_b, &fine).await;
    let t0 = chrono::Utc::now();
    let at = t0 + chrono::Duration::seconds(60);
    for meter in [&broken, &fine] {
        store_reading(&app, meter, at, 1_001_234).await;
    }
    // A stray line under the broken meter's key: rating its reading fails on the key.
    sqlx::query(
        "insert into c_1.charge_lines (meter_id, read_at, account_id, interval_start, energy_wh, debit_fen, lines, rated_at, posted)
         select meter_id, $2, account_id, $2, 0, 0, '[]', now(), true from c_1.rating_state where meter_id = $1",
    )
    .bind(broken.parse::<uuid::Uuid>().unwrap())
    .bind(at)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let clock = powertab_core::kernel::clock::ManualClock::at(t0 + chrono::Duration::seconds(400));
    let report = rating_pass(&app, &clock).await;
    assert_eq!((report.errors, report.readings_rated), (1, 1), "{report:?}");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id_b}"), &admin).await;
    assert_eq!(
        fen(&account, "available_fen"),
        -100,
        "the other meter is billed"
    );
    app.assert_ledger_clean().await;
}
