//! Online payment orders and paid notices (issue 14: Payments): a verified paid notice credits
//! its order once, keyed `pay:{provider}:{transaction_id}`; a notice for an expired order still
//! credits and is flagged; another amount than the order's, a payment naming no order and a
//! second payment of a paid order go to `suspense`; an account that closed meanwhile is owed the
//! money back (`refunds_payable`). `ledger check` is clean after every case.

use crate::helpers::spawn_app;
use powertab_core::auth::Principal;
use powertab_core::kernel::clock;
use powertab_core::kernel::money::AmountFen;
use powertab_core::payments::orders::{self, Credited, PaidNotice, Provider};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// An account's balance as the sum of its entries (company-wide accounts keep no running one).
async fn balance(pool: &sqlx::PgPool, schema: &str, key: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!(
        "select coalesce(sum(amount_fen), 0)::bigint from {schema}.ledger_entries where account_key = $1"
    ))
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn notice(order: &orders::Order, transaction_id: &str, fen: i64) -> PaidNotice {
    PaidNotice {
        provider: Provider::Sandbox,
        out_trade_no: order.out_trade_no.clone(),
        transaction_id: transaction_id.into(),
        amount_fen: AmountFen::from_fen(fen),
        paid_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn a_paid_notice_credits_its_order_once_and_what_cannot_be_credited_waits_in_suspense() {
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("payco").await;
    let (shop, meter) = crate::money::shop_with_meter(&app, &admin, "301").await;
    let account: Uuid = crate::money::open_account(&app, &admin, &shop, &meter)
        .await
        .parse()
        .unwrap();
    let schema = format!("c_{company}");
    let clock = clock::ManualClock::at(chrono::Utc::now());
    let scope = {
        let mut conn = app.db.pool.acquire().await.unwrap();
        powertab_core::auth::load_company(&mut conn, company)
            .await
            .unwrap()
            .unwrap()
    };
    let who = Principal::system("payments", clock.clone()).in_company(scope);
    let in_tx = || powertab_core::db::begin_in(&app.db.pool, &who.company().unwrap().schema);
    let create = |fen: i64| {
        let (who, in_tx) = (&who, &in_tx);
        async move {
            let mut tx = in_tx().await.unwrap();
            let order = orders::create(
                &mut tx,
                who,
                account,
                Provider::Sandbox,
                AmountFen::from_fen(fen),
                None,
            )
            .await;
            if order.is_ok() {
                tx.commit().await.unwrap();
            }
            order
        }
    };
    let credit = |n: PaidNotice| {
        let (who, in_tx) = (&who, &in_tx);
        async move {
            let mut tx = in_tx().await.unwrap();
            let done = orders::credit(&mut tx, who, &n).await.unwrap();
            tx.commit().await.unwrap();
            done
        }
    };
    let wallet = format!("wallet:{account}");

    // Limits: ¥1 to ¥50,000.
    let refused = create(99).await.unwrap_err();
    assert!(format!("{refused:?}").contains("amount_fen"), "{refused:?}");

    // ¥30 ordered and paid: the wallet has it once, however often the notice comes.
    let order = create(3_000).await.unwrap();
    assert_eq!(order.state, "created");
    assert!(order.out_trade_no.starts_with("PT") && order.out_trade_no.len() == 22);
    let first = credit(notice(&order, "SBX-0001", 3_000)).await;
    let Credited::Wallet {
        txn, flag: None, ..
    } = first
    else {
        panic!("{first:?}")
    };
    for _ in 0..2 {
        assert_eq!(
            credit(notice(&order, "SBX-0001", 3_000)).await,
            Credited::Already { txn }
        );
    }
    assert_eq!(balance(&app.db.pool, &schema, &wallet).await, 3_000);
    let mut tx = in_tx().await.unwrap();
    let seen = orders::get(&mut tx, &who, order.id).await.unwrap();
    drop(tx);
    assert_eq!(
        (
            seen.state.as_str(),
            seen.transaction_id.as_deref(),
            seen.credited_txn
        ),
        ("credited", Some("SBX-0001"), Some(txn))
    );
    // The account's statement shows it, with a receipt number.
    let (_, statement) = app
        .get(&format!("/api/v1/accounts/{account}/statement"), &admin)
        .await;
    assert!(
        statement.to_string().contains("online_payment"),
        "{statement}"
    );

    // A second payment of the paid order (another transaction): suspense, flagged.
    let twice = credit(notice(&order, "SBX-0002", 3_000)).await;
    assert!(
        matches!(twice, Credited::Suspense { order: Some(_), .. }),
        "{twice:?}"
    );
    assert_eq!(balance(&app.db.pool, &schema, "suspense").await, 3_000);
    assert_eq!(balance(&app.db.pool, &schema, &wallet).await, 3_000);

    // Another amount than ordered: suspense, the order marked.
    let order = create(5_000).await.unwrap();
    let short = credit(notice(&order, "SBX-0003", 4_999)).await;
    assert!(matches!(short, Credited::Suspense { .. }), "{short:?}");
    let mut tx = in_tx().await.unwrap();
    let seen = orders::get(&mut tx, &who, order.id).await.unwrap();
    drop(tx);
    assert_eq!(
        (
            seen.state.as_str(),
            seen.flag.as_deref(),
            seen.paid_amount_fen
        ),
        (
            "amount_mismatch",
            Some("amount_mismatch"),
            Some(AmountFen::from_fen(4_999))
        )
    );
    assert_eq!(balance(&app.db.pool, &schema, "suspense").await, 7_999);

    // A payment naming no order of ours: suspense.
    let stray = PaidNotice {
        out_trade_no: "PT20261203NOSUCHORDER0".into(),
        ..notice(&order, "SBX-0004", 1_000)
    };
    assert!(matches!(
        credit(stray).await,
        Credited::Suspense { order: None, .. }
    ));
    assert_eq!(balance(&app.db.pool, &schema, "suspense").await, 8_999);

    // An order whose time ran out, paid late: still credited, and flagged.
    let late = create(2_000).await.unwrap();
    clock.advance(chrono::Duration::seconds(orders::ORDER_VALID_S + 1));
    let mut tx = in_tx().await.unwrap();
    assert_eq!(orders::expire_due(&mut tx, who.now()).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let done = credit(notice(&late, "SBX-0005", 2_000)).await;
    assert!(
        matches!(
            done,
            Credited::Wallet {
                flag: Some("paid_after_expiry"),
                ..
            }
        ),
        "{done:?}"
    );
    assert_eq!(balance(&app.db.pool, &schema, &wallet).await, 5_000);
    assert_eq!(
        balance(&app.db.pool, &schema, "clearing:sandbox").await,
        -13_999
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_tenant_orders_only_for_their_own_account_and_a_payment_after_the_close_is_owed_back() {
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("payco2").await;
    let (shop, meter) = crate::money::shop_with_meter(&app, &admin, "302").await;
    let account: Uuid = crate::money::open_account(&app, &admin, &shop, &meter)
        .await
        .parse()
        .unwrap();
    let (other_shop, other_meter) = crate::money::shop_with_meter(&app, &admin, "303").await;
    let other: Uuid = crate::money::open_account(&app, &admin, &other_shop, &other_meter)
        .await
        .parse()
        .unwrap();
    let schema = format!("c_{company}");
    let scope = {
        let mut conn = app.db.pool.acquire().await.unwrap();
        powertab_core::auth::load_company(&mut conn, company)
            .await
            .unwrap()
            .unwrap()
    };
    // The tenant of shop 302 (linked to its account only).
    let (tenant_id, _) = app
        .user(&admin, "payco2", "13900139000", "shop_tenant", &[])
        .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/accounts/{account}/users"),
            &admin,
            json!({"user_id": tenant_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let tenant_id: Uuid = tenant_id.parse().unwrap();
    let mut tenant = Principal::system("tenant", clock::system()).in_company(scope.clone());
    tenant.role = powertab_core::tenancy::roles::Role::ShopTenant;
    tenant.user_id = tenant_id;
    tenant.rights = vec![];
    let mut tx = powertab_core::db::begin_in(&app.db.pool, &tenant.company().unwrap().schema)
        .await
        .unwrap();
    let theirs = orders::create(
        &mut tx,
        &tenant,
        other,
        Provider::Sandbox,
        AmountFen::from_fen(1_000),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(
        theirs.to_string(),
        powertab_core::CoreError::NotFound("account").to_string()
    );
    let order = orders::create(
        &mut tx,
        &tenant,
        account,
        Provider::Sandbox,
        AmountFen::from_fen(1_000),
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // The account closes before the payment's notice arrives: the money is owed back.
    let (status, body) = app
        .post_keyed(
            &format!("/api/v1/accounts/{account}/close"),
            &admin,
            "close-before-pay",
            json!({"final_readings": [{"meter_id": meter, "energy_wh": 1_000_000}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let system = Principal::system("payments", clock::system()).in_company(scope);
    let mut tx = powertab_core::db::begin_in(&app.db.pool, &system.company().unwrap().schema)
        .await
        .unwrap();
    let done = orders::credit(
        &mut tx,
        &system,
        &PaidNotice {
            provider: Provider::Sandbox,
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: "SBX-CLOSED-1".into(),
            amount_fen: AmountFen::from_fen(1_000),
            paid_at: chrono::Utc::now(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(done, Credited::RefundsPayable { .. }), "{done:?}");
    assert_eq!(
        balance(&app.db.pool, &schema, "refunds_payable").await,
        1_000
    );
    assert_eq!(
        balance(&app.db.pool, &schema, &format!("wallet:{account}")).await,
        0
    );
    let flag: Option<String> = sqlx::query_scalar(&format!(
        "select flag from {schema}.payment_orders where id = $1"
    ))
    .bind(order.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(flag.as_deref(), Some("account_closed"));
    app.assert_ledger_clean().await;
}

/// Posts a sandbox notification for `slug`, signed with `signing_slug`'s key at `timestamp`.
async fn post_notice(
    app: &crate::helpers::TestApp,
    slug: &str,
    signing_slug: &str,
    timestamp: i64,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    use powertab_core::payments::sandbox;
    let key = sandbox::company_key(
        &powertab_core::auth::Secret::new(crate::helpers::TEST_SANDBOX_PAYMENT_KEY),
        signing_slug,
    );
    let ts = timestamp.to_string();
    let nonce = Uuid::now_v7().to_string();
    let response = app
        .http
        .post(app.url(&format!("/api/v1/payments/sandbox/notify/{slug}")))
        .header(
            sandbox::SIGNATURE_HEADER,
            sandbox::sign(&key, &ts, &nonce, body),
        )
        .header(sandbox::TIMESTAMP_HEADER, &ts)
        .header(sandbox::NONCE_HEADER, &nonce)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn sandbox_notifications_are_believed_only_signed_fresh_and_for_their_company_and_book_once()
{
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("sbx-co").await;
    let (other_company, _) = app.company_with_admin("sbx-other").await;
    let (shop, meter) = crate::money::shop_with_meter(&app, &admin, "311").await;
    let account = crate::money::open_account(&app, &admin, &shop, &meter).await;
    let schema = format!("c_{company}");
    let orders_path = format!("/api/v1/accounts/{account}/payment-orders");

    // The sandbox is off until a platform admin switches it on (audited); company staff cannot.
    let (status, body) = app
        .post(
            &orders_path,
            &admin,
            json!({"provider": "sandbox", "amount_fen": 2_000}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let switch = format!("/api/v1/platform/companies/{company}/sandbox-payments");
    let (status, _) = app.post(&switch, &admin, json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let root = app.root().await;
    let (status, body) = app.post(&switch, &root, json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from control.audit_log where action = 'company.sandbox_payments'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap_or(0);
    let audited_here: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {schema}.audit_log where action = 'company.sandbox_payments'"
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap_or(0);
    assert!(audited + audited_here >= 1, "the switch is audited");
    let (status, order) = app
        .post(
            &orders_path,
            &admin,
            json!({"provider": "sandbox", "amount_fen": 2_000}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let body = serde_json::to_vec(&json!({
        "out_trade_no": order["out_trade_no"], "transaction_id": "SBX-N-1", "amount_fen": 2_000,
        "paid_at_ms": chrono::Utc::now().timestamp_millis(), "trade_state": "SUCCESS"}))
    .unwrap();
    let now = chrono::Utc::now().timestamp();

    // Refused: signed for another company, a stale timestamp, a company without the sandbox,
    // no signature at all.
    let (status, answer) = post_notice(&app, "sbx-co", "sbx-other", now, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("FAIL"))
    );
    let (status, _) = post_notice(&app, "sbx-co", "sbx-co", now - 301, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post_notice(&app, "sbx-other", "sbx-other", now, &body).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "company {other_company} takes no sandbox payments"
    );
    let unsigned = app
        .http
        .post(app.url("/api/v1/payments/sandbox/notify/sbx-co"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let kept: i64 = sqlx::query_scalar("select count(*) from control.payment_inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "nothing refused is kept");

    // The good one, three times (a provider retries): kept each time, booked once.
    for _ in 0..3 {
        let (status, answer) = post_notice(&app, "sbx-co", "sbx-co", now, &body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::OK, Some("SUCCESS"))
        );
    }
    let booked = powertab_testkit::wait_until(std::time::Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from control.payment_inbox where state <> 'processed'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        waiting == 0
    })
    .await;
    assert!(booked, "every notification is processed");
    assert_eq!(
        balance(&app.db.pool, &schema, &format!("wallet:{account}")).await,
        2_000
    );
    let (_, seen) = app
        .get(&format!("/api/v1/accounts/{account}"), &admin)
        .await;
    assert_eq!(crate::money::fen(&seen, "available_fen"), 2_000, "{seen}");
    let state: String = sqlx::query_scalar(&format!(
        "select state from {schema}.payment_orders where out_trade_no = $1"
    ))
    .bind(order["out_trade_no"].as_str().unwrap())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(state, "credited");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_sandbox_pay_page_pays_an_order_through_a_signed_notice_and_the_wallet_gets_it_once() {
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("sbx-pay").await;
    let (shop, meter) = crate::money::shop_with_meter(&app, &admin, "321").await;
    let account = crate::money::open_account(&app, &admin, &shop, &meter).await;
    let root = app.root().await;
    let (status, _) = app
        .post(
            &format!("/api/v1/platform/companies/{company}/sandbox-payments"),
            &root,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, order) = app
        .post(
            &format!("/api/v1/accounts/{account}/payment-orders"),
            &admin,
            json!({"provider": "sandbox", "amount_fen": 8_800}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let page = format!(
        "/sandbox/pay/sbx-pay/{}",
        order["out_trade_no"].as_str().unwrap()
    );
    assert_eq!(
        order["pay_url"],
        page.as_str(),
        "the order says where to pay"
    );
    let client = crate::web::browser_like();
    let html = crate::web::page(&app, &client, &page).await;
    assert!(
        html.contains("¥88.00") && html.contains("sandbox-pay"),
        "{html}"
    );
    // Paid twice (a double click): one payment, one credit.
    for _ in 0..2 {
        let (status, location) = crate::web::post_form(&app, &client, &page, &page, &[]).await;
        assert!(status.is_redirection(), "{status}");
        assert_eq!(
            location,
            format!("/my/orders/{}", order["id"].as_str().unwrap()),
            "back to the order's progress page"
        );
    }
    let credited = powertab_testkit::wait_until(std::time::Duration::from_secs(10), || async {
        crate::web::page(&app, &client, &page)
            .await
            .contains("sandbox-paid")
    })
    .await;
    assert!(credited, "the page shows the order paid and credited");
    let schema = format!("c_{company}");
    let (_, seen) = app
        .get(&format!("/api/v1/accounts/{account}"), &admin)
        .await;
    assert_eq!(crate::money::fen(&seen, "available_fen"), 8_800, "{seen}");
    assert_eq!(
        balance(&app.db.pool, &schema, "clearing:sandbox").await,
        -8_800
    );
    assert_eq!(
        balance(&app.db.pool, &schema, "suspense").await,
        0,
        "not paid twice"
    );
    // Another company's order number, or a company without the sandbox: no page.
    let (other, _) = app.company_with_admin("sbx-none").await;
    let missing = app
        .http
        .get(app.url(&format!(
            "/sandbox/pay/sbx-none/{}",
            order["out_trade_no"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND, "company {other}");
    app.assert_ledger_clean().await;
}

/// A notice that never came: the payments worker's order query finds the payment at the provider
/// and books it once (a late notice then changes nothing); an unpaid order that expired is
/// closed at the provider and can no longer be paid; one paid at the last second before the
/// close is credited and flagged.
#[tokio::test]
async fn the_order_query_books_a_payment_whose_notice_was_lost_and_closes_expired_orders() {
    use powertab_core::payments::query::{self, TradeState};
    let app = spawn_app().await;
    let root = app.root().await;
    let (company, admin) = app.company_with_admin("sbx-query").await;
    let (shop, meter) = crate::money::shop_with_meter(&app, &admin, "321").await;
    let account = crate::money::open_account(&app, &admin, &shop, &meter).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/platform/companies/{company}/sandbox-payments"),
            &root,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let schema = format!("c_{company}");
    let order = |fen: i64| {
        let (app, admin, account) = (&app, &admin, account.clone());
        async move {
            let (status, order) = app
                .post(
                    &format!("/api/v1/accounts/{account}/payment-orders"),
                    admin,
                    json!({"provider": "sandbox", "amount_fen": fen}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{order}");
            order
        }
    };
    let lost = order(1_100).await;
    let expired = order(1_200).await;
    let last_second = order(1_300).await;
    let trade_no = |o: &serde_json::Value| o["out_trade_no"].as_str().unwrap().to_owned();
    let t0 = chrono::Utc::now();
    let mut conn = app.db.pool.acquire().await.unwrap();
    // The tenant paid the first at the provider; its notice is lost.
    let paid = query::sandbox_pay(
        &mut conn,
        company,
        &trade_no(&lost),
        AmountFen::from_fen(1_100),
        t0,
    )
    .await
    .unwrap();
    assert!(paid.is_some());
    drop(conn);
    let pass = |at: chrono::DateTime<chrono::Utc>| {
        let app = &app;
        async move {
            let clock = clock::ManualClock::at(at);
            let mut conn = app.db.pool.acquire().await.unwrap();
            let scope = powertab_core::auth::load_company(&mut conn, company)
                .await
                .unwrap()
                .unwrap();
            drop(conn);
            let who = Principal::system("payments", clock).in_company(scope);
            let mut tx = powertab_core::db::begin_in(&app.db.pool, &who.company().unwrap().schema)
                .await
                .unwrap();
            orders::expire_due(&mut tx, at).await.unwrap();
            let report = query::query_unnotified(&mut tx, &who).await.unwrap();
            tx.commit().await.unwrap();
            report
        }
    };
    // Too young to ask about: the notice may still come.
    assert_eq!(pass(t0).await.asked, 0);
    let report = pass(t0 + chrono::Duration::seconds(61)).await;
    assert_eq!(
        (report.asked, report.credited, report.closed),
        (3, 1, 0),
        "{report:?}"
    );
    let wallet = format!("wallet:{account}");
    assert_eq!(balance(&app.db.pool, &schema, &wallet).await, 1_100);
    // Asked again within the minute: not at all; the late notice: booked already.
    assert_eq!(pass(t0 + chrono::Duration::seconds(90)).await.asked, 0);
    let body = serde_json::to_vec(&json!({
        "out_trade_no": trade_no(&lost), "transaction_id": format!("SBX-{}", trade_no(&lost)),
        "amount_fen": 1_100, "paid_at_ms": t0.timestamp_millis(), "trade_state": "SUCCESS"}))
    .unwrap();
    let (status, _) = post_notice(
        &app,
        "sbx-query",
        "sbx-query",
        chrono::Utc::now().timestamp(),
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(balance(&app.db.pool, &schema, &wallet).await, 1_100, "once");

    // Sixteen minutes on, the others expired: one was paid at the provider just before the
    // close (credited, flagged), the other is closed there and can no longer be paid.
    let mut conn = app.db.pool.acquire().await.unwrap();
    query::sandbox_pay(
        &mut conn,
        company,
        &trade_no(&last_second),
        AmountFen::from_fen(1_300),
        t0 + chrono::Duration::minutes(15),
    )
    .await
    .unwrap();
    drop(conn);
    let report = pass(t0 + chrono::Duration::minutes(16)).await;
    assert_eq!(
        (report.asked, report.credited, report.closed),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!(balance(&app.db.pool, &schema, &wallet).await, 1_100 + 1_300);
    let states: Vec<(String, Option<String>, bool)> = sqlx::query_as(&format!(
        "select state, flag, closed_at is not null from {schema}.payment_orders order by amount_fen"
    ))
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        vec![
            ("credited".to_owned(), None, false),
            ("expired".to_owned(), None, true),
            (
                "credited".to_owned(),
                Some("paid_after_expiry".to_owned()),
                false
            ),
        ]
    );
    let mut conn = app.db.pool.acquire().await.unwrap();
    assert_eq!(
        query::sandbox_query(&mut conn, company, &trade_no(&expired))
            .await
            .unwrap(),
        TradeState::Closed
    );
    let refused = query::sandbox_pay(
        &mut conn,
        company,
        &trade_no(&expired),
        AmountFen::from_fen(1_200),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(refused, None, "a closed order cannot be paid");
    drop(conn);
    // A closed order is not asked about again.
    assert_eq!(pass(t0 + chrono::Duration::minutes(30)).await.asked, 0);
    app.assert_ledger_clean().await;
}
