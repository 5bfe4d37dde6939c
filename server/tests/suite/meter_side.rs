//! Meter-side prepayment end to end over a DTU (issue: Proof): a simulated meter-side meter
//! loaded with its exported key dials in; ingest reads its secure counters (0x0C60), the
//! server's settle worker commissions it and pushes its flat plan's price; a meter-side account
//! opens on it; a counter top-up becomes one purchase — the frame written at 0x0C00 byte for
//! byte, the ack read at 0x0C40 and believed only after its MAC, the counters verifying it — and
//! the money goes wallet → `in_transit` → `on_meter`, rated against `on_meter` as the meter counts
//! down; the meter trips itself at zero, a new top-up restores it; the account closes through a
//! verified secure trip and `deduct`; `ledger check` passes.

use powertab_core::auth::Principal;
use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
use powertab_core::billing::closing::{self, CloseAccount};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::clock;
use powertab_core::kernel::money::AmountFen;
use powertab_core::kernel::secrets::Keyring;
use powertab_core::tariff::profile::ShopType;
use powertab_core::tenancy::roles::Role;
use powertab_ingest::sim::secure_meter::SecureMeter;
use powertab_ingest::sim::{DtuFaults, SimBus, SimDtu, SimMeter, SimModel};
use powertab_testkit::{wait_until, TestDb};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use uuid::Uuid;

const NUMBER: &str = "202612020901";
const REGISTRATION: &[u8] = b"SECURE-DTU-0001";
/// The flat plan's price, 0.0001 yuan per kWh: 1 fen per Wh.
const PRICE_UNITS: i64 = 100_000;

async fn worker(db: &TestDb) -> Principal {
    let mut conn = db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    Principal::system("e2e", clock::system()).in_company(scope)
}

/// A DTU gateway with one Modbus bus and a meter-side DTSY-1352 at address 1 for demo shop 101
/// (on the shop's tariff plan); the meter's id and the shop's.
async fn add_secure_meter(db: &TestDb) -> (Uuid, Uuid) {
    let gateway = Uuid::now_v7();
    let hex: String = REGISTRATION.iter().map(|b| format!("{b:02x}")).collect();
    sqlx::query("insert into c_1.gateways (id, identity, kind, registration_hex) values ($1, 'secure-dtu', 'dtu', $2)")
        .bind(gateway)
        .bind(&hex)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
         values ('secure-dtu', $1, 1, $2, 'dtu', 'enabled')",
    )
    .bind(&hex)
    .bind(gateway)
    .execute(&db.pool)
    .await
    .unwrap();
    add_secure_meter_on(db, gateway, "1").await
}

/// An MQTT gateway `secure-mqtt` (credential generation 1) with a meter-side DTSY-1352 at bus 1,
/// address 17, for demo shop 101; the gateway's id, the meter's and the shop's.
async fn add_secure_mqtt_meter(db: &TestDb) -> (Uuid, Uuid, Uuid) {
    let gateway = Uuid::now_v7();
    sqlx::query("insert into c_1.gateways (id, identity, kind) values ($1, 'secure-mqtt', 'mqtt')")
        .bind(gateway)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into control.gateway_directory (identity, company_id, gateway_id, kind, status, mqtt_credential_gen)
         values ('secure-mqtt', 1, $1, 'mqtt', 'enabled', 1)",
    )
    .bind(gateway)
    .execute(&db.pool)
    .await
    .unwrap();
    let (meter, shop) = add_secure_meter_on(db, gateway, "17").await;
    (gateway, meter, shop)
}

/// Bus 1 on `gateway` with the meter-side meter at `address` on a flat plan, for shop 101.
async fn add_secure_meter_on(db: &TestDb, gateway: Uuid, address: &str) -> (Uuid, Uuid) {
    let (bus, meter) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "insert into c_1.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 20, 300)",
    )
    .bind(bus)
    .bind(gateway)
    .execute(&db.pool)
    .await
    .unwrap();
    let shop: Uuid = sqlx::query_scalar("select id from c_1.shops where number = '101'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // Meter-side meters take flat plans: ¥10.0000 per kWh (1 fen a Wh keeps the sums readable).
    let who = worker(db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let plan = powertab_core::tariff::plans::create(
        &mut tx,
        &who,
        &powertab_core::tariff::plans::NewPlan {
            name: "表内平价".into(),
            description: String::new(),
            version: powertab_core::tariff::TariffVersion::flat(
                chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
                PRICE_UNITS,
            ),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query(
        "insert into c_1.meters (id, bus_id, model, address, meter_number, prepayment_mode, shop_id, tariff_plan_id)
         values ($1, $2, 'dtsy1352', $6, $3, 'meter', $4, $5)",
    )
    .bind(meter)
    .bind(bus)
    .bind(NUMBER)
    .bind(shop)
    .bind(plan.id)
    .bind(address)
    .execute(&db.pool)
    .await
    .unwrap();
    (meter, shop)
}

/// The meter's KM, exported by a company admin (audited), as the meter would be loaded with it.
async fn exported_key(db: &TestDb, keyring: &Keyring, meter: Uuid) -> [u8; 16] {
    let mut admin = worker(db).await;
    admin.role = Role::CompanyAdmin;
    admin.username = "boss".into();
    let mut tx = powertab_core::db::begin_in(&db.pool, &admin.company().unwrap().schema)
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

/// Ingest as `powertab ingest` wires it, for DTUs only; the listener's address.
async fn start_ingest(db: &TestDb) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writer, _task) = powertab_ingest::writer::Writer::start(db.pool.clone());
    let dispatch = powertab_ingest::commands::Dispatch::default();
    tokio::spawn(powertab_ingest::commands::listen(
        db.pool.clone(),
        dispatch.clone(),
    ));
    let config = powertab_ingest::dtu::DtuConfig {
        poll_interval: Duration::from_millis(500),
        ..Default::default()
    };
    tokio::spawn(powertab_ingest::dtu::serve_with(
        listener,
        db.pool.clone(),
        writer,
        config,
        dispatch,
    ));
    addr
}

async fn scalar_i64(db: &TestDb, sql: &str, id: Uuid) -> Option<i64> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
}

async fn balance(db: &TestDb, key: String) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "select coalesce(max(balance_fen), 0)::bigint from c_1.ledger_accounts where key = $1",
    )
    .bind(key)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn top_up(db: &TestDb, account: Uuid, fen: i64) {
    let who = worker(db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let input = CounterInput {
        amount_fen: AmountFen::from_fen(fen),
        method: CounterMethod::Card,
        reason: String::new(),
        meter_id: None,
    };
    counter::top_up(&mut tx, &who, account, &input, &Uuid::now_v7().to_string())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn states(db: &TestDb, meter: Uuid, op: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select state from c_1.commands where meter_id = $1 and op = $2 order by created_at",
    )
    .bind(meter)
    .bind(op)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// What the simulated meter holds: (purchase count, remaining fen, price units, relay closed).
async fn on_the_meter(bus: &Mutex<SimBus>) -> (u32, i64, u32, bool) {
    let bus = bus.lock().await;
    let side = bus.meters[0].secure.as_ref().unwrap();
    (
        side.purchase_count,
        side.remaining_fen,
        side.price_units,
        side.relay_closed(),
    )
}

/// Drift: the platform's shadow balance less what the meter holds, once rating caught up with
/// the meter's readings (the meter is not counting: tripped).
async fn settled_drift(db: &TestDb, bus: &Mutex<SimBus>, meter: Uuid) -> i64 {
    let mut last = i64::MIN;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let shadow = balance(db, format!("on_meter:{meter}")).await;
        let drift = shadow - on_the_meter(bus).await.1;
        if drift == last {
            return drift;
        }
        last = drift;
    }
    last
}

/// Everything a meter-side test runs on: the demo company with the secure meter on its own DTU
/// (simulated, with the meter's `shop_type`/`daily_wh`), the server's workers with a keyring,
/// ingest — and the meter commissioned with its price pushed, and a meter-side account open.
struct Rig {
    db: TestDb,
    meter: Uuid,
    account: Uuid,
    bus: Arc<Mutex<SimBus>>,
    running: tokio::task::JoinHandle<()>,
    /// `powertab ingest` as a child process, when the rig runs it so (to be killed).
    ingest: Option<KillOnDrop>,
    keyring: Arc<Keyring>,
}

/// A child process killed when dropped (a failing test leaves none behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn rig(shop_type: ShopType, daily_wh: i64) -> Rig {
    rig_on(shop_type, daily_wh, None).await
}

/// [`rig`], with ingest as a `powertab ingest` child process on `child_port` when given (the
/// simulated DTU dials it again whenever the connection drops).
async fn rig_on(shop_type: ShopType, daily_wh: i64, child_port: Option<u16>) -> Rig {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let keyring = Arc::new(Keyring::parse(&Keyring::new_key_entry("k1"), None).unwrap());
    let (meter, shop) = add_secure_meter(&db).await;
    let km = exported_key(&db, &keyring, meter).await;
    // The meter as it leaves the factory: 3 purchases, 7 control commands, nothing on it,
    // counting at ¥1.0000 per kWh until the platform pushes its plan's price.
    let mut side = SecureMeter::new(NUMBER, &km).unwrap();
    side.purchase_count = 3;
    side.control_count = 7;
    side.price_units = 10_000;
    let sim = SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        shop_type,
        daily_wh,
        500_000,
    )
    .with_secure(side);
    let bus = Arc::new(Mutex::new(SimBus::modbus(vec![sim])));
    let dtu = SimDtu {
        registration: REGISTRATION.to_vec(),
        heartbeat: vec![],
        heartbeat_every: Duration::from_secs(3600),
        bus: bus.clone(),
        faults: DtuFaults::default(),
    };
    powertab_server::workers::spawn(
        db.pool.clone(),
        clock::system(),
        powertab_core::notify::accounts::Vendors::new(Default::default(), None),
        Some(keyring.clone()),
    );
    let (running, ingest) = match child_port {
        None => {
            let addr = start_ingest(&db).await;
            let running = tokio::spawn(async move {
                let _ = dtu.run(addr).await;
            });
            (running, None)
        }
        Some(port) => {
            let child = crate::crash::start_ingest(&db, port);
            let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let running = tokio::spawn(powertab_ingest::sim::field::dial_forever(dtu, target));
            (running, Some(KillOnDrop(child)))
        }
    };

    // Commissioning: the platform stores the counters the meter reads back, never guesses, and
    // pushes the plan's price with a set-price frame, verified by the price read back.
    let commissioned = wait_until(Duration::from_secs(30), || async {
        states(&db, meter, "set_price").await == ["verified"]
    })
    .await;
    assert!(
        commissioned,
        "commissioned, price pushed: {:?}",
        states(&db, meter, "set_price").await
    );
    assert_eq!(on_the_meter(&bus).await.2, PRICE_UNITS as u32);
    assert_eq!(
        scalar_i64(
            &db,
            "select control_count from c_1.meter_secure where meter_id = $1",
            meter
        )
        .await,
        Some(8),
        "the set price counted on the control counter"
    );

    // A meter-side account opens on it (nothing on the meter), without opening credit.
    let who = worker(&db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let mut input = OpenAccount {
        shop_id: shop,
        holder_name: "李四".into(),
        holder_phone: "13800138001".into(),
        meters: vec![OpeningMeter {
            meter_id: meter,
            manual_energy_wh: None,
            accept_remaining_fen: None,
        }],
        deposit_fen: AmountFen::ZERO,
        deposit_method: None,
        opening_credit_fen: AmountFen::from_fen(100),
    };
    let refused = accounts::open(&mut tx, &who, &input, "meter-side-open-1")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("cannot be opened"),
        "{refused}"
    );
    drop(tx);
    input.opening_credit_fen = AmountFen::ZERO;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let account = accounts::open(&mut tx, &who, &input, "meter-side-open-2")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(account.prepayment_mode, "meter");
    Rig {
        db,
        meter,
        account: account.id,
        bus,
        running,
        ingest,
        keyring,
    }
}

#[tokio::test]
async fn a_meter_side_shop_buys_credit_onto_its_meter_runs_it_down_tops_up_again_and_closes_through_deduct(
) {
    // A supermarket's refrigeration runs at every hour: about 70 Wh (70 fen) a second.
    let Rig {
        db,
        meter,
        account,
        bus,
        running,
        ..
    } = rig(ShopType::Supermarket, 10_000_000).await;
    let who = worker(&db).await;
    // ¥5 at the counter: one purchase on count 4, verified by the read-back.
    top_up(&db, account, 500).await;
    let verified = wait_until(Duration::from_secs(30), || async {
        states(&db, meter, "purchase").await == ["verified"]
    })
    .await;
    let detail: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select state, detail, secure_status from c_1.commands where meter_id = $1 and op = 'purchase'",
    )
    .bind(meter)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(verified, "the purchase is verified: {detail:?}");
    assert_eq!(
        detail[0].2.as_deref(),
        Some("00"),
        "the meter's ack, MAC checked"
    );
    let (count, remaining, _, closed) = on_the_meter(&bus).await;
    assert_eq!(count, 4, "applied once");
    assert!(
        remaining <= 500 && closed,
        "the credit arrived: {remaining}"
    );
    assert_eq!(balance(&db, format!("wallet:{}", account)).await, 0);
    assert_eq!(balance(&db, format!("in_transit:{meter}")).await, 0);

    // The account shows the credit on its meter (the shadow balance), nothing in transit.
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let shown = accounts::get(&mut tx, &who, account).await.unwrap();
    drop(tx);
    assert!(
        shown.on_meter_fen > AmountFen::ZERO && shown.on_meter_fen <= AmountFen::from_fen(500),
        "{:?}",
        shown.on_meter_fen
    );
    assert_eq!(shown.in_transit_fen, AmountFen::ZERO);

    // The meter counts down at the pushed price and trips itself at zero.
    let tripped = wait_until(Duration::from_secs(30), || async {
        !on_the_meter(&bus).await.3
    })
    .await;
    assert!(
        tripped,
        "the meter opened its relay at zero: {:?}",
        on_the_meter(&bus).await
    );
    let drift = settled_drift(&db, &bus, meter).await;
    assert!(
        drift.abs() <= 80,
        "the shadow balance follows the meter within a reading's charge: drift {drift} fen"
    );

    // A new top-up restores it: the next purchase builds on count 4. ¥30 lasts the meter about
    // 40 s, so the close below takes back what is left rather than racing it to zero.
    top_up(&db, account, 3_000).await;
    let restored = wait_until(Duration::from_secs(30), || async {
        states(&db, meter, "purchase").await == ["verified", "verified"]
            && on_the_meter(&bus).await.3
    })
    .await;
    assert!(
        restored,
        "restored by the purchase: {:?}",
        on_the_meter(&bus).await
    );
    assert_eq!(on_the_meter(&bus).await.0, 5);

    // Closing: a secure trip (verified), the counters, a deduct of what is left.
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let started = closing::close(&mut tx, &who, account, &CloseAccount::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(started.pending.is_some(), "the close waits for the meter");
    let closed = wait_until(Duration::from_secs(40), || async {
        let state: String = sqlx::query_scalar("select state from c_1.shop_accounts where id = $1")
            .bind(account)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        state == "closed"
    })
    .await;
    let (count, remaining, _, relay) = on_the_meter(&bus).await;
    let why: Vec<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "select state, detail, secure_status, secure_amount from c_1.commands where meter_id = $1 and op = 'deduct' order by created_at limit 3",
    )
    .bind(meter)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        closed,
        "closed: deducts {why:?}, trips {:?}, deducts {:?}, meter {:?}",
        states(&db, meter, "trip").await,
        states(&db, meter, "deduct").await,
        on_the_meter(&bus).await
    );
    assert!(!relay, "tripped: the meter stopped counting");
    assert_eq!(remaining, 0, "everything taken back off the meter");
    let deducts = states(&db, meter, "deduct").await;
    assert_eq!(
        count,
        5 + deducts.len() as u32,
        "the deduct counted on the purchase count"
    );
    assert_eq!(deducts.last().map(String::as_str), Some("verified"));
    let entries: Vec<(String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select t.kind, e.amount_fen, t.posted_at from c_1.ledger_entries e join c_1.ledger_transactions t on t.id = e.txn_id
         where e.account_key = $1 order by t.posted_at",
    )
    .bind(format!("on_meter:{meter}"))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let closed_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select closed_at from c_1.shop_accounts where id = $1")
            .bind(account)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        balance(&db, format!("on_meter:{meter}")).await,
        0,
        "{entries:?} closed {closed_at:?}"
    );
    assert_eq!(balance(&db, format!("in_transit:{meter}")).await, 0);
    assert_eq!(balance(&db, format!("wallet:{}", account)).await, 0);
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
    running.abort();
}

/// The purchases' money once nothing is consumed: every purchase applied once, none lost.
async fn purchases_settle(rig: &Rig, count: usize) -> bool {
    wait_until(Duration::from_secs(40), || async {
        states(&rig.db, rig.meter, "purchase").await == vec!["verified".to_owned(); count]
    })
    .await
}

/// Sends a person's `op` to the rig's meter as the control page does; the command's id, op and
/// whether it carries a secure frame.
async fn operate(rig: &Rig, op: &str) -> (Uuid, String, bool) {
    let who = worker(&rig.db).await;
    let mut tx = powertab_core::db::begin_in(&rig.db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let command = powertab_core::power::control::operate(
        &mut tx,
        &who,
        Some(rig.keyring.as_ref()),
        rig.meter,
        op,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let framed: bool =
        sqlx::query_scalar("select secure_frame is not null from c_1.commands where id = $1")
            .bind(command.id)
            .fetch_one(&rig.db.pool)
            .await
            .unwrap();
    (command.id, command.op.as_str().to_owned(), framed)
}

async fn command_state(db: &TestDb, id: Uuid) -> String {
    sqlx::query_scalar("select state from c_1.commands where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_trips_a_meter_side_meter_with_a_secure_frame_and_restores_it_with_release_never_a_forced_close(
) {
    let rig = rig(ShopType::Office, 0).await;
    top_up(&rig.db, rig.account, 100).await;
    assert!(purchases_settle(&rig, 1).await);
    assert!(on_the_meter(&rig.bus).await.3, "credit on it: closed");

    // A trip goes out as a secure frame on the control counter (8 after the price: 9).
    let (trip, op, framed) = operate(&rig, "trip").await;
    assert_eq!((op.as_str(), framed), ("trip", true));
    let verified = wait_until(Duration::from_secs(30), || async {
        command_state(&rig.db, trip).await == "verified"
    })
    .await;
    assert!(verified, "{}", command_state(&rig.db, trip).await);
    assert!(
        !on_the_meter(&rig.bus).await.3,
        "tripped although ¥1 is on it"
    );
    assert_eq!(
        scalar_i64(
            &rig.db,
            "select control_count from c_1.meter_secure where meter_id = $1",
            rig.meter
        )
        .await,
        Some(9)
    );

    // A close is sent as release: the meter's own credit rule closes it (¥1 on it) and nothing
    // holds it closed for the platform.
    let (release, op, framed) = operate(&rig, "close").await;
    assert_eq!((op.as_str(), framed), ("release", true));
    let verified = wait_until(Duration::from_secs(30), || async {
        command_state(&rig.db, release).await == "verified" && on_the_meter(&rig.bus).await.3
    })
    .await;
    assert!(verified, "{}", command_state(&rig.db, release).await);
    let held: Option<String> =
        sqlx::query_scalar("select relay_override from c_1.meters where id = $1")
            .bind(rig.meter)
            .fetch_one(&rig.db.pool)
            .await
            .unwrap();
    assert_eq!(
        held, None,
        "the platform does not hold a meter-side relay closed"
    );
    let bus = rig.bus.lock().await;
    let side = bus.meters[0].secure.as_ref().unwrap();
    assert_eq!(side.control_count, 10);
    assert!(
        !side.keep_power,
        "released, not kept on: the meter's credit rule decides"
    );
    drop(bus);
    // Nothing went through the plain relay register: every command carried a frame.
    let plain: i64 = sqlx::query_scalar(
        "select count(*) from c_1.commands where meter_id = $1 and secure_frame is null
           and op in ('trip', 'close', 'release')",
    )
    .bind(rig.meter)
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(plain, 0);
    let (ok, out) = crate::cli::powertab(&rig.db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}

#[tokio::test]
async fn credit_comes_back_off_the_meter_by_a_verified_deduct_before_a_refund_and_its_top_up_is_not_reversed(
) {
    let rig = rig(ShopType::Office, 0).await;
    let who = worker(&rig.db).await;
    let schema = who.company().unwrap().schema.clone();
    let input = |fen: i64| CounterInput {
        amount_fen: AmountFen::from_fen(fen),
        method: CounterMethod::Card,
        reason: "退租".into(),
        meter_id: None,
    };
    let mut tx = powertab_core::db::begin_in(&rig.db.pool, &schema)
        .await
        .unwrap();
    let top_up = counter::top_up(&mut tx, &who, rig.account, &input(300), "deduct-top-up")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(purchases_settle(&rig, 1).await);
    assert_eq!(on_the_meter(&rig.bus).await.1, 300);

    // The top-up's credit is on the meter: a reversal is refused with what to do instead.
    let mut tx = powertab_core::db::begin_in(&rig.db.pool, &schema)
        .await
        .unwrap();
    let refused = powertab_core::billing::reversals::request(
        &mut tx,
        &who,
        top_up.transaction.id,
        "输错金额",
        "deduct-reversal",
    )
    .await
    .unwrap_err();
    drop(tx);
    assert!(refused.to_string().contains("deduct"), "{refused}");

    // More than the meter holds is refused at the amount; ¥1 comes back by a verified deduct.
    let take = |fen: i64| {
        let (db, keyring, who, meter) = (&rig.db, rig.keyring.clone(), who.clone(), rig.meter);
        async move {
            let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
                .await
                .unwrap();
            let done = powertab_core::secure::deduct::take_back(
                &mut tx,
                &keyring,
                &who,
                meter,
                AmountFen::from_fen(fen),
                "退租退费",
            )
            .await;
            if done.is_ok() {
                tx.commit().await.unwrap();
            }
            done
        }
    };
    let too_much = take(301).await.unwrap_err();
    assert!(too_much.to_string().contains("3.00"), "{too_much}");
    let deduct = take(100).await.unwrap();
    let verified = wait_until(Duration::from_secs(30), || async {
        command_state(&rig.db, deduct.id).await == "verified"
    })
    .await;
    assert!(verified, "{}", command_state(&rig.db, deduct.id).await);
    assert_eq!(on_the_meter(&rig.bus).await.1, 200, "taken off the meter");
    assert_eq!(on_the_meter(&rig.bus).await.0, 5, "on the purchase count");
    assert_eq!(
        balance(&rig.db, format!("on_meter:{}", rig.meter)).await,
        200
    );
    assert_eq!(
        balance(&rig.db, format!("wallet:{}", rig.account)).await,
        100
    );

    // Now the counter refunds it from the wallet; the meter keeps the rest.
    let mut tx = powertab_core::db::begin_in(&rig.db.pool, &schema)
        .await
        .unwrap();
    counter::refund(&mut tx, &who, rig.account, &input(100), "deduct-refund")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(balance(&rig.db, format!("wallet:{}", rig.account)).await, 0);
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from c_1.audit_log where action = 'secure.deduct' and after->>'amount_fen' = '100'",
    )
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let (ok, out) = crate::cli::powertab(&rig.db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}

#[tokio::test]
async fn a_meter_is_re_keyed_onto_a_rotated_master_key_by_a_key_loaded_in_the_field_and_a_verified_probe(
) {
    let rig = rig(ShopType::Office, 0).await;
    top_up(&rig.db, rig.account, 100).await;
    assert!(purchases_settle(&rig, 1).await);
    let schema = worker(&rig.db).await.company().unwrap().schema.clone();
    let mut admin = worker(&rig.db).await;
    admin.role = Role::CompanyAdmin;
    let mut root = worker(&rig.db).await;
    root.role = Role::PlatformAdmin;
    let in_tx = || powertab_core::db::begin_in(&rig.db.pool, &schema);
    let held = || async {
        scalar_i64(
            &rig.db,
            "select key_version::bigint from c_1.meter_secure where meter_id = $1",
            rig.meter,
        )
        .await
    };

    // The platform rotates the master key; the meter keeps version 1 until re-keyed.
    let mut tx = in_tx().await.unwrap();
    let version = powertab_core::secure::keys::rotate_master(&mut tx, &rig.keyring, &root)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(version, 2);
    let mut tx = in_tx().await.unwrap();
    let started = powertab_core::secure::rekey::start(&mut tx, &rig.keyring, &admin, rig.meter)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((started.held, started.rekey_to), (1, Some(2)));

    // While it waits, a top-up stays in the wallet: no frame under a key about to change.
    top_up(&rig.db, rig.account, 50).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(states(&rig.db, rig.meter, "purchase").await.len(), 1);
    assert_eq!(
        balance(&rig.db, format!("wallet:{}", rig.account)).await,
        50
    );

    // Verifying before the field loaded the key: the meter answers under its old key — the
    // probe fails, no key alarm, the meter still holds version 1.
    let verify = || async {
        let mut tx = in_tx().await.unwrap();
        let probe = powertab_core::secure::rekey::verify(&mut tx, &rig.keyring, &admin, rig.meter)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        probe.id
    };
    let probe = verify().await;
    let failed = wait_until(Duration::from_secs(30), || async {
        command_state(&rig.db, probe).await == "failed"
    })
    .await;
    assert!(failed, "{}", command_state(&rig.db, probe).await);
    let detail: String = sqlx::query_scalar("select detail from c_1.commands where id = $1")
        .bind(probe)
        .fetch_one(&rig.db.pool)
        .await
        .unwrap();
    assert!(detail.contains("not re-keyed yet"), "{detail}");
    let key_alarms: i64 = sqlx::query_scalar(
        "select count(*) from c_1.field_alarms where target_id = $1 and kind = 'secure_key'",
    )
    .bind(rig.meter)
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(key_alarms, 0);
    assert_eq!(held().await, Some(1));

    // The field loads the exported new key (version 2); the probe verifies and the meter holds 2.
    let km = exported_key(&rig.db, &rig.keyring, rig.meter).await;
    rig.bus.lock().await.meters[0]
        .secure
        .as_mut()
        .unwrap()
        .load_key(&km);
    let probe = verify().await;
    let switched = wait_until(Duration::from_secs(30), || async {
        command_state(&rig.db, probe).await == "verified" && held().await == Some(2)
    })
    .await;
    assert!(
        switched,
        "{} {:?}",
        command_state(&rig.db, probe).await,
        held().await
    );
    assert_eq!(
        on_the_meter(&rig.bus).await.2,
        PRICE_UNITS as u32,
        "the price it counted at"
    );

    // The waiting top-up goes out under the new key and is verified: ¥1.50 on the meter.
    let bought = wait_until(Duration::from_secs(30), || async {
        states(&rig.db, rig.meter, "purchase").await == ["verified", "verified"]
    })
    .await;
    assert!(bought, "{:?}", states(&rig.db, rig.meter, "purchase").await);
    assert_eq!(on_the_meter(&rig.bus).await.1, 150);
    let versions: Vec<Option<i32>> = sqlx::query_scalar(
        "select secure_key_version from c_1.commands where meter_id = $1 and op = 'purchase' order by created_at",
    )
    .bind(rig.meter)
    .fetch_all(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(versions, [Some(1), Some(2)]);
    let audited: Vec<String> = sqlx::query_scalar(
        "select action from c_1.audit_log where action like 'secure.rekey.%' order by id",
    )
    .fetch_all(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "secure.rekey.start",
            "secure.rekey.verify",
            "secure.rekey.verify",
            "secure.rekey.done"
        ]
    );
    let (ok, out) = crate::cli::powertab(&rig.db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}

#[tokio::test]
async fn a_lost_frame_a_lost_ack_and_a_reboot_between_send_and_read_back_each_end_applied_once() {
    // Nothing is consumed: what is on the meter is exactly what was bought.
    let rig = rig(ShopType::Office, 0).await;
    // The frame is lost on the line three times (every try of the first send): nothing applied;
    // the resend after the wait applies it.
    rig.bus.lock().await.meters[0].lose_frames = 3;
    top_up(&rig.db, rig.account, 100).await;
    assert!(
        purchases_settle(&rig, 1).await,
        "{:?}",
        states(&rig.db, rig.meter, "purchase").await
    );
    assert_eq!(on_the_meter(&rig.bus).await.0, 4);
    assert_eq!(on_the_meter(&rig.bus).await.1, 100);
    let attempts: i32 = sqlx::query_scalar(
        "select attempts from c_1.commands where meter_id = $1 and op = 'purchase'",
    )
    .bind(rig.meter)
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 2, "sent again after the lost frame");

    // The meter applies the frame but its acknowledgement is lost: the counters verify it.
    rig.bus.lock().await.meters[0].lose_acks = 3;
    top_up(&rig.db, rig.account, 200).await;
    assert!(
        purchases_settle(&rig, 2).await,
        "{:?}",
        states(&rig.db, rig.meter, "purchase").await
    );
    assert_eq!(on_the_meter(&rig.bus).await.0, 5);
    assert_eq!(on_the_meter(&rig.bus).await.1, 300);

    // The meter applies the frame and restarts before anything is read back: the resend is
    // answered 03 (already counted), and the counters verify it — applied once.
    rig.bus.lock().await.meters[0].reboot_after_frame = Some(3);
    top_up(&rig.db, rig.account, 300).await;
    assert!(
        purchases_settle(&rig, 3).await,
        "{:?}",
        states(&rig.db, rig.meter, "purchase").await
    );
    assert_eq!(on_the_meter(&rig.bus).await.0, 6, "applied once");
    assert_eq!(
        on_the_meter(&rig.bus).await.1,
        600,
        "nothing bought twice, nothing lost"
    );
    let statuses: Vec<Option<String>> = sqlx::query_scalar(
        "select secure_status from c_1.commands where meter_id = $1 and op = 'purchase' order by created_at",
    )
    .bind(rig.meter)
    .fetch_all(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(statuses[0].as_deref(), Some("00"));
    assert_eq!(statuses[1], None, "no acknowledgement ever came");
    // Verified by the counters of the next poll after the restart, or — when the resend came
    // first — after the meter answered it 03 (its count already stored): applied once either way.
    assert!(
        matches!(statuses[2].as_deref(), None | Some("03")),
        "{statuses:?}"
    );

    // The money matches the meter: nothing in transit, the shadow balance is what it holds.
    assert_eq!(
        balance(&rig.db, format!("in_transit:{}", rig.meter)).await,
        0
    );
    assert_eq!(
        balance(&rig.db, format!("on_meter:{}", rig.meter)).await,
        600
    );
    assert_eq!(balance(&rig.db, format!("wallet:{}", rig.account)).await, 0);
    let (ok, out) = crate::cli::powertab(&rig.db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}

#[tokio::test]
async fn operators_read_the_secure_state_and_only_the_right_people_export_keys_or_rotate() {
    use crate::helpers::spawn_app;
    use reqwest::StatusCode;
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("secure-co").await;
    let (_, operator) = app
        .user(&admin, "secure-co", "op1", "operator", &["top_up"])
        .await;
    let schema = format!("c_{company}");
    let (gateway, bus, meter) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(&format!(
        "insert into {schema}.gateways (id, identity, kind, registration_hex) values ($1, 'sec-gw', 'dtu', '5345432d475731')"
    ))
    .bind(gateway)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {schema}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 20, 300)"
    ))
    .bind(bus)
    .bind(gateway)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {schema}.meters (id, bus_id, model, address, meter_number, prepayment_mode)
         values ($1, $2, 'dtsy1352', '1', '202612020777', 'meter')"
    ))
    .bind(meter)
    .bind(bus)
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The meter read back counts 9 purchases while the platform verified 7: out of band.
    sqlx::query(&format!(
        "insert into {schema}.meter_secure_readback (meter_id, purchase_count, control_count, remaining_fen, price_units, read_at)
         values ($1, 9, 2, 1234, 10000, now())"
    ))
    .bind(meter)
    .execute(&app.db.pool)
    .await
    .unwrap();

    // Only the company's admin exports the key; the operator is refused, the export audited.
    let path = format!("/api/v1/secure/meters/{meter}/key-export");
    let (status, body) = app.post(&path, &operator, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, key) = app.post(&path, &admin, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["key_version"], 1);
    assert_eq!(key["meter_key_hex"].as_str().unwrap().len(), 32);
    let audited: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {schema}.audit_log where action = 'secure.meter_key.export' and after::text not like '%' || $1 || '%'"
    ))
    .bind(key["meter_key_hex"].as_str().unwrap())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1, "audited once, without the key");
    sqlx::query(&format!(
        "update {schema}.meter_secure set purchase_count = 7, control_count = 2, remaining_fen = 1234 where meter_id = $1"
    ))
    .bind(meter)
    .execute(&app.db.pool)
    .await
    .unwrap();

    // The state: counters side by side, the out-of-band flag, drift against the read-back.
    let (status, states) = app.get("/api/v1/secure/meters", &operator).await;
    assert_eq!(status, StatusCode::OK, "{states}");
    let row = &states[0];
    assert_eq!(row["meter_number"], "202612020777");
    assert_eq!(row["platform_purchase_count"], 7);
    assert_eq!(row["meter_purchase_count"], 9);
    assert_eq!(row["out_of_band"], true);
    assert_eq!(
        row["drift_fen"], -1234,
        "nothing on the shadow, ¥12.34 on the meter"
    );
    assert_eq!(row["key_version"], 1);
    // Beyond the company's drift threshold (¥5 by default) and counting purchases the platform
    // did not make: one drift and one reconciliation alarm, raised once however often it looks.
    let scope = {
        let mut conn = app.db.pool.acquire().await.unwrap();
        powertab_core::auth::load_company(&mut conn, company)
            .await
            .unwrap()
            .unwrap()
    };
    let system = Principal::system("e2e", clock::system()).in_company(scope);
    for _ in 0..2 {
        let mut tx = powertab_core::db::begin_in(&app.db.pool, &system.company().unwrap().schema)
            .await
            .unwrap();
        powertab_core::secure::reports::raise_alarms(&mut tx, &system)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let alarms: Vec<String> = sqlx::query_scalar(&format!(
        "select kind from {schema}.field_alarms where target_id = $1 and cleared_at is null order by kind"
    ))
    .bind(meter)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(alarms, ["secure_drift", "secure_reconcile"]);
    let response = app
        .http
        .get(app.url("/api/v1/secure/meters.xlsx"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..2], b"PK", "an .xlsx workbook");
    let (status, history) = app
        .get(
            &format!("/api/v1/secure/meters/{meter}/commands"),
            &operator,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history, serde_json::json!([]));

    // The page shows the same, in Chinese by default: counts side by side, out of band flagged,
    // the drift in yuan from integer fen.
    let browser = crate::web::logged_in_as(&app, "secure-co", "boss").await;
    let html = crate::web::page(&app, &browser, "/meter-side").await;
    assert!(html.contains("表内费控对账"), "{html}");
    assert!(html.contains(&format!("data-meter=\"{meter}\"")), "{html}");
    assert!(html.contains("7 / 9"), "{html}");
    assert!(html.contains("有平台外购电"), "{html}");
    assert!(html.contains("-12.34"), "{html}");
    assert!(html.contains("/api/v1/secure/meters.xlsx"), "{html}");
    assert!(
        html.contains(&format!("href=\"/meter-side/{meter}\"")),
        "{html}"
    );

    // The meter's own page: its counters, no history yet, the deduct form (the admin has the
    // refund right) and the key only when asked for — then the same key, audited again.
    let own = format!("/meter-side/{meter}");
    let html = crate::web::page(&app, &browser, &own).await;
    assert!(html.contains("表内费控电表 202612020777"), "{html}");
    assert!(html.contains("7 / 9") && html.contains("2 / 2"), "{html}");
    assert!(html.contains("还没有安全指令"), "{html}");
    assert!(html.contains("id=\"deduct-form\""), "{html}");
    assert!(html.contains("id=\"key-show\""), "{html}");
    let hex = key["meter_key_hex"].as_str().unwrap();
    assert!(
        !html.contains(hex),
        "the key is not on the page unless asked for"
    );
    let shown = crate::web::page(&app, &browser, &format!("{own}?key=show")).await;
    assert!(shown.contains(hex), "{shown}");
    let audited: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {schema}.audit_log where action = 'secure.meter_key.export'"
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(audited >= 2, "each look is audited: {audited}");
    // An operator without the right sees no deduct form, and the key is not theirs to see.
    let op_browser = crate::web::logged_in_as(&app, "secure-co", "op1").await;
    let html = crate::web::page(&app, &op_browser, &format!("{own}?key=show")).await;
    assert!(
        !html.contains("id=\"deduct-form\"") && !html.contains(hex),
        "{html}"
    );
    // No account holds the meter: a deduct is refused with the reason, at the form.
    let csrf = crate::web::csrf_of(&crate::web::page(&app, &browser, &own).await);
    let (status, location) = crate::web::post_form(
        &app,
        &browser,
        &own,
        "/sfn/meter_side_deduct",
        &[
            ("csrf", &csrf),
            ("meter", &meter.to_string()),
            ("amount", "1.00"),
            ("reason", "退租"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND, "{location}");
    assert!(location.contains("error"), "{location}");

    // Rotation: platform admins only; a company admin does not even see the resource.
    let rotate = format!("/api/v1/platform/companies/{company}/secure/rotate");
    let (status, _) = app.post(&rotate, &admin, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let root = app.root().await;
    let (status, rotated) = app.post(&rotate, &root, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["version"], 2);
    // The commissioned meter keeps the version it was loaded with.
    let (_, states) = app.get("/api/v1/secure/meters", &admin).await;
    assert_eq!(states[0]["key_version"], 1);

    // The platform's company page shows the version and rotates it, after the confirmation.
    let staff = crate::web::logged_in_as(&app, "", "root").await;
    let company_page = format!("/platform/companies/{company}");
    let html = crate::web::page(&app, &staff, &company_page).await;
    assert!(html.contains("密钥版本: 2"), "{html}");
    let csrf = crate::web::csrf_of(&html);
    let id = company.to_string();
    let (_, location) = crate::web::post_form(
        &app,
        &staff,
        &company_page,
        "/sfn/company_master_key_rotate",
        &[("csrf", &csrf), ("id", &id), ("confirm", "")],
    )
    .await;
    assert!(
        location.contains("error"),
        "not without the confirmation: {location}"
    );
    let (_, location) = crate::web::post_form(
        &app,
        &staff,
        &company_page,
        "/sfn/company_master_key_rotate",
        &[("csrf", &csrf), ("id", &id), ("confirm", "yes")],
    )
    .await;
    assert!(location.contains("ok=companies.key_rotated"), "{location}");
    let html = crate::web::page(&app, &staff, &company_page).await;
    assert!(html.contains("密钥版本: 3"), "{html}");

    // The company admin sees the meter behind and starts its re-key from the meter's page.
    let html = crate::web::page(&app, &browser, &own).await;
    assert!(html.contains("id=\"rekey-start\""), "{html}");
    let csrf = crate::web::csrf_of(&html);
    let meter_text = meter.to_string();
    let (_, location) = crate::web::post_form(
        &app,
        &browser,
        &own,
        "/sfn/meter_side_rekey",
        &[("csrf", &csrf), ("meter", &meter_text), ("action", "start")],
    )
    .await;
    assert!(
        location.contains("ok=meter_side.rekey_started"),
        "{location}"
    );
    let html = crate::web::page(&app, &browser, &own).await;
    assert!(
        html.contains("1 → 3") && html.contains("id=\"rekey-verify\""),
        "{html}"
    );
    // The key shown now is the one to load: version 3's.
    let (_, key3) = app.post(&path, &admin, serde_json::json!({})).await;
    assert_eq!(key3["key_version"], 3);
    assert_ne!(key3["meter_key_hex"], key["meter_key_hex"]);
    // An operator cannot start or abandon one.
    let (status, _) = app
        .post(
            &format!("/api/v1/secure/meters/{meter}/rekey/abandon"),
            &operator,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_meter_with_another_key_fails_the_purchase_with_a_key_alarm_and_an_approved_cancel_gives_the_money_back(
) {
    let rig = rig(ShopType::Office, 0).await;
    let (db, meter, account, bus) = (&rig.db, rig.meter, rig.account, &rig.bus);
    // The meter is replaced by one loaded with another key (same counters).
    {
        let mut bus = bus.lock().await;
        let old = bus.meters[0].secure.clone().unwrap();
        let mut other = SecureMeter::new(NUMBER, &[0x5A; 16]).unwrap();
        other.purchase_count = old.purchase_count;
        other.control_count = old.control_count;
        other.price_units = old.price_units;
        bus.meters[0].secure = Some(other);
    }
    top_up(db, account, 700).await;
    let failed = wait_until(Duration::from_secs(30), || async {
        states(db, meter, "purchase").await == ["failed"]
    })
    .await;
    assert!(failed, "{:?}", states(db, meter, "purchase").await);
    let alarms: Vec<String> = sqlx::query_scalar(
        "select kind from c_1.field_alarms where target_id = $1 and cleared_at is null order by kind",
    )
    .bind(meter)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        alarms,
        ["secure_key", "secure_reconcile"],
        "a key alarm, money out of step"
    );
    assert_eq!(on_the_meter(bus).await.1, 0, "nothing reached the meter");
    assert_eq!(
        balance(db, format!("in_transit:{meter}")).await,
        700,
        "kept in transit"
    );
    assert_eq!(balance(db, format!("wallet:{account}")).await, 0);
    // While the alarm is open, a new top-up stays in the wallet: no money follows the first.
    top_up(db, account, 100).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(states(db, meter, "purchase").await, ["failed"]);
    assert_eq!(balance(db, format!("wallet:{account}")).await, 100);

    // Only an approved cancel gives it back: asked by one person, approved by another.
    let purchase: Uuid =
        sqlx::query_scalar("select id from c_1.commands where meter_id = $1 and op = 'purchase'")
            .bind(meter)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let who = worker(db).await;
    let mut asker = worker(db).await;
    asker.user_id = Uuid::now_v7();
    let mut approver = worker(db).await;
    approver.user_id = Uuid::now_v7();
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let asked = powertab_core::secure::cancel::request(
        &mut tx,
        &asker,
        purchase,
        "表计密钥不符",
        "cancel-1",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let refused = powertab_core::secure::cancel::approve(&mut tx, &asker, asked.id, "approve-0")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("other than the requester"),
        "{refused}"
    );
    drop(tx);
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let done = powertab_core::secure::cancel::approve(&mut tx, &approver, asked.id, "approve-1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(done.state, "done");
    assert_eq!(balance(db, format!("in_transit:{meter}")).await, 0);
    assert_eq!(
        balance(db, format!("wallet:{account}")).await,
        800,
        "the money is back"
    );
    // A second cancel of the same purchase is refused.
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let again =
        powertab_core::secure::cancel::request(&mut tx, &asker, purchase, "再次", "cancel-2")
            .await
            .unwrap_err();
    assert!(again.to_string().contains("cancelled already"), "{again}");
    drop(tx);
    let (ok, out) = crate::cli::powertab(db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}

#[tokio::test]
async fn an_ingest_killed_after_the_frame_reached_the_meter_leaves_the_purchase_to_the_next_one_applied_once(
) {
    let port = crate::crash::free_port();
    let mut rig = rig_on(ShopType::Office, 0, Some(port)).await;
    // The meter takes the frame, then falls silent (it restarts and stays off the line) before
    // anything is read back; the ingest that sent it is killed meanwhile.
    rig.bus.lock().await.meters[0].reboot_after_frame = Some(u32::MAX);
    top_up(&rig.db, rig.account, 400).await;
    let applied = wait_until(Duration::from_secs(30), || async {
        on_the_meter(&rig.bus).await.0 == 4
    })
    .await;
    assert!(applied, "the frame reached the meter");
    drop(rig.ingest.take());
    assert_eq!(states(&rig.db, rig.meter, "purchase").await, ["sent"]);
    // The meter is back; a new ingest takes the bus over once the dead sender's lease ran out
    // and sends the same bytes again.
    rig.bus.lock().await.meters[0].wake();
    let second = KillOnDrop(crate::crash::start_ingest(&rig.db, port));
    let verified = wait_until(Duration::from_secs(150), || async {
        states(&rig.db, rig.meter, "purchase").await == ["verified"]
    })
    .await;
    drop(second);
    assert!(
        verified,
        "{:?}",
        states(&rig.db, rig.meter, "purchase").await
    );
    let (count, remaining, _, _) = on_the_meter(&rig.bus).await;
    assert_eq!((count, remaining), (4, 400), "applied exactly once");
    assert_eq!(
        balance(&rig.db, format!("in_transit:{}", rig.meter)).await,
        0
    );
    assert_eq!(
        balance(&rig.db, format!("on_meter:{}", rig.meter)).await,
        400
    );
    let (ok, out) = crate::cli::powertab(&rig.db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}

#[tokio::test]
async fn an_unreachable_meter_closes_on_the_operators_decision_and_the_next_opening_confirms_its_credit(
) {
    let rig = rig(ShopType::Office, 0).await;
    let (db, meter, account, bus) = (&rig.db, rig.meter, rig.account, &rig.bus);
    top_up(db, account, 600).await;
    assert!(
        purchases_settle(&rig, 1).await,
        "{:?}",
        states(db, meter, "purchase").await
    );
    // The meter goes off the line: the close's secure trip cannot reach it.
    bus.lock().await.meters[0].silent = true;
    let who = worker(db).await;
    let close = |input: CloseAccount| {
        let who = who.clone();
        async move {
            let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
                .await
                .unwrap();
            let done = closing::close(&mut tx, &who, account, &input)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            done
        }
    };
    let waiting = close(CloseAccount::default()).await;
    assert!(waiting.pending.is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state: String = sqlx::query_scalar("select state from c_1.shop_accounts where id = $1")
        .bind(account)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(state, "closing", "waits for the meter");
    // The operator decides: close with the last read-back amount (¥6.00 stays on the meter and
    // goes back to the tenant).
    let done = close(CloseAccount {
        close_with_last_readback: true,
        ..CloseAccount::default()
    })
    .await;
    assert_eq!(done.pending, None);
    assert_eq!(done.net_fen, AmountFen::from_fen(600), "owed to the tenant");
    assert_eq!(balance(db, format!("on_meter:{meter}")).await, 0);
    let decided: i64 = sqlx::query_scalar(
        "select count(*) from c_1.audit_log where action = 'account.close.meter_unreachable'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(decided, 1, "the decision is audited");
    let (ok, out) = crate::cli::powertab(db, &["ledger", "check"]);
    assert!(ok, "{out}");

    // The next tenant's opening sees ¥6.00 on the meter: refused until an operator confirms it.
    let shop: Uuid = sqlx::query_scalar("select shop_id from c_1.meters where id = $1")
        .bind(meter)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut input = OpenAccount {
        shop_id: shop,
        holder_name: "赵六".into(),
        holder_phone: "13800138003".into(),
        meters: vec![OpeningMeter {
            meter_id: meter,
            manual_energy_wh: Some(powertab_core::kernel::money::EnergyWh::from_wh(500_000)),
            accept_remaining_fen: None,
        }],
        deposit_fen: AmountFen::ZERO,
        deposit_method: None,
        opening_credit_fen: AmountFen::ZERO,
    };
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let refused = accounts::open(&mut tx, &who, &input, "reopen-1")
        .await
        .unwrap_err();
    assert!(format!("{refused:?}").contains("6.00"), "{refused:?}");
    drop(tx);
    input.meters[0].accept_remaining_fen = Some(600);
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let next = accounts::open(&mut tx, &who, &input, "reopen-2")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next.meters[0].opening_remaining_fen, Some(600), "recorded");
    rig.running.abort();
}

/// The field as a test drives it on a manual clock: every queued or waiting secure command of
/// `meter` is claimed, its stored frame handed to the simulated meter, the meter's answer kept.
async fn field_step(
    db: &TestDb,
    meter: Uuid,
    sim: &mut SimMeter,
    at: chrono::DateTime<chrono::Utc>,
) {
    use powertab_core::commands::{self as queue, Op};
    let who = worker(db).await;
    let schema = who.company().unwrap().schema.clone();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select id from c_1.commands where meter_id = $1 and secure_frame is not null
           and state in ('queued', 'sent') order by created_at",
    )
    .bind(meter)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for id in ids {
        let mut tx = powertab_core::db::begin_in(&db.pool, &schema)
            .await
            .unwrap();
        let _ = queue::claim(
            &mut tx,
            id,
            meter,
            &Op::ALL,
            "e2e",
            chrono::Duration::seconds(30),
            at,
        )
        .await
        .unwrap();
        let (frame, _) = powertab_core::secure::commands::stored_frame(&mut tx, id)
            .await
            .unwrap()
            .unwrap();
        let ack = sim.secure.as_mut().unwrap().handle(&frame);
        powertab_core::secure::readback::store_ack(&mut tx, &schema, id, &[meter], &ack)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// One poll of the simulated meter at `at`: its energy and its secure counters stored as ingest
/// stores them.
async fn poll(db: &TestDb, meter: Uuid, sim: &mut SimMeter, at: chrono::DateTime<chrono::Utc>) {
    sim.advance(at);
    let schema = worker(db).await.company().unwrap().schema.clone();
    let reading = powertab_ingest::store::NewReading {
        meter_id: meter,
        read_at: at,
        values: sim.values(),
        raw: vec![],
        ratio_mismatch: false,
    };
    let report = powertab_ingest::store::store_batch(&db.pool, &schema, &[reading])
        .await
        .unwrap();
    assert_eq!(report.stored, 1, "{report:?}");
}

#[tokio::test]
async fn a_tariff_version_changes_the_meters_price_at_local_midnight_and_the_drift_stays_within_one_readings_charge(
) {
    use chrono::TimeZone;
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let keyring = Keyring::parse(&Keyring::new_key_entry("k1"), None).unwrap();
    let (meter, shop) = add_secure_meter(&db).await;
    let km = exported_key(&db, &keyring, meter).await;
    // The last local midnight (Asia/Shanghai, the company's zone), in the past so ingest stores
    // readings around it; the workers run on a manual clock from ten minutes before it.
    let tz = clock::DEFAULT_TIME_ZONE;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let midnight = tz
        .from_local_datetime(&today.and_hms_opt(0, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let start = midnight - chrono::Duration::minutes(10);
    let clock = clock::ManualClock::at(start);
    let scope = {
        let mut conn = db.pool.acquire().await.unwrap();
        powertab_core::auth::load_company(&mut conn, 1)
            .await
            .unwrap()
            .unwrap()
    };
    let who = Principal::system("e2e", clock.clone()).in_company(scope);
    let schema = who.company().unwrap().schema.clone();

    // From today the plan costs half: ¥5.0000 per kWh (50,000 price units), added yesterday.
    let plan: Uuid = sqlx::query_scalar("select tariff_plan_id from c_1.meters where id = $1")
        .bind(meter)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut tx = powertab_core::db::begin_in(&db.pool, &schema)
        .await
        .unwrap();
    powertab_core::tariff::plans::add_version(
        &mut tx,
        &who,
        plan,
        &powertab_core::tariff::TariffVersion::flat(today, PRICE_UNITS / 2),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Refrigeration all night: about 70 Wh a minute.
    let mut side = SecureMeter::new(NUMBER, &km).unwrap();
    side.price_units = 10_000;
    let mut sim = SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Supermarket,
        100_000,
        500_000,
    )
    .with_secure(side);
    let pass = |at: chrono::DateTime<chrono::Utc>| {
        let (pool, who, keyring, clock) = (&db.pool, &who, &keyring, clock.clone());
        async move {
            clock.set(at);
            powertab_core::billing::rating::run_pass(pool, who)
                .await
                .unwrap();
            powertab_core::secure::settle::run_pass(pool, who, keyring)
                .await
                .unwrap();
        }
    };
    // Commissioning and yesterday's price, then a meter-side account with ¥50 bought onto it.
    let mut at = start;
    poll(&db, meter, &mut sim, at).await;
    pass(at).await;
    field_step(&db, meter, &mut sim, at).await;
    at += chrono::Duration::seconds(5);
    poll(&db, meter, &mut sim, at).await;
    pass(at).await;
    assert_eq!(states(&db, meter, "set_price").await, ["verified"]);
    assert_eq!(sim.secure.as_ref().unwrap().price_units, PRICE_UNITS as u32);
    let mut tx = powertab_core::db::begin_in(&db.pool, &schema)
        .await
        .unwrap();
    let account = accounts::open(
        &mut tx,
        &who,
        &OpenAccount {
            shop_id: shop,
            holder_name: "王五".into(),
            holder_phone: "13800138002".into(),
            meters: vec![OpeningMeter {
                meter_id: meter,
                manual_energy_wh: None,
                accept_remaining_fen: None,
            }],
            deposit_fen: AmountFen::ZERO,
            deposit_method: None,
            opening_credit_fen: AmountFen::ZERO,
        },
        "midnight-open",
    )
    .await
    .unwrap();
    let input = CounterInput {
        amount_fen: AmountFen::from_fen(5_000),
        method: CounterMethod::Card,
        reason: String::new(),
        meter_id: None,
    };
    counter::top_up(&mut tx, &who, account.id, &input, "midnight-top-up")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pass(at).await;
    field_step(&db, meter, &mut sim, at).await;

    // A poll a minute across midnight; the rating and settle passes after each.
    let mut worst_reading_fen = 0;
    let mut price_before_midnight = 0;
    while at < midnight + chrono::Duration::minutes(10) {
        let before = sim.values().energy_wh;
        at += chrono::Duration::minutes(1);
        poll(&db, meter, &mut sim, at).await;
        let used_wh = sim.values().energy_wh - before;
        worst_reading_fen = worst_reading_fen.max(used_wh * PRICE_UNITS / 100_000);
        pass(at).await;
        field_step(&db, meter, &mut sim, at).await;
        if at < midnight {
            price_before_midnight = sim.secure.as_ref().unwrap().price_units;
        }
    }
    // One more poll: the read-back after the last frame, and rating caught up with it.
    at += chrono::Duration::seconds(5);
    poll(&db, meter, &mut sim, at).await;
    pass(at).await;
    assert_eq!(
        price_before_midnight, PRICE_UNITS as u32,
        "yesterday's price until midnight"
    );
    assert_eq!(
        states(&db, meter, "set_price").await,
        ["verified", "verified"],
        "today's price pushed once"
    );
    assert_eq!(
        sim.secure.as_ref().unwrap().price_units,
        (PRICE_UNITS / 2) as u32,
        "the meter counts at today's price"
    );
    assert_eq!(states(&db, meter, "purchase").await, ["verified"]);
    let remaining = sim.secure.as_ref().unwrap().remaining_fen;
    assert!(
        remaining > 0 && remaining < 5_000,
        "it counted down: {remaining}"
    );
    let shadow = balance(&db, format!("on_meter:{meter}")).await;
    let drift = shadow - remaining;
    assert!(
        worst_reading_fen > 0 && drift.abs() <= worst_reading_fen,
        "drift {drift} fen within one reading's charge ({worst_reading_fen} fen)"
    );
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
}

/// Ingest's MQTT side as `powertab ingest` wires it (a broker with dynamic security, the
/// provisioning of gateway logins, the MQTT client, command dispatch), with no other field.
async fn start_mqtt_ingest(
    db: &TestDb,
) -> (
    powertab_testkit::broker::Broker,
    powertab_core::auth::Secret,
) {
    let broker = powertab_testkit::broker::Broker::with_dynamic_security().await;
    let (writer, _task) = powertab_ingest::writer::Writer::start(db.pool.clone());
    let dispatch = powertab_ingest::commands::Dispatch::default();
    tokio::spawn(powertab_ingest::commands::listen(
        db.pool.clone(),
        dispatch.clone(),
    ));
    let (username, password) = broker.admin.clone().unwrap();
    let admin = powertab_ingest::mqtt::client::MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-secure-test".into(),
        username,
        password,
    };
    let ingest = powertab_ingest::mqtt::provision::IngestLogin {
        username: "powertab-ingest".into(),
        password: "secure-test-ingest-password".into(),
    };
    let mqtt = powertab_ingest::mqtt::client::MqttConfig {
        username: ingest.username.clone(),
        password: ingest.password.clone(),
        ..admin.clone()
    };
    let secret = powertab_core::auth::Secret::new(crate::helpers::TEST_GATEWAY_SECRET);
    tokio::spawn(powertab_ingest::mqtt::provision::run(
        admin,
        ingest,
        db.pool.clone(),
        secret.clone(),
    ));
    tokio::spawn(powertab_ingest::mqtt::client::serve(
        mqtt,
        db.pool.clone(),
        writer,
        dispatch,
    ));
    (broker, secret)
}

#[tokio::test]
async fn over_an_mqtt_gateway_a_meter_side_meter_is_commissioned_buys_credit_and_is_tripped_and_released(
) {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let keyring = Arc::new(Keyring::parse(&Keyring::new_key_entry("k1"), None).unwrap());
    let (gateway, meter, shop) = add_secure_mqtt_meter(&db).await;
    let km = exported_key(&db, &keyring, meter).await;
    let mut side = SecureMeter::new(NUMBER, &km).unwrap();
    side.purchase_count = 3;
    side.control_count = 7;
    side.price_units = 10_000;
    let sim = SimMeter::new(
        SimModel::Dtsy1352 { address: 17 },
        ShopType::Office,
        0,
        500_000,
    )
    .with_secure(side);
    powertab_server::workers::spawn(
        db.pool.clone(),
        clock::system(),
        powertab_core::notify::accounts::Vendors::new(Default::default(), None),
        Some(keyring.clone()),
    );
    let (broker, secret) = start_mqtt_ingest(&db).await;
    let password = powertab_core::field::credentials::derive(&secret, gateway, "secure-mqtt", 1);
    let field = powertab_ingest::sim::mqtt_gateway::SimMqttGateway {
        identity: "secure-mqtt".into(),
        password,
        meters: vec![powertab_ingest::sim::mqtt_gateway::SimMqttMeter {
            bus: 1,
            addr: "17".into(),
            meter: sim,
        }],
        interval: Duration::from_secs(1),
    };
    let running = tokio::spawn(field.run("127.0.0.1".into(), broker.port));

    // Commissioned from the counters the gateway reports, the plan's price pushed and verified.
    let commissioned = wait_until(Duration::from_secs(40), || async {
        states(&db, meter, "set_price").await == ["verified"]
    })
    .await;
    assert!(commissioned, "{:?}", states(&db, meter, "set_price").await);
    let read_back = || async {
        sqlx::query_as::<_, (i64, i64, i64, i64)>(
            "select purchase_count, control_count, remaining_fen, price_units
             from c_1.meter_secure_readback where meter_id = $1",
        )
        .bind(meter)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let who = worker(&db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let account = accounts::open(
        &mut tx,
        &who,
        &OpenAccount {
            shop_id: shop,
            holder_name: "赵六".into(),
            holder_phone: "13800138003".into(),
            meters: vec![OpeningMeter {
                meter_id: meter,
                manual_energy_wh: None,
                accept_remaining_fen: None,
            }],
            deposit_fen: AmountFen::ZERO,
            deposit_method: None,
            opening_credit_fen: AmountFen::ZERO,
        },
        "mqtt-open",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // ¥5 at the counter: one purchase, its frame carried in `secure`, verified by the counters.
    top_up(&db, account.id, 500).await;
    let bought = wait_until(Duration::from_secs(40), || async {
        states(&db, meter, "purchase").await == ["verified"]
    })
    .await;
    assert!(bought, "{:?}", states(&db, meter, "purchase").await);
    let (purchases, _, remaining, price) = read_back().await;
    assert_eq!((purchases, remaining, price), (4, 500, PRICE_UNITS));
    assert_eq!(balance(&db, format!("on_meter:{meter}")).await, 500);
    let messages: i64 = sqlx::query_scalar(
        "select count(*) from c_1.command_messages m join c_1.commands c on c.id = m.command_id
         where c.meter_id = $1 and c.op = 'purchase'",
    )
    .bind(meter)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(messages >= 1, "sent as its own message");

    // A person's trip and release go as secure frames; the gateway's readings show the relay.
    let relay = || async {
        sqlx::query_scalar::<_, Option<bool>>(
            "select relay_closed from c_1.meter_latest where meter_id = $1",
        )
        .bind(meter)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    for (op, closed) in [("trip", false), ("close", true)] {
        let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
            .await
            .unwrap();
        let command = powertab_core::power::control::operate(
            &mut tx,
            &who,
            Some(keyring.as_ref()),
            meter,
            op,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let done = wait_until(Duration::from_secs(40), || async {
            command_state(&db, command.id).await == "verified" && relay().await == Some(closed)
        })
        .await;
        assert!(
            done,
            "{op}: {} {:?}",
            command_state(&db, command.id).await,
            relay().await
        );
    }
    let (_, controls, _, _) = read_back().await;
    assert_eq!(
        controls, 10,
        "set price, trip, release on the control counter"
    );
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
    running.abort();
}

#[tokio::test]
async fn over_a_modbus_tcp_gateway_a_meter_side_meter_is_commissioned_and_buys_credit() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let keyring = Arc::new(Keyring::parse(&Keyring::new_key_entry("k1"), None).unwrap());
    // A Modbus-TCP gateway on loopback that ingest dials, with the meter-side meter at unit 1.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = i32::from(listener.local_addr().unwrap().port());
    let gateway = Uuid::now_v7();
    sqlx::query("insert into c_1.gateways (id, identity, kind, host) values ($1, 'secure-mb', 'modbus_tcp', '127.0.0.1')")
        .bind(gateway)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into control.gateway_directory (identity, company_id, gateway_id, kind, status) values ('secure-mb', 1, $1, 'modbus_tcp', 'enabled')")
        .bind(gateway)
        .execute(&db.pool)
        .await
        .unwrap();
    let (meter, shop) = add_secure_meter_on(&db, gateway, "1").await;
    sqlx::query(
        "update c_1.buses set tcp_port = $2, gap_ms = 10, timeout_ms = 400 where gateway_id = $1",
    )
    .bind(gateway)
    .bind(port)
    .execute(&db.pool)
    .await
    .unwrap();
    let km = exported_key(&db, &keyring, meter).await;
    let mut side = SecureMeter::new(NUMBER, &km).unwrap();
    side.purchase_count = 3;
    side.control_count = 7;
    side.price_units = 10_000;
    let sim = SimMeter::new(
        SimModel::Dtsy1352 { address: 1 },
        ShopType::Office,
        0,
        500_000,
    )
    .with_secure(side);
    let bus = Arc::new(Mutex::new(SimBus::modbus(vec![sim])));
    tokio::spawn(powertab_ingest::sim::modbus_gateway::serve(
        listener,
        bus.clone(),
    ));
    powertab_server::workers::spawn(
        db.pool.clone(),
        clock::system(),
        powertab_core::notify::accounts::Vendors::new(Default::default(), None),
        Some(keyring.clone()),
    );
    let (writer, _task) = powertab_ingest::writer::Writer::start(db.pool.clone());
    let dispatch = powertab_ingest::commands::Dispatch::default();
    tokio::spawn(powertab_ingest::commands::listen(
        db.pool.clone(),
        dispatch.clone(),
    ));
    tokio::spawn(powertab_ingest::modbus_tcp::serve(
        db.pool.clone(),
        writer,
        Duration::from_millis(500),
        dispatch,
        powertab_ingest::dial_policy::DialPolicy::new(&["127.0.0.0/8".to_owned()]).unwrap(),
    ));

    let commissioned = wait_until(Duration::from_secs(40), || async {
        states(&db, meter, "set_price").await == ["verified"]
    })
    .await;
    assert!(commissioned, "{:?}", states(&db, meter, "set_price").await);
    assert_eq!(on_the_meter(&bus).await.2, PRICE_UNITS as u32);
    let who = worker(&db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let account = accounts::open(
        &mut tx,
        &who,
        &OpenAccount {
            shop_id: shop,
            holder_name: "钱七".into(),
            holder_phone: "13800138004".into(),
            meters: vec![OpeningMeter {
                meter_id: meter,
                manual_energy_wh: None,
                accept_remaining_fen: None,
            }],
            deposit_fen: AmountFen::ZERO,
            deposit_method: None,
            opening_credit_fen: AmountFen::ZERO,
        },
        "modbus-tcp-open",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    top_up(&db, account.id, 500).await;
    let bought = wait_until(Duration::from_secs(40), || async {
        states(&db, meter, "purchase").await == ["verified"]
    })
    .await;
    assert!(bought, "{:?}", states(&db, meter, "purchase").await);
    let (count, remaining, _, closed) = on_the_meter(&bus).await;
    assert_eq!(
        (count, remaining, closed),
        (4, 500, true),
        "applied once, credit on it"
    );
    assert_eq!(balance(&db, format!("on_meter:{meter}")).await, 500);
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn an_online_payment_of_a_meter_side_account_is_bought_onto_its_meter_and_the_order_delivered(
) {
    use powertab_core::payments::orders::{self, Credited, PaidNotice, Provider};
    let rig = rig(ShopType::Office, 0).await;
    let who = worker(&rig.db).await;
    let schema = who.company().unwrap().schema.clone();
    let mut tx = powertab_core::db::begin_in(&rig.db.pool, &schema)
        .await
        .unwrap();
    let order = orders::create(
        &mut tx,
        &who,
        rig.account,
        Provider::Sandbox,
        AmountFen::from_fen(1_200),
        Some(rig.meter),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = powertab_core::db::begin_in(&rig.db.pool, &schema)
        .await
        .unwrap();
    let done = orders::credit(
        &mut tx,
        &who,
        &PaidNotice {
            provider: Provider::Sandbox,
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: "SBX-METER-1".into(),
            amount_fen: AmountFen::from_fen(1_200),
            paid_at: chrono::Utc::now(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(done, Credited::Wallet { .. }), "{done:?}");
    // Credited into the wallet, then bought onto the meter: the order ends delivered.
    let delivered = wait_until(Duration::from_secs(30), || async {
        let state: String =
            sqlx::query_scalar("select state from c_1.payment_orders where id = $1")
                .bind(order.id)
                .fetch_one(&rig.db.pool)
                .await
                .unwrap();
        state == "delivered"
    })
    .await;
    assert!(
        delivered,
        "{:?}",
        states(&rig.db, rig.meter, "purchase").await
    );
    assert_eq!(states(&rig.db, rig.meter, "purchase").await, ["verified"]);
    assert_eq!(on_the_meter(&rig.bus).await.1, 1_200);
    assert_eq!(
        balance(&rig.db, format!("on_meter:{}", rig.meter)).await,
        1_200
    );
    assert_eq!(balance(&rig.db, format!("wallet:{}", rig.account)).await, 0);
    let (ok, out) = crate::cli::powertab(&rig.db, &["ledger", "check"]);
    assert!(ok, "{out}");
    rig.running.abort();
}
