//! Power follows money end to end (issue: Proof): the demo property on a fresh database, its DTU
//! and MQTT gateway simulated, ingest polling both, the server's workers running the rules on
//! every wallet change — a shop's balance reaches the trip level, the relay opens and is read
//! back open; a counter top-up closes it and the read-back confirms; a shared wallet trips
//! both its meters, one on each transport.

use crate::cli::simulate_demo;
use powertab_core::auth::Principal;
use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::clock;
use powertab_core::kernel::money::AmountFen;
use powertab_testkit::{wait_until, TestDb};
use std::time::Duration;
use uuid::Uuid;

async fn company_worker(db: &TestDb) -> Principal {
    let mut conn = db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    Principal::system("e2e", clock::system()).in_company(scope)
}

async fn counter_move(db: &TestDb, who: &Principal, account: Uuid, refund: Option<AmountFen>) {
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let key = Uuid::now_v7().to_string();
    match refund {
        Some(amount) => {
            let input = CounterInput {
                amount_fen: amount,
                method: CounterMethod::Card,
                reason: "测试".into(),
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

/// The settings that make the trip due the moment the available balance reaches the trip level
/// (0), day or night, and the server's workers running.
pub(crate) async fn rules_at_once(db: &TestDb) {
    sqlx::query(
        "update c_1.settings set trip_notice_s = 0, quiet_start_minute = null,
             quiet_end_minute = null, overdraft_limit_fen = 0, no_trip_on_holidays = false",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    powertab_server::workers::spawn(
        db.pool.clone(),
        clock::system(),
        powertab_core::notify::accounts::Vendors::new(Default::default(), None),
        None,
    );
}

/// Opens one account on `shop` with `meters` (once each has a reading), tops it up, takes the
/// balance to the trip level and back, and checks every meter tripped and closed, read back.
async fn prove_trip_and_close(db: &TestDb, shop: Uuid, meters: &[(Uuid, &str)]) -> Uuid {
    let read = wait_until(Duration::from_secs(40), || async {
        let mut all = true;
        for m in meters {
            all &= relay(db, m.0).await.is_some();
        }
        all
    })
    .await;
    assert!(read, "every meter read before the account opens");
    let ids: Vec<Uuid> = meters.iter().map(|m| m.0).collect();
    let account = open_and_top_up(db, shop, &ids).await;
    for m in meters {
        assert_eq!(relay(db, m.0).await, Some(true), "closed before: {}", m.1);
        assert!(states(db, m.0, "trip").await.is_empty());
    }
    to_trip_level(db, account).await;
    let who = company_worker(db).await;
    for (op, closed) in [("trip", false), ("close", true)] {
        let done = wait_until(Duration::from_secs(30), || async {
            let mut done = true;
            for m in meters {
                done &= states(db, m.0, op).await == ["verified"]
                    && relay(db, m.0).await == Some(closed);
            }
            done
        })
        .await;
        let mut seen = Vec::new();
        for m in meters {
            seen.push((m.1, states(db, m.0, op).await, relay(db, m.0).await));
        }
        assert!(done, "{op} verified and read back on every meter: {seen:?}");
        if op == "trip" {
            // A counter top-up closes them all again.
            counter_move(db, &who, account, None).await;
        }
    }
    account
}

/// Opens one account on `shop` with `meters` (from their latest readings) and tops it up ¥20.
pub(crate) async fn open_and_top_up(db: &TestDb, shop: Uuid, meters: &[Uuid]) -> Uuid {
    let who = company_worker(db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let input = OpenAccount {
        shop_id: shop,
        holder_name: "张三".into(),
        holder_phone: "13800138000".into(),
        meters: meters
            .iter()
            .map(|m| OpeningMeter {
                meter_id: *m,
                manual_energy_wh: None,
                accept_remaining_fen: None,
            })
            .collect(),
        deposit_fen: AmountFen::ZERO,
        deposit_method: None,
        opening_credit_fen: AmountFen::ZERO,
    };
    let account = accounts::open(&mut tx, &who, &input, &format!("e2e-open-{shop}"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counter_move(db, &who, account.id, None).await;
    account.id
}

/// Refunds `account`'s whole available balance: it is at the trip level (0).
pub(crate) async fn to_trip_level(db: &TestDb, account: Uuid) {
    let who = company_worker(db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let all = accounts::get(&mut tx, &who, account)
        .await
        .unwrap()
        .available_fen;
    drop(tx);
    counter_move(db, &who, account, Some(all)).await;
}

/// The relay state the meter's latest reading reports.
async fn relay(db: &TestDb, meter: Uuid) -> Option<bool> {
    sqlx::query_scalar("select relay_closed from c_1.meter_latest where meter_id = $1")
        .bind(meter)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
}

/// The states of `meter`'s `op` commands, oldest first.
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

#[tokio::test]
async fn a_shared_wallet_trips_its_dtu_and_mqtt_meters_and_a_top_up_closes_both_read_back() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let _field = simulate_demo(&db, Duration::from_millis(500)).await;
    rules_at_once(&db).await;
    // Shop 101's meter hangs on the DTU, shop 201's on the MQTT gateway: one wallet for both.
    let meters: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select s.id, m.id, g.kind from c_1.meters m join c_1.shops s on s.id = m.shop_id
         join c_1.buses b on b.id = m.bus_id join c_1.gateways g on g.id = b.gateway_id
         where s.number in ('101', '201') order by s.number",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        meters.iter().map(|m| m.2.as_str()).collect::<Vec<_>>(),
        ["dtu", "mqtt"]
    );
    // Shop 101 takes over the second meter: one shop, one wallet, two meters, two transports.
    sqlx::query("update c_1.meters set shop_id = $1 where id = $2")
        .bind(meters[0].0)
        .bind(meters[1].1)
        .execute(&db.pool)
        .await
        .unwrap();
    prove_trip_and_close(
        &db,
        meters[0].0,
        &[(meters[0].1, "dtu"), (meters[1].1, "mqtt")],
    )
    .await;
    // The tenant heard of both, once each: after the relays were seen.
    let told = wait_until(Duration::from_secs(20), || async {
        let kinds: Vec<String> = sqlx::query_scalar(
            "select kind from c_1.notifications where kind in ('tripped', 'restored') order by created_at",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        kinds == ["tripped", "restored"]
    })
    .await;
    assert!(told, "power cut, then power back");
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_shared_wallet_trips_a_modbus_tcp_meter_and_a_dlt645_meter_and_closes_both_read_back() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    // Shop 102 gets a meter behind a Modbus-TCP gateway on loopback and a DL/T 645 meter on a
    // second port of the demo DTU.
    let shop: Uuid = sqlx::query_scalar("select id from c_1.shops where number = '102'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = i32::from(listener.local_addr().unwrap().port());
    let (gateway, mb_bus, dlt_bus) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("insert into c_1.gateways (id, identity, kind, host) values ($1, 'e2e-mb', 'modbus_tcp', '127.0.0.1')")
        .bind(gateway)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into control.gateway_directory (identity, company_id, gateway_id, kind, status) values ('e2e-mb', 1, $1, 'modbus_tcp', 'enabled')")
        .bind(gateway)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into c_1.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms, tcp_port)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 10, 400, $3)",
    )
    .bind(mb_bus)
    .bind(gateway)
    .bind(port)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into c_1.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         select $1, id, 2, 'dlt645', 2400, 'E', 1, 20, 1000 from c_1.gateways where identity = 'demo-dtu-01'",
    )
    .bind(dlt_bus)
    .execute(&db.pool)
    .await
    .unwrap();
    let (mb_meter, dlt_meter) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, bus, model, address, number) in [
        (mb_meter, mb_bus, "dtsy1352", "1", "E2E0001"),
        (dlt_meter, dlt_bus, "dlt645", "202611250099", "E2E0002"),
    ] {
        sqlx::query(
            "insert into c_1.meters (id, bus_id, model, address, meter_number, shop_id, tariff_plan_id)
             values ($1, $2, $3, $4, $5, $6, (select id from c_1.tariff_plans limit 1))",
        )
        .bind(id)
        .bind(bus)
        .bind(model)
        .bind(address)
        .bind(number)
        .bind(shop)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let gateway_bus = std::sync::Arc::new(tokio::sync::Mutex::new(
        powertab_ingest::sim::SimBus::modbus(vec![powertab_ingest::sim::SimMeter::new(
            powertab_ingest::sim::SimModel::Dtsy1352 { address: 1 },
            powertab_core::tariff::profile::ShopType::Retail,
            30_000,
            1_000_000,
        )]),
    ));
    tokio::spawn(powertab_ingest::sim::modbus_gateway::serve(
        listener,
        gateway_bus,
    ));
    let (_field, simulated) = simulate_demo(&db, Duration::from_millis(500)).await;
    assert_eq!(
        simulated, 7,
        "the DTU's second port carries the DL/T 645 meter"
    );
    rules_at_once(&db).await;
    let account = prove_trip_and_close(
        &db,
        shop,
        &[(mb_meter, "modbus_tcp"), (dlt_meter, "dlt645")],
    )
    .await;
    // Keep-power on the DL/T 645 meter (3A, read back closed): the next time the balance reaches
    // the trip level only the other meter trips.
    let who = company_worker(&db).await;
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    powertab_core::power::control::operate(&mut tx, &who, None, dlt_meter, "keep_power_on")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let kept = wait_until(Duration::from_secs(30), || async {
        states(&db, dlt_meter, "keep_power_on").await == ["verified"]
    })
    .await;
    assert!(kept, "{:?}", states(&db, dlt_meter, "keep_power_on").await);
    to_trip_level(&db, account).await;
    let tripped = wait_until(Duration::from_secs(30), || async {
        states(&db, mb_meter, "trip").await == ["verified", "verified"]
            && relay(&db, mb_meter).await == Some(false)
    })
    .await;
    assert!(
        tripped,
        "the other meter trips: {:?}",
        states(&db, mb_meter, "trip").await
    );
    assert_eq!(
        states(&db, dlt_meter, "trip").await,
        ["verified"],
        "keep-power: no new trip"
    );
    assert_eq!(
        relay(&db, dlt_meter).await,
        Some(true),
        "and its power stays on"
    );
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
}

/// Quiet hours through the whole path: the workers' clock is in the company's quiet window when
/// the balance reaches the trip level, so nothing is sent to the DTU meter (it keeps power and
/// keeps being read); once the clock passes the window's end, the sweep trips it and the relay is
/// read back open. The workers' clock starts an hour behind the real one (and catches up), so the
/// commands the sweep writes carry real times for ingest.
#[tokio::test]
async fn quiet_hours_postpone_the_trip_over_the_dtu_until_the_window_ends() {
    use chrono::Timelike;
    use powertab_core::kernel::clock::Clock;
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let _field = simulate_demo(&db, Duration::from_millis(500)).await;
    let now = chrono::Utc::now();
    let clock = clock::ManualClock::at(now - chrono::Duration::hours(1));
    // The window: from 10 minutes before the workers' time to 5 minutes after it, local time.
    let local = (clock.now() + chrono::Duration::hours(8)).time();
    let minute = i32::try_from(local.hour() * 60 + local.minute()).unwrap();
    let (start, end) = (
        (minute - 10).rem_euclid(1440),
        (minute + 5).rem_euclid(1440),
    );
    sqlx::query(
        "update c_1.settings set trip_notice_s = 0, quiet_start_minute = $1, quiet_end_minute = $2,
             overdraft_limit_fen = 0, no_trip_on_holidays = false, arrears_cap_fen = 1000000",
    )
    .bind(start)
    .bind(end)
    .execute(&db.pool)
    .await
    .unwrap();
    let settings_zone: String =
        sqlx::query_scalar("select time_zone from control.company where id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        settings_zone, "Asia/Shanghai",
        "the window above is in UTC+8"
    );
    powertab_server::workers::spawn(
        db.pool.clone(),
        clock.clone(),
        powertab_core::notify::accounts::Vendors::new(Default::default(), None),
        None,
    );
    let (shop, meter): (Uuid, Uuid) = sqlx::query_as(
        "select s.id, m.id from c_1.meters m join c_1.shops s on s.id = m.shop_id where s.number = '101'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(40), || async {
            relay(&db, meter).await.is_some()
        })
        .await,
        "the meter is read"
    );
    let account = open_and_top_up(&db, shop, &[meter]).await;
    to_trip_level(&db, account).await;
    // The trip notice (0 s) went out and the trip is due, but quiet: through a whole sweep
    // (every 10 s) and many polls, no trip is written and the meter stays on.
    let tripped_early = wait_until(Duration::from_secs(12), || async {
        !states(&db, meter, "trip").await.is_empty()
    })
    .await;
    assert!(!tripped_early, "quiet hours postpone the trip");
    assert_eq!(relay(&db, meter).await, Some(true), "still on, still read");
    let noticed: i64 =
        sqlx::query_scalar("select count(*) from c_1.notifications where kind = 'trip_notice'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(noticed >= 1, "the tenant was told what is coming");
    // The workers' clock reaches the real time: the window ended 55 minutes ago.
    clock.set(chrono::Utc::now());
    let tripped = wait_until(Duration::from_secs(30), || async {
        states(&db, meter, "trip").await == ["verified"] && relay(&db, meter).await == Some(false)
    })
    .await;
    assert!(
        tripped,
        "after the window the sweep trips it, read back open: {:?} {:?}",
        states(&db, meter, "trip").await,
        relay(&db, meter).await
    );
    let (ok, out) = crate::cli::powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
}
