//! Benchmark: readings per second from `store_batch` (validation, duplicate skipping, partitioned
//! insert, latest state and daily energy) against a raw `COPY` of the same rows into a plain
//! table in the same run. Prints the figures; `cargo bench -p powertab-ingest --bench store_rate`.
//! Not part of the test suite.

#[path = "../tests/common/mod.rs"]
mod common;

use chrono::{Duration, DurationRound, Utc};
use common::Field;
use powertab_ingest::driver::MeterValues;
use powertab_ingest::store::{store_batch, NewReading};
use std::time::Instant;

const METERS: usize = 2_000;
const ROUNDS: usize = 25;
const BATCH: usize = 2_000;

#[tokio::main]
async fn main() {
    let field = Field::new("bench", "dtu-1", b"PT-0001", &["modbus_rtu"]).await;
    let s = field.schema.as_str();
    // Meters straight into the table (the bus check of the service is not what is measured).
    sqlx::query(&format!(
        "insert into {s}.meters (id, bus_id, model, address, meter_number)
         select gen_random_uuid(), $1, 'dtsy1352', g::text, (100000 + g)::text from generate_series(1, $2) g"
    ))
    .bind(field.buses[0])
    .bind(METERS as i32)
    .execute(&field.db.pool)
    .await
    .unwrap();
    let meter_ids: Vec<uuid::Uuid> =
        sqlx::query_scalar(&format!("select id from {s}.meters order by address"))
            .fetch_all(&field.db.pool)
            .await
            .unwrap();
    let t0 = (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    // The command queue the writer verifies against in the same transaction: a history of
    // finished commands (`PT_BENCH_HISTORY`, default 0) and open `read_now` commands sent just
    // before the run (`PT_BENCH_OPEN`, default 0; one per meter at most), which the first
    // reading of their meter verifies.
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let (history, open) = (
        env("PT_BENCH_HISTORY"),
        env("PT_BENCH_OPEN").min(METERS as i64),
    );
    sqlx::query(&format!(
        "insert into {s}.commands (id, meter_id, op, state, source, created_at, updated_at)
         select gen_random_uuid(), m.id, 'read_now', 'verified', 'rule:bench', now() - interval '2 days', now() - interval '2 days'
         from generate_series(1, $1) g
         join lateral (select id from {s}.meters order by address offset (g % $2) limit 1) m on true"
    ))
    .bind(history)
    .bind(METERS as i64)
    .execute(&field.db.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {s}.commands (id, meter_id, op, state, source, sent_at, lease_holder, lease_until, attempts)
         select gen_random_uuid(), id, 'read_now', 'sent', 'rule:bench', $1, 'bench', $1 + interval '1 hour', 1
         from (select id from {s}.meters order by address limit $2) m"
    ))
    .bind(t0 - Duration::seconds(1))
    .bind(open)
    .execute(&field.db.pool)
    .await
    .unwrap();
    sqlx::query("analyze")
        .execute(&field.db.pool)
        .await
        .unwrap();

    let readings: Vec<NewReading> = (0..ROUNDS)
        .flat_map(|round| {
            meter_ids.iter().enumerate().map(move |(i, id)| NewReading {
                meter_id: *id,
                read_at: t0 + Duration::seconds(30 * round as i64),
                values: MeterValues {
                    energy_wh: 1_000_000 + (i as i64) * 10 + round as i64 * 20,
                    tou_wh: Some([Some(0), Some(100), Some(200), Some(300), None]),
                    power_w: Some(2_400),
                    voltage_dv: vec![2200, 2201, 2199],
                    current_ca: vec![500, 510, 490],
                    pf_milli: Some(950),
                    remaining_fen: Some(10_000),
                    purchase_count: Some(3),
                    relay_closed: Some(true),
                    alarms: vec![],
                    meter_ratios: Some((1, 1)),
                    secure: None,
                },
                raw: vec![0u8; 101],
                ratio_mismatch: false,
            })
        })
        .collect();

    let started = Instant::now();
    for batch in readings.chunks(BATCH) {
        store_batch(&field.db.pool, &field.schema, batch)
            .await
            .unwrap();
    }
    let stored_s = started.elapsed().as_secs_f64();
    let verified: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {s}.commands where source = 'rule:bench' and state = 'verified' and sent_at is not null"
    ))
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(
        verified, open,
        "every open read_now is verified by its meter's reading"
    );

    sqlx::query(&format!(
        "create table {s}.readings_raw (like {s}.readings including defaults)"
    ))
    .execute(&field.db.pool)
    .await
    .unwrap();
    let mut csv = String::new();
    for r in &readings {
        csv.push_str(&format!(
            "{},{},{},\"{{0,100,200,300,NULL}}\",2400,\"{{2200,2201,2199}}\",\"{{500,510,490}}\",950,10000,3,t,{{}}\n",
            r.meter_id,
            r.read_at.to_rfc3339(),
            r.values.energy_wh
        ));
    }
    let started = Instant::now();
    let mut conn = field.db.pool.acquire().await.unwrap();
    let mut copy = conn
        .copy_in_raw(&format!(
            "copy {s}.readings_raw (meter_id, read_at, energy_wh, tou_wh, power_w, voltage_dv, current_ca, pf_milli,
                 remaining_fen, purchase_count, relay_closed, alarms) from stdin with (format csv)"
        ))
        .await
        .unwrap();
    copy.send(csv.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    let copy_s = started.elapsed().as_secs_f64();

    let n = readings.len() as f64;
    println!(
        "store rate: {} readings of {METERS} meters in batches of {BATCH}; {history} finished and {open} open commands",
        readings.len()
    );
    println!(
        "  store_batch: {stored_s:.2} s, {:.0} readings/s",
        n / stored_s
    );
    println!(
        "  raw COPY of the same rows: {copy_s:.2} s, {:.0} rows/s",
        n / copy_s
    );
    println!(
        "  store_batch takes {:.1}× the time of a raw COPY",
        stored_s / copy_s
    );
    println!("  needed for 100,000 meters at a 30 s interval: 3,333 readings/s");
}
