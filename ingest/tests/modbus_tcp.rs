//! Modbus-TCP gateways dialled out on real sockets: a simulated gateway with a bus of Acrel
//! meters behind it (one silent), reached with tokio-modbus; and a gateway that is down at
//! first and comes up later, found again by the capped backoff.

mod common;

use common::Field;
use powertab_core::tariff::profile::ShopType;
use powertab_ingest::commands::Dispatch;
use powertab_ingest::dial_policy::DialPolicy;
use powertab_ingest::modbus_tcp;
use powertab_ingest::sim::{modbus_gateway, SimBus, SimMeter, SimModel};
use powertab_ingest::writer::Writer;
use powertab_testkit::wait_until;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use uuid::Uuid;

/// Adds a Modbus-TCP gateway at 127.0.0.1:`port` with one bus; returns the bus id.
async fn modbus_gateway(field: &Field, port: u16) -> Uuid {
    let s = field.schema.as_str();
    let (gateway, bus) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(&format!("insert into {s}.gateways (id, identity, kind, host) values ($1, 'mb-1', 'modbus_tcp', '127.0.0.1')"))
        .bind(gateway)
        .execute(&field.db.pool)
        .await
        .unwrap();
    sqlx::query("insert into control.gateway_directory (identity, company_id, gateway_id, kind, status) values ('mb-1', $1, $2, 'modbus_tcp', 'enabled')")
        .bind(field.company_id)
        .bind(gateway)
        .execute(&field.db.pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms, tcp_port)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 10, 400, $3)"
    ))
    .bind(bus)
    .bind(gateway)
    .bind(i32::from(port))
    .execute(&field.db.pool)
    .await
    .unwrap();
    bus
}

async fn meter_on(field: &Field, bus: Uuid, address: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(&format!(
        "insert into {}.meters (id, bus_id, model, address, meter_number) values ($1, $2, 'dtsy1352', $3, $4)",
        field.schema.as_str()
    ))
    .bind(id)
    .bind(bus)
    .bind(address)
    .bind(format!("9{address:0>5}"))
    .execute(&field.db.pool)
    .await
    .unwrap();
    id
}

async fn readings_of(field: &Field, meter: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "select count(*) from {}.readings where meter_id = $1",
        field.schema.as_str()
    ))
    .bind(meter)
    .fetch_one(&field.db.pool)
    .await
    .unwrap()
}

/// Ingest's Modbus-TCP side, allowed to dial this machine's loopback (as the tests' and the
/// demo's configuration allow it).
fn start_ingest(field: &Field) {
    start_ingest_with(field, DialPolicy::new(&["127.0.0.0/8".into()]).unwrap());
}

fn start_ingest_with(field: &Field, policy: DialPolicy) {
    let (writer, _task) = Writer::start(field.db.pool.clone());
    tokio::spawn(modbus_tcp::serve(
        field.db.pool.clone(),
        writer,
        Duration::from_millis(300),
        Dispatch::default(),
        policy,
    ));
}

/// A tenant's Modbus-TCP host at 127.0.0.1 (its own PostgreSQL, say) is never dialled without
/// the allow-list: the listener sees no connection and the gateway stays offline.
#[tokio::test]
async fn a_gateway_at_an_internal_address_is_never_dialled_without_the_allow_list() {
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bus = modbus_gateway(&field, port).await;
    meter_on(&field, bus, "1").await;
    start_ingest_with(&field, DialPolicy::default());
    let dialled = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await;
    assert!(dialled.is_err(), "ingest dialled 127.0.0.1: {dialled:?}");
    let online: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {}.bus_sessions where online",
        field.schema.as_str()
    ))
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(online, 0);
}

#[tokio::test]
async fn a_modbus_tcp_gateway_is_polled_through_tokio_modbus() {
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bus = modbus_gateway(&field, port).await;
    let (live, silent) = (
        meter_on(&field, bus, "1").await,
        meter_on(&field, bus, "2").await,
    );
    let mut quiet = SimMeter::new(
        SimModel::Dtsy1352 { address: 2 },
        ShopType::Office,
        10_000,
        0,
    );
    quiet.silent = true;
    let sim_bus = SimBus::modbus(vec![
        SimMeter::new(
            SimModel::Dtsy1352 { address: 1 },
            ShopType::Retail,
            90_000,
            3_000_000,
        ),
        quiet,
    ]);
    tokio::spawn(modbus_gateway::serve(
        listener,
        Arc::new(Mutex::new(sim_bus)),
    ));
    start_ingest(&field);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            readings_of(&field, live).await >= 3
        })
        .await,
        "the live meter is read repeatedly"
    );
    assert_eq!(readings_of(&field, silent).await, 0);
    let energy: i64 = sqlx::query_scalar(&format!(
        "select energy_wh from {}.meter_latest where meter_id = $1",
        field.schema.as_str()
    ))
    .bind(live)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert!(energy >= 3_000_000, "{energy}");
    let online: bool = sqlx::query_scalar(&format!(
        "select online from {}.bus_sessions where bus_id = $1",
        field.schema.as_str()
    ))
    .bind(bus)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert!(online);
}

#[tokio::test]
async fn a_gateway_that_comes_up_later_is_found_again() {
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    // A port that nothing listens on yet.
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        probe.local_addr().unwrap().port()
    };
    let bus = modbus_gateway(&field, port).await;
    let meter = meter_on(&field, bus, "1").await;
    start_ingest(&field);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(readings_of(&field, meter).await, 0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let sim_bus = SimBus::modbus(vec![SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Retail,
        90_000,
        1_000,
    )]);
    tokio::spawn(modbus_gateway::serve(
        listener,
        Arc::new(Mutex::new(sim_bus)),
    ));
    assert!(
        wait_until(Duration::from_secs(20), || async {
            readings_of(&field, meter).await >= 1
        })
        .await,
        "read after the gateway came up"
    );
}

/// A trip queued for a meter behind a Modbus-TCP gateway is written with FC 0x10 through
/// tokio-modbus when the bus session starts, and the reading right after verifies it.
#[tokio::test]
async fn a_trip_travels_over_modbus_tcp_and_is_verified_by_the_read_back() {
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bus = modbus_gateway(&field, port).await;
    let meter = meter_on(&field, bus, "1").await;
    let s = field.schema.as_str();
    let trip = Uuid::now_v7();
    sqlx::query(&format!("insert into {s}.commands (id, meter_id, op, source, expires_at) values ($1, $2, 'trip', 'test', now() + interval '2 minutes')"))
        .bind(trip)
        .bind(meter)
        .execute(&field.db.pool)
        .await
        .unwrap();
    let sim_bus = SimBus::modbus(vec![SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Retail,
        90_000,
        3_000_000,
    )]);
    tokio::spawn(modbus_gateway::serve(
        listener,
        Arc::new(Mutex::new(sim_bus)),
    ));
    start_ingest(&field);
    let state = || async {
        sqlx::query_scalar::<_, String>(&format!("select state from {s}.commands where id = $1"))
            .bind(trip)
            .fetch_one(&field.db.pool)
            .await
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            state().await == "verified"
        })
        .await,
        "{}",
        state().await
    );
    let relay: Option<bool> = sqlx::query_scalar(&format!(
        "select relay_closed from {s}.meter_latest where meter_id = $1"
    ))
    .bind(meter)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(relay, Some(false), "the relay reads back open");
}
