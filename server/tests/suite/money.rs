//! Prepaid money through the API: opening a shop's account, the counter's top-ups and refunds,
//! cashier shifts, idempotency under concurrency, and the ledger's own defences (append-only,
//! balanced). Every test ends with the ledger check.

use crate::helpers::{spawn_app, Caller, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A shop with one platform-side meter: (shop id, meter id).
pub(crate) async fn shop_with_meter(
    app: &TestApp,
    admin: &Caller,
    number: &str,
) -> (String, String) {
    let (_, building) = app
        .post(
            "/api/v1/buildings",
            admin,
            json!({"name": format!("楼{number}")}),
        )
        .await;
    let (_, floor) = app
        .post(
            &format!(
                "/api/v1/buildings/{}/floors",
                building["id"].as_str().unwrap()
            ),
            admin,
            json!({"name": "1F"}),
        )
        .await;
    let (status, shop) = app
        .post(
            "/api/v1/shops",
            admin,
            json!({"floor_id": floor["id"], "number": number, "name": "奶茶店"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{shop}");
    let (_, gateway) = app
        .post(
            "/api/v1/gateways",
            admin,
            json!({"identity": format!("dtu-{number}"), "kind": "dtu", "registration": format!("REG-{number}"),
                   "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    let (status, meter) = app
        .post(
            "/api/v1/meters",
            admin,
            json!({"bus_id": gateway["buses"][0]["id"], "model": "dtsy1352", "address": "1",
                   "meter_number": format!("9{number}"), "shop_id": shop["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{meter}");
    (
        shop["id"].as_str().unwrap().to_owned(),
        meter["id"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn open_account(app: &TestApp, admin: &Caller, shop: &str, meter: &str) -> String {
    let (status, account) = app
        .post_keyed(
            "/api/v1/accounts",
            admin,
            &format!("open-{shop}"),
            json!({"shop_id": shop, "holder_name": "张三", "holder_phone": "13800138000",
                   "meters": [{"meter_id": meter, "manual_energy_wh": 1_000_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    account["id"].as_str().unwrap().to_owned()
}

pub(crate) fn fen(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[tokio::test]
async fn an_account_is_opened_topped_up_refunded_and_the_shift_closes_even() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "101").await;

    // No reading stored yet: the opening reading must be typed.
    let opening = json!({"shop_id": shop, "holder_name": "张三", "meters": [{"meter_id": meter}],
                         "deposit_fen": 10_000, "deposit_method": "cash", "opening_credit_fen": 500});
    let (status, body) = app
        .post_keyed("/api/v1/accounts", &admin, "k-open-1", opening.clone())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"]["meters.0.manual_energy_wh"].is_string(),
        "{body}"
    );
    // Without an Idempotency-Key a money request is refused outright.
    let (status, body) = app.post("/api/v1/accounts", &admin, opening.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"]["Idempotency-Key"].is_string(),
        "{body}"
    );

    let mut opening = opening;
    opening["meters"][0]["manual_energy_wh"] = json!(1_234_000);
    // A cash deposit needs the cashier's open shift.
    let (status, body) = app
        .post_keyed("/api/v1/accounts", &admin, "k-open-2", opening.clone())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, shift) = app
        .post("/api/v1/shifts/open", &admin, json!({"float_fen": 20_000}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{shift}");
    let (status, account) = app
        .post_keyed("/api/v1/accounts", &admin, "k-open-2", opening.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    assert_eq!(fen(&account, "deposit_fen"), 10_000);
    assert_eq!(
        fen(&account, "wallet_fen"),
        500,
        "the opening credit is spendable"
    );
    assert_eq!(account["meters"][0]["opening_energy_wh"], 1_234_000);
    assert_eq!(account["meters"][0]["opening_manual"], true);
    let id = account["id"].as_str().unwrap();
    // The same opening again is the same account; the shop cannot get a second one.
    let (status, again) = app
        .post_keyed("/api/v1/accounts", &admin, "k-open-2", opening.clone())
        .await;
    assert_eq!(
        (status, again["id"].as_str()),
        (StatusCode::CREATED, Some(id))
    );
    let (status, body) = app
        .post_keyed("/api/v1/accounts", &admin, "k-open-3", opening.clone())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // 售电 by card and by cash.
    let top_up = format!("/api/v1/accounts/{id}/top-up");
    let (status, card) = app
        .post_keyed(
            &top_up,
            &admin,
            "k-top-1",
            json!({"amount_fen": 5_000, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{card}");
    assert_eq!(fen(&card["account"], "available_fen"), 5_500);
    let (_, cash) = app
        .post_keyed(
            &top_up,
            &admin,
            "k-top-2",
            json!({"amount_fen": 3_000, "method": "cash"}),
        )
        .await;
    assert_eq!(fen(&cash["account"], "wallet_fen"), 8_500);
    // Receipt numbers follow each other within the day, without gaps.
    let numbers: Vec<String> = [&card, &cash]
        .iter()
        .map(|r| r["transaction"]["receipt_no"].as_str().unwrap().to_owned())
        .collect();
    let seq = |n: &str| n[n.len() - 4..].parse::<u32>().unwrap();
    assert_eq!(seq(&numbers[1]), seq(&numbers[0]) + 1, "{numbers:?}");

    // 退电: never more than is available, always with a reason.
    let refund = format!("/api/v1/accounts/{id}/refund");
    let (status, body) = app
        .post_keyed(
            &refund,
            &admin,
            "k-ref-1",
            json!({"amount_fen": 8_501, "method": "cash", "reason": "退租"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_balance", "{body}");
    let (status, body) = app
        .post_keyed(
            &refund,
            &admin,
            "k-ref-2",
            json!({"amount_fen": 100, "method": "cash"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, done) = app
        .post_keyed(
            &refund,
            &admin,
            "k-ref-3",
            json!({"amount_fen": 8_500, "method": "cash", "reason": "退租"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(fen(&done["account"], "available_fen"), 0);

    // The drawer: float 200 + deposit 100 + 30 − 85 = 245 yuan. Counting 245.00 closes even.
    let (_, current) = app.get("/api/v1/shifts/current", &admin).await;
    assert_eq!(fen(&current, "cash_taken_fen"), 10_000 + 3_000 - 8_500);
    let (status, closed) = app
        .post(
            "/api/v1/shifts/close",
            &admin,
            json!({"counted_cash_fen": 24_500}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(fen(&closed, "difference_fen"), 0);
    // Cash after the shift closed needs a new shift.
    let (status, _) = app
        .post_keyed(
            &top_up,
            &admin,
            "k-top-3",
            json!({"amount_fen": 100, "method": "cash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_short_drawer_posts_its_difference_to_adjustments() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "102").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post("/api/v1/shifts/open", &admin, json!({"float_fen": 0}))
        .await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "k1",
        json!({"amount_fen": 10_000, "method": "cash"}),
    )
    .await;
    let (_, closed) = app
        .post(
            "/api/v1/shifts/close",
            &admin,
            json!({"counted_cash_fen": 9_950}),
        )
        .await;
    assert_eq!(fen(&closed, "difference_fen"), -50, "{closed}");
    let adjustments: i64 =
        // A company-wide account's balance is the sum of its entries.
        sqlx::query_scalar("select sum(amount_fen)::bigint from c_1.ledger_entries where account_key = 'adjustments'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(adjustments, -50, "the missing 0.50 yuan is an adjustment");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn one_idempotency_key_from_ten_clients_moves_money_once() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "103").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let path = format!("/api/v1/accounts/{id}/top-up");
    let body = json!({"amount_fen": 1_234, "method": "card"});
    let answers = futures::future::join_all(
        (0..10).map(|_| app.post_keyed(&path, &admin, "same-click", body.clone())),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, r)| {
            assert!(status.is_success(), "{r}");
            r["transaction"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one transaction for one key");
    assert_eq!(
        answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count(),
        1,
        "one made it, nine replayed it"
    );
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 1_234);
    // The same key for another amount is refused, and changes nothing.
    let (status, err) = app
        .post_keyed(
            &path,
            &admin,
            "same-click",
            json!({"amount_fen": 9_999, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn thirty_two_clients_topping_up_and_refunding_lose_nothing() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "104").await;
    let hot = open_account(&app, &admin, &shop, &meter).await;
    let (shop2, meter2) = shop_with_meter(&app, &admin, "105").await;
    let other = open_account(&app, &admin, &shop2, &meter2).await;
    // 32 clients × 5 top-ups of 100 fen on the hot wallet and on another; every fourth client
    // also refunds 50 fen each round.
    let work = (0..32).map(|client| {
        let (app, admin, hot, other) = (&app, &admin, hot.clone(), other.clone());
        async move {
            for round in 0..5 {
                for account in [&hot, &other] {
                    let (status, r) = app
                        .post_keyed(
                            &format!("/api/v1/accounts/{account}/top-up"),
                            admin,
                            &format!("t-{account}-{client}-{round}"),
                            json!({"amount_fen": 100, "method": "card"}),
                        )
                        .await;
                    assert_eq!(status, StatusCode::CREATED, "{r}");
                }
                if client % 4 == 0 {
                    let (status, r) = app
                        .post_keyed(
                            &format!("/api/v1/accounts/{hot}/refund"),
                            admin,
                            &format!("r-{client}-{round}"),
                            json!({"amount_fen": 50, "method": "card", "reason": "test"}),
                        )
                        .await;
                    assert_eq!(status, StatusCode::CREATED, "{r}");
                }
            }
        }
    });
    futures::future::join_all(work).await;
    let (_, hot_account) = app.get(&format!("/api/v1/accounts/{hot}"), &admin).await;
    assert_eq!(fen(&hot_account, "wallet_fen"), 32 * 5 * 100 - 8 * 5 * 50);
    let (_, other_account) = app.get(&format!("/api/v1/accounts/{other}"), &admin).await;
    assert_eq!(fen(&other_account, "wallet_fen"), 32 * 5 * 100);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_ledger_is_append_only_and_every_transaction_balances() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "106").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "k1",
        json!({"amount_fen": 700, "method": "transfer"}),
    )
    .await;
    let pool = &app.db.pool;
    for sql in [
        "update c_1.ledger_entries set amount_fen = amount_fen * 2",
        "delete from c_1.ledger_entries",
        "update c_1.ledger_transactions set memo = 'edited'",
        "delete from c_1.ledger_transactions",
        "truncate c_1.ledger_entries",
        "truncate c_1.ledger_transactions cascade",
    ] {
        let err = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // An unbalanced transaction does not commit.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "insert into c_1.ledger_transactions (id, kind, idempotency_key, request_hash, event_at, booked_on, actor)
         values ('00000000-0000-0000-0000-000000000001', 'adjustment', 'forged', '', now(), current_date, 'sql')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into c_1.ledger_entries (txn_id, seq, account_key, amount_fen)
         select '00000000-0000-0000-0000-000000000001', 0, key, 100 from c_1.ledger_accounts limit 1",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let err = tx.commit().await.unwrap_err();
    assert!(err.to_string().contains("does not balance"), "{err}");
    app.assert_ledger_clean().await;

    // A cached balance that drifted from its entries is what the check reports.
    sqlx::query(
        "update c_1.ledger_accounts set balance_fen = balance_fen + 1 where key like 'wallet:%'",
    )
    .execute(pool)
    .await
    .unwrap();
    let reports = powertab_core::billing::ledger::check::check_all(pool, None)
        .await
        .unwrap();
    assert!(
        reports[0]
            .violations
            .iter()
            .any(|v| v.contains("wallet:") && v.contains("cached balance 701")),
        "{reports:?}"
    );
}

#[tokio::test]
async fn counter_rights_and_building_limits_hold() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "107").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (_, auditor) = app.user(&admin, "acme", "audit1", "auditor", &[]).await;
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &auditor,
            "a1",
            json!({"amount_fen": 100, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get(&format!("/api/v1/accounts/{id}"), &auditor).await;
    assert_eq!(status, StatusCode::OK, "an auditor reads accounts");
    // Another company sees nothing of this one.
    let (_, rival) = app.company_with_admin("rival").await;
    let (status, _) = app.get(&format!("/api/v1/accounts/{id}"), &rival).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &rival,
            "x1",
            json!({"amount_fen": 100, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.assert_ledger_clean().await;
}

/// Stores a reading of `meter` as ingest would (classified against the previous one).
pub(crate) async fn store_reading(
    app: &TestApp,
    meter: &str,
    at: chrono::DateTime<chrono::Utc>,
    energy_wh: i64,
) {
    crate::crash::store(&app.db.pool, meter.parse().unwrap(), at, energy_wh).await;
}

/// One pass of the rating worker over company 1 at the instant of `clock`.
pub(crate) async fn rating_pass(
    app: &TestApp,
    clock: &std::sync::Arc<powertab_core::kernel::clock::ManualClock>,
) -> powertab_core::billing::rating::PassReport {
    let mut conn = app.db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    let principal =
        powertab_core::auth::Principal::system("rating", clock.clone()).in_company(scope);
    powertab_core::billing::rating::run_pass(&app.db.pool, &principal)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_balance_falls_by_exactly_what_the_rating_oracle_says_and_each_reading_counts_once() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    // DESIGN.md's worked example: 0.8123 yuan/kWh, 1,234 Wh then 766 Wh → 100 + 62 fen.
    let (_, plan) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "flat", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}),
        )
        .await;
    let (shop, meter) = shop_with_meter(&app, &admin, "201").await;
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/meters/{meter}"),
            Some(&admin),
            Some(json!({"tariff_plan_id": plan["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "k1",
        json!({"amount_fen": 10_000, "method": "card"}),
    )
    .await;
    let t0 = chrono::Utc::now();
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(60), 1_001_234).await;
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(120), 1_002_000).await;

    let clock = powertab_core::kernel::clock::ManualClock::at(t0 + chrono::Duration::seconds(150));
    let report = rating_pass(&app, &clock).await;
    assert_eq!(report.readings_rated, 2, "{report:?}");
    assert_eq!(
        report.postings, 0,
        "not due yet: the lines wait for their batch"
    );
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 10_000);
    assert_eq!(
        fen(&account, "available_fen"),
        10_000 - 162,
        "available counts unposted charges"
    );
    let remainder: i64 = sqlx::query_scalar("select remainder_e5 from c_1.rating_state")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(remainder, 46_000, "0.46 fen carried");

    // Five minutes on, the batch posts: one transaction for both lines.
    clock.advance(chrono::Duration::seconds(300));
    let report = rating_pass(&app, &clock).await;
    assert_eq!(
        (report.readings_rated, report.postings),
        (0, 1),
        "{report:?}"
    );
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 10_000 - 162);
    assert_eq!(fen(&account, "available_fen"), 10_000 - 162);
    // Passes again change nothing: each reading is rated and posted once.
    for _ in 0..3 {
        clock.advance(chrono::Duration::seconds(600));
        assert_eq!(rating_pass(&app, &clock).await.readings_rated, 0);
    }
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 10_000 - 162);

    // A reset holds the meter: no charge, an alarm for the operator, power stays on.
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(180), 5).await;
    store_reading(&app, &meter, t0 + chrono::Duration::seconds(240), 2_005).await;
    let report = rating_pass(&app, &clock).await;
    assert_eq!((report.readings_rated, report.held), (0, 1), "{report:?}");
    let alarms: i64 = sqlx::query_scalar(
        "select count(*) from c_1.field_alarms where kind = 'reading_held' and cleared_at is null",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(alarms, 1);
    clock.advance(chrono::Duration::seconds(600));
    rating_pass(&app, &clock).await;
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(
        fen(&account, "available_fen"),
        10_000 - 162,
        "nothing rated while held"
    );

    // Closing waits for the review: a held interval would otherwise never be billed.
    let (status, body) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/close"),
            &admin,
            "close-held",
            json!({"final_readings": [{"meter_id": meter, "energy_wh": 3_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The operator releases the reset (0 Wh for it): rating goes on from the reset reading, so
    // the 2,000 Wh after it cost 162.46 fen + the carried 0.46 = 162 fen, 0.92 carried.
    let (status, body) = app
        .post(
            &format!("/api/v1/meters/{meter}/held/release"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["energy_wh"], 0);
    let report = rating_pass(&app, &clock).await;
    assert_eq!(report.readings_rated, 1, "{report:?}");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "available_fen"), 10_000 - 162 - 162);
    let remainder: i64 = sqlx::query_scalar("select remainder_e5 from c_1.rating_state")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(remainder, 92_000);
    let (status, _) = app
        .post(
            &format!("/api/v1/meters/{meter}/held/release"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing is held any more");
    let open_alarms: i64 = sqlx::query_scalar(
        "select count(*) from c_1.field_alarms where kind = 'reading_held' and cleared_at is null",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(open_alarms, 0, "the alarm is cleared");
    app.assert_ledger_clean().await;
}

/// The value of the hidden `key` field in the part of `html` after `marker`.
pub(crate) fn key_after(html: &str, marker: &str) -> String {
    let rest = html
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker}"));
    let start = rest.find("name=\"key\" value=\"").expect("a key field") + 18;
    rest[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_counter_page_opens_an_account_and_sells_credit_with_plain_forms_once_per_click() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, _meter) = shop_with_meter(&app, &admin, "301").await;
    let client = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &client, "/counter").await;
    let csrf = csrf_of(&html);
    assert!(
        html.contains("id=\"shift-open-form\""),
        "no shift yet: the form to open one"
    );
    let (_, location) = post_form(
        &app,
        &client,
        "/counter",
        "/sfn/shift_open",
        &[("csrf", &csrf), ("float", "100")],
    )
    .await;
    assert_eq!(location, "/counter?ok=counter.shift_opened");

    // Open the account: the shop is offered, the opening reading typed, a cash deposit.
    let html = page(&app, &client, "/counter").await;
    assert!(
        html.contains(&format!("value=\"{shop}\"")),
        "the vacant shop is offered"
    );
    let key = key_after(&html, "id=\"open-form\"");
    let open = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("shop_id", shop.as_str()),
        ("holder_name", "李四"),
        ("holder_phone", ""),
        ("reading_kwh", "1000.5"),
        ("deposit", "50"),
        ("opening_credit", ""),
    ];
    let (_, location) = post_form(&app, &client, "/counter", "/sfn/account_open", &open).await;
    assert_eq!(location, "/counter?q=301&ok=counter.opened");
    // The same form posted again (a double click) is the same account.
    let (_, again) = post_form(&app, &client, "/counter", "/sfn/account_open", &open).await;
    assert_eq!(again, location);

    // Top up ¥88.50 in cash, clicked twice: one sale, one receipt.
    let html = page(&app, &client, "/counter?q=301").await;
    assert!(
        html.contains("李四") && html.contains("¥0.00"),
        "the account is found"
    );
    let key = key_after(&html, "class=\"inline top-up\"");
    let account_id = {
        let rest = html.split("data-account=\"").nth(1).unwrap();
        rest.split('"').next().unwrap().to_owned()
    };
    let sale = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("account_id", account_id.as_str()),
        ("amount", "88.50"),
        ("method", "cash"),
    ];
    let (_, first) = post_form(&app, &client, "/counter", "/sfn/counter_top_up", &sale).await;
    let (_, second) = post_form(&app, &client, "/counter", "/sfn/counter_top_up", &sale).await;
    assert!(first.contains("ok=counter.done&receipt=PT"), "{first}");
    assert_eq!(first, second, "the second click replays the first");
    let html = page(&app, &client, &first).await;
    assert!(
        html.contains("id=\"receipt-no\""),
        "the receipt number is shown"
    );
    assert!(html.contains("¥88.50"), "available balance after the sale");
    let (_, account) = app
        .get(&format!("/api/v1/accounts/{account_id}"), &admin)
        .await;
    assert_eq!(fen(&account, "wallet_fen"), 8_850);
    assert_eq!(fen(&account, "deposit_fen"), 5_000);

    // A refund above what is available comes back with the amount kept and the reason named.
    let key = key_after(&html, "class=\"inline refund\"");
    let (_, location) = post_form(
        &app,
        &client,
        "/counter",
        "/sfn/counter_refund",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("account_id", &account_id),
            ("amount", "100"),
            ("method", "cash"),
            ("reason", "退租"),
        ],
    )
    .await;
    assert!(
        location.contains("error=insufficient_balance"),
        "{location}"
    );
    let html = page(&app, &client, &location).await;
    assert!(
        html.contains("可用余额不足"),
        "the refusal in the page's language"
    );
    let refund_form = html
        .split("class=\"inline refund\"")
        .nth(1)
        .unwrap()
        .split("</form>")
        .next()
        .unwrap();
    assert!(
        refund_form.contains("value=\"100\"") && refund_form.contains("value=\"退租\""),
        "{refund_form}"
    );

    // The shift: ¥100 float + ¥50 deposit + ¥88.50 = ¥238.50 counted closes even.
    let (_, location) = post_form(
        &app,
        &client,
        "/counter",
        "/sfn/shift_close",
        &[("csrf", &csrf), ("counted", "238.50")],
    )
    .await;
    assert_eq!(location, "/counter?ok=counter.shift_closed");
    let difference: i64 = sqlx::query_scalar("select difference_fen from c_1.cashier_shifts")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(difference, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_account_statement_lists_every_movement_between_its_balances() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "401").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    for (key, path, body) in [
        (
            "s1",
            "top-up",
            json!({"amount_fen": 5_000, "method": "card"}),
        ),
        (
            "s2",
            "top-up",
            json!({"amount_fen": 2_500, "method": "transfer"}),
        ),
        (
            "s3",
            "refund",
            json!({"amount_fen": 1_000, "method": "card", "reason": "多充"}),
        ),
    ] {
        let (status, r) = app
            .post_keyed(&format!("/api/v1/accounts/{id}/{path}"), &admin, key, body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
    }
    let (status, s) = app
        .get(&format!("/api/v1/accounts/{id}/statement"), &admin)
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(fen(&s, "opening_fen"), 0);
    let moves: Vec<(String, i64, i64)> = s["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                fen(l, "amount_fen"),
                fen(l, "balance_fen"),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            ("top_up".into(), 5_000, 5_000),
            ("top_up".into(), 2_500, 7_500),
            ("refund".into(), -1_000, 6_500),
        ]
    );
    assert_eq!(fen(&s, "closing_fen"), 6_500);
    assert!(s["lines"][2]["receipt_no"]
        .as_str()
        .unwrap()
        .starts_with("PT"));
    // A period after today holds nothing but carries the balance.
    let (_, later) = app
        .get(
            &format!("/api/v1/accounts/{id}/statement?from=2099-01-01"),
            &admin,
        )
        .await;
    assert_eq!(
        (fen(&later, "opening_fen"), fen(&later, "closing_fen")),
        (6_500, 6_500)
    );
    assert!(later["lines"].as_array().unwrap().is_empty());
    let response = app
        .http
        .get(app.url(&format!("/api/v1/accounts/{id}/statement.xlsx")))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.bytes().await.unwrap().starts_with(b"PK"),
        "an xlsx file"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn reversals_undo_once_and_large_ones_wait_for_another_approver() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "501").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let top_up = |key: &'static str, fen: i64| {
        let (app, admin, id) = (&app, &admin, id.clone());
        async move {
            let (status, r) = app
                .post_keyed(
                    &format!("/api/v1/accounts/{id}/top-up"),
                    admin,
                    key,
                    json!({"amount_fen": fen, "method": "card"}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{r}");
            r["transaction"]["id"].as_str().unwrap().to_owned()
        }
    };
    let small = top_up("t-small", 3_000).await;
    let large = top_up("t-large", 80_000).await;

    // ¥30 is within the ¥500 threshold: reversed at once, with a receipt; once only.
    let (status, done) = app
        .post_keyed(
            &format!("/api/v1/transactions/{small}/reversal"),
            &admin,
            "rv-1",
            json!({"reason": "输错金额"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["request"]["state"], "posted");
    assert!(done["transaction"]["receipt_no"]
        .as_str()
        .unwrap()
        .starts_with("PT"));
    let (status, again) = app
        .post_keyed(
            &format!("/api/v1/transactions/{small}/reversal"),
            &admin,
            "rv-1",
            json!({"reason": "输错金额"}),
        )
        .await;
    assert_eq!(
        (status, &again["transaction"]["id"]),
        (StatusCode::CREATED, &done["transaction"]["id"]),
        "a replay"
    );
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/transactions/{small}/reversal"),
            &admin,
            "rv-2",
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "once per original");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 80_000);

    // ¥800 needs an approver other than the requester; nothing moves before.
    let (status, asked) = app
        .post_keyed(
            &format!("/api/v1/transactions/{large}/reversal"),
            &admin,
            "rv-3",
            json!({"reason": "重复收款"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
    let request = asked["request"]["id"].as_str().unwrap().to_owned();
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(
        fen(&account, "wallet_fen"),
        80_000,
        "no money moves before approval"
    );
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/reversals/{request}/approve"),
            &admin,
            "ap-0",
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the requester does not approve"
    );
    let (_, checker) = app
        .user(&admin, "acme", "checker", "operator", &["approve"])
        .await;
    let (_, inbox) = app.get("/api/v1/reversals", &checker).await;
    assert_eq!(inbox["items"].as_array().unwrap().len(), 1, "{inbox}");
    let (status, approved) = app
        .post_keyed(
            &format!("/api/v1/reversals/{request}/approve"),
            &checker,
            "ap-1",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{approved}");
    assert_eq!(approved["request"]["state"], "posted");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 0);
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/reversals/{request}/reject"),
            Some(&checker),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "decided once");

    // A refund's reversal always posts; reversing a reversal is not a thing.
    let t = top_up("t-3", 1_000).await;
    let _ = t;
    let (_, refund) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/refund"),
            &admin,
            "rf-1",
            json!({"amount_fen": 1_000, "method": "card", "reason": "退租"}),
        )
        .await;
    let refund_id = refund["transaction"]["id"].as_str().unwrap();
    let (status, undone) = app
        .post_keyed(
            &format!("/api/v1/transactions/{refund_id}/reversal"),
            &admin,
            "rv-4",
            json!({"reason": "误退"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{undone}");
    let reversal_id = undone["transaction"]["id"].as_str().unwrap();
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/transactions/{reversal_id}/reversal"),
            &admin,
            "rv-5",
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 1_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn closing_an_account_settles_every_fen_and_pays_out_what_is_owed() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, plan) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "flat", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}}),
        )
        .await;
    let (shop, meter) = shop_with_meter(&app, &admin, "601").await;
    app.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/meters/{meter}"),
        Some(&admin),
        Some(json!({"tariff_plan_id": plan["id"]})),
    )
    .await;
    app.post("/api/v1/shifts/open", &admin, json!({"float_fen": 0}))
        .await;
    // Opening reading 1,000 kWh, a ¥100 deposit in cash, ¥50 by card.
    let (status, account) = app
        .post_keyed(
            "/api/v1/accounts",
            &admin,
            "open-601",
            json!({"shop_id": shop, "holder_name": "王五", "meters": [{"meter_id": meter, "manual_energy_wh": 1_000_000}],
                   "deposit_fen": 10_000, "deposit_method": "cash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let id = account["id"].as_str().unwrap().to_owned();
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "c1",
        json!({"amount_fen": 5_000, "method": "card"}),
    )
    .await;
    // The shop used 2 kWh: 162.46 fen — 162 debited, 0.46 carried, rounded half-up at close.
    let close = format!("/api/v1/accounts/{id}/close");
    let (status, body) = app.post_keyed(&close, &admin, "close-1", json!({})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no fresh reading: {body}"
    );
    assert!(
        body["error"]["fields"]["final_readings.0.energy_wh"].is_string(),
        "{body}"
    );
    // Closing refused halfway changed nothing: the account is still open.
    let (_, still) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(still["state"], "open");
    let (status, settled) = app
        .post_keyed(
            &close,
            &admin,
            "close-2",
            json!({"final_readings": [{"meter_id": meter, "energy_wh": 1_002_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(settled["account"]["state"], "closed");
    assert_eq!(fen(&settled, "deposit_returned_fen"), 10_000);
    assert_eq!(fen(&settled, "rounding_fen"), 0, "0.46 fen rounds down");
    assert_eq!(fen(&settled, "net_fen"), 10_000 + 5_000 - 162);
    assert_eq!(fen(&settled["account"], "wallet_fen"), 0);
    assert_eq!(fen(&settled["account"], "deposit_fen"), 0);
    // Closing again is the same settlement; the counter refuses the closed account.
    let (_, again) = app.post_keyed(&close, &admin, "close-3", json!({})).await;
    assert_eq!(again["close_out"]["id"], settled["close_out"]["id"]);
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &admin,
            "c2",
            json!({"amount_fen": 100, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The shop is vacant again and can have a new account.
    let (_, shop_now) = app.get(&format!("/api/v1/shops/{shop}"), &admin).await;
    assert_eq!(shop_now["status"], "vacant", "{shop_now}");

    // Pay out what is owed, not a fen more.
    let payout = format!("/api/v1/accounts/{id}/payout");
    let (status, _) = app
        .post_keyed(
            &payout,
            &admin,
            "p1",
            json!({"amount_fen": 14_839, "method": "cash"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, paid) = app
        .post_keyed(
            &payout,
            &admin,
            "p2",
            json!({"amount_fen": 14_838, "method": "cash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert!(paid["receipt_no"].as_str().unwrap().starts_with("PT"));
    let (_, after) = app
        .get(&format!("/api/v1/accounts/{id}/settlement"), &admin)
        .await;
    assert_eq!(fen(&after, "payable_fen"), 0);
    app.assert_ledger_clean().await;
}

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

#[tokio::test]
async fn random_sequences_of_counter_operations_keep_every_balance_and_invariant() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let mut accounts = Vec::new();
    for number in ["701", "702", "703"] {
        let (shop, meter) = shop_with_meter(&app, &admin, number).await;
        accounts.push(open_account(&app, &admin, &shop, &meter).await);
    }
    for seed in [7u64, 2026, 90_210] {
        let mut dice = Dice(seed);
        // The oracle: what each wallet must hold, and the counter movements that may be reversed.
        let mut expected: Vec<i64> = Vec::new();
        for id in &accounts {
            let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
            expected.push(fen(&account, "wallet_fen"));
        }
        let mut movements: Vec<(usize, String, i64)> = Vec::new();
        for step in 0..60 {
            let which = dice.next(accounts.len() as u64) as usize;
            let id = &accounts[which];
            let key = format!("seed{seed}-step{step}");
            let amount = 1 + dice.next(20_000) as i64;
            match dice.next(3) {
                0 => {
                    let (status, r) = app
                        .post_keyed(
                            &format!("/api/v1/accounts/{id}/top-up"),
                            &admin,
                            &key,
                            json!({"amount_fen": amount, "method": "card"}),
                        )
                        .await;
                    assert_eq!(status, StatusCode::CREATED, "{r}");
                    expected[which] += amount;
                    movements.push((
                        which,
                        r["transaction"]["id"].as_str().unwrap().to_owned(),
                        amount,
                    ));
                }
                1 => {
                    let (status, r) = app
                        .post_keyed(
                            &format!("/api/v1/accounts/{id}/refund"),
                            &admin,
                            &key,
                            json!({"amount_fen": amount, "method": "card", "reason": "test"}),
                        )
                        .await;
                    if amount <= expected[which] {
                        assert_eq!(status, StatusCode::CREATED, "{r}");
                        expected[which] -= amount;
                        movements.push((
                            which,
                            r["transaction"]["id"].as_str().unwrap().to_owned(),
                            -amount,
                        ));
                    } else {
                        assert_eq!(
                            status,
                            StatusCode::CONFLICT,
                            "a refund above the balance: {r}"
                        );
                    }
                }
                _ if !movements.is_empty() => {
                    let pick = dice.next(movements.len() as u64) as usize;
                    let (owner, txn, moved) = movements.swap_remove(pick);
                    let (status, r) = app
                        .post_keyed(
                            &format!("/api/v1/transactions/{txn}/reversal"),
                            &admin,
                            &key,
                            json!({"reason": "test"}),
                        )
                        .await;
                    let within_threshold = moved.abs() <= 50_000;
                    if within_threshold && (moved < 0 || moved <= expected[owner]) {
                        assert_eq!(status, StatusCode::CREATED, "{r}");
                        expected[owner] -= moved;
                    } else if !within_threshold {
                        assert_eq!(status, StatusCode::ACCEPTED, "{r}");
                    } else {
                        assert_eq!(
                            status,
                            StatusCode::CONFLICT,
                            "a reversal the balance cannot carry: {r}"
                        );
                    }
                }
                _ => {}
            }
        }
        for (i, id) in accounts.iter().enumerate() {
            let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
            assert_eq!(
                fen(&account, "wallet_fen"),
                expected[i],
                "seed {seed}, account {i}"
            );
        }
        app.assert_ledger_clean().await;
    }
}

#[tokio::test]
async fn the_daily_ledger_check_records_each_company_and_platform_staff_see_failures_first() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    app.company_with_admin("rival").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "801").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "d1",
        json!({"amount_fen": 300, "method": "card"}),
    )
    .await;
    // Someone edits acme's cached wallet behind the ledger's back.
    sqlx::query("update c_1.ledger_accounts set balance_fen = 301 where key like 'wallet:%'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    use powertab_core::billing::ledger::check::run_due;
    let now = chrono::Utc::now();
    let day = chrono::Duration::hours(24);
    let runs = run_due(&app.db.pool, now, day).await.unwrap();
    assert_eq!(runs.len(), 2, "both companies checked");
    assert!(
        run_due(&app.db.pool, now + chrono::Duration::hours(1), day)
            .await
            .unwrap()
            .is_empty(),
        "once a day"
    );
    assert_eq!(
        run_due(&app.db.pool, now + chrono::Duration::hours(25), day)
            .await
            .unwrap()
            .len(),
        2
    );
    let root = app.root().await;
    let (status, list) = app.get("/api/v1/platform/ledger-checks", &root).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list[0]["company_slug"], "acme",
        "the failing company first: {list}"
    );
    assert!(
        list[0]["violations"][0]
            .as_str()
            .unwrap()
            .contains("cached balance 301"),
        "{list}"
    );
    assert!(list[1]["violations"].as_array().unwrap().is_empty());
    let (status, _) = app.get("/api/v1/platform/ledger-checks", &admin).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a company's staff do not see the platform's checks"
    );
}

#[tokio::test]
async fn a_meter_in_an_open_account_is_neither_removed_nor_switched_to_meter_side() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "901").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/meters/{meter}/remove"),
            &admin,
            json!({"final_energy_wh": 1_000_000}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/meters/{meter}"),
            Some(&admin),
            Some(json!({"prepayment_mode": "meter"})),
        )
        .await;
    assert!(status.is_client_error(), "{status}: {body}");
    // Closed, the meter is free again.
    let (status, body) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/close"),
            &admin,
            "c",
            json!({"final_readings": [{"meter_id": meter, "energy_wh": 1_000_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/api/v1/meters/{meter}/remove"),
            &admin,
            json!({"final_energy_wh": 1_000_000}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_account_page_reverses_a_sale_and_closes_the_account_with_plain_forms() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "951").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (_, sale) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &admin,
            "a1",
            json!({"amount_fen": 2_000, "method": "card"}),
        )
        .await;
    let txn = sale["transaction"]["id"].as_str().unwrap().to_owned();
    let client = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &client, &format!("/accounts/{id}")).await;
    let csrf = csrf_of(&html);
    assert!(
        html.contains("id=\"movements\"") && html.contains("20.00"),
        "the sale is listed"
    );
    let key = key_after(&html, "class=\"inline reverse\"");
    let (_, location) = post_form(
        &app,
        &client,
        &format!("/accounts/{id}"),
        "/sfn/account_reverse",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("account_id", &id),
            ("txn_id", &txn),
            ("reason", "输错"),
        ],
    )
    .await;
    assert_eq!(location, format!("/accounts/{id}?ok=account.reversed"));
    let html = page(&app, &client, &location).await;
    assert!(
        !html.contains("class=\"inline reverse\""),
        "nothing left to reverse"
    );
    // Close with the final reading typed in (no fresh stored one).
    let (_, location) = post_form(
        &app,
        &client,
        &format!("/accounts/{id}"),
        "/sfn/account_close",
        &[("csrf", &csrf), ("account_id", &id), ("final_kwh", "1000")],
    )
    .await;
    assert_eq!(location, format!("/accounts/{id}?ok=account.closed"));
    let html = page(&app, &client, &location).await;
    assert!(
        html.contains("id=\"settlement\"") && html.contains("已销户"),
        "{html}"
    );
    assert!(!html.contains("id=\"close-form\""));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn another_approver_decides_a_large_reversal_in_the_approvals_inbox() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "961").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (_, sale) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &admin,
            "big",
            json!({"amount_fen": 60_000, "method": "card"}),
        )
        .await;
    let txn = sale["transaction"]["id"].as_str().unwrap();
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/transactions/{txn}/reversal"),
            &admin,
            "rv",
            json!({"reason": "重复"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The requester sees it but cannot decide it.
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, "/approvals").await;
    assert!(
        html.contains("id=\"approvals\"") && !html.contains("name=\"decision\""),
        "{html}"
    );
    app.user(&admin, "acme", "checker", "operator", &["approve"])
        .await;
    let checker = logged_in_as(&app, "acme", "checker").await;
    let html = page(&app, &checker, "/approvals").await;
    let csrf = csrf_of(&html);
    let key = key_after(&html, "id=\"approvals\"");
    let request = html
        .split("name=\"id\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let (_, location) = post_form(
        &app,
        &checker,
        "/approvals",
        "/sfn/approval_decide",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("id", &request),
            ("kind", "reversal"),
            ("decision", "approve"),
        ],
    )
    .await;
    assert_eq!(location, "/approvals?ok=approvals.approved");
    let html = page(&app, &checker, &location).await;
    assert!(html.contains("id=\"no-approvals\""), "the inbox is empty");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn one_idempotency_key_serves_one_request_whatever_tables_they_write() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "601").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let top_up = format!("/api/v1/accounts/{id}/top-up");
    let card = |fen: i64| json!({"amount_fen": fen, "method": "card"});
    // The opening's key (an account table, not the ledger) cannot post a top-up.
    let (status, err) = app
        .post_keyed(&top_up, &admin, &format!("open-{shop}"), card(500))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_key_reused")),
        "{err}"
    );
    let (status, sale) = app
        .post_keyed(&top_up, &admin, "k-sale", card(80_000))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sale}");
    let sale_id = sale["transaction"]["id"].as_str().unwrap().to_owned();
    // A reversal request above the approval amount writes only `reversal_requests`; its key
    // cannot then post a top-up either.
    let (status, asked) = app
        .post_keyed(
            &format!("/api/v1/transactions/{sale_id}/reversal"),
            &admin,
            "k-ask",
            json!({"reason": "重复收款"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
    let (status, _) = app.post_keyed(&top_up, &admin, "k-ask", card(500)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a reversal request's key");
    // Nor can the sale's key ask for an invoice.
    let (status, _) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/invoices"),
            &admin,
            "k-sale",
            json!({"title": "某某商贸有限公司", "tax_number": "91310000MA1FL0XX1A", "amount_fen": 1_000}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a top-up's key");
    // The refusals changed nothing: the sale's key still replays the sale.
    let (status, again) = app
        .post_keyed(&top_up, &admin, "k-sale", card(80_000))
        .await;
    assert_eq!(
        (status, &again["transaction"]["id"], &again["replayed"]),
        (StatusCode::OK, &sale["transaction"]["id"], &json!(true)),
        "{again}"
    );
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(
        fen(&account, "wallet_fen"),
        80_000,
        "one top-up, nothing else"
    );
    let invoices: i64 = sqlx::query_scalar("select count(*) from c_1.invoice_requests")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(invoices, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_shop_with_two_meters_opens_from_the_page_with_a_reading_per_meter() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, first) = shop_with_meter(&app, &admin, "302").await;
    let (_, m1) = app.get(&format!("/api/v1/meters/{first}"), &admin).await;
    let (status, second) = app
        .post(
            "/api/v1/meters",
            &admin,
            json!({"bus_id": m1["bus_id"], "model": "dtsy1352", "address": "2",
                   "meter_number": "93023", "shop_id": shop}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    // The second meter has a fresh stored reading, the first none.
    store_reading(&app, &second, chrono::Utc::now(), 2_000_000).await;
    let client = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &client, &format!("/counter?open={shop}")).await;
    let csrf = csrf_of(&html);
    let rows = html
        .split("id=\"opening-meters\"")
        .nth(1)
        .expect("a row per meter");
    let (at_first, at_second) = (rows.find("9302<").unwrap(), rows.find("93023<").unwrap());
    assert!(at_first < at_second, "in meter-number order");
    assert!(rows.contains("2000 kWh"), "the stored reading is shown");
    let key = key_after(&html, "id=\"open-form\"");
    let form = |typed: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("key", key.clone()),
            ("shop_id", shop.clone()),
            ("holder_name", "王五".to_owned()),
            ("meters[0][meter_id]", first.clone()),
            ("meters[0][reading_kwh]", typed.to_owned()),
            ("meters[1][meter_id]", second.clone()),
            ("meters[1][reading_kwh]", String::new()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let (app, client) = (&app, &client);
        let from = format!("/counter?open={shop}");
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(app, client, &from, "/sfn/account_open", &fields)
                .await
                .1
        }
    };
    // The first meter has no fresh reading: its own field is named.
    let refused = post(form("")).await;
    assert!(
        refused.contains("error=validation_failed") && refused.contains("meters.0.reading_kwh"),
        "{refused}"
    );
    let opened = post(form("1200.5")).await;
    assert_eq!(opened, "/counter?q=302&ok=counter.opened");
    let (_, list) = app.get("/api/v1/accounts?q=302", &admin).await;
    let meters = &list["items"][0]["meters"];
    let opening = |id: &str| {
        meters
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["meter_id"] == id)
            .map(|m| {
                (
                    m["opening_energy_wh"].as_i64(),
                    m["opening_manual"].as_bool(),
                )
            })
            .unwrap()
    };
    assert_eq!(opening(&first), (Some(1_200_500), Some(true)), "typed");
    assert_eq!(opening(&second), (Some(2_000_000), Some(false)), "stored");
    app.assert_ledger_clean().await;
}
