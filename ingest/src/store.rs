//! Storing readings (DESIGN.md: Ingest, Storage): one transaction per company batch. Readings
//! outside [now − 90 days, now + 5 min] are rejected and counted; duplicates are skipped by the
//! primary key (`insert … on conflict do nothing`); each new reading is classified against the
//! meter's previous one ([`classify`], DESIGN.md's flag table). A plausible, in-order delta and a
//! register rollover (max − previous + new) count as consumption: they are written to the
//! reading's `counted_wh` and added to `daily_energy` per local day and TOU period (the meter's
//! plan's TOU clock, split exactly as rating splits it); hourly energy sums `counted_wh`, so the
//! two always agree. Resets, gaps, jumps and ratio mismatches are held (counted nothing until an
//! operator releases or corrects them). **Every stored reading except an out-of-order one is the
//! baseline for the next** and moves `meter_latest` (freshness): one event flags one interval,
//! never every reading after it. [`rebuild_meter`] re-classifies a meter's stored readings with
//! these rules and rebuilds its daily energy (`powertab readings rebuild`), repairing what the
//! older rule — only unflagged readings moved the baseline — wrote. The batch's transaction also
//! verifies the commands its readings prove (`powertab_core::commands::verify_by_readings`).

use crate::driver::MeterValues;
use chrono::{DateTime, Duration, Utc};
use powertab_core::commands::{self, Observed};
use powertab_core::field::readings::{classify, tou_split, Class, Previous, TouRegisters};
use powertab_core::kernel::money::EnergyWh;
use powertab_core::kernel::names::SchemaName;
use powertab_core::tariff::rating::{self, RatingState, Usage};
use powertab_core::tariff::{Calendar, Period, TariffVersion};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// Oldest reading accepted.
pub const MAX_AGE_DAYS: i64 = 90;
/// Furthest a meter clock may run ahead.
pub const MAX_AHEAD_MINUTES: i64 = 5;
/// A reading from the field.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReading {
    pub meter_id: Uuid,
    pub read_at: DateTime<Utc>,
    pub values: MeterValues,
    /// The bytes the values came from.
    pub raw: Vec<u8>,
    /// The meter's own PT/CT differ from the configured ones (DESIGN.md: CT/PT).
    pub ratio_mismatch: bool,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreReport {
    pub stored: usize,
    pub duplicates: usize,
    pub rejected_time: usize,
    pub flagged: usize,
    /// Commands (read-now, relay) the stored readings verified.
    pub verified: usize,
}

/// Writes a status row (a session, a command's state) in `schema`; a failure is logged, not
/// fatal: the next update corrects it.
pub(crate) async fn record(
    pool: &PgPool,
    schema: &SchemaName,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    what: &str,
) {
    if let Err(e) = powertab_core::db::execute_in(pool, schema, query).await {
        tracing::warn!(schema = schema.as_str(), error = %e, "recording {what} failed");
    }
}

/// Makes the monthly `readings` partitions of every company from this month to `months_ahead`
/// months ahead (readings outside them land in the DEFAULT partition, which is slower to
/// query). Ingest calls it at start and daily. A partition whose range already has rows in
/// DEFAULT cannot be created; that is logged and left for an operator.
pub async fn ensure_partitions(pool: &PgPool, months_ahead: i32) -> anyhow::Result<usize> {
    let schemas: Vec<String> = sqlx::query_scalar("select schema_name from control.company")
        .fetch_all(pool)
        .await?;
    let mut made = 0;
    for schema in schemas {
        let schema = SchemaName::from_stored(&schema)?;
        let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
        let months: Vec<(String, chrono::NaiveDate, chrono::NaiveDate)> = sqlx::query_as(
            "select 'readings_' || to_char(m, 'YYYYMM'), m::date, (m + interval '1 month')::date
             from generate_series(date_trunc('month', now()), date_trunc('month', now()) + make_interval(months => $1),
                                  interval '1 month') as m
             where to_regclass('readings_' || to_char(m, 'YYYYMM')) is null",
        )
        .bind(months_ahead)
        .fetch_all(&mut *tx)
        .await?;
        for (name, from, to) in months {
            let created = sqlx::query(&format!(
                "create table if not exists {name} partition of readings for values from ('{from}') to ('{to}')"
            ))
            .execute(&mut *tx)
            .await;
            match created {
                Ok(_) => made += 1,
                Err(e) => {
                    tracing::warn!(schema = schema.as_str(), partition = %name, error = %e, "partition not made");
                    break;
                }
            }
        }
        tx.commit().await?;
    }
    Ok(made)
}

/// Stores `readings` of one company (all of its meters) in one transaction.
pub async fn store_batch(
    pool: &PgPool,
    schema: &SchemaName,
    readings: &[NewReading],
) -> anyhow::Result<StoreReport> {
    let mut report = StoreReport::default();
    let now = Utc::now();
    let oldest = now - Duration::days(MAX_AGE_DAYS);
    let newest = now + Duration::minutes(MAX_AHEAD_MINUTES);
    let mut accepted: Vec<&NewReading> = readings
        .iter()
        .filter(|r| (oldest..=newest).contains(&r.read_at))
        .collect();
    report.rejected_time = readings.len() - accepted.len();
    accepted.sort_by_key(|r| (r.meter_id, r.read_at));
    accepted.dedup_by_key(|r| (r.meter_id, r.read_at));
    report.duplicates = readings.len() - report.rejected_time - accepted.len();
    if accepted.is_empty() {
        return Ok(report);
    }
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    let meter_ids: Vec<Uuid> = {
        let mut ids: Vec<Uuid> = accepted.iter().map(|r| r.meter_id).collect();
        ids.dedup();
        ids
    };
    let (mut previous, mut previous_tou) = load_previous(&mut tx, &meter_ids).await?;
    let context = DailyContext::load(&mut tx, &meter_ids).await?;
    let mut flags = Vec::with_capacity(accepted.len());
    let mut counted = Vec::with_capacity(accepted.len());
    let mut daily: BTreeMap<(Uuid, chrono::NaiveDate, Period), i64> = BTreeMap::new();
    let mut latest: HashMap<Uuid, &NewReading> = HashMap::new();
    for r in &accepted {
        let class = classify(
            previous.get(&r.meter_id).copied(),
            r.read_at,
            r.values.energy_wh,
            r.ratio_mismatch,
        );
        flags.push(class.flag());
        counted.push(class.counted_wh());
        if let Some(wh) = class.counted_wh() {
            let prev = previous[&r.meter_id];
            let split = context.register_split(
                r.meter_id,
                previous_tou.get(&r.meter_id),
                r.values.tou_wh.as_ref(),
                wh,
            );
            context.attribute(r.meter_id, prev.read_at, r.read_at, wh, split, &mut daily);
        }
        if class.moves_baseline() {
            match r.values.tou_wh {
                Some(registers) => previous_tou.insert(r.meter_id, registers),
                None => previous_tou.remove(&r.meter_id),
            };
            previous.insert(
                r.meter_id,
                Previous {
                    read_at: r.read_at,
                    energy_wh: r.values.energy_wh,
                },
            );
            latest.insert(r.meter_id, r);
        }
    }
    let inserted = insert_readings(&mut tx, &accepted, &flags, &counted).await?;
    report.stored = inserted;
    report.duplicates += accepted.len() - inserted;
    report.flagged = flags.iter().filter(|f| f.is_some()).count();
    let newest: Vec<&NewReading> = latest.into_values().collect();
    upsert_latest(&mut tx, &newest).await?;
    add_daily(&mut tx, &daily).await?;
    // In the same transaction: a command is verified by a reading only if the reading is stored.
    let seen: Vec<Observed> = accepted
        .iter()
        .map(|r| Observed {
            meter_id: r.meter_id,
            read_at: r.read_at,
            relay_closed: r.values.relay_closed,
            close_allowed: r.values.alarms.contains(&crate::driver::CLOSE_ALLOWED),
        })
        .collect();
    report.verified = usize::try_from(commands::verify_by_readings(&mut tx, &seen, now).await?)
        .unwrap_or(usize::MAX);
    // Meter-side meters' counters, for the settle worker (woken when this commits).
    let counters: Vec<_> = accepted
        .iter()
        .filter_map(|r| r.values.secure.map(|c| (r.meter_id, c, r.read_at)))
        .collect();
    powertab_core::secure::readback::store_counters(&mut tx, schema, &counters).await?;
    tx.commit().await?;
    Ok(report)
}

/// What [`rebuild_meter`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub readings: usize,
    /// Readings whose flag or counted energy changed.
    pub changed: usize,
    /// Daily energy after the rebuild, and before it.
    pub daily_wh: i64,
    pub daily_wh_before: i64,
}

/// Re-classifies every stored reading of `meter_id` in time order with today's rules, writes
/// changed flags and counted energy, rebuilds the meter's daily energy from them and moves
/// `meter_latest` to its newest reading. Out-of-order readings keep their flag (they arrived
/// after a newer one: never rated) and a ratio mismatch stays one (the meter said so). Repairs
/// what the older rule wrote: after a reset every later reading was flagged and the meter looked
/// stale; after a run of jumps the whole step was counted at once. Idempotent.
pub async fn rebuild_meter(
    pool: &PgPool,
    schema: &SchemaName,
    meter_id: Uuid,
) -> anyhow::Result<RebuildReport> {
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    // The same lock the writer takes: no batch of this meter is stored meanwhile.
    sqlx::query("select 1 from meter_latest where meter_id = $1 for update")
        .bind(meter_id)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "select read_at, energy_wh, tou_wh, flag, counted_wh from readings where meter_id = $1 order by read_at",
    )
    .bind(meter_id)
    .fetch_all(&mut *tx)
    .await?;
    let context = DailyContext::load(&mut tx, &[meter_id]).await?;
    let mut report = RebuildReport {
        readings: rows.len(),
        ..RebuildReport::default()
    };
    let mut previous: Option<Previous> = None;
    let mut previous_tou: Option<TouRegisters> = None;
    let mut daily = BTreeMap::new();
    let (mut at, mut flags, mut counted) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let read_at: DateTime<Utc> = row.try_get("read_at")?;
        let energy_wh: i64 = row.try_get("energy_wh")?;
        let tou = stored_tou(row.try_get("tou_wh")?);
        let old_flag: Option<String> = row.try_get("flag")?;
        let old_counted: Option<i64> = row.try_get("counted_wh")?;
        let class = if old_flag.as_deref() == Some("out_of_order") {
            Class::Flagged("out_of_order")
        } else {
            classify(
                previous,
                read_at,
                energy_wh,
                old_flag.as_deref() == Some("ratio_mismatch"),
            )
        };
        if let (Some(wh), Some(prev)) = (class.counted_wh(), previous) {
            let split = context.register_split(meter_id, previous_tou.as_ref(), tou.as_ref(), wh);
            context.attribute(meter_id, prev.read_at, read_at, wh, split, &mut daily);
        }
        if class.moves_baseline() {
            previous = Some(Previous { read_at, energy_wh });
            previous_tou = tou;
        }
        if class.flag() != old_flag.as_deref() || class.counted_wh() != old_counted {
            at.push(read_at);
            flags.push(class.flag());
            counted.push(class.counted_wh());
        }
    }
    report.changed = at.len();
    sqlx::query(
        "update readings r set flag = c.flag, counted_wh = c.counted_wh
         from unnest($2::timestamptz[], $3::text[], $4::bigint[]) as c(read_at, flag, counted_wh)
         where r.meter_id = $1 and r.read_at = c.read_at",
    )
    .bind(meter_id)
    .bind(&at)
    .bind(&flags)
    .bind(&counted)
    .execute(&mut *tx)
    .await?;
    report.daily_wh_before = sqlx::query_scalar(
        "select coalesce(sum(energy_wh), 0)::bigint from daily_energy where meter_id = $1",
    )
    .bind(meter_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("delete from daily_energy where meter_id = $1")
        .bind(meter_id)
        .execute(&mut *tx)
        .await?;
    add_daily(&mut tx, &daily).await?;
    report.daily_wh = daily.values().sum();
    // Freshness is the newest stored reading (not one older than the baseline).
    sqlx::query(
        "update meter_latest l set read_at = r.read_at, energy_wh = r.energy_wh, tou_wh = r.tou_wh,
             power_w = r.power_w, voltage_dv = r.voltage_dv, current_ca = r.current_ca,
             remaining_fen = r.remaining_fen, purchase_count = r.purchase_count,
             relay_closed = r.relay_closed, alarms = r.alarms, updated_at = now()
         from (select * from readings where meter_id = $1 and flag is distinct from 'out_of_order'
               order by read_at desc limit 1) r
         where l.meter_id = $1 and l.read_at < r.read_at",
    )
    .bind(meter_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// [`rebuild_meter`] for every meter of every company; returns (meters, readings changed).
pub async fn rebuild_all(pool: &PgPool) -> anyhow::Result<(usize, usize)> {
    let schemas: Vec<String> =
        sqlx::query_scalar("select schema_name from control.company order by id")
            .fetch_all(pool)
            .await?;
    let (mut meters, mut changed) = (0, 0);
    for schema in schemas {
        let schema = SchemaName::from_stored(&schema)?;
        let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar("select id from meters order by id")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        for id in ids {
            let report = rebuild_meter(pool, &schema, id).await?;
            meters += 1;
            changed += report.changed;
        }
    }
    Ok((meters, changed))
}

/// Each meter's baseline, and its TOU registers at the baseline where it has them.
async fn load_previous(
    conn: &mut PgConnection,
    meter_ids: &[Uuid],
) -> anyhow::Result<(HashMap<Uuid, Previous>, HashMap<Uuid, TouRegisters>)> {
    // Row locks keep two writers of the same meter in order.
    let rows = sqlx::query(
        "select meter_id, read_at, energy_wh, tou_wh from meter_latest where meter_id = any($1) for update",
    )
    .bind(meter_ids)
    .fetch_all(conn)
    .await?;
    let (mut previous, mut tou) = (HashMap::new(), HashMap::new());
    for r in rows {
        let meter_id: Uuid = r.try_get("meter_id")?;
        previous.insert(
            meter_id,
            Previous {
                read_at: r.try_get("read_at")?,
                energy_wh: r.try_get("energy_wh")?,
            },
        );
        if let Some(registers) = stored_tou(r.try_get("tou_wh")?) {
            tou.insert(meter_id, registers);
        }
    }
    Ok((previous, tou))
}

/// TOU registers as stored (`bigint[]` of five, NULL where the meter has none).
fn stored_tou(stored: Option<Vec<Option<i64>>>) -> Option<TouRegisters> {
    stored.and_then(|v| <TouRegisters>::try_from(v).ok())
}

/// Inserts the readings with their flags in one statement; returns how many were new. Array
/// values travel as text literals (`{1,2,3}`): sqlx binds no arrays of arrays.
async fn insert_readings(
    conn: &mut PgConnection,
    readings: &[&NewReading],
    flags: &[Option<&'static str>],
    counted_wh: &[Option<i64>],
) -> anyhow::Result<usize> {
    let c = Columns::of(readings);
    let done = sqlx::query(
        "insert into readings (meter_id, read_at, energy_wh, tou_wh, power_w, voltage_dv, current_ca, pf_milli,
             remaining_fen, purchase_count, relay_closed, alarms, raw, flag, counted_wh)
         select meter_id, read_at, energy_wh, tou::bigint[], power_w, voltage::integer[], current::integer[],
             pf_milli::integer, remaining_fen, purchase_count::integer, relay_closed, alarms::text[], raw, flag,
             counted_wh
         from unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
             $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::boolean[], $12::text[], $13::bytea[],
             $14::text[], $15::bigint[])
           as s(meter_id, read_at, energy_wh, tou, power_w, voltage, current, pf_milli, remaining_fen,
                purchase_count, relay_closed, alarms, raw, flag, counted_wh)
         on conflict do nothing",
    )
    .bind(&c.meter_id)
    .bind(&c.read_at)
    .bind(&c.energy_wh)
    .bind(&c.tou)
    .bind(&c.power_w)
    .bind(&c.voltage)
    .bind(&c.current)
    .bind(&c.pf_milli)
    .bind(&c.remaining_fen)
    .bind(&c.purchase_count)
    .bind(&c.relay_closed)
    .bind(&c.alarms)
    .bind(&c.raw)
    .bind(flags)
    .bind(counted_wh)
    .execute(conn)
    .await?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
}

/// The readings of a batch, column by column, for `unnest`.
struct Columns {
    meter_id: Vec<Uuid>,
    read_at: Vec<DateTime<Utc>>,
    energy_wh: Vec<i64>,
    tou: Vec<Option<String>>,
    power_w: Vec<Option<i64>>,
    voltage: Vec<Option<String>>,
    current: Vec<Option<String>>,
    pf_milli: Vec<Option<i64>>,
    remaining_fen: Vec<Option<i64>>,
    purchase_count: Vec<Option<i64>>,
    relay_closed: Vec<Option<bool>>,
    alarms: Vec<String>,
    raw: Vec<Vec<u8>>,
}

impl Columns {
    fn of(readings: &[&NewReading]) -> Columns {
        let list = |xs: &[i64]| {
            (!xs.is_empty()).then(|| pg_array(&xs.iter().map(|x| Some(*x)).collect::<Vec<_>>()))
        };
        let column =
            |f: &dyn Fn(&NewReading) -> Option<i64>| readings.iter().map(|r| f(r)).collect();
        Columns {
            meter_id: readings.iter().map(|r| r.meter_id).collect(),
            read_at: readings.iter().map(|r| r.read_at).collect(),
            energy_wh: readings.iter().map(|r| r.values.energy_wh).collect(),
            tou: readings
                .iter()
                .map(|r| r.values.tou_wh.map(|t| pg_array(&t)))
                .collect(),
            power_w: column(&|r| r.values.power_w),
            voltage: readings
                .iter()
                .map(|r| list(&r.values.voltage_dv))
                .collect(),
            current: readings
                .iter()
                .map(|r| list(&r.values.current_ca))
                .collect(),
            pf_milli: column(&|r| r.values.pf_milli),
            remaining_fen: column(&|r| r.values.remaining_fen),
            purchase_count: column(&|r| r.values.purchase_count),
            relay_closed: readings.iter().map(|r| r.values.relay_closed).collect(),
            // Alarm names are fixed words without commas or braces.
            alarms: readings
                .iter()
                .map(|r| format!("{{{}}}", r.values.alarms.join(",")))
                .collect(),
            raw: readings.iter().map(|r| r.raw.clone()).collect(),
        }
    }
}

/// `{1,NULL,3}`.
fn pg_array(values: &[Option<i64>]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| v.map_or_else(|| "NULL".to_owned(), |x| x.to_string()))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// Moves `meter_latest` to each meter's newest counted reading, in one statement.
async fn upsert_latest(conn: &mut PgConnection, newest: &[&NewReading]) -> anyhow::Result<()> {
    if newest.is_empty() {
        return Ok(());
    }
    let c = Columns::of(newest);
    sqlx::query(
        "insert into meter_latest (meter_id, read_at, energy_wh, tou_wh, power_w, voltage_dv, current_ca,
             remaining_fen, purchase_count, relay_closed, alarms, updated_at)
         select meter_id, read_at, energy_wh, tou::bigint[], power_w, voltage::integer[], current::integer[],
             remaining_fen, purchase_count::integer, relay_closed, alarms::text[], now()
         from unnest($1::uuid[], $2::timestamptz[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
             $7::text[], $8::bigint[], $9::bigint[], $10::boolean[], $11::text[])
           as s(meter_id, read_at, energy_wh, tou, power_w, voltage, current, remaining_fen, purchase_count,
                relay_closed, alarms)
         on conflict (meter_id) do update set read_at = excluded.read_at, energy_wh = excluded.energy_wh,
             tou_wh = excluded.tou_wh, power_w = excluded.power_w, voltage_dv = excluded.voltage_dv,
             current_ca = excluded.current_ca, remaining_fen = excluded.remaining_fen,
             purchase_count = excluded.purchase_count, relay_closed = excluded.relay_closed,
             alarms = excluded.alarms, updated_at = now()
         where meter_latest.read_at < excluded.read_at",
    )
    .bind(&c.meter_id)
    .bind(&c.read_at)
    .bind(&c.energy_wh)
    .bind(&c.tou)
    .bind(&c.power_w)
    .bind(&c.voltage)
    .bind(&c.current)
    .bind(&c.remaining_fen)
    .bind(&c.purchase_count)
    .bind(&c.relay_closed)
    .bind(&c.alarms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds the batch's energy to `daily_energy`, in one statement.
async fn add_daily(
    conn: &mut PgConnection,
    daily: &BTreeMap<(Uuid, chrono::NaiveDate, Period), i64>,
) -> anyhow::Result<()> {
    if daily.is_empty() {
        return Ok(());
    }
    let (mut meters, mut days, mut periods, mut energies) = (vec![], vec![], vec![], vec![]);
    for ((meter, day, period), wh) in daily {
        meters.push(*meter);
        days.push(*day);
        periods.push(period.as_str());
        energies.push(*wh);
    }
    sqlx::query(
        "insert into daily_energy (meter_id, day, period, energy_wh)
         select * from unnest($1::uuid[], $2::date[], $3::text[], $4::bigint[])
         on conflict (meter_id, day, period) do update set energy_wh = daily_energy.energy_wh + excluded.energy_wh",
    )
    .bind(&meters)
    .bind(&days)
    .bind(&periods)
    .bind(&energies)
    .execute(conn)
    .await?;
    Ok(())
}

/// What attributing energy to local days and TOU periods needs: the company's time zone and
/// calendar, each meter's plan versions, and which meters' TOU registers split their energy.
struct DailyContext {
    tz: chrono_tz::Tz,
    calendar: Calendar,
    plans: HashMap<Uuid, Vec<TariffVersion>>,
    registers_split: std::collections::HashSet<Uuid>,
}

impl DailyContext {
    async fn load(conn: &mut PgConnection, meter_ids: &[Uuid]) -> anyhow::Result<DailyContext> {
        let tz_name: Option<String> = sqlx::query_scalar(
            "select time_zone from control.company where schema_name = current_schema()",
        )
        .fetch_optional(&mut *conn)
        .await?;
        let tz = tz_name.map_or(powertab_core::kernel::clock::DEFAULT_TIME_ZONE, |t| {
            powertab_core::kernel::clock::time_zone(&t)
        });
        let calendar = powertab_core::tenancy::settings::calendar(&mut *conn).await?;
        let plans = powertab_core::tariff::plans::versions_by_meter(&mut *conn, meter_ids).await?;
        let registers_split =
            sqlx::query_scalar("select id from meters where id = any($1) and tou_registers_match")
                .bind(meter_ids)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
        Ok(DailyContext {
            tz,
            calendar,
            plans,
            registers_split,
        })
    }

    /// The interval's split by the meter's own TOU registers, where the meter is set to use
    /// them (`tou_registers_match`) and they add up; `None`: the plan's clock splits it.
    fn register_split(
        &self,
        meter_id: Uuid,
        before: Option<&TouRegisters>,
        after: Option<&TouRegisters>,
        counted_wh: i64,
    ) -> Option<BTreeMap<Period, i64>> {
        if !self.registers_split.contains(&meter_id) {
            return None;
        }
        let split = tou_split(before?, after?, counted_wh);
        if split.is_none() {
            metrics::counter!("ingest_tou_register_split_refused_total").increment(1);
        }
        split
    }

    /// Adds `delta` Wh used between `start` and `end` to `daily`, split by local day and TOU
    /// period: by the meter's registers (`split`) when given and consistent with the plan, else
    /// by the plan's clock (all `flat` without a plan or before its first version).
    fn attribute(
        &self,
        meter_id: Uuid,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        delta: i64,
        split: Option<BTreeMap<Period, i64>>,
        daily: &mut BTreeMap<(Uuid, chrono::NaiveDate, Period), i64>,
    ) {
        let flat = vec![TariffVersion::flat(chrono::NaiveDate::MIN, 0)];
        let by_clock = Usage {
            start,
            end,
            energy_wh: EnergyWh::from_wh(delta),
            tou_wh: None,
        };
        let versions = self.plans.get(&meter_id).unwrap_or(&flat);
        let rate = |usage: &Usage, versions: &[TariffVersion]| {
            rating::rate(
                usage,
                versions,
                self.tz,
                &self.calendar,
                &RatingState::default(),
            )
        };
        let by_registers = split.and_then(|tou_wh| {
            let usage = Usage {
                tou_wh: Some(
                    tou_wh
                        .into_iter()
                        .map(|(period, wh)| (period, EnergyWh::from_wh(wh)))
                        .collect(),
                ),
                ..by_clock.clone()
            };
            // Registers that name a period the plan does not have then: the plan's clock.
            rate(&usage, versions).ok()
        });
        let rated = match by_registers {
            Some(rated) => Ok(rated),
            None => rate(&by_clock, versions).or_else(|_| rate(&by_clock, &flat)),
        };
        match rated {
            Ok(rated) => {
                for line in rated.lines {
                    let day = line.start.with_timezone(&self.tz).date_naive();
                    *daily.entry((meter_id, day, line.period)).or_default() += line.energy_wh.wh();
                }
            }
            Err(e) => tracing::warn!(%meter_id, error = %e, "daily energy not attributed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_postgres_literals() {
        assert_eq!(pg_array(&[Some(1), None, Some(-3)]), "{1,NULL,-3}");
    }
}
