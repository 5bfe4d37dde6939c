//! Benchmark: one 30-meter Modbus bus at 9600 baud behind a simulated DTU, polled by ingest as
//! fast as the bus allows, against the wire floor (every request and reply byte at 10 bits per
//! character, plus the meters' turnaround and the bus gap). Prints the figures;
//! `cargo bench -p powertab-ingest --bench bus_cycle`. Not part of the test suite.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Field;
use powertab_core::tariff::profile::ShopType;
use powertab_ingest::dtu::{self, DtuConfig};
use powertab_ingest::sim::{DtuFaults, SimBus, SimDtu, SimMeter, SimModel};
use powertab_ingest::writer::Writer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const METERS: u8 = 30;
const RUN: Duration = Duration::from_secs(25);
/// The bus gap the test fixture configures (buses.gap_ms).
const GAP_MS: f64 = 20.0;

#[tokio::main]
async fn main() {
    let field = Field::new("bench", "dtu-1", b"PT-0001", &["modbus_rtu"]).await;
    for a in 1..=METERS {
        field
            .meter(
                0,
                "dtsy1352",
                &a.to_string(),
                &format!("{}", 5000 + u32::from(a)),
            )
            .await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writer, _task) = Writer::start(field.db.pool.clone());
    // An interval far below the sweep time: every meter is due again at once, so the bus
    // never rests and the period of one meter is the sweep time.
    let config = DtuConfig {
        poll_interval: Duration::from_millis(100),
        ..Default::default()
    };
    tokio::spawn(dtu::serve(listener, field.db.pool.clone(), writer, config));
    let meters = (1..=METERS)
        .map(|a| {
            SimMeter::new(
                SimModel::Dtsy1352 { address: a },
                ShopType::Retail,
                50_000,
                1_000_000,
            )
        })
        .collect();
    let dtu = SimDtu {
        registration: b"PT-0001".to_vec(),
        heartbeat: vec![],
        heartbeat_every: Duration::from_secs(3600),
        bus: Arc::new(Mutex::new(SimBus::modbus(meters))),
        faults: DtuFaults::default(),
    };
    let started = Instant::now();
    tokio::spawn(async move { dtu.run(addr).await });
    tokio::time::sleep(RUN).await;
    let elapsed = started.elapsed();
    // Per meter: (readings - 1) periods between its first and last reading.
    let rows: Vec<(i64, f64)> = sqlx::query_as(&format!(
        "select count(*), extract(epoch from max(read_at) - min(read_at))::float8
         from {}.readings group by meter_id",
        field.schema.as_str()
    ))
    .fetch_all(&field.db.pool)
    .await
    .unwrap();
    let periods: Vec<f64> = rows
        .iter()
        .filter(|(n, _)| *n > 1)
        .map(|(n, span)| span / (*n - 1) as f64)
        .collect();
    let sweep_s = periods.iter().sum::<f64>() / periods.len().max(1) as f64;
    let request_bytes = 8.0;
    let reply_bytes = 3.0 + 96.0 + 2.0;
    let wire_s = f64::from(METERS) * (request_bytes + reply_bytes) * 10.0 / 9600.0;
    let floor_s = wire_s + f64::from(METERS) * (10.0 + GAP_MS) / 1000.0;
    let readings: i64 = rows.iter().map(|(n, _)| n).sum();
    println!(
        "bus cycle: {METERS} DTSY-1352 meters, 9600 8N1, 48-register fast read, gap {GAP_MS} ms"
    );
    println!(
        "  run {:.1} s, {readings} readings, {} meters read",
        elapsed.as_secs_f64(),
        rows.len()
    );
    println!("  sweep (period of one meter): {sweep_s:.3} s");
    println!(
        "  wire floor: {wire_s:.3} s bytes only; {floor_s:.3} s with 10 ms turnaround and the gap"
    );
    println!(
        "  overhead over the floor: {:.1} %",
        (sweep_s / floor_s - 1.0) * 100.0
    );
}
