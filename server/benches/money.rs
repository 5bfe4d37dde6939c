//! Benchmark of the money path (issue: prepaid money; DESIGN.md: Money and the ledger). Prints
//! its figures; `cargo bench -p powertab-server --bench money`. Not part of the test suite.
//!
//! 1. **Rating + posting**: charge lines per second of one rating worker pass over `PT_BENCH_METERS`
//!    meters (default 2,000) with `PT_BENCH_READINGS` stored readings each (default 10) under the
//!    demo's TOU plan, each meter's lines then posted as one ledger transaction; the worker
//!    process's CPU time beside it. Then `PT_BENCH_REPLAY` readings (default 200,000) arrive
//!    again through ingest's `store_batch` and a second pass must add 0 lines and 0 debits.
//! 2. **Counter**: top-ups through the HTTP API from 32 concurrent clients on 32 wallets and on
//!    one hot wallet (p50/p99), next to the same core transaction (`counter::top_up`) run bare
//!    from 32 tasks in the same run.

use chrono::{Duration, DurationRound, Utc};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::clock::ManualClock;
use powertab_core::kernel::money::AmountFen;
use powertab_testkit::TestDb;
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

const CLIENTS: usize = 32;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU seconds of this process so far.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i]
}

async fn principal(
    pool: &sqlx::PgPool,
    clock: std::sync::Arc<ManualClock>,
) -> powertab_core::auth::Principal {
    let mut conn = pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    powertab_core::auth::Principal::system("bench", clock).in_company(scope)
}

/// `meters` shops, each with a platform-side meter on the demo's bus and TOU plan, and an open
/// account whose rating starts at `t0`; the account ids in shop order.
async fn accounts(
    pool: &sqlx::PgPool,
    meters: i64,
    t0: chrono::DateTime<Utc>,
) -> Vec<(Uuid, Uuid)> {
    sqlx::query(
        "insert into c_1.shops (id, building_id, floor_id, number, name)
       select gen_random_uuid(), f.building_id, f.id, 'B' || g, 'bench'
       from generate_series(1, $1) g, (select id, building_id from c_1.floors limit 1) f",
    )
    .bind(meters)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into c_1.meters (id, bus_id, model, address, meter_number, shop_id, tariff_plan_id)
       select gen_random_uuid(), (select id from c_1.buses limit 1), 'dtsy1352', (1000 + s.n)::text,
              (5000000 + s.n)::text, s.id, (select id from c_1.tariff_plans limit 1)
       from (select id, substr(number, 2)::int as n from c_1.shops where name = 'bench') s",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("insert into c_1.shop_accounts (id, shop_id, holder_name, opened_at, open_key, open_request_hash)
       select gen_random_uuid(), id, 'bench', $1, 'bench-' || id, '' from c_1.shops where name = 'bench'")
    .bind(t0)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("insert into c_1.account_meters (account_id, meter_id, opening_energy_wh, opening_read_at, joined_at)
       select a.id, m.id, 1000000, $1, $1 from c_1.shop_accounts a join c_1.meters m on m.shop_id = a.shop_id
       where a.holder_name = 'bench'")
    .bind(t0)
    .execute(pool)
    .await
    .unwrap();
    // Fees are not measured here: mark them done.
    sqlx::query("insert into c_1.rating_state (account_id, meter_id, last_read_at, last_energy_wh, from_opening, fees_through)
       select account_id, meter_id, $1, 1000000, false, current_date + 1 from c_1.account_meters")
    .bind(t0)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_as("select a.id, am.meter_id from c_1.shop_accounts a join c_1.account_meters am on am.account_id = a.id
                    join c_1.shops s on s.id = a.shop_id where a.holder_name = 'bench' order by substr(s.number, 2)::int")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn rating(pool: &sqlx::PgPool, pairs: &[(Uuid, Uuid)], t0: chrono::DateTime<Utc>) {
    let readings = env("PT_BENCH_READINGS", 10);
    // Readings 30 s apart, 100 Wh each, counted as ingest counts them.
    sqlx::query(
        "insert into c_1.readings (meter_id, read_at, energy_wh, counted_wh)
         select am.meter_id, $1 + make_interval(secs => 30 * k), 1000000 + 100 * k, 100
         from c_1.account_meters am, generate_series(1, $2) k",
    )
    .bind(t0)
    .bind(readings)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("analyze").execute(pool).await.unwrap();
    let clock = ManualClock::at(t0 + Duration::seconds(30 * readings + 60));
    let worker = principal(pool, clock.clone()).await;
    // Pass 1 rates (the lines wait for their batch); pass 2, five minutes on, posts them.
    let (cpu, started) = (cpu_s(), Instant::now());
    let rated = powertab_core::billing::rating::run_pass(pool, &worker)
        .await
        .unwrap();
    let rate_s = started.elapsed().as_secs_f64();
    clock.advance(Duration::seconds(600));
    let posting = Instant::now();
    let posted = powertab_core::billing::rating::run_pass(pool, &worker)
        .await
        .unwrap();
    let post_s = posting.elapsed().as_secs_f64();
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_s() - cpu);
    println!(
        "rating: {} meters, {} charge lines in {rate_s:.2} s = {:.0} lines/s; posting: {} transactions in {post_s:.2} s = {:.0}/s; \
         rating + posting {:.0} lines/s; worker CPU {cpu:.2} s of {wall:.2} s ({:.0}% of one core; the rest is PostgreSQL)",
        rated.meters,
        rated.readings_rated,
        rated.readings_rated as f64 / rate_s,
        posted.postings,
        posted.postings as f64 / post_s,
        rated.readings_rated as f64 / wall,
        100.0 * cpu / wall
    );
    assert_eq!(rated.readings_rated, pairs.len() as u64 * readings as u64);
    assert_eq!(posted.postings, pairs.len() as u64);

    // Replays: the same readings again through ingest, then a pass: nothing more.
    let replay = env("PT_BENCH_REPLAY", 200_000) as usize;
    let rows: Vec<(Uuid, chrono::DateTime<Utc>, i64)> = sqlx::query_as(
        "select meter_id, read_at, energy_wh from c_1.readings order by read_at, meter_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let schema = powertab_core::kernel::names::SchemaName::from_stored("c_1").unwrap();
    let before: i64 = sqlx::query_scalar("select coalesce(sum(amount_fen), 0)::bigint from c_1.ledger_entries where account_key = 'revenue:energy'")
        .fetch_one(pool)
        .await
        .unwrap();
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < replay {
        let batch: Vec<powertab_ingest::store::NewReading> = rows
            .iter()
            .cycle()
            .skip(sent % rows.len())
            .take(2_000.min(replay - sent))
            .map(|(meter, at, energy)| powertab_ingest::store::NewReading {
                meter_id: *meter,
                read_at: *at,
                values: powertab_ingest::driver::MeterValues {
                    energy_wh: *energy,
                    tou_wh: None,
                    power_w: Some(12_000),
                    voltage_dv: vec![],
                    current_ca: vec![],
                    pf_milli: None,
                    remaining_fen: None,
                    purchase_count: None,
                    relay_closed: Some(true),
                    alarms: vec![],
                    meter_ratios: None,
                    secure: None,
                },
                raw: vec![],
                ratio_mismatch: false,
            })
            .collect();
        sent += batch.len();
        // Old readings are refused by age after 90 days; these are an hour old.
        let _ = powertab_ingest::store::store_batch(pool, &schema, &batch).await;
    }
    let replayed_s = started.elapsed().as_secs_f64();
    let clock = ManualClock::at(Utc::now() + Duration::hours(1));
    let again = powertab_core::billing::rating::run_pass(pool, &principal(pool, clock).await)
        .await
        .unwrap();
    let after: i64 = sqlx::query_scalar("select coalesce(sum(amount_fen), 0)::bigint from c_1.ledger_entries where account_key = 'revenue:energy'")
        .fetch_one(pool)
        .await
        .unwrap();
    println!(
        "replay: {sent} readings again through store_batch in {replayed_s:.1} s; the next pass rated {} and posted {}; revenue moved by {} fen",
        again.readings_rated,
        again.postings,
        after - before
    );
    assert_eq!(
        (again.readings_rated, after - before),
        (0, 0),
        "replays add nothing"
    );
}

/// 32 clients × `each` top-ups through `send`, client i on wallet `wallet(i)`; (top-ups/s, p50
/// ms, p99 ms).
async fn hammer<F, Fut>(each: usize, send: F) -> (f64, f64, f64)
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = vec![];
    for client in 0..CLIENTS {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut ms = Vec::with_capacity(each);
            for i in 0..each {
                let t = Instant::now();
                send(client, i).await;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            ms
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    (
        all.len() as f64 / wall,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
    )
}

async fn counter_bench(db: &TestDb, pairs: &[(Uuid, Uuid)]) {
    let each = env("PT_BENCH_TOP_UPS", 100) as usize;
    let config = powertab_server::config::Config {
        jwt_secret: Some(powertab_core::auth::Secret::new(
            "bench-jwt-secret-at-least-32-bytes-long",
        )),
        ..Default::default()
    };
    let pool_size = config.db_connections_max;
    let pool = powertab_core::db::connect(&db.url, pool_size)
        .await
        .unwrap();
    let state = powertab_server::app::AppState::new(pool.clone(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(powertab_server::app::run(
        listener,
        state,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"company": "demo", "username": "admin", "password": powertab_server::demo::DEMO_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let wallets: Vec<Uuid> = pairs.iter().take(CLIENTS).map(|(a, _)| *a).collect();
    let api = |hot: bool, tag: &'static str| {
        let (http, base, token, wallets) =
            (http.clone(), base.clone(), token.clone(), wallets.clone());
        move |client: usize, i: usize| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            let account = wallets[if hot { 0 } else { client }];
            async move {
                let r = http
                    .post(format!("{base}/api/v1/accounts/{account}/top-up"))
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("{tag}-{client}-{i}"))
                    .json(&json!({"amount_fen": 100, "method": "card"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::CREATED);
            }
        }
    };
    let cashier = {
        let mut conn = pool.acquire().await.unwrap();
        let scope = powertab_core::auth::load_company(&mut conn, 1)
            .await
            .unwrap()
            .unwrap();
        powertab_core::auth::Principal::system("bench", powertab_core::kernel::clock::system())
            .in_company(scope)
    };
    let bare = |hot: bool, tag: &'static str| {
        let (pool, wallets, cashier) = (pool.clone(), wallets.clone(), cashier.clone());
        move |client: usize, i: usize| {
            let (pool, account, p) = (
                pool.clone(),
                wallets[if hot { 0 } else { client }],
                cashier.clone(),
            );
            async move {
                let schema = p.company().unwrap().schema.clone();
                let mut tx = powertab_core::db::begin_in(&pool, &schema).await.unwrap();
                let input = CounterInput {
                    amount_fen: AmountFen::from_fen(100),
                    method: CounterMethod::Card,
                    reason: String::new(),
                    meter_id: None,
                };
                counter::top_up(&mut tx, &p, account, &input, &format!("{tag}-{client}-{i}"))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    };
    for (name, hot) in [("32 wallets", false), ("one hot wallet", true)] {
        let (api_rate, api_p50, api_p99) =
            hammer(each, api(hot, if hot { "api-hot" } else { "api" })).await;
        let (bare_rate, bare_p50, bare_p99) =
            hammer(each, bare(hot, if hot { "bare-hot" } else { "bare" })).await;
        println!(
            "counter, {name}: API {api_rate:.0} top-ups/s (p50 {api_p50:.1} ms, p99 {api_p99:.1} ms); bare {bare_rate:.0}/s (p50 {bare_p50:.1} ms, p99 {bare_p99:.1} ms); API/bare {:.2}×",
            api_rate / bare_rate
        );
    }
    let reports = powertab_core::billing::ledger::check::check_all(&pool, None)
        .await
        .unwrap();
    assert!(reports.iter().all(|r| r.is_clean()), "{reports:?}");
    println!("ledger check: clean");
}

#[tokio::main]
async fn main() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool).await.unwrap();
    let t0 = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let pairs = accounts(&db.pool, env("PT_BENCH_METERS", 2_000), t0).await;
    rating(&db.pool, &pairs, t0).await;
    counter_bench(&db, &pairs).await;
}
