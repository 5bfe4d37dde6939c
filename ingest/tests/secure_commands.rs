//! Secure frames in the command queue, checked by the simulated meter: a meter-side meter is
//! commissioned with its counters first, then a purchase carries stored count + 1 in a frame
//! stored with the command that the meter (loaded with the exported key) accepts once; a second
//! purchase (or secure control command) waits for the first; platform-side meters, uncommissioned meters and bad amounts are
//! refused with the reason.

mod common;

use common::Field;
use powertab_core::auth::Principal;
use powertab_core::db;
use powertab_core::kernel::secrets::Keyring;
use powertab_core::secure::commands::{self, Counters};
use powertab_core::secure::frame::{MeterKeys, MeterNumber, Order, SecureOp};
use powertab_core::secure::{keys, verify_ack, AckStatus};
use powertab_core::tenancy::roles::Role;
use powertab_core::CoreError;
use powertab_ingest::sim::secure_meter::SecureMeter;

#[tokio::test]
async fn a_commissioned_meter_side_meter_takes_the_queued_purchase_once() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let platform_meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let (_, meters) = field.add_mqtt_gateway("gw-secure", &["1"]).await;
    let meter = meters[0];
    let s = field.schema.as_str();
    sqlx::query(&format!(
        "update {s}.meters set meter_number = '202611250001', prepayment_mode = 'meter' where id = $1"
    ))
    .bind(meter)
    .execute(&field.db.pool)
    .await
    .unwrap();
    let mut conn = field.db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, field.company_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let counter = Principal::system("counter", powertab_core::kernel::clock::system())
        .in_company(scope.clone());
    let keyring = Keyring::parse(&Keyring::new_key_entry("k1"), None).unwrap();
    let ask = |meter_id, op, amount| {
        let (field, keyring, counter) = (&field, &keyring, &counter);
        async move {
            let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
            let asked =
                commands::enqueue(&mut tx, keyring, counter, meter_id, op, amount, "rule:test")
                    .await;
            if asked.is_ok() {
                tx.commit().await.unwrap();
            }
            asked
        }
    };
    let refused = ask(platform_meter, SecureOp::Purchase, 5_000)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("platform-side"), "{refused}");
    let refused = ask(meter, SecureOp::Purchase, 5_000).await.unwrap_err();
    assert!(refused.to_string().contains("commission"), "{refused}");

    // Commissioning read: 2 purchases and 5 control commands so far, nothing on it.
    let counters = Counters {
        purchase_count: 2,
        control_count: 5,
        remaining_fen: 0,
        price_units: 10_000,
    };
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    commands::commission(
        &mut tx,
        &keyring,
        meter,
        counters,
        chrono::Utc::now(),
        "test",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let bad = ask(meter, SecureOp::Purchase, 0).await.unwrap_err();
    assert!(matches!(bad, CoreError::Validation { .. }), "{bad}");
    let purchase = ask(meter, SecureOp::Purchase, 5_000).await.unwrap();
    assert_eq!(purchase.expires_at, None, "money never expires");
    let waits = ask(meter, SecureOp::Purchase, 1_000).await.unwrap_err();
    assert!(waits.to_string().contains("unfinished"), "{waits}");
    let trip = ask(meter, SecureOp::Trip, 0).await.unwrap();
    let second = ask(meter, SecureOp::KeepPowerOn, 0).await.unwrap_err();
    assert!(second.to_string().contains("secure control"), "{second}");

    // The meter, loaded with its exported key and its counters, takes the stored frame once.
    let mut admin = counter.clone();
    admin.role = Role::CompanyAdmin;
    admin.username = "boss".into();
    let mut tx = db::begin_in(&field.db.pool, &field.schema).await.unwrap();
    let (_, km_hex) = keys::export_meter_key(&mut tx, &keyring, &admin, meter)
        .await
        .unwrap();
    let (frame, sequence) = commands::stored_frame(&mut tx, purchase.id)
        .await
        .unwrap()
        .unwrap();
    let (trip_frame, trip_sequence) = commands::stored_frame(&mut tx, trip.id)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (sequence, trip_sequence),
        (3, 6),
        "stored + 1 on each counter"
    );
    let km: [u8; 16] = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&km_hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    let mut side = SecureMeter::new("202611250001", &km).unwrap();
    side.purchase_count = 2;
    side.control_count = 5;
    let number = MeterNumber::parse("202611250001").unwrap();
    let keys = MeterKeys::from_meter_key(&km);
    let sent = Order {
        op: SecureOp::Purchase,
        meter: number,
        sequence,
        amount: 5_000,
        issued_at: 0,
        nonce: [0; 8],
    };
    let ack = verify_ack(&keys, &sent, &side.handle(&frame)).unwrap();
    assert_eq!(
        (ack.status, ack.remaining_fen, ack.purchase_count),
        (AckStatus::Accepted, 5_000, 3)
    );
    let again = verify_ack(&keys, &sent, &side.handle(&frame)).unwrap();
    assert_eq!(
        (again.status, again.remaining_fen),
        (AckStatus::AlreadyApplied, 5_000)
    );
    assert_eq!(
        side.handle(&trip_frame)[16],
        0,
        "the trip on control counter 6"
    );
    assert!(!side.relay_closed());
}
