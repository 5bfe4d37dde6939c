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
            };
            counter::top_up(&mut tx, who, account, &input, &key)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
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
    let _field = simulate_demo(&db, Duration::from_millis(500)).await;
    // The trip is due the moment the available balance reaches the trip level (0).
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
    );
    let who = company_worker(&db).await;
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
    let read = wait_until(Duration::from_secs(40), || async {
        relay(&db, meters[0].1).await.is_some() && relay(&db, meters[1].1).await.is_some()
    })
    .await;
    assert!(read, "both meters read before the account opens");
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let input = OpenAccount {
        shop_id: meters[0].0,
        holder_name: "张三".into(),
        holder_phone: "13800138000".into(),
        meters: meters
            .iter()
            .map(|m| OpeningMeter {
                meter_id: m.1,
                manual_energy_wh: None,
            })
            .collect(),
        deposit_fen: AmountFen::ZERO,
        deposit_method: None,
        opening_credit_fen: AmountFen::ZERO,
    };
    let account = accounts::open(&mut tx, &who, &input, "e2e-open")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    counter_move(&db, &who, account.id, None).await;
    for m in &meters {
        assert_eq!(relay(&db, m.1).await, Some(true), "closed before: {}", m.2);
    }
    assert!(states(&db, meters[0].1, "trip").await.is_empty());

    // The balance reaches the trip level: both relays open, read back open.
    let mut tx = powertab_core::db::begin_in(&db.pool, &who.company().unwrap().schema)
        .await
        .unwrap();
    let all = accounts::get(&mut tx, &who, account.id)
        .await
        .unwrap()
        .available_fen;
    drop(tx);
    counter_move(&db, &who, account.id, Some(all)).await;
    let opened = wait_until(Duration::from_secs(30), || async {
        let mut done = true;
        for m in &meters {
            done &= states(&db, m.1, "trip").await == ["verified"]
                && relay(&db, m.1).await == Some(false);
        }
        done
    })
    .await;
    assert!(
        opened,
        "both tripped and read back open: dtu {:?} {:?}, mqtt {:?} {:?}",
        states(&db, meters[0].1, "trip").await,
        relay(&db, meters[0].1).await,
        states(&db, meters[1].1, "trip").await,
        relay(&db, meters[1].1).await
    );

    // A counter top-up closes both; the read-back confirms.
    counter_move(&db, &who, account.id, None).await;
    let closed = wait_until(Duration::from_secs(30), || async {
        let mut done = true;
        for m in &meters {
            done &= states(&db, m.1, "close").await == ["verified"]
                && relay(&db, m.1).await == Some(true);
        }
        done
    })
    .await;
    assert!(
        closed,
        "both closed and read back closed: dtu {:?}, mqtt {:?}",
        states(&db, meters[0].1, "close").await,
        states(&db, meters[1].1, "close").await
    );
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
