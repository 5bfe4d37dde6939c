//! DTU dial-in on real sockets (127.0.0.1:0): simulated DTUs register, their buses are polled,
//! readings land in the database; faults (a silent meter, heartbeats inside replies, CRC
//! garbage, unknown registrations, replacement by a newer connection) never stall the rest.

mod common;

use common::Field;
use powertab_core::tariff::profile::ShopType;
use powertab_ingest::dtu::{self, DtuConfig};
use powertab_ingest::framing::dlt645;
use powertab_ingest::sim::{DtuFaults, SimBus, SimDtu, SimMeter, SimModel};
use powertab_ingest::writer::Writer;
use powertab_testkit::wait_until;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

async fn start_ingest(field: &Field) -> std::net::SocketAddr {
    start_ingest_every(field, Duration::from_millis(300)).await
}

/// A DTU listener on a free loopback port polling every `poll_interval`.
async fn start_ingest_every(field: &Field, poll_interval: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let config = DtuConfig {
        poll_interval,
        ..Default::default()
    };
    tokio::spawn(dtu::serve(listener, field.db.pool.clone(), writer, config));
    addr
}

async fn count(field: &Field, sql: &str) -> i64 {
    sqlx::query_scalar(&sql.replace("{s}", field.schema.as_str()))
        .fetch_one(&field.db.pool)
        .await
        .unwrap()
}

fn dtu(registration: &[u8], bus: SimBus, faults: DtuFaults) -> SimDtu {
    SimDtu {
        registration: registration.to_vec(),
        heartbeat: vec![0xFE],
        heartbeat_every: Duration::from_millis(70),
        bus: Arc::new(Mutex::new(bus)),
        faults,
    }
}

#[tokio::test]
async fn a_modbus_bus_is_polled_despite_a_silent_meter_and_noisy_link() {
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["modbus_rtu"]).await;
    let live_a = field.meter(0, "dtsy1352", "1", "1001").await;
    let silent = field.meter(0, "dtsy1352", "2", "1002").await;
    let live_b = field.meter(0, "ddsy1352", "3", "1003").await;
    let addr = start_ingest(&field).await;

    let mut dead = SimMeter::new(
        SimModel::Dtsy1352 { address: 2 },
        ShopType::Retail,
        50_000,
        0,
    );
    dead.silent = true;
    let bus = SimBus::modbus(vec![
        SimMeter::new(
            SimModel::Dtsy1352 { address: 1 },
            ShopType::Restaurant,
            120_000,
            1_000_000,
        ),
        dead,
        SimMeter::new(
            SimModel::Ddsy1352 { address: 3 },
            ShopType::Office,
            30_000,
            2_000_000,
        ),
    ]);
    let faults = DtuFaults {
        heartbeat_inside_reply: true,
        garbage_every: Some(5),
        ..DtuFaults::default()
    };
    let sim = dtu(b"PT-0001", bus, faults);
    let running = tokio::spawn(async move { sim.run(addr).await });

    let polled = wait_until(Duration::from_secs(20), || async {
        count(&field, &format!("select count(distinct meter_id) from {{s}}.readings where meter_id in ('{live_a}', '{live_b}')")).await == 2
            && count(&field, "select count(*) from {s}.readings").await >= 6
    })
    .await;
    assert!(polled, "both live meters are read repeatedly");
    let silent_readings = count(
        &field,
        &format!("select count(*) from {{s}}.readings where meter_id = '{silent}'"),
    )
    .await;
    assert_eq!(silent_readings, 0);
    let failing = wait_until(Duration::from_secs(10), || async {
        count(&field, &format!("select coalesce(max(consecutive_failures), 0)::bigint from {{s}}.meter_polls where meter_id = '{silent}'")).await >= 1
    })
    .await;
    assert!(failing, "the silent meter's failures are recorded");
    let online = count(&field, "select count(*) from {s}.bus_sessions where online").await;
    assert_eq!(online, 1);
    let energy: i64 = count(
        &field,
        &format!("select energy_wh from {{s}}.meter_latest where meter_id = '{live_b}'"),
    )
    .await;
    assert!(energy >= 2_000_000, "{energy}");
    running.abort();
}

#[tokio::test]
async fn a_dlt645_bus_on_port_2_and_refused_registrations() {
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["modbus_rtu", "dlt645"]).await;
    let meter = field.meter(1, "dlt645", "202611250001", "2001").await;
    let addr = start_ingest(&field).await;

    // Port 2 registers with the port number after the registration bytes.
    let address = dlt645::address_bytes("202611250001").unwrap();
    let bus = SimBus::dlt645(vec![SimMeter::new(
        SimModel::Dlt645 { address },
        ShopType::Supermarket,
        200_000,
        7_000_000,
    )]);
    let sim = dtu(b"PT-00012", bus, DtuFaults::default());
    let running = tokio::spawn(async move { sim.run(addr).await });
    let read = wait_until(Duration::from_secs(20), || async {
        count(
            &field,
            &format!("select count(*) from {{s}}.readings where meter_id = '{meter}'"),
        )
        .await
            >= 2
    })
    .await;
    assert!(read, "the DL/T 645 meter is read");
    let energy = count(
        &field,
        &format!("select energy_wh from {{s}}.meter_latest where meter_id = '{meter}'"),
    )
    .await;
    assert!((7_000_000..7_100_000).contains(&energy), "{energy}");

    // An unknown registration and a port the gateway does not have are refused and listed.
    for registration in [&b"NOPE-1"[..], &b"PT-00019"[..]] {
        let stranger = dtu(registration, SimBus::modbus(vec![]), DtuFaults::default());
        let answered = tokio::time::timeout(Duration::from_secs(5), stranger.run(addr)).await;
        assert!(
            matches!(answered, Ok(Ok(0)) | Ok(Err(_))),
            "refused at once: {answered:?}"
        );
    }
    let unclaimed: Vec<(String, i64)> = sqlx::query_as(
        "select registration_hex, attempts from control.unclaimed_registrations order by registration_hex",
    )
    .fetch_all(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(unclaimed.len(), 2, "{unclaimed:?}");
    running.abort();
}

/// Queues a read-now as the server does (row + NOTIFY); returns its id.
async fn queue_read_now(field: &Field, meter: uuid::Uuid) -> uuid::Uuid {
    queue(field, meter, "read_now").await
}

/// Queues command `op` for `meter` as the server does (row + NOTIFY); returns its id.
async fn queue(field: &Field, meter: uuid::Uuid, op: &str) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let mut tx = powertab_core::db::begin_in(&field.db.pool, &field.schema)
        .await
        .unwrap();
    sqlx::query("insert into commands (id, meter_id, op, source, expires_at) values ($1, $2, $3, 'test', now() + interval '2 minutes')")
        .bind(id)
        .bind(meter)
        .bind(op)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("select pg_notify('pt_commands', $1)")
        .bind(format!("{}:{meter}:{id}", field.schema.as_str()))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn read_now_jumps_the_schedule() {
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    // Queued before the DTU is connected: picked up when its session starts.
    let early = queue_read_now(&field, meter).await;
    // A long interval: only commands make more readings after the first poll.
    let addr = start_ingest_every(&field, Duration::from_secs(3600)).await;
    let bus = SimBus::modbus(vec![SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Retail,
        80_000,
        100_000,
    )]);
    let sim = dtu(b"PT-0001", bus, DtuFaults::default());
    let running = tokio::spawn(async move { sim.run(addr).await });
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, early).await.0 == "verified"
        })
        .await
    );
    let before = count(&field, "select count(*) from {s}.readings").await;
    let later = queue_read_now(&field, meter).await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, later).await.0 == "verified"
        })
        .await,
        "read at once"
    );
    let after = wait_until(Duration::from_secs(5), || async {
        count(&field, "select count(*) from {s}.readings").await > before
    })
    .await;
    assert!(after, "the read-now made a reading");
    running.abort();
}

/// Company A entered `SECB-REG-SECRET-` before the prefix rule; company B's gateway
/// `SECB-REG-SECRET-1` is suspended. B's DTU dialling in must be refused (and shown to B), never
/// bound to A; with B's gateway enabled the packet matches both and is refused too.
#[tokio::test]
async fn a_dtu_whose_registration_begins_with_another_companys_is_never_bound_to_it() {
    let field = Field::new("bravo", "bravo-dtu", b"SECB-REG-SECRET-1", &["modbus_rtu"]).await;
    let alpha = powertab_core::tenancy::companies::create(
        &field.db.pool,
        &powertab_core::auth::Principal::system("test", powertab_core::kernel::clock::system()),
        &powertab_core::tenancy::companies::NewCompany {
            slug: "alpha".into(),
            name: "alpha".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let alpha_schema = powertab_core::kernel::names::SchemaName::for_company(alpha.id);
    let alpha_gateway = uuid::Uuid::now_v7();
    let prefix_hex: String = b"SECB-REG-SECRET-"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sqlx::query(&format!(
        "insert into {s}.gateways (id, identity, kind, registration_hex) values ($1, 'alpha-dtu', 'dtu', $2);
         ",
        s = alpha_schema.as_str()
    ))
    .bind(alpha_gateway)
    .bind(&prefix_hex)
    .execute(&field.db.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 20, 300)",
        s = alpha_schema.as_str()
    ))
    .bind(uuid::Uuid::now_v7())
    .bind(alpha_gateway)
    .execute(&field.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
         values ('alpha-dtu', $1, $2, $3, 'dtu', 'enabled')",
    )
    .bind(&prefix_hex)
    .bind(alpha.id)
    .bind(alpha_gateway)
    .execute(&field.db.pool)
    .await
    .unwrap();
    let addr = start_ingest(&field).await;

    let bravo_packet = b"SECB-REG-SECRET-1";
    let alpha_sessions = || async {
        count(
            &field,
            &format!(
                "select count(*) from {a}.bus_sessions where gateway_id = '{alpha_gateway}'",
                a = alpha_schema.as_str()
            ),
        )
        .await
    };
    for bravo_status in ["suspended", "enabled"] {
        sqlx::query(
            "update control.gateway_directory set status = $1 where identity = 'bravo-dtu'",
        )
        .bind(bravo_status)
        .execute(&field.db.pool)
        .await
        .unwrap();
        let bravo_dtu = dtu(bravo_packet, SimBus::modbus(vec![]), DtuFaults::default());
        let answered = tokio::time::timeout(Duration::from_secs(5), bravo_dtu.run(addr)).await;
        assert!(
            matches!(answered, Ok(Ok(0)) | Ok(Err(_))),
            "refused at once while bravo's gateway is {bravo_status}: {answered:?}"
        );
        assert_eq!(alpha_sessions().await, 0, "never bound to alpha");
    }
    let (company, attempts): (Option<i64>, i64) = sqlx::query_as(
        "select company_id, attempts from control.unclaimed_registrations where registration_hex = $1",
    )
    .bind(bravo_packet.iter().map(|b| format!("{b:02x}")).collect::<String>())
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(
        company, None,
        "the ambiguous last attempt is the platform's to sort out"
    );
}

/// The DTU port is open to anyone: beyond `connections_max` a new connection is closed at
/// once, and a slot is free again when a connection ends.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    use tokio::io::AsyncReadExt;
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["modbus_rtu"]).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let config = DtuConfig {
        connections_max: 2,
        ..Default::default()
    };
    tokio::spawn(dtu::serve(listener, field.db.pool.clone(), writer, config));
    // Is the connection still open half a second later (waiting for a registration)?
    let held_open = |mut stream: tokio::net::TcpStream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
        (read.is_err(), stream)
    };
    let (first_open, first) = held_open(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    let (second_open, second) =
        held_open(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    assert!(first_open && second_open, "two connections fit");
    let (third_open, _third) = held_open(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    assert!(!third_open, "the third is closed at once");
    drop((first, second));
    let freed = powertab_testkit::wait_until(Duration::from_secs(5), || async {
        held_open(tokio::net::TcpStream::connect(addr).await.unwrap())
            .await
            .0
    })
    .await;
    assert!(freed, "a slot is free again once a connection ends");
}

/// The state and detail of command `id`.
async fn command_state(field: &Field, id: uuid::Uuid) -> (String, String) {
    sqlx::query_as(&format!(
        "select state, detail from {}.commands where id = $1",
        field.schema.as_str()
    ))
    .bind(id)
    .fetch_one(&field.db.pool)
    .await
    .unwrap()
}

/// The relay state of `meter`'s latest stored reading.
async fn latest_relay(field: &Field, meter: uuid::Uuid) -> Option<bool> {
    sqlx::query_scalar(&format!(
        "select relay_closed from {}.meter_latest where meter_id = $1",
        field.schema.as_str()
    ))
    .bind(meter)
    .fetch_optional(&field.db.pool)
    .await
    .unwrap()
    .flatten()
}

#[tokio::test]
async fn trip_and_close_travel_over_the_dtu_and_the_relay_read_back_verifies_them() {
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["modbus_rtu", "dlt645"]).await;
    let acrel = field.meter(0, "dtsy1352", "1", "1001").await;
    let dlt = field.meter(1, "dlt645", "202611250001", "2001").await;
    // A long interval: only the commands' read-backs make readings after the first poll.
    let addr = start_ingest_every(&field, Duration::from_secs(3600)).await;
    let modbus = SimBus::modbus(vec![SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Retail,
        80_000,
        100_000,
    )]);
    let address = dlt645::address_bytes("202611250001").unwrap();
    let serial = SimBus::dlt645(vec![SimMeter::new(
        SimModel::Dlt645 { address },
        ShopType::Retail,
        80_000,
        200_000,
    )]);
    let port1 = dtu(b"PT-0001", modbus, DtuFaults::default());
    let port2 = dtu(b"PT-00012", serial, DtuFaults::default());
    let running = [
        tokio::spawn(async move { port1.run(addr).await }),
        tokio::spawn(async move { port2.run(addr).await }),
    ];
    for meter in [acrel, dlt] {
        assert!(
            wait_until(Duration::from_secs(20), || async {
                latest_relay(&field, meter).await == Some(true)
            })
            .await,
            "first poll: the relay is closed"
        );
        // Trip: the meter accepts the write, and the reading right after shows it open.
        let trip = queue(&field, meter, "trip").await;
        assert!(
            wait_until(Duration::from_secs(15), || async {
                command_state(&field, trip).await.0 == "verified"
            })
            .await,
            "{:?}",
            command_state(&field, trip).await
        );
        assert_eq!(
            latest_relay(&field, meter).await,
            Some(false),
            "read back open"
        );
        let close = queue(&field, meter, "close").await;
        assert!(
            wait_until(Duration::from_secs(15), || async {
                command_state(&field, close).await.0 == "verified"
            })
            .await,
            "{:?}",
            command_state(&field, close).await
        );
        assert_eq!(
            latest_relay(&field, meter).await,
            Some(true),
            "read back closed"
        );
    }
    // Release has nothing to read back: Acrel's accepted write verifies it; DL/T 645 has no
    // release, and says so instead of pretending.
    let release = queue(&field, acrel, "release").await;
    let not_645 = queue(&field, dlt, "release").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, release).await.0 == "verified"
                && command_state(&field, not_645).await.0 == "failed"
        })
        .await,
        "{:?} {:?}",
        command_state(&field, release).await,
        command_state(&field, not_645).await
    );
    assert!(
        command_state(&field, not_645).await.1.contains("cannot"),
        "{:?}",
        command_state(&field, not_645).await
    );
    for task in running {
        task.abort();
    }
}

#[tokio::test]
async fn a_dlt645_close_allowed_is_verified_by_status_word_3_while_the_relay_waits_for_the_button()
{
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["dlt645"]).await;
    let meter = field.meter(0, "dlt645", "202611250009", "2009").await;
    let addr = start_ingest_every(&field, Duration::from_secs(3600)).await;
    let address = dlt645::address_bytes("202611250009").unwrap();
    let mut sim = SimMeter::new(
        SimModel::Dlt645 { address },
        ShopType::Retail,
        80_000,
        200_000,
    );
    sim.close_needs_button = true;
    let port = dtu(b"PT-0001", SimBus::dlt645(vec![sim]), DtuFaults::default());
    let bus = port.bus.clone();
    let running = tokio::spawn(async move { port.run(addr).await });
    assert!(
        wait_until(Duration::from_secs(20), || async {
            latest_relay(&field, meter).await == Some(true)
        })
        .await,
        "first poll: closed"
    );
    let trip = queue(&field, meter, "trip").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, trip).await.0 == "verified"
        })
        .await
    );
    // 1B only allows the close: the relay stays open, status word 3 shows the trip cleared.
    let close = queue(&field, meter, "close").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, close).await.0 == "verified"
        })
        .await,
        "{:?}",
        command_state(&field, close).await
    );
    assert!(command_state(&field, close).await.1.contains("button"));
    assert_eq!(latest_relay(&field, meter).await, Some(false), "still open");
    let alarms: Vec<String> = sqlx::query_scalar(&format!(
        "select unnest(alarms) from {}.meter_latest where meter_id = $1",
        field.schema.as_str()
    ))
    .bind(meter)
    .fetch_all(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(alarms, ["close_allowed"]);
    // The tenant presses the button; the next reading shows power.
    bus.lock().await.meters[0].press_button();
    let read = queue(&field, meter, "read_now").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, read).await.0 == "verified"
        })
        .await
    );
    assert_eq!(latest_relay(&field, meter).await, Some(true));
    running.abort();
}

#[tokio::test]
async fn sync_clock_is_a_dlt645_broadcast_and_an_acrel_meter_says_it_cannot() {
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["dlt645", "modbus_rtu"]).await;
    let dlt = field.meter(0, "dlt645", "202611250010", "2010").await;
    let acrel = field.meter(1, "dtsy1352", "1", "1010").await;
    let addr = start_ingest_every(&field, Duration::from_secs(3600)).await;
    let address = dlt645::address_bytes("202611250010").unwrap();
    let serial = dtu(
        b"PT-0001",
        SimBus::dlt645(vec![SimMeter::new(
            SimModel::Dlt645 { address },
            ShopType::Retail,
            80_000,
            200_000,
        )]),
        DtuFaults::default(),
    );
    let modbus = dtu(
        b"PT-00012",
        SimBus::modbus(vec![SimMeter::new(
            SimModel::Dtsy1352 { address: 1 },
            ShopType::Retail,
            80_000,
            100_000,
        )]),
        DtuFaults::default(),
    );
    let bus = serial.bus.clone();
    let running = [
        tokio::spawn(async move { serial.run(addr).await }),
        tokio::spawn(async move { modbus.run(addr).await }),
    ];
    for meter in [dlt, acrel] {
        assert!(
            wait_until(Duration::from_secs(20), || async {
                latest_relay(&field, meter).await.is_some()
            })
            .await
        );
    }
    let synced = queue(&field, dlt, "sync_clock").await;
    let refused = queue(&field, acrel, "sync_clock").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_state(&field, synced).await.0 == "acknowledged"
                && command_state(&field, refused).await.0 == "failed"
        })
        .await,
        "{:?} {:?}",
        command_state(&field, synced).await,
        command_state(&field, refused).await
    );
    assert!(command_state(&field, refused)
        .await
        .1
        .contains("cannot set its clock"));
    // The meter took the broadcast: its clock is China time now, within the ±5 s DESIGN allows.
    let set = bus.lock().await.meters[0]
        .clock_set_to
        .expect("the broadcast arrived");
    let now = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .naive_local();
    assert!((now - set).num_seconds().abs() <= 5, "{set} vs {now}");
    for task in running {
        task.abort();
    }
}

/// (state, attempts, waiting for a retry) of command `id`.
async fn command_sends(field: &Field, id: uuid::Uuid) -> (String, i32, bool) {
    sqlx::query_as(&format!(
        "select state, attempts, next_try_at is not null from {}.commands where id = $1",
        field.schema.as_str()
    ))
    .bind(id)
    .fetch_one(&field.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_trip_the_meter_does_not_answer_is_sent_again_after_a_backoff_and_then_verified() {
    let field = Field::new("acme", "dtu-1", b"PT-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let addr = start_ingest_every(&field, Duration::from_secs(3600)).await;
    let modbus = SimBus::modbus(vec![SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Retail,
        80_000,
        100_000,
    )]);
    let sim = dtu(b"PT-0001", modbus, DtuFaults::default());
    let bus = sim.bus.clone();
    let running = tokio::spawn(async move { sim.run(addr).await });
    assert!(
        wait_until(Duration::from_secs(20), || async {
            latest_relay(&field, meter).await == Some(true)
        })
        .await
    );
    // The meter falls silent (a loose RS485 wire): the trip gets no answer, stays this bus's
    // (`sent`) and waits for its next send instead of failing at once.
    bus.lock().await.meters[0].silent = true;
    let trip = queue(&field, meter, "trip").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            command_sends(&field, trip).await == ("sent".into(), 1, true)
        })
        .await,
        "{:?}",
        command_sends(&field, trip).await
    );
    assert!(command_state(&field, trip).await.1.contains("no answer"));
    // The wire is fixed: the second send, 5 s later, trips it and the read-back verifies it.
    bus.lock().await.meters[0].silent = false;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            command_sends(&field, trip).await.0 == "verified"
        })
        .await,
        "{:?}",
        command_state(&field, trip).await
    );
    assert_eq!(
        command_sends(&field, trip).await,
        ("verified".into(), 2, false)
    );
    assert_eq!(latest_relay(&field, meter).await, Some(false));
    running.abort();
}
