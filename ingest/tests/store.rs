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
            flagged: 3,
            verified: 0,
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
            // The reset is the baseline now: back up by a megawatt-hour in 30 s is a jump.
            (1_000_200, Some("jump".into())),
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
    // 120 Wh; the reset and the jump after it are held and count nothing.
    let daily: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(energy_wh), 0)::bigint from {s}.daily_energy"
    ))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(daily, 120);
}

/// Sums of a meter's daily energy, its hourly energy (what the meter page draws) and the age of
/// its newest state.
async fn energy_of(field: &Field, meter: uuid::Uuid) -> (i64, i64, chrono::DateTime<Utc>) {
    let s = field.schema.as_str();
    let daily: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(energy_wh), 0)::bigint from {s}.daily_energy where meter_id = $1"
    ))
    .bind(meter)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    let hourly: i64 = sqlx::query_scalar(&format!(
        "select coalesce(sum(counted_wh), 0)::bigint from {s}.readings where meter_id = $1"
    ))
    .bind(meter)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    let latest: chrono::DateTime<Utc> = sqlx::query_scalar(&format!(
        "select read_at from {s}.meter_latest where meter_id = $1"
    ))
    .bind(meter)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    (daily, hourly, latest)
}

/// DESIGN.md's flag table: one event flags one interval. A meter cleared to 0, a 448 kWh step
/// and a day of silence each hold their own interval; the readings after them count as usual,
/// the meter stays fresh, and daily and hourly energy agree.
#[tokio::test]
async fn one_event_flags_one_interval_and_the_meter_stays_fresh() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let pool = &field.db.pool;
    let t0 = (Utc::now() - Duration::days(3))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let at = |s: i64| t0 + Duration::seconds(s);
    let steps = [
        (0, 5_000_000),
        (30, 5_000_100),
        (60, 0),                    // reset: the meter was cleared
        (90, 60),                   // counts 60 Wh from the reset
        (120, 448_060),             // a 448 kWh step in 30 s: jump, held
        (150, 448_100),             // counts 40 Wh from the step
        (150 + 25 * 3600, 450_100), // a day of silence: gap, held
        (180 + 25 * 3600, 450_130), // counts 30 Wh
    ];
    for (s, wh) in steps {
        store_batch(pool, &field.schema, &[reading(meter, at(s), wh)])
            .await
            .unwrap();
    }
    let s = field.schema.as_str();
    let flags: Vec<Option<String>> = sqlx::query_scalar(&format!(
        "select flag from {s}.readings where meter_id = $1 order by read_at"
    ))
    .bind(meter)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        flags,
        [
            None,
            None,
            Some("reset".into()),
            None,
            Some("jump".into()),
            None,
            Some("gap".into()),
            None
        ]
    );
    let (daily, hourly, latest) = energy_of(&field, meter).await;
    assert_eq!(daily, 100 + 60 + 40 + 30);
    assert_eq!(hourly, daily, "hourly and daily energy agree");
    assert_eq!(
        latest,
        at(180 + 25 * 3600),
        "freshness is the newest stored reading"
    );
}

/// Readings stored under the older rule (only unflagged readings moved the baseline) are
/// repaired by the rebuild: the stuck baseline moves, the jump step is no longer counted.
#[tokio::test]
async fn the_rebuild_repairs_what_the_older_rule_wrote() {
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let meter = field.meter(0, "dtsy1352", "1", "1001").await;
    let pool = &field.db.pool;
    let s = field.schema.as_str();
    let t0 = (Utc::now() - Duration::hours(5))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let at = |s: i64| t0 + Duration::seconds(s);
    // As the old rule left it: a 448 kWh step at 60 s flagged "jump", the next readings
    // compared with the stuck baseline at 30 s, until one an hour later looked plausible
    // (448 kWh over an hour is below 5 MW) and the whole step was counted.
    let old: [(i64, i64, Option<&str>, Option<i64>); 5] = [
        (0, 1_000_000, None, None),
        (30, 1_000_100, None, Some(100)),
        (60, 1_448_100, Some("jump"), None),
        (90, 1_448_150, Some("jump"), None),
        (3630, 1_448_200, None, Some(448_100)),
    ];
    for (sec, wh, flag, counted) in old {
        sqlx::query(&format!(
            "insert into {s}.readings (meter_id, read_at, energy_wh, flag, counted_wh) values ($1, $2, $3, $4, $5)"
        ))
        .bind(meter)
        .bind(at(sec))
        .bind(wh)
        .bind(flag)
        .bind(counted)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query(&format!(
        "insert into {s}.meter_latest (meter_id, read_at, energy_wh) values ($1, $2, 1448200);
         "
    ))
    .bind(meter)
    .bind(at(3630))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {s}.daily_energy (meter_id, day, period, energy_wh) values ($1, current_date, 'flat', 448200)"
    ))
    .bind(meter)
    .execute(pool)
    .await
    .unwrap();
    let report = powertab_ingest::store::rebuild_meter(pool, &field.schema, meter)
        .await
        .unwrap();
    assert_eq!(report.daily_wh_before, 448_200);
    assert_eq!(
        report.changed, 2,
        "the reading after the step and the one that counted it: {report:?}"
    );
    let (daily, hourly, _) = energy_of(&field, meter).await;
    assert_eq!(
        daily,
        100 + 50 + 50,
        "the step is held; what followed it counts"
    );
    assert_eq!(hourly, daily);
    let flags: Vec<Option<String>> = sqlx::query_scalar(&format!(
        "select flag from {s}.readings where meter_id = $1 order by read_at"
    ))
    .bind(meter)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(flags, [None, None, Some("jump".into()), None, None]);
    // Running it again changes nothing.
    let again = powertab_ingest::store::rebuild_meter(pool, &field.schema, meter)
        .await
        .unwrap();
    assert_eq!((again.changed, again.daily_wh), (0, daily));
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

/// Daily energy follows the meter's own TOU registers only where the meter is set to
/// (`tou_registers_match`); otherwise, and when the registers do not add up, the plan's clock.
#[tokio::test]
async fn tou_registers_split_daily_energy_only_where_the_meter_says_they_match() {
    use chrono::TimeZone;
    let field = Field::new("acme", "dtu-1", b"REG-0001", &["modbus_rtu"]).await;
    let s = field.schema.as_str().to_owned();
    let pool = &field.db.pool;
    // Peak until noon, valley after (local time).
    let plan = uuid::Uuid::now_v7();
    sqlx::query(&format!(
        "insert into {s}.tariff_plans (id, name) values ($1, 'tou')"
    ))
    .bind(plan)
    .execute(pool)
    .await
    .unwrap();
    let body = serde_json::json!({
        "effective": "2020-01-01",
        "prices": {"peak": 10_000, "valley": 3_000},
        "seasons": [{"from": [1, 1], "to": [12, 31], "workday": {"switches": [
            {"minute": 0, "period": "peak"}, {"minute": 720, "period": "valley"}]}, "holiday": null}],
    });
    sqlx::query(&format!(
        "insert into {s}.tariff_versions (plan_id, effective, body) values ($1, '2020-01-01', $2)"
    ))
    .bind(plan)
    .bind(body)
    .execute(pool)
    .await
    .unwrap();
    let by_registers = field.meter(0, "dtsy1352", "1", "2001").await;
    let by_clock = field.meter(0, "dtsy1352", "2", "2002").await;
    let lagging = field.meter(0, "dtsy1352", "3", "2003").await;
    sqlx::query(&format!(
        "update {s}.meters set tariff_plan_id = $1, tou_registers_match = (id <> $2)"
    ))
    .bind(plan)
    .bind(by_clock)
    .execute(pool)
    .await
    .unwrap();
    // A minute across noon yesterday: the clock says 30 Wh peak and 30 Wh valley, the meter's
    // registers say 50 peak and 10 valley.
    let yesterday =
        (Utc::now().with_timezone(&chrono_tz::Asia::Shanghai) - Duration::days(1)).date_naive();
    let noon = chrono_tz::Asia::Shanghai
        .from_local_datetime(&yesterday.and_hms_opt(12, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let with_tou = |meter, at, energy_wh, peak, valley| NewReading {
        values: MeterValues {
            tou_wh: Some([Some(0), Some(peak), Some(0), Some(valley), None]),
            ..reading(meter, at, energy_wh).values
        },
        ..reading(meter, at, energy_wh)
    };
    let mut batch = Vec::new();
    for meter in [by_registers, by_clock] {
        batch.push(with_tou(
            meter,
            noon - Duration::seconds(30),
            1_000,
            600,
            400,
        ));
        batch.push(with_tou(
            meter,
            noon + Duration::seconds(30),
            1_060,
            650,
            410,
        ));
    }
    // Registers that lag the total (58 of 60 Wh): the clock decides.
    batch.push(with_tou(
        lagging,
        noon - Duration::seconds(30),
        1_000,
        600,
        400,
    ));
    batch.push(with_tou(
        lagging,
        noon + Duration::seconds(30),
        1_060,
        649,
        409,
    ));
    store_batch(pool, &field.schema, &batch).await.unwrap();
    let sql = format!(
        "select period, energy_wh from {s}.daily_energy where meter_id = $1 order by period"
    );
    let split = |meter| {
        let query = sqlx::query_as::<_, (String, i64)>(&sql).bind(meter);
        async move { query.fetch_all(pool).await.unwrap() }
    };
    assert_eq!(
        split(by_registers).await,
        vec![("peak".into(), 50), ("valley".into(), 10)]
    );
    assert_eq!(
        split(by_clock).await,
        vec![("peak".into(), 30), ("valley".into(), 30)]
    );
    assert_eq!(
        split(lagging).await,
        vec![("peak".into(), 30), ("valley".into(), 30)]
    );
}
