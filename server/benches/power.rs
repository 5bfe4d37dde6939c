//! Benchmark: power follows money end to end (issue: Power follows money, Benchmarks). Prints
//! its figures; `cargo bench -p powertab-server --bench power`. Not part of the test suite.
//!
//! The demo property on a fresh database; ingest listening for DTUs; the server's workers (the
//! power rules listening for wallet changes, the sweep, rating); simulated DTUs whose every reply
//! is `2 × PT_BENCH_LINK_DELAY_MS` late (80 ms each way by default) on a 9,600-baud bus (wire time
//! of every byte at 10 bits, plus the meters' 10 ms turnaround). The trip notice is 0 s and quiet
//! hours are off, so the trip is due the moment the available balance reaches the trip level.
//!
//! 1. **Top-up → relay verified closed** and **balance at the trip level → relay verified open**:
//!    `PT_BENCH_TRIALS` (default 30) rounds on the demo's three DTU meters in turn — a refund of
//!    the whole available balance (available = 0 = the trip level), then a ¥20 top-up — each
//!    timed from just before the counter's transaction to the moment its command reads
//!    `verified` (the relay read back), polled every 2 ms. p50/p99.
//! 2. **One batch trips `PT_BENCH_BATCH_METERS` meters** (default 10,000; 100 per bus, one bus
//!    per DTU, same link delay): the time to start it (one transaction: a command per meter) and
//!    until every command is verified, with polling running on every bus throughout.

mod common;

use common::*;
use powertab_core::auth::Principal;
use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::clock;
use powertab_core::kernel::money::AmountFen;
use powertab_testkit::TestDb;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use uuid::Uuid;

const METERS_PER_BUS: usize = 100;

/// Waits until `sql` (a count) reaches `want`, or `limit` passes.
async fn wait_for(pool: &sqlx::PgPool, sql: &str, want: i64, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if n >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn money(pool: &sqlx::PgPool, who: &Principal, account: Uuid, refund: Option<AmountFen>) {
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let key = Uuid::now_v7().to_string();
    match refund {
        Some(amount) => {
            let input = CounterInput {
                amount_fen: amount,
                method: CounterMethod::Card,
                reason: "bench".into(),
                meter_id: None,
            };
            counter::refund(&mut tx, who, account, &input, &key)
                .await
                .unwrap();
        }
        None => {
            let input = CounterInput {
                amount_fen: AmountFen::from_fen(2_000),
                method: CounterMethod::Card,
                reason: String::new(),
                meter_id: None,
            };
            counter::top_up(&mut tx, who, account, &input, &key)
                .await
                .unwrap();
        }
    }
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

/// Opens an account on each of the demo's DTU meters (from their first reading) and tops it up.
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
        money(pool, who, account.id, None).await;
        opened.push((account.id, meter));
    }
    opened
}

async fn latency(pool: &sqlx::PgPool, who: &Principal, trials: usize) {
    let pairs = demo_accounts(pool, who).await;
    // Let the first top-ups' evaluations settle (nothing to do: the relays are closed).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut trip_ms, mut close_ms) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let (account, meter) = pairs[trial % pairs.len()];
        let all = available(pool, who, account).await;
        let (since, started) = (chrono::Utc::now(), Instant::now());
        money(pool, who, account, Some(all)).await;
        trip_ms.push(until_verified(pool, meter, "trip", since, started).await);
        let (since, started) = (chrono::Utc::now(), Instant::now());
        money(pool, who, account, None).await;
        close_ms.push(until_verified(pool, meter, "close", since, started).await);
    }
    for (name, ms) in [
        (
            "balance at the trip level → relay verified open",
            &mut trip_ms,
        ),
        ("top-up → relay verified closed", &mut close_ms),
    ] {
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
}

/// `meters` bench meters, `METERS_PER_BUS` on the one bus of each bench DTU, each in its own shop,
/// loaded through the import a company uses; the DTUs' registrations.
async fn bench_field(pool: &sqlx::PgPool, who: &Principal, meters: usize) -> Vec<String> {
    use powertab_core::import::{self, ImportKind};
    let dtus = meters.div_ceil(METERS_PER_BUS);
    let mut shops = vec![
        vec!["building", "floor", "number", "name", "area_m2", "status"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
    ];
    let mut gateways = vec![[
        "identity",
        "name",
        "kind",
        "registration",
        "heartbeat",
        "heartbeat_is_hex",
        "bus",
        "protocol",
    ]
    .map(String::from)
    .to_vec()];
    let mut rows = vec![[
        "gateway",
        "bus",
        "model",
        "address",
        "meter_number",
        "building",
        "shop_number",
        "tariff_plan",
    ]
    .map(String::from)
    .to_vec()];
    let registrations: Vec<String> = (0..dtus).map(|d| format!("BENCH-{d:04}")).collect();
    for (d, registration) in registrations.iter().enumerate() {
        gateways.push(
            [
                &format!("bench-dtu-{d:04}"),
                "bench",
                "dtu",
                registration,
                "",
                "",
                "1",
                "modbus_rtu",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    for n in 0..meters {
        let (d, address) = (n / METERS_PER_BUS, n % METERS_PER_BUS + 1);
        let number = format!("B{n:05}");
        shops.push(
            ["演示广场", "1F", &number, "bench", "10", "occupied"]
                .map(String::from)
                .to_vec(),
        );
        rows.push(
            [
                &format!("bench-dtu-{d:04}"),
                "1",
                "dtsy1352",
                &address.to_string(),
                &format!("{}", 70_000_000 + n),
                "演示广场",
                &number,
                "商铺分时电价",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    for (kind, sheet) in [
        (ImportKind::Shops, &shops),
        (ImportKind::Gateways, &gateways),
        (ImportKind::Meters, &rows),
    ] {
        let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
            .await
            .unwrap();
        let report = import::import(&mut tx, who, kind, sheet, false)
            .await
            .unwrap();
        assert!(report.committed, "{kind:?}: {:?}", report.errors);
        tx.commit().await.unwrap();
    }
    registrations
}

async fn batch(
    pool: &sqlx::PgPool,
    who: &Principal,
    target: SocketAddr,
    meters: usize,
    delay_ms: u64,
) {
    let setup = Instant::now();
    sqlx::query(
        "update control.company set max_meters = greatest(max_meters, $1 + 100) where id = 1",
    )
    .bind(i32::try_from(meters).unwrap())
    .execute(pool)
    .await
    .unwrap();
    let registrations = bench_field(pool, who, meters).await;
    for (d, registration) in registrations.iter().enumerate() {
        let on_bus = (meters - d * METERS_PER_BUS).min(METERS_PER_BUS) as u8;
        let sim = dtu(registration, 1..=on_bus, delay_ms);
        tokio::spawn(powertab_ingest::sim::field::dial_forever(sim, target));
    }
    let online = wait_for(
        pool,
        "select count(distinct m.id) from c_1.meters m join c_1.meter_latest l on l.meter_id = m.id
         where m.meter_number like '7%'",
        meters as i64,
        Duration::from_secs(300),
    )
    .await;
    println!(
        "batch field: {meters} meters on {} DTUs imported and {} read in {:.0} s",
        registrations.len(),
        if online { "all" } else { "NOT all" },
        setup.elapsed().as_secs_f64()
    );
    let selection = powertab_core::power::batch::Selection {
        q: Some("B".into()),
        ..Default::default()
    };
    let started = Instant::now();
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let progress =
        powertab_core::power::batch::start(&mut tx, who, None, "trip", &selection, meters)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let start_s = started.elapsed().as_secs_f64();
    let mut last_report = Instant::now();
    let done = loop {
        let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
            .await
            .unwrap();
        let now = powertab_core::power::batch::progress(&mut tx, who, progress.id)
            .await
            .unwrap();
        drop(tx);
        if now.finished {
            break now;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  … {:.0} s: {:?}",
                started.elapsed().as_secs_f64(),
                now.states
            );
            last_report = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the batch never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "batch trip of {meters} meters: started (one transaction) in {start_s:.2} s; all final in {:.1} s: {:?}",
        started.elapsed().as_secs_f64(),
        done.states
    );
}

#[tokio::main]
async fn main() {
    let delay_ms = env("PT_BENCH_LINK_DELAY_MS", 80);
    let trials = env("PT_BENCH_TRIALS", 30) as usize;
    let batch_meters = env("PT_BENCH_BATCH_METERS", 10_000) as usize;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    powertab_server::demo::prepare(&pool).await.unwrap();
    // The trip is due the moment the balance reaches the trip level (0), day or night.
    sqlx::query(
        "update c_1.settings set trip_notice_s = 0, quiet_start_minute = null,
             quiet_end_minute = null, overdraft_limit_fen = 0, no_trip_on_holidays = false",
    )
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
    tokio::spawn(powertab_ingest::sim::field::dial_forever(
        dtu("DEMO-DTU-01", 1..=3, delay_ms),
        target,
    ));
    let who = worker(&pool).await;
    assert!(
        wait_for(
            &pool,
            "select count(*) from c_1.meter_latest l join c_1.meters m on m.id = l.meter_id
             where m.meter_number like '2026%'",
            3,
            Duration::from_secs(90),
        )
        .await,
        "the demo DTU's meters were never read"
    );
    println!("link delay {delay_ms} ms each way, 9600 baud, trip notice 0 s");
    latency(&pool, &who, trials).await;
    if batch_meters > 0 {
        batch(&pool, &who, target, batch_meters, delay_ms).await;
    }
}
