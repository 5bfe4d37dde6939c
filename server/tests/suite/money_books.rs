//! The books around the counter: fixed service fees (once per meter, account and local date),
//! the daily close (日结: waits for shifts, freezes its days, and the ledger check catches a
//! posting after a close), and invoice (发票) requests. Every money test ends with the ledger
//! check.

use crate::helpers::{spawn_app, TestApp};
use crate::money::{fen, key_after, open_account, rating_pass, shop_with_meter};
use crate::web::{csrf_of, logged_in_as, page, post_form};
use chrono::{Datelike, Duration, Utc};
use powertab_core::kernel::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// Company 1's system principal at the instant of `clock` (core services called directly, as a
/// worker would, to step over midnight).
async fn principal_at(app: &TestApp, clock: &Arc<ManualClock>) -> powertab_core::auth::Principal {
    let mut conn = app.db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    powertab_core::auth::Principal::system("test", clock.clone()).in_company(scope)
}

#[tokio::test]
async fn fees_post_once_per_meter_account_and_local_date() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, plan) = app
        .post(
            "/api/v1/tariff-plans",
            &admin,
            json!({"name": "with fees", "version": {"effective": "2020-01-01", "prices": {"flat": 8123},
                   "fees": [{"per": "day", "amount_fen": 100}, {"per": "month", "amount_fen": 3_000}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let (shop, meter) = shop_with_meter(&app, &admin, "801").await;
    app.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/meters/{meter}"),
        Some(&admin),
        Some(json!({"tariff_plan_id": plan["id"]})),
    )
    .await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let tz = powertab_core::kernel::clock::time_zone("Asia/Shanghai");
    let now = Utc::now();
    let opening_day = now.with_timezone(&tz).date_naive();
    // The opening day: its day fee and the month fee (charged on the opening day, not prorated).
    let clock = ManualClock::at(now + Duration::seconds(5));
    let report = rating_pass(&app, &clock).await;
    assert_eq!(report.fees, 1, "{report:?}");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(
        fen(&account, "wallet_fen"),
        -3_100,
        "fees may run into arrears"
    );
    assert_eq!(rating_pass(&app, &clock).await.fees, 0, "once per date");
    // Two days on: two day fees, and a month fee if the 1st is among them.
    clock.advance(Duration::days(2));
    assert_eq!(rating_pass(&app, &clock).await.fees, 2);
    let mut expected = 3_100;
    for d in 1..=2 {
        let date = opening_day + Duration::days(d);
        expected += 100 + if date.day() == 1 { 3_000 } else { 0 };
    }
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), -expected);
    let keys: Vec<String> = sqlx::query_scalar(
        "select idempotency_key from c_1.ledger_transactions where kind = 'fee' order by event_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        (0..=2)
            .map(|d| format!("fee:{meter}:{id}:{}", opening_day + Duration::days(d)))
            .collect::<Vec<_>>()
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_daily_close_waits_for_open_shifts_and_freezes_its_days() {
    use powertab_core::billing::books;
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "802").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let (status, _) = app
        .post("/api/v1/shifts/open", &admin, json!({"float_fen": 0}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "cash-1",
        json!({"amount_fen": 2_000, "method": "cash"}),
    )
    .await;
    let tz = powertab_core::kernel::clock::time_zone("Asia/Shanghai");
    let today = Utc::now().with_timezone(&tz).date_naive();

    // Today is not over: it cannot be closed.
    let (status, body) = app
        .post("/api/v1/day-closes", &admin, json!({"day": today}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // The report counts today's sale.
    let (_, report) = app
        .get(&format!("/api/v1/day-report?day={today}"), &admin)
        .await;
    assert_eq!(report["lines"][0]["kind"], "top_up", "{report}");
    assert_eq!(report["lines"][0]["amount_fen"], 2_000);
    assert_eq!(report["open_shifts"][0]["username"], "boss");

    // Tomorrow, closing today waits for the cashier's shift.
    let clock = ManualClock::at(Utc::now() + Duration::days(1));
    let principal = principal_at(&app, &clock).await;
    let mut tx = app.db.pool.begin().await.unwrap();
    powertab_core::db::set_schema(&mut tx, &principal.company().unwrap().schema)
        .await
        .unwrap();
    let refused = books::close_day(&mut tx, &principal, today).await;
    assert!(
        matches!(&refused, Err(powertab_core::CoreError::Conflict(m)) if m.contains("boss")),
        "{refused:?}"
    );
    drop(tx);
    let (status, _) = app
        .post(
            "/api/v1/shifts/close",
            &admin,
            json!({"counted_cash_fen": 2_000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut tx = app.db.pool.begin().await.unwrap();
    powertab_core::db::set_schema(&mut tx, &principal.company().unwrap().schema)
        .await
        .unwrap();
    let closed = books::close_day(&mut tx, &principal, today).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(closed.day, today);
    assert!(closed
        .lines
        .iter()
        .any(|l| l.kind == "top_up" && l.amount_fen.fen() == 2_000));

    // Today is frozen now: the counter's next sale (booked today by its clock) is refused.
    let (status, body) = app
        .post_keyed(
            &format!("/api/v1/accounts/{id}/top-up"),
            &admin,
            "card-1",
            json!({"amount_fen": 500, "method": "card"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, report) = app
        .get(&format!("/api/v1/day-report?day={today}"), &admin)
        .await;
    assert_eq!(report["closed"], true);
    let (_, list) = app.get("/api/v1/day-closes", &admin).await;
    assert_eq!(list["items"][0]["day"], today.to_string());
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_ledger_check_finds_a_posting_on_a_day_after_its_close() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "803").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "t1",
        json!({"amount_fen": 700, "method": "card"}),
    )
    .await;
    app.assert_ledger_clean().await;
    // A close recorded an hour before that sale, of the sale's own day (as if the guard had been
    // bypassed): the check names the sale.
    sqlx::query(
        "insert into c_1.day_closes (day, closed_at, summary)
         select booked_on, posted_at - interval '1 hour', '[]' from c_1.ledger_transactions where kind = 'top_up'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let reports = powertab_core::billing::ledger::check::check_all(&app.db.pool, None)
        .await
        .unwrap();
    let violations = &reports[0].violations;
    assert!(
        violations
            .iter()
            .any(|v| v.contains("after the books were closed")),
        "{violations:?}"
    );
}

#[tokio::test]
async fn invoice_requests_are_recorded_issued_and_limited_to_what_was_paid() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "804").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    app.post_keyed(
        &format!("/api/v1/accounts/{id}/top-up"),
        &admin,
        "t1",
        json!({"amount_fen": 10_000, "method": "card"}),
    )
    .await;
    let invoices = format!("/api/v1/accounts/{id}/invoices");
    let (status, body) = app
        .post_keyed(
            &invoices,
            &admin,
            "i-0",
            json!({"title": "某某奶茶有限公司", "tax_number": "91310000MA1FL0XX1A", "amount_fen": 10_001}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["amount_fen"].is_string());
    let (status, body) = app
        .post_keyed(
            &invoices,
            &admin,
            "i-1",
            json!({"title": "某某奶茶有限公司", "tax_number": "bad number", "amount_fen": 6_000}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["tax_number"].is_string(), "{body}");
    let asked = json!({"title": "某某奶茶有限公司", "tax_number": "91310000ma1fl0xx1a", "amount_fen": 6_000});
    let (status, first) = app
        .post_keyed(&invoices, &admin, "i-2", asked.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        first["tax_number"], "91310000MA1FL0XX1A",
        "written as the tax office does"
    );
    let (_, again) = app.post_keyed(&invoices, &admin, "i-2", asked).await;
    assert_eq!(again["id"], first["id"], "one key, one request");
    // 6,000 of 10,000 fen is invoiced: 4,001 more is refused.
    let (status, _) = app
        .post_keyed(
            &invoices,
            &admin,
            "i-3",
            json!({"title": "张三", "amount_fen": 4_001}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, waiting) = app.get("/api/v1/invoices", &admin).await;
    assert_eq!(waiting["items"].as_array().unwrap().len(), 1);
    let issue = format!("/api/v1/invoices/{}/issue", first["id"].as_str().unwrap());
    let (status, _) = app
        .post(&issue, &admin, json!({"invoice_number": "<script>"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, issued) = app
        .post(
            &issue,
            &admin,
            json!({"invoice_number": "044001900111-12345678"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["state"], "issued");
    let (status, _) = app
        .post(&issue, &admin, json!({"invoice_number": "2"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "issued once");

    // The account page records one with a plain form.
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, &format!("/accounts/{id}")).await;
    let csrf = csrf_of(&html);
    let key = key_after(&html, "id=\"invoice-form\"");
    let (_, location) = post_form(
        &app,
        &boss,
        &format!("/accounts/{id}"),
        "/sfn/invoice_request",
        &[
            ("csrf", &csrf),
            ("key", &key),
            ("account_id", &id),
            ("title", "张三"),
            ("tax_number", ""),
            ("amount", "40.00"),
        ],
    )
    .await;
    assert!(location.contains("ok=invoice.asked"), "{location}");
    let html = page(&app, &boss, &format!("/accounts/{id}")).await;
    assert!(
        html.contains("id=\"invoices\"")
            && html.contains("044001900111-12345678")
            && html.contains("待开票"),
        "{html}"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_books_page_closes_yesterday_with_a_plain_form() {
    let app = spawn_app().await;
    let (_, _admin) = app.company_with_admin("acme").await;
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, "/books").await;
    assert!(
        html.contains("id=\"day-report\"") && html.contains("id=\"shifts\""),
        "{html}"
    );
    let tz = powertab_core::kernel::clock::time_zone("Asia/Shanghai");
    let yesterday = Utc::now().with_timezone(&tz).date_naive() - Duration::days(1);
    let (_, location) = post_form(
        &app,
        &boss,
        "/books",
        "/sfn/books_close",
        &[("csrf", &csrf_of(&html)), ("day", &yesterday.to_string())],
    )
    .await;
    assert_eq!(
        location,
        format!("/books?day={yesterday}&ok=books.closed_ok")
    );
    let html = page(&app, &boss, &location).await;
    assert!(html.contains("id=\"day-closed\""), "{html}");
    assert!(
        html.contains(&format!(
            "<strong id=\"closed-through\">{yesterday}</strong>"
        )),
        "{html}"
    );
    app.assert_ledger_clean().await;
}
