//! Benchmark: importing 5,000 meters (the goal: under 10 s), plus the 100 gateways with
//! 200 buses they hang on. Runs the real import against a fresh PostgreSQL database (DATABASE_URL
//! or 127.0.0.1:5432) and prints the figures; `cargo bench -p powertab-core --bench import`.
//! Not part of the test suite: speed goals live here, not in timed tests.

use powertab_core::auth::load_company;
use powertab_core::import::{self, ImportKind};
use powertab_core::tenancy::companies::{self, NewCompany};
use powertab_core::{db, db::migrate};
use powertab_testkit::TestDb;
use std::time::Instant;

const GATEWAYS: usize = 100;
const BUSES_PER_GATEWAY: usize = 2;
const METERS_PER_BUS: usize = 25;

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[tokio::main]
async fn main() {
    let test_db = TestDb::new().await;
    let pool = &test_db.pool;
    migrate::migrate_all(pool).await.expect("migrations");
    let system =
        powertab_core::auth::Principal::system("bench", powertab_core::kernel::clock::system());
    let company = companies::create(
        pool,
        &system,
        &NewCompany {
            slug: "bench".into(),
            name: "Bench".into(),
            max_meters: Some(100_000),
            max_gateways: Some(1_000),
            ..NewCompany::default()
        },
    )
    .await
    .expect("company");

    let mut gateways = String::from("identity,kind,registration,bus,protocol\n");
    let mut meters = String::from("gateway,bus,model,address,meter_number\n");
    let mut number = 0u64;
    for g in 0..GATEWAYS {
        for b in 1..=BUSES_PER_GATEWAY {
            gateways.push_str(&format!("dtu-{g:04},dtu,REG-{g:04},{b},modbus_rtu\n"));
            for a in 1..=METERS_PER_BUS {
                number += 1;
                meters.push_str(&format!(
                    "dtu-{g:04},{b},dtsy1352,{a},{}\n",
                    202_600_000_000u64 + number
                ));
            }
        }
    }

    let mut tx = db::begin_in(
        pool,
        &powertab_core::kernel::names::SchemaName::for_company(company.id),
    )
    .await
    .unwrap();
    let mut actor = system.clone();
    actor.company = load_company(&mut tx, company.id).await.unwrap();
    let started = Instant::now();
    let report = import::import(
        &mut tx,
        &actor,
        ImportKind::Gateways,
        &csv_rows(&gateways),
        false,
    )
    .await
    .unwrap();
    let gateways_s = started.elapsed().as_secs_f64();
    assert!(report.committed, "{:?}", report.errors.first());

    let started = Instant::now();
    let report = import::import(
        &mut tx,
        &actor,
        ImportKind::Meters,
        &csv_rows(&meters),
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let meters_s = started.elapsed().as_secs_f64();
    assert!(report.committed, "{:?}", report.errors.first());
    println!(
        "import {GATEWAYS} gateways / {} buses: {gateways_s:.2} s",
        GATEWAYS * BUSES_PER_GATEWAY
    );
    println!(
        "import {} meters (validated, audited, committed): {meters_s:.2} s = {:.0} meters/s",
        report.created,
        report.created as f64 / meters_s
    );
}
