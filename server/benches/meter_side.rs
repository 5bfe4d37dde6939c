//! Benchmark: meter-side prepayment end to end (issue 13, Benchmarks). Prints its figures;
//! `cargo bench -p powertab-server --bench meter_side`. Not part of the test suite.
//!
//! The demo property on a fresh database and a meter-side DTSY-1352 on its own DTU, simulated
//! with every reply `2 × PT_BENCH_LINK_DELAY_MS` late (80 ms each way by default) on a 9,600-baud
//! bus; real ingest (`powertab_ingest::run`); the server's workers with a keyring (the settle
//! worker listening on `pt_secure`). **Top-up → credit verified on the meter**: `PT_BENCH_TRIALS`
//! (default 30) counter top-ups of ¥1, each timed from just before the counter's transaction to
//! the moment its purchase reads `verified` (the frame written at 0x0C00, the ack read at 0x0C40
//! and checked under the meter's key, the counters read back at 0x0C60 and matched), polled
//! every 2 ms. p50/p99 (goal p99 ≤ 1.5 s).

mod common;

use common::*;
use powertab_core::auth::Principal;
use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::clock;
use powertab_core::kernel::money::AmountFen;
use powertab_core::kernel::secrets::Keyring;
use powertab_core::tenancy::roles::Role;
use powertab_ingest::sim::secure_meter::SecureMeter;
use powertab_ingest::sim::{DtuFaults, SimBus, SimDtu, SimMeter, SimModel};
use powertab_testkit::TestDb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const NUMBER: &str = "202612029901";
const REGISTRATION: &str = "BENCH-SECURE-01";

/// The meter-side meter on its own DTU gateway and bus, for demo shop 103, on a flat plan.
async fn add_meter(pool: &sqlx::PgPool, who: &Principal) -> (Uuid, Uuid) {
    let (gateway, bus, meter) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let hex: String = REGISTRATION.bytes().map(|b| format!("{b:02x}")).collect();
    sqlx::query("insert into c_1.gateways (id, identity, kind, registration_hex) values ($1, 'bench-secure', 'dtu', $2)")
        .bind(gateway)
        .bind(&hex)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
         values ('bench-secure', $1, 1, $2, 'dtu', 'enabled')",
    )
    .bind(&hex)
    .bind(gateway)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into c_1.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 20, 1000)",
    )
    .bind(bus)
    .bind(gateway)
    .execute(pool)
    .await
    .unwrap();
    let shop: Uuid = sqlx::query_scalar("select id from c_1.shops where number = '103'")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut tx = powertab_core::db::begin_in(pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let plan = powertab_core::tariff::plans::create(
        &mut tx,
        who,
        &powertab_core::tariff::plans::NewPlan {
            name: "表内平价".into(),
            description: String::new(),
            version: powertab_core::tariff::TariffVersion::flat(
                chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
                10_000,
            ),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query(
        "insert into c_1.meters (id, bus_id, model, address, meter_number, prepayment_mode, shop_id, tariff_plan_id)
         values ($1, $2, 'dtsy1352', '1', $3, 'meter', $4, $5)",
    )
    .bind(meter)
    .bind(bus)
    .bind(NUMBER)
    .bind(shop)
    .bind(plan.id)
    .execute(pool)
    .await
    .unwrap();
    (meter, shop)
}

async fn exported_key(pool: &sqlx::PgPool, keyring: &Keyring, meter: Uuid) -> [u8; 16] {
    let mut admin = worker(pool).await;
    admin.role = Role::CompanyAdmin;
    admin.username = "bench".into();
    let mut tx = powertab_core::db::begin_in(pool, &admin.company().unwrap().schema)
        .await
        .unwrap();
    let (_, hex) = powertab_core::secure::keys::export_meter_key(&mut tx, keyring, &admin, meter)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap()
}

async fn wait_sql(pool: &sqlx::PgPool, sql: &str, meter: Uuid, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let done: bool = sqlx::query_scalar(sql)
            .bind(meter)
            .fetch_one(pool)
            .await
            .unwrap();
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::main]
async fn main() {
    let delay_ms = env("PT_BENCH_LINK_DELAY_MS", 80);
    let trials = env("PT_BENCH_TRIALS", 30) as usize;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    powertab_server::demo::prepare(&pool).await.unwrap();
    let who = worker(&pool).await;
    let keyring = Arc::new(Keyring::parse(&Keyring::new_key_entry("bench"), None).unwrap());
    let (meter, shop) = add_meter(&pool, &who).await;
    let km = exported_key(&pool, &keyring, meter).await;
    let mut side = SecureMeter::new(NUMBER, &km).unwrap();
    side.price_units = 10_000;
    let sim = SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        powertab_core::tariff::profile::ShopType::Retail,
        30_000,
        1_000_000,
    )
    .with_secure(side);
    let dtu = SimDtu {
        registration: REGISTRATION.as_bytes().to_vec(),
        heartbeat: vec![],
        heartbeat_every: Duration::from_secs(3600),
        bus: Arc::new(tokio::sync::Mutex::new(SimBus::modbus(vec![sim]))),
        faults: DtuFaults {
            slow_reply_ms: 2 * delay_ms,
            ..DtuFaults::default()
        },
    };
    let target = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
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
        Some(keyring.clone()),
    );
    tokio::spawn(powertab_ingest::sim::field::dial_forever(dtu, target));
    assert!(
        wait_sql(
            &pool,
            "select exists (select 1 from c_1.meter_secure s join c_1.meter_latest l using (meter_id)
               where meter_id = $1 and s.price_units = 10000)",
            meter,
            Duration::from_secs(120),
        )
        .await,
        "the meter was never commissioned"
    );
    let mut tx = powertab_core::db::begin_in(&pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let input = OpenAccount {
        shop_id: shop,
        holder_name: "压测".into(),
        holder_phone: "13800138009".into(),
        meters: vec![OpeningMeter {
            meter_id: meter,
            manual_energy_wh: None,
            accept_remaining_fen: None,
        }],
        deposit_fen: AmountFen::ZERO,
        deposit_method: None,
        opening_credit_fen: AmountFen::ZERO,
    };
    let account = accounts::open(&mut tx, &who, &input, "bench-meter-side")
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    println!("link delay {delay_ms} ms each way, 9600 baud");
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        let started = Instant::now();
        let since = chrono::Utc::now();
        let mut tx = powertab_core::db::begin_in(&pool, &who.company().unwrap().schema)
            .await
            .unwrap();
        let input = CounterInput {
            amount_fen: AmountFen::from_fen(100),
            method: CounterMethod::Card,
            reason: String::new(),
            meter_id: None,
        };
        counter::top_up(&mut tx, &who, account, &input, &Uuid::now_v7().to_string())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        loop {
            let state: Option<String> = sqlx::query_scalar(
                "select state from c_1.commands where meter_id = $1 and op = 'purchase' and created_at >= $2
                 order by created_at desc limit 1",
            )
            .bind(meter)
            .bind(since)
            .fetch_optional(&pool)
            .await
            .unwrap();
            match state.as_deref() {
                Some("verified") => break,
                Some("failed" | "expired" | "cancelled") => panic!("the purchase ended {state:?}"),
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never verified"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "top-up → credit verified on the meter ({trials} trials): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    let (wire_ok, out) = {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_powertab"))
            .args(["ledger", "check"])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert!(wire_ok, "ledger check: {out}");
}
