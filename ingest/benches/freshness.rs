//! Benchmark: p99 reading age with many simulated meters in one process (DESIGN.md: Ingest,
//! Freshness: p99 ≤ 60 s at the default 30 s interval). `PT_BENCH_METERS` meters (default
//! 10,000) on simulated DTUs of 32 Acrel meters each dial in to ingest on 127.0.0.1; after a
//! warm-up of two poll intervals the age of every meter's newest reading is sampled every 5 s.
//! Prints p50/p99/max age, readings/s, CPU time and peak memory of the process.
//! `PT_BENCH_METERS=100000 cargo bench -p powertab-ingest --bench freshness`. Not in CI.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Field;
use powertab_core::tariff::profile::ShopType;
use powertab_ingest::dtu::{self, DtuConfig};
use powertab_ingest::sim::field::dial_forever;
use powertab_ingest::sim::{DtuFaults, SimBus, SimDtu, SimMeter, SimModel};
use powertab_ingest::writer::Writer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const PER_BUS: usize = 32;
const INTERVAL: Duration = Duration::from_secs(30);

fn proc_status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim().to_owned())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let meters: usize = std::env::var("PT_BENCH_METERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dtus = meters.div_ceil(PER_BUS);
    let field = Field::new("bench", "dtu-seed", b"SEED", &["modbus_rtu"]).await;
    let s = field.schema.as_str();
    let pool = &field.db.pool;
    // Gateways, buses and meters in bulk (the services' checks are not what is measured).
    sqlx::query(&format!(
        "insert into {s}.gateways (id, identity, kind, registration_hex)
         select gen_random_uuid(), 'dtu-' || g, 'dtu', encode(('REG-' || lpad(g::text, 6, '0'))::bytea, 'hex')
         from generate_series(1, $1) g"
    ))
    .bind(dtus as i32)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
         select identity, registration_hex, $1, id, 'dtu', 'enabled' from {s}.gateways where identity ~ '^dtu-[0-9]+$'"
    ))
    .bind(field.company_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         select gen_random_uuid(), id, 1, 'modbus_rtu', 9600, 'N', 1, 20, 500 from {s}.gateways where identity ~ '^dtu-[0-9]+$'"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {s}.meters (id, bus_id, model, address, meter_number)
         select gen_random_uuid(), b.id, 'dtsy1352', a::text, (1000000 + row_number() over ())::text
         from {s}.buses b join {s}.gateways g on g.id = b.gateway_id, generate_series(1, $1) a
         where g.identity ~ '^dtu-[0-9]+$'"
    ))
    .bind(PER_BUS as i32)
    .execute(pool)
    .await
    .unwrap();
    let configured: i64 = sqlx::query_scalar(&format!("select count(*) from {s}.meters"))
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(configured as usize, dtus * PER_BUS);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writer, _task) = Writer::start(pool.clone());
    tokio::spawn(dtu::serve(
        listener,
        pool.clone(),
        writer,
        DtuConfig {
            poll_interval: INTERVAL,
            ..Default::default()
        },
    ));
    let cpu_start = common::cpu_s();
    let started = Instant::now();
    for g in 1..=dtus {
        let meters = (1..=PER_BUS as u8)
            .map(|a| {
                SimMeter::new(
                    SimModel::Dtsy1352 { address: a },
                    ShopType::ALL[g % 4],
                    60_000,
                    1_000_000,
                )
            })
            .collect();
        let dtu = SimDtu {
            registration: format!("REG-{g:06}").into_bytes(),
            heartbeat: vec![],
            heartbeat_every: Duration::from_secs(3600),
            bus: Arc::new(Mutex::new(SimBus::modbus(meters))),
            faults: DtuFaults::default(),
        };
        tokio::spawn(dial_forever(dtu, addr));
    }
    tokio::time::sleep(INTERVAL * 2).await;
    let mut p99s = Vec::new();
    let mut worst = 0.0f64;
    let mut p50s = Vec::new();
    let readings_before: i64 = sqlx::query_scalar(&format!("select count(*) from {s}.readings"))
        .fetch_one(pool)
        .await
        .unwrap();
    let window = Instant::now();
    for _ in 0..12 {
        let ages: Vec<f64> = sqlx::query_scalar(&format!(
            "select extract(epoch from now() - coalesce(l.read_at, '-infinity'))::float8
             from {s}.meters m left join {s}.meter_latest l on l.meter_id = m.id order by 1"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        let at = |q: f64| ages[((ages.len() as f64 * q) as usize).min(ages.len() - 1)];
        p50s.push(at(0.5));
        p99s.push(at(0.99));
        worst = worst.max(*ages.last().unwrap());
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let readings_after: i64 = sqlx::query_scalar(&format!("select count(*) from {s}.readings"))
        .fetch_one(pool)
        .await
        .unwrap();
    let rate = (readings_after - readings_before) as f64 / window.elapsed().as_secs_f64();
    let cpu = common::cpu_s() - cpu_start;
    let wall = started.elapsed().as_secs_f64();
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "freshness: {configured} meters on {dtus} simulated DTUs (32 per bus), interval {} s",
        INTERVAL.as_secs()
    );
    println!("  p50 age (worst sample): {:.1} s", max(&p50s));
    println!("  p99 age (worst sample): {:.1} s", max(&p99s));
    println!("  oldest reading seen: {worst:.1} s");
    println!(
        "  readings stored: {rate:.0}/s (expected {:.0}/s)",
        configured as f64 / INTERVAL.as_secs_f64()
    );
    println!(
        "  CPU: {cpu:.1} s over {wall:.0} s wall ({:.0} % of one core), peak RSS {}",
        cpu / wall * 100.0,
        proc_status("VmHWM:")
    );
    println!("  (simulator and ingest share this process and the machine's cores with PostgreSQL)");
}
