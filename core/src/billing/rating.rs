//! The rating worker (DESIGN.md: Money and the ledger, platform-side meters): turns stored
//! readings of the meters of open accounts into charge lines, exactly once per (meter, reading),
//! in reading order, with core's rating function (`tariff::rating::rate`, the same the tariff
//! preview uses) and the plan versions in force; then posts each meter's unposted lines to the
//! wallet as one `charge_posting` keyed `post:<meter>:<last reading ms>` — every 5 minutes, or at
//! once when the available balance would cross a level (alarm 1, alarm 2, the trip level).
//!
//! Each pass also posts the fixed service fees that fell due (`fees.rs`).
//! Held readings (reset, gap, jump, ratio mismatch) stop that meter's rating and raise a
//! `reading_held` alarm; power stays on. Out-of-order readings are never rated.
//! Workers coordinate through the database (`for update skip locked` on each meter's rating
//! state), so several server processes never rate one meter twice. Time comes from the
//! principal's clock.

use super::ledger::post::{self, request_hash, Posting};
use super::ledger::{AccountKey, TxnKind};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::{AmountFen, EnergyWh};
use crate::tariff::rating::{self, RatingState, Usage};
use crate::tenancy::settings;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Meters rated at once in a pass (each in its own transaction; the pool must allow them).
const METERS_AT_ONCE: usize = 8;
/// Readings rated per meter in one pass (the next pass continues).
const READINGS_PER_PASS: i64 = 2_000;
/// A meter's unposted charge lines wait at most this long for their batch.
pub const POSTING_INTERVAL_S: i64 = 300;
/// The Postgres channel told when an account's available balance changed (the seam the
/// power-follows-money issue listens on).
pub const AVAILABLE_CHANGED_CHANNEL: &str = "available_changed";

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub meters: u64,
    pub readings_rated: u64,
    pub held: u64,
    pub postings: u64,
    /// Fee transactions posted (one per meter, account and local date with fees).
    pub fees: u64,
    /// Meters whose work failed and was rolled back (retried next pass).
    pub errors: u64,
}

/// One pass over a company (the principal is the system worker inside it): rates what is new,
/// then posts what is due.
#[tracing::instrument(skip_all)]
pub async fn run_pass(pool: &PgPool, principal: &Principal) -> CoreResult<PassReport> {
    let schema = principal.company()?.schema.clone();
    let pairs: Vec<(Uuid, Uuid)> = {
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let rows = sqlx::query(
            "select r.account_id, r.meter_id from rating_state r
             join account_meters am on am.account_id = r.account_id and am.meter_id = r.meter_id and am.left_at is null
             join shop_accounts a on a.id = r.account_id and a.state in ('open', 'closing')
             where r.held_at is null order by r.meter_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok((r.try_get("account_id")?, r.try_get("meter_id")?)))
            .collect::<CoreResult<_>>()?
    };
    let company = {
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let company = CompanyRules::load(&mut tx).await?;
        tx.commit().await?;
        company
    };
    // Meters are independent (each its own transaction and row lock): several at once keep the
    // database busy instead of waiting on one round trip after another.
    use futures_util::stream::{self, StreamExt};
    let mut results = stream::iter(pairs)
        .map(|(account, meter)| {
            let (schema, company) = (&schema, &company);
            async move {
                async {
                    let mut tx = crate::db::begin_in(pool, schema).await?;
                    let rated = rate_meter(&mut tx, principal, company, account, meter).await?;
                    let fees = super::fees::post_due(&mut tx, principal, account, meter).await?;
                    let posted =
                        post_if_due(&mut tx, principal, company, account, meter, false).await?;
                    tx.commit().await?;
                    Ok::<_, CoreError>((rated, fees, posted))
                }
                .await
                .map_err(|e| (meter, e))
            }
        })
        .buffer_unordered(METERS_AT_ONCE);
    let mut report = PassReport::default();
    while let Some(done) = results.next().await {
        // One meter's failure (rolled back whole) must not stop every other meter's billing:
        // it is logged, counted, and tried again next pass.
        let (rated, fees, posted) = match done {
            Ok(done) => done,
            Err((meter, e)) => {
                tracing::error!(%meter, error = %e, "rating a meter failed; it is retried next pass");
                metrics::counter!("rating_meter_errors_total").increment(1);
                report.errors += 1;
                continue;
            }
        };
        report.meters += 1;
        report.readings_rated += rated.readings;
        report.held += u64::from(rated.held);
        report.postings += u64::from(posted);
        report.fees += u64::from(fees);
    }
    Ok(report)
}

/// What rating needs of the company, loaded once per pass (not once per meter): the holiday
/// calendar and the alarm and trip levels.
pub(crate) struct CompanyRules {
    pub(crate) calendar: crate::tariff::Calendar,
    pub(crate) settings: settings::CompanySettings,
}

impl CompanyRules {
    pub(crate) async fn load(conn: &mut PgConnection) -> CoreResult<CompanyRules> {
        Ok(CompanyRules {
            calendar: settings::calendar(conn).await?,
            settings: settings::load(conn).await?,
        })
    }
}

pub(crate) struct MeterRated {
    readings: u64,
    held: bool,
}

/// Rates `meter`'s readings after its rating state, for `account`. Skips the meter when another
/// worker holds it.
pub(crate) async fn rate_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    company: &CompanyRules,
    account: Uuid,
    meter: Uuid,
) -> CoreResult<MeterRated> {
    let Some(state) = sqlx::query(
        "select last_read_at, last_energy_wh, from_opening, month_year, month, month_wh, year, year_wh,
                remainder_e5, held_at
         from rating_state where account_id = $1 and meter_id = $2 for update skip locked",
    )
    .bind(account)
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(MeterRated {
            readings: 0,
            held: false,
        });
    };
    if state
        .try_get::<Option<DateTime<Utc>>, _>("held_at")?
        .is_some()
    {
        return Ok(MeterRated {
            readings: 0,
            held: false,
        });
    }
    let mut last_read_at: DateTime<Utc> = state.try_get("last_read_at")?;
    let mut last_energy: i64 = state.try_get("last_energy_wh")?;
    let mut from_opening: bool = state.try_get("from_opening")?;
    let mut rating_state = counters_of(&state)?;
    let readings = sqlx::query(
        "select read_at, energy_wh, flag, counted_wh from readings
         where meter_id = $1 and read_at > $2 order by read_at limit $3",
    )
    .bind(meter)
    .bind(last_read_at)
    .bind(READINGS_PER_PASS)
    .fetch_all(&mut *conn)
    .await?;
    if readings.is_empty() {
        return Ok(MeterRated {
            readings: 0,
            held: false,
        });
    }
    let versions = crate::tariff::plans::versions_by_meter(conn, &[meter])
        .await?
        .remove(&meter)
        .unwrap_or_default();
    let calendar = &company.calendar;
    let tz = principal.tz();
    let now = principal.now();
    let mut rated = 0u64;
    let mut held = None;
    // The pass's lines go in with one statement at the end.
    let mut pending = PendingLines::default();
    for r in &readings {
        let read_at: DateTime<Utc> = r.try_get("read_at")?;
        let energy_wh: i64 = r.try_get("energy_wh")?;
        let flag: Option<String> = r.try_get("flag")?;
        let counted: Option<i64> = r.try_get("counted_wh")?;
        match flag.as_deref() {
            // Never rated, never held, never a baseline.
            Some("out_of_order") => continue,
            Some(hold @ ("reset" | "gap" | "jump" | "ratio_mismatch")) => {
                held = Some((read_at, hold.to_owned()));
                break;
            }
            _ => {}
        }
        // The first interval of an account counts from its opening register value; after that
        // ingest's counted energy of the interval (rollovers included).
        let energy = if from_opening {
            match energy_wh.checked_sub(last_energy) {
                Some(wh) if wh >= 0 => Some(wh),
                _ => {
                    held = Some((read_at, "reset".to_owned()));
                    break;
                }
            }
        } else {
            counted
        };
        if let Some(wh) = energy.filter(|wh| *wh > 0) {
            if versions.is_empty() {
                held = Some((read_at, "no_tariff".to_owned()));
                break;
            }
            let usage = Usage {
                start: last_read_at,
                end: read_at,
                energy_wh: EnergyWh::from_wh(wh),
                tou_wh: None,
            };
            match rating::rate(&usage, &versions, tz, calendar, &rating_state) {
                Ok(result) => {
                    pending.push(&usage, &result)?;
                    rating_state = result.state;
                    rated += 1;
                }
                Err(e) => {
                    held = Some((read_at, format!("rating: {e}")));
                    break;
                }
            }
        }
        last_read_at = read_at;
        last_energy = energy_wh;
        from_opening = false;
    }
    pending.write(conn, meter, account, now).await?;
    let position = Position {
        read_at: last_read_at,
        energy_wh: last_energy,
        from_opening,
        held: held.clone(),
    };
    save_state(conn, account, meter, &position, &rating_state, now).await?;
    if let Some((at, why)) = &held {
        raise_held_alarm(conn, meter, *at, why).await?;
    }
    Ok(MeterRated {
        readings: rated,
        held: held.is_some(),
    })
}

/// Rates one interval an operator settled (a typed final reading, a released or corrected held
/// reading) and writes its charge line; a rating error names `field`. The new counters.
pub(crate) async fn rate_operator_interval(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    meter: Uuid,
    usage: &Usage,
    counters: &RatingState,
    field: &str,
) -> CoreResult<rating::Rated> {
    let versions = crate::tariff::plans::versions_by_meter(conn, &[meter])
        .await?
        .remove(&meter)
        .unwrap_or_default();
    if versions.is_empty() {
        return Err(CoreError::Conflict("the meter has no tariff plan".into()));
    }
    let calendar = settings::calendar(conn).await?;
    let result = rating::rate(usage, &versions, principal.tz(), &calendar, counters)
        .map_err(|e| CoreError::field(field, e.to_string()))?;
    write_line(conn, meter, account, usage, &result, principal.now()).await?;
    Ok(result)
}

/// The month/year counters and sub-fen rest of a `rating_state` row.
pub(crate) fn counters_of(row: &sqlx::postgres::PgRow) -> CoreResult<RatingState> {
    let month = match (
        row.try_get::<Option<i32>, _>("month_year")?,
        row.try_get::<Option<i32>, _>("month")?,
    ) {
        (Some(y), Some(m)) => Some((y, u32::try_from(m).unwrap_or(1))),
        _ => None,
    };
    Ok(RatingState {
        month,
        month_wh: EnergyWh::from_wh(row.try_get("month_wh")?),
        year: row.try_get("year")?,
        year_wh: EnergyWh::from_wh(row.try_get("year_wh")?),
        remainder_e5: row.try_get("remainder_e5")?,
    })
}

/// Where a meter's rating stands: the reading the next interval starts from, and whether a
/// held reading stopped it (when, why).
pub(crate) struct Position {
    pub(crate) read_at: DateTime<Utc>,
    pub(crate) energy_wh: i64,
    pub(crate) from_opening: bool,
    pub(crate) held: Option<(DateTime<Utc>, String)>,
}

/// Writes a meter's rating state (`held: None` clears a hold).
pub(crate) async fn save_state(
    conn: &mut PgConnection,
    account: Uuid,
    meter: Uuid,
    position: &Position,
    counters: &RatingState,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    sqlx::query(
        "update rating_state set last_read_at = $3, last_energy_wh = $4, from_opening = $5,
             month_year = $6, month = $7, month_wh = $8, year = $9, year_wh = $10, remainder_e5 = $11,
             held_at = $12, held_reason = $13, updated_at = $14
         where account_id = $1 and meter_id = $2",
    )
    .bind(account)
    .bind(meter)
    .bind(position.read_at)
    .bind(position.energy_wh)
    .bind(position.from_opening)
    .bind(counters.month.map(|(y, _)| y))
    .bind(counters.month.map(|(_, m)| i32::try_from(m).unwrap_or(1)))
    .bind(counters.month_wh.wh())
    .bind(counters.year)
    .bind(counters.year_wh.wh())
    .bind(counters.remainder_e5)
    .bind(position.held.as_ref().map(|_| now))
    .bind(position.held.as_ref().map(|(_, why)| why.clone()))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Charge lines of one meter waiting to be written together.
#[derive(Default)]
struct PendingLines {
    read_at: Vec<DateTime<Utc>>,
    start: Vec<DateTime<Utc>>,
    energy_wh: Vec<i64>,
    debit_fen: Vec<i64>,
    lines: Vec<serde_json::Value>,
}

impl PendingLines {
    fn push(&mut self, usage: &Usage, result: &rating::Rated) -> CoreResult<()> {
        self.read_at.push(usage.end);
        self.start.push(usage.start);
        self.energy_wh.push(usage.energy_wh.wh());
        self.debit_fen.push(result.debit_fen.fen());
        self.lines.push(
            serde_json::to_value(&result.lines)
                .map_err(|e| CoreError::Internal(format!("charge lines: {e}")))?,
        );
        Ok(())
    }

    /// One insert for all of them; a line already there (the same reading rated twice) fails the
    /// key, so the whole meter's transaction rolls back.
    async fn write(
        self,
        conn: &mut PgConnection,
        meter: Uuid,
        account: Uuid,
        now: DateTime<Utc>,
    ) -> CoreResult<()> {
        if self.read_at.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "insert into charge_lines (meter_id, read_at, account_id, interval_start, energy_wh, debit_fen, lines, rated_at)
             select $1, r, $2, s, e, d, l, $8
             from unnest($3::timestamptz[], $4::timestamptz[], $5::bigint[], $6::bigint[], $7::jsonb[]) as u(r, s, e, d, l)",
        )
        .bind(meter)
        .bind(account)
        .bind(&self.read_at)
        .bind(&self.start)
        .bind(&self.energy_wh)
        .bind(&self.debit_fen)
        .bind(&self.lines)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

async fn write_line(
    conn: &mut PgConnection,
    meter: Uuid,
    account: Uuid,
    usage: &Usage,
    result: &rating::Rated,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    let lines = serde_json::to_value(&result.lines)
        .map_err(|e| CoreError::Internal(format!("charge lines: {e}")))?;
    // One line per (meter, reading): a second rating of the same reading is refused by the key.
    sqlx::query(
        "insert into charge_lines (meter_id, read_at, account_id, interval_start, energy_wh, debit_fen, lines, rated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(meter)
    .bind(usage.end)
    .bind(account)
    .bind(usage.start)
    .bind(usage.energy_wh)
    .bind(result.debit_fen)
    .bind(lines)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn raise_held_alarm(
    conn: &mut PgConnection,
    meter: Uuid,
    at: DateTime<Utc>,
    why: &str,
) -> CoreResult<()> {
    sqlx::query(
        "insert into field_alarms (id, kind, target_id, detail) values ($1, 'reading_held', $2, $3)
         on conflict do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(meter)
    .bind(format!("{why} at {}", at.to_rfc3339()))
    .execute(&mut *conn)
    .await?;
    tracing::warn!(%meter, %why, "a reading is held: the meter's rating stops until it is reviewed");
    Ok(())
}

/// Posts `meter`'s unposted lines of `account` when they are due (or at once with `force`, as
/// closing an account does): the oldest waited [`POSTING_INTERVAL_S`], or the available balance
/// would cross a level. Returns whether a transaction was posted.
pub(crate) async fn post_if_due(
    conn: &mut PgConnection,
    principal: &Principal,
    company: &CompanyRules,
    account: Uuid,
    meter: Uuid,
    force: bool,
) -> CoreResult<bool> {
    let row = sqlx::query(
        "select coalesce(sum(debit_fen), 0)::bigint as fen, min(rated_at) as oldest, max(read_at) as last
         from charge_lines where account_id = $1 and meter_id = $2 and not posted",
    )
    .bind(account)
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    let Some(last): Option<DateTime<Utc>> = row.try_get("last")? else {
        return Ok(false);
    };
    let batch = AmountFen::from_fen(row.try_get("fen")?);
    let oldest: DateTime<Utc> = row.try_get("oldest")?;
    let waited = principal.now() - oldest >= Duration::seconds(POSTING_INTERVAL_S);
    if !force && !waited && !crosses_a_level(conn, account, batch, &company.settings).await? {
        return Ok(false);
    }
    let txn = if batch > AmountFen::ZERO {
        let posted = post::post(
            conn,
            principal,
            &Posting {
                kind: TxnKind::ChargePosting,
                idempotency_key: format!("post:{meter}:{}", last.timestamp_millis()),
                request_hash: request_hash(&["post", &meter.to_string(), &batch.fen().to_string()]),
                shop_account: Some(account),
                event_at: last,
                method: None,
                receipt: false,
                reverses: None,
                memo: String::new(),
                legs: vec![
                    (AccountKey::Wallet(account), super::accounts::negate(batch)?),
                    (AccountKey::RevenueEnergy, batch),
                ],
                keep_at_least: None,
            },
        )
        .await?;
        Some(posted.txn.id)
    } else {
        // A batch worth 0 fen posts nothing; its lines are done all the same.
        None
    };
    let marked = sqlx::query(
        "update charge_lines set posted = true, posted_txn = $3
         where account_id = $1 and meter_id = $2 and not posted and read_at <= $4",
    )
    .bind(account)
    .bind(meter)
    .bind(txn)
    .bind(last)
    .execute(&mut *conn)
    .await?;
    debug_assert!(marked.rows_affected() > 0);
    if txn.is_some() {
        sqlx::query("select pg_notify($1, $2)")
            .bind(AVAILABLE_CHANGED_CHANNEL)
            .bind(account.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(txn.is_some())
}

/// Whether taking `batch` would move the account's available balance across alarm 1, alarm 2 or
/// the trip level (−overdraft limit) — then it posts at once instead of waiting.
async fn crosses_a_level(
    conn: &mut PgConnection,
    account: Uuid,
    batch: AmountFen,
    s: &settings::CompanySettings,
) -> CoreResult<bool> {
    if batch <= AmountFen::ZERO {
        return Ok(false);
    }
    let wallet = post::balance(conn, AccountKey::Wallet(account)).await?;
    let unposted = super::accounts::unposted_charges(conn, account).await?;
    let after = super::accounts::available(wallet, unposted)?;
    let before = after
        .checked_add(batch)
        .ok_or_else(|| CoreError::Internal("available balance overflows".into()))?;
    let trip = s
        .overdraft_limit_fen
        .checked_neg()
        .ok_or_else(|| CoreError::Internal("overdraft limit overflows".into()))?;
    Ok([s.alarm1_fen, s.alarm2_fen, trip]
        .iter()
        .any(|level| before > *level && after <= *level))
}

/// Rates the last interval of a closing account's meter up to a final reading typed in by an
/// operator (`energy_wh` at `read_at`), after its stored readings were rated. Returns the
/// account's rest of a fen on this meter (1e-5 fen), which closing rounds.
pub(crate) async fn rate_final(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    meter: Uuid,
    final_reading: Option<(DateTime<Utc>, EnergyWh)>,
) -> CoreResult<i64> {
    let state = sqlx::query(
        "select last_read_at, last_energy_wh, month_year, month, month_wh, year, year_wh, remainder_e5, held_at
         from rating_state where account_id = $1 and meter_id = $2 for update",
    )
    .bind(account)
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    let remainder: i64 = state.try_get("remainder_e5")?;
    // Everything is rated before a close: a held interval must be reviewed first, or its
    // energy would never be billed.
    if state
        .try_get::<Option<DateTime<Utc>>, _>("held_at")?
        .is_some()
    {
        return Err(CoreError::Conflict(
            "a held reading of this meter waits for review: release or correct it before closing"
                .into(),
        ));
    }
    let Some((read_at, energy)) = final_reading else {
        return Ok(remainder);
    };
    let last_read_at: DateTime<Utc> = state.try_get("last_read_at")?;
    let last_energy: i64 = state.try_get("last_energy_wh")?;
    if read_at <= last_read_at {
        return Ok(remainder);
    }
    let wh = energy
        .wh()
        .checked_sub(last_energy)
        .filter(|wh| *wh >= 0)
        .ok_or_else(|| {
            CoreError::field(
                "final_energy_wh",
                format!("below the meter's last reading ({} Wh)", last_energy),
            )
        })?;
    let rating_state = counters_of(&state)?;
    let mut new_remainder = remainder;
    let mut new_state = rating_state;
    if wh > 0 {
        let usage = Usage {
            start: last_read_at,
            end: read_at,
            energy_wh: EnergyWh::from_wh(wh),
            tou_wh: None,
        };
        new_state = rate_operator_interval(
            conn,
            principal,
            account,
            meter,
            &usage,
            &rating_state,
            "final_energy_wh",
        )
        .await?
        .state;
        new_remainder = new_state.remainder_e5;
    }
    let position = Position {
        read_at,
        energy_wh: energy.wh(),
        from_opening: false,
        held: None,
    };
    save_state(conn, account, meter, &position, &new_state, principal.now()).await?;
    Ok(new_remainder)
}
