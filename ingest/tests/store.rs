//! Storing readings in a real database: duplicates skipped, flags instead of consumption,
//! the latest state and daily energy kept current.

mod common;

use chrono::{Duration, DurationRound, Utc};
use common::Field;
use powertab_ingest::driver::MeterValues;
use powertab_ingest::store::{store_batch, NewReading, StoreReport};

fn reading(meter_id: uuid::Uuid, at: chrono::DateTime<Utc>, energy_wh: i64) -> NewReading {
    NewReading {
        meter_id,
        read_at: at,
        values: MeterValues {
            energy_wh,
            voltage_dv: vec![2201, 2199, 2200],
            alarms: vec!["alarm1"],
            ..MeterValues::default()
        },
        raw: vec![1, 2, 3],
        ratio_mismatch: false,
    }
}

#[tokio::test]
async fn readings_are_stored_once_and_only_plausible_deltas_count() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let pool = &field.db.pool;
    let t0 = (Utc::now() - Duration::hours(2))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let at = |s: i64| t0 + Duration::seconds(s);

    let first = vec![
        reading(meter, at(0), 1_000_000),
        reading(meter, at(30), 1_000_120),
    ];
    let report = store_batch(pool, &field.schema, &first).await.unwrap();
    assert_eq!(
        report,
        StoreReport {
            stored: 2,
            ..StoreReport::default()
        }
    );

    // The same readings again (a gateway's store-and-forward), one out of order, a reset, one
    // from long ago and one from the future, and a normal one.
    let second = vec![
        reading(meter, at(30), 1_000_120),
        reading(meter, at(15), 1_000_050),
        reading(meter, at(60), 20),
        reading(meter, at(-100 * 86_400), 5),
        reading(meter, Utc::now() + Duration::hours(1), 5),
        reading(meter, at(90), 1_000_200),
    ];
    let report = store_batch(pool, &field.schema, &second).await.unwrap();
    assert_eq!(
        report,
        StoreReport {
            stored: 3,
            duplicates: 1,
            rejected_time: 2,
            flagged: 2
        }
    );
    let s = field.schema.as_str();
    let flags: Vec<(i64, Option<String>)> = sqlx::query_as(&format!(
        "select energy_wh, flag from {s}.readings order by read_at"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        flags,
        vec![
            (1_000_000, None),
            (1_000_050, Some("out_of_order".into())),
            (1_000_120, None),
            (20, Some("reset".into())),
            (1_000_200, None),
        ]
    );
    let (latest, voltage, alarms): (i64, Vec<i32>, Vec<String>) = sqlx::query_as(&format!(
        "select energy_wh, voltage_dv, alarms from {s}.meter_latest where meter_id = $1"
    ))
    .bind(meter)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (latest, voltage, alarms),
        (1_000_200, vec![2201, 2199, 2200], vec!["alarm1".into()])
    );
    // 120 Wh, then 80 Wh from the last counted reading (the reset counted nothing).
    let daily: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(energy_wh), 0)::bigint from {s}.daily_energy"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(daily, 200);
}

#[tokio::test]
async fn readings_land_in_monthly_partitions() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    store_batch(
        &field.db.pool,
        &field.schema,
        &[reading(meter, Utc::now(), 1)],
    )
    .await
    .unwrap();
    let partition: String = sqlx::query_scalar(&format!(
        "select tableoid::regclass::text from {}.readings",
        field.schema.as_str()
    ))
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert!(
        partition.contains(&Utc::now().format("readings_%Y%m").to_string()),
        "{partition}"
    );
}

#[tokio::test]
async fn partitions_are_made_ahead_once() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let pool = &field.db.pool;
    // The migration made up to two months ahead; five ahead needs three more, once.
    let made = powertab_ingest::store::ensure_partitions(pool, 5)
        .await
        .unwrap();
    assert_eq!(made, 3);
    assert_eq!(
        powertab_ingest::store::ensure_partitions(pool, 5)
            .await
            .unwrap(),
        0
    );
    let ahead = (Utc::now() + Duration::days(5 * 31))
        .format("readings_%Y%m")
        .to_string();
    let exists: bool = sqlx::query_scalar(&format!(
        "select to_regclass('{}.{ahead}') is not null",
        field.schema.as_str()
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(exists, "{ahead}");
}

#[tokio::test]
async fn stale_meters_and_offline_gateways_raise_and_clear_alarms() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let pool = &field.db.pool;
    let s = field.schema.as_str();
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    // Everything is new: nothing is stale yet.
    let report = powertab_ingest::alarms::check(pool, &field.schema)
        .await
        .unwrap();
    assert_eq!(report.raised, 0);
    // Ten minutes later (made so by ageing the rows), with the default 5-minute limits.
    for sql in [
        format!("update {s}.meters set created_at = now() - interval '10 minutes'"),
        format!("update {s}.gateways set created_at = now() - interval '10 minutes'"),
    ] {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
    let report = powertab_ingest::alarms::check(pool, &field.schema)
        .await
        .unwrap();
    assert_eq!(
        report.raised, 2,
        "the meter is stale and the gateway offline"
    );
    let again = powertab_ingest::alarms::check(pool, &field.schema)
        .await
        .unwrap();
    assert_eq!(again.raised, 0, "one open alarm per target");
    // A reading arrives: the meter alarm clears.
    store_batch(pool, &field.schema, &[reading(meter, Utc::now(), 10)])
        .await
        .unwrap();
    let report = powertab_ingest::alarms::check(pool, &field.schema)
        .await
        .unwrap();
    assert_eq!(report.cleared, 1);
    let open: Vec<String> = sqlx::query_scalar(&format!(
        "select kind from {s}.field_alarms where cleared_at is null"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(open, vec!["gateway_offline"]);
    // The bus comes online: the gateway alarm clears.
    sqlx::query(&format!(
        "insert into {s}.bus_sessions (bus_id, gateway_id, online) select id, gateway_id, true from {s}.buses"
    ))
    .execute(pool)
    .await
    .unwrap();
    let report = powertab_ingest::alarms::check(pool, &field.schema)
        .await
        .unwrap();
    assert_eq!(report.cleared, 1);
}
