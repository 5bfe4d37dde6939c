//! Benchmark: online payments end to end (issue 14, Benchmarks). Prints its figures;
//! `cargo bench -p powertab-server --bench payments`. Not part of the test suite.
//!
//! The demo property on a fresh database; the HTTP app (its sandbox notify URL), ingest listening
//! for DTUs and the server's workers running; the demo DTU simulated with every reply
//! `2 × PT_BENCH_LINK_DELAY_MS` late (80 ms each way by default) on a 9,600-baud bus. Trip notice
//! 0 s, quiet hours off.
//!
//! 1. **Paid notice → credited → relay verified closed**: `PT_BENCH_TRIALS` (default 30) rounds
//!    on the demo's three DTU meters in turn: the balance refunded to the trip level and the trip
//!    verified, then a ¥20 payment order and its signed sandbox notice POSTed to
//!    `/api/v1/payments/sandbox/notify/demo`; timed from just before the POST to the answer, to
//!    the order reading `credited`, and to the close command reading `verified` (the relay read
//!    back). p50/p99.
//! 2. **`PT_BENCH_BURST` notices at once** (default 1,000: every one of 500 orders notified twice,
//!    all POSTs in flight together): the time until every order is credited, and the proof that
//!    each was credited exactly once (one `pay:sandbox:…` transaction per order, the wallets up by
//!    exactly the orders' sum, the ledger check clean).

mod common;

use common::*;
use powertab_core::auth::{Principal, Secret};
use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::clock;
use powertab_core::kernel::money::AmountFen;
use powertab_core::payments::orders::{self, Provider};
use powertab_core::payments::sandbox;
use powertab_testkit::TestDb;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use uuid::Uuid;

const SANDBOX_KEY: &str = "bench-sandbox-payment-key";

/// The HTTP app on a free port with its own pool of 20 connections (as `powertab serve` has),
/// taking sandbox payments signed with [`SANDBOX_KEY`].
async fn start_app(url: &str) -> SocketAddr {
    let pool = powertab_core::db::connect(url, 20).await.unwrap();
    let config = powertab_server::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: Some(Secret::new("bench-jwt-secret-bench-jwt-secret-0123")),
        sandbox_payment_key: Some(Secret::new(SANDBOX_KEY)),
        db_connections_max: 20,
        ..powertab_server::config::Config::default()
    };
    let state = powertab_server::app::AppState::new(pool, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(powertab_server::app::run(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

async fn counter_move(pool: &sqlx::PgPool, who: &Principal, account: Uuid, refund: AmountFen) {
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let input = CounterInput {
        amount_fen: refund,
        method: CounterMethod::Card,
        reason: "bench".into(),
        meter_id: None,
    };
    let key = Uuid::now_v7().to_string();
    if refund > AmountFen::ZERO {
        counter::refund(&mut tx, who, account, &input, &key)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn top_up(pool: &sqlx::PgPool, who: &Principal, account: Uuid, fen: i64) {
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let input = CounterInput {
        amount_fen: AmountFen::from_fen(fen),
        method: CounterMethod::Card,
        reason: String::new(),
        meter_id: None,
    };
    counter::top_up(&mut tx, who, account, &input, &Uuid::now_v7().to_string())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn available(pool: &sqlx::PgPool, who: &Principal, account: Uuid) -> AmountFen {
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    accounts::get(&mut tx, who, account)
        .await
        .unwrap()
        .available_fen
}

/// An account on each of the demo's DTU meters (from their first reading), topped up ¥20.
async fn demo_accounts(pool: &sqlx::PgPool, who: &Principal) -> Vec<(Uuid, Uuid)> {
    let meters: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select m.shop_id, m.id from c_1.meters m join c_1.buses b on b.id = m.bus_id
         join c_1.gateways g on g.id = b.gateway_id where g.identity = 'demo-dtu-01' order by m.address",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut opened = Vec::new();
    for (shop, meter) in meters {
        let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
            .await
            .unwrap();
        let input = OpenAccount {
            shop_id: shop,
            holder_name: "bench".into(),
            holder_phone: String::new(),
            meters: vec![OpeningMeter {
                meter_id: meter,
                manual_energy_wh: None,
                accept_remaining_fen: None,
            }],
            deposit_fen: AmountFen::ZERO,
            deposit_method: None,
            opening_credit_fen: AmountFen::ZERO,
        };
        let account = accounts::open(&mut tx, who, &input, &format!("open-{shop}"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        top_up(pool, who, account.id, 2_000).await;
        opened.push((account.id, meter));
    }
    opened
}

async fn new_order(pool: &sqlx::PgPool, who: &Principal, account: Uuid, fen: i64) -> orders::Order {
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let order = orders::create(
        &mut tx,
        who,
        account,
        Provider::Sandbox,
        AmountFen::from_fen(fen),
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    order
}

/// POSTs the signed sandbox notice of `order` paid; the answer's status.
async fn notify(http: &reqwest::Client, app: SocketAddr, order: &orders::Order) -> u16 {
    let key = sandbox::company_key(&Secret::new(SANDBOX_KEY), "demo");
    let body = serde_json::to_vec(&sandbox::NoticeBody {
        out_trade_no: order.out_trade_no.clone(),
        transaction_id: format!("SBX-{}", order.out_trade_no),
        amount_fen: order.amount_fen.fen(),
        paid_at_ms: chrono::Utc::now().timestamp_millis(),
        trade_state: "SUCCESS".into(),
    })
    .unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let nonce = Uuid::now_v7().to_string();
    http.post(format!("http://{app}/api/v1/payments/sandbox/notify/demo"))
        .header(
            sandbox::SIGNATURE_HEADER,
            sandbox::sign(&key, &ts, &nonce, &body),
        )
        .header(sandbox::TIMESTAMP_HEADER, &ts)
        .header(sandbox::NONCE_HEADER, &nonce)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn order_state(pool: &sqlx::PgPool, id: Uuid) -> String {
    sqlx::query_scalar("select state from c_1.payment_orders where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn report(name: &str, ms: &mut [f64]) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: {} trials, p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms.len(),
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        ms[0],
        ms[ms.len() - 1]
    );
}

async fn latency(
    pool: &sqlx::PgPool,
    who: &Principal,
    app: SocketAddr,
    pairs: &[(Uuid, Uuid)],
    trials: usize,
) {
    let http = reqwest::Client::new();
    let (mut answer_ms, mut credited_ms, mut closed_ms) = (vec![], vec![], vec![]);
    for trial in 0..trials {
        let (account, meter) = pairs[trial % pairs.len()];
        // Power cut first: the balance to the trip level, the trip verified.
        let all = available(pool, who, account).await;
        let (since, started) = (chrono::Utc::now(), Instant::now());
        counter_move(pool, who, account, all).await;
        until_verified(pool, meter, "trip", since, started).await;
        let order = new_order(pool, who, account, 2_000).await;
        let (since, started) = (chrono::Utc::now(), Instant::now());
        let status = notify(&http, app, &order).await;
        answer_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "the notice was not accepted");
        loop {
            if order_state(pool, order.id).await == "credited" {
                credited_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never credited"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        closed_ms.push(until_verified(pool, meter, "close", since, started).await);
    }
    report("paid notice → answered", &mut answer_ms);
    report("paid notice → order credited", &mut credited_ms);
    report("paid notice → relay verified closed", &mut closed_ms);
}

async fn burst(
    pool: &sqlx::PgPool,
    who: &Principal,
    app: SocketAddr,
    pairs: &[(Uuid, Uuid)],
    notices: usize,
) {
    let orders_n = notices.div_ceil(2);
    let mut made = Vec::with_capacity(orders_n);
    for i in 0..orders_n {
        made.push(new_order(pool, who, pairs[i % pairs.len()].0, 100 + i as i64).await);
    }
    let sum_fen: i64 = made.iter().map(|o| o.amount_fen.fen()).sum();
    let wallets_before: i64 = sqlx::query_scalar(
        "select coalesce(sum(amount_fen), 0)::bigint from c_1.ledger_entries where account_key like 'wallet:%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // Every order twice, the duplicates shuffled in among the first notices.
    let mut sends: Vec<&orders::Order> =
        made.iter().chain(made.iter().rev()).take(notices).collect();
    sends.sort_by_key(|o| o.out_trade_no.clone());
    let started = Instant::now();
    let answers = futures::future::join_all(sends.iter().map(|o| notify(&http, app, o))).await;
    let answered_s = started.elapsed().as_secs_f64();
    let ok = answers.iter().filter(|s| **s == 200).count();
    println!(
        "  {ok} of {} notices answered 200 in {answered_s:.2} s",
        answers.len()
    );
    let ids: Vec<Uuid> = made.iter().map(|o| o.id).collect();
    loop {
        let credited: i64 = sqlx::query_scalar(
            "select count(*) from c_1.payment_orders where id = any($1) and state = 'credited'",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .unwrap();
        if credited as usize == ids.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not all credited: {credited}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let credited_s = started.elapsed().as_secs_f64();
    let txns: i64 = sqlx::query_scalar(
        "select count(*) from c_1.ledger_transactions where idempotency_key like 'pay:sandbox:SBX-PT%'",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(-1);
    let wallets_after: i64 = sqlx::query_scalar(
        "select coalesce(sum(amount_fen), 0)::bigint from c_1.ledger_entries where account_key like 'wallet:%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    println!(
        "{notices} notices at once ({orders_n} orders, each twice): {ok} answered 200 in {answered_s:.2} s; \
         all {orders_n} credited in {credited_s:.2} s; pay transactions {txns}; wallets +{} fen for orders worth {sum_fen} fen",
        wallets_after - wallets_before
    );
    assert_eq!(
        wallets_after - wallets_before,
        sum_fen,
        "credited exactly once"
    );
}

#[tokio::main]
async fn main() {
    let delay_ms = env("PT_BENCH_LINK_DELAY_MS", 80);
    let trials = env("PT_BENCH_TRIALS", 30) as usize;
    let notices = env("PT_BENCH_BURST", 1_000) as usize;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    powertab_server::demo::prepare(&pool).await.unwrap();
    sqlx::query(
        "update c_1.settings set trip_notice_s = 0, quiet_start_minute = null,
             quiet_end_minute = null, overdraft_limit_fen = 0, no_trip_on_holidays = false",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("update control.company set sandbox_payments = true where id = 1")
        .execute(&pool)
        .await
        .unwrap();
    let target = free_port().await;
    let ingest = powertab_ingest::IngestConfig {
        dtu_listen: target,
        dial_allow: vec!["127.0.0.0/8".into()],
        ..Default::default()
    };
    let ingest_pool = pool.clone();
    tokio::spawn(async move {
        powertab_ingest::run(ingest_pool, ingest, std::future::pending())
            .await
            .unwrap()
    });
    powertab_server::workers::spawn(
        pool.clone(),
        clock::system(),
        powertab_core::notify::accounts::Vendors::new(Default::default(), None),
        None,
    );
    let app = start_app(&db.url).await;
    tokio::spawn(powertab_ingest::sim::field::dial_forever(
        dtu("DEMO-DTU-01", 1..=3, delay_ms),
        target,
    ));
    let who = worker(&pool).await;
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from c_1.meter_latest l join c_1.meters m on m.id = l.meter_id
             join c_1.buses b on b.id = m.bus_id join c_1.gateways g on g.id = b.gateway_id
             where g.identity = 'demo-dtu-01'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the demo DTU's meters were never read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pairs = demo_accounts(&pool, &who).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("link delay {delay_ms} ms each way, 9600 baud, trip notice 0 s");
    latency(&pool, &who, app, &pairs, trials).await;
    if notices > 0 {
        burst(&pool, &who, app, &pairs, notices).await;
    }
    let reports = powertab_core::billing::ledger::check::check_all(&pool, None)
        .await
        .unwrap();
    for r in &reports {
        assert!(
            r.is_clean(),
            "ledger check of {}: {:#?}",
            r.schema,
            r.violations
        );
    }
    println!("ledger check clean");
}
