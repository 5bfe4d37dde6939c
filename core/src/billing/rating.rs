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

/// Meters rated, charged and posted in one database transaction (whole accounts: a batch may run
/// a little over).
const METERS_PER_BATCH: usize = 250;
/// Batches in flight at once in a pass (each holds one pooled connection).
const BATCHES_AT_ONCE: usize = 2;
/// Readings rated per meter in one pass (the next pass continues).
pub(crate) const READINGS_PER_PASS: i64 = 2_000;
/// A meter's unposted charge lines wait at most this long for their batch.
pub const POSTING_INTERVAL_S: i64 = 300;
/// Where postings tell that an account's available balance changed (`ledger::post` sends it).
pub use super::ledger::post::AVAILABLE_CHANGED_CHANNEL;

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

impl PassReport {
    fn add(&mut self, other: &PassReport) {
        self.meters += other.meters;
        self.readings_rated += other.readings_rated;
        self.held += other.held;
        self.postings += other.postings;
        self.fees += other.fees;
        self.errors += other.errors;
    }
}

/// One pass over a company (the principal is the system worker inside it): rates what is new,
/// charges the fees that fell due, then posts what is due — in batches of whole accounts, each
/// batch one transaction (`batch.rs`); a batch that fails is redone meter by meter, so one bad
/// meter is logged, counted and retried next pass without holding up the others.
#[tracing::instrument(skip_all)]
pub async fn run_pass(pool: &PgPool, principal: &Principal) -> CoreResult<PassReport> {
    let schema = principal.company()?.schema.clone();
    let (pairs, company, meter_side) = {
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let rows = sqlx::query(
            "select r.account_id, r.meter_id, a.prepayment_mode from rating_state r
             join account_meters am on am.account_id = r.account_id and am.meter_id = r.meter_id and am.left_at is null
             join shop_accounts a on a.id = r.account_id and a.state in ('open', 'closing')
             where r.held_at is null order by r.account_id, r.meter_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let company = CompanyRules::load(&mut tx).await?;
        tx.commit().await?;
        let mut pairs: Vec<(Uuid, Uuid)> = Vec::with_capacity(rows.len());
        let mut meter_side: Vec<(Uuid, Uuid)> = Vec::new();
        for r in &rows {
            let pair = (r.try_get("account_id")?, r.try_get("meter_id")?);
            if r.try_get::<String, _>("prepayment_mode")? == "meter" {
                meter_side.push(pair);
            } else {
                pairs.push(pair);
            }
        }
        (pairs, company, meter_side)
    };
    // Batches are independent (disjoint accounts, so disjoint wallets and rating states): two at
    // once keep the database busy while the worker rates the other.
    use futures_util::stream::{self, StreamExt};
    let mut results = stream::iter(batches_of_accounts(&pairs, METERS_PER_BATCH))
        .map(|batch: Vec<(Uuid, Uuid)>| {
            let company = &company;
            async move {
                match super::batch::run(pool, principal, company, &batch).await {
                    Ok(report) => report,
                    Err(e) => {
                        tracing::warn!(error = %e, meters = batch.len(), "a rating batch failed; its meters are redone one by one");
                        meter_by_meter(pool, principal, company, &batch).await
                    }
                }
            }
        })
        .buffer_unordered(BATCHES_AT_ONCE);
    let mut report = PassReport::default();
    while let Some(done) = results.next().await {
        report.add(&done);
    }
    // Meter-side meters: few, and each posts at once against its shadow balance.
    report.add(&meter_by_meter(pool, principal, &company, &meter_side).await);
    Ok(report)
}

/// `pairs` (sorted by account) cut into batches of about `size` meters, never splitting an
/// account: concurrent batches then never lock the same wallet.
fn batches_of_accounts(pairs: &[(Uuid, Uuid)], size: usize) -> Vec<Vec<(Uuid, Uuid)>> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < pairs.len() {
        let mut end = (start + size).min(pairs.len());
        while end < pairs.len() && pairs[end].0 == pairs[end - 1].0 {
            end += 1;
        }
        batches.push(pairs[start..end].to_vec());
        start = end;
    }
    batches
}

/// The slow, isolating path: each meter in its own transaction; a failure is logged, counted
/// and retried next pass.
async fn meter_by_meter(
    pool: &PgPool,
    principal: &Principal,
    company: &CompanyRules,
    pairs: &[(Uuid, Uuid)],
) -> PassReport {
    let mut report = PassReport::default();
    for &(account, meter) in pairs {
        let done = async {
            let schema = &principal.company()?.schema;
            let mut tx = crate::db::begin_in(pool, schema).await?;
            let rated = rate_meter(&mut tx, principal, company, account, meter).await?;
            let fees = super::fees::post_due(&mut tx, principal, account, meter).await?;
            let posted = post_if_due(&mut tx, principal, company, account, meter, false).await?;
            tx.commit().await?;
            Ok::<_, CoreError>((rated, fees, posted))
        }
        .await;
        match done {
            Ok((rated, fees, posted)) => report.add(&PassReport {
                meters: 1,
                readings_rated: rated.readings,
                held: u64::from(rated.held),
                postings: u64::from(posted),
                fees: u64::from(fees),
                errors: 0,
            }),
            Err(e) => {
                tracing::error!(%meter, error = %e, "rating a meter failed; it is retried next pass");
                metrics::counter!("rating_meter_errors_total").increment(1);
                report.errors += 1;
            }
        }
    }
    report
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
    let start = Position::of_state(&state)?;
    let counters = counters_of(&state)?;
    let readings = sqlx::query(
        "select read_at, energy_wh, flag, counted_wh from readings
         where meter_id = $1 and read_at > $2 order by read_at limit $3",
    )
    .bind(meter)
    .bind(start.read_at)
    .bind(READINGS_PER_PASS)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(StoredReading::from_row)
    .collect::<CoreResult<Vec<_>>>()?;
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
    let now = principal.now();
    let mut pending = PendingLines::default();
    let rates = Rates {
        versions: &versions,
        tz: principal.tz(),
        calendar: &company.calendar,
    };
    let (position, rating_state, rated) = rate_readings(
        start,
        counters,
        &readings,
        &rates,
        (meter, account),
        &mut pending,
    )?;
    let held = position.held.clone();
    pending.write(conn, now).await?;
    save_state(conn, account, meter, &position, &rating_state, now).await?;
    if let Some((at, why)) = &held {
        raise_held_alarm(conn, meter, *at, why).await?;
    }
    Ok(MeterRated {
        readings: rated,
        held: held.is_some(),
    })
}

/// A stored reading as rating reads it.
pub(crate) struct StoredReading {
    pub(crate) read_at: DateTime<Utc>,
    pub(crate) energy_wh: i64,
    pub(crate) flag: Option<String>,
    pub(crate) counted_wh: Option<i64>,
}

impl StoredReading {
    pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> CoreResult<StoredReading> {
        Ok(StoredReading {
            read_at: row.try_get("read_at")?,
            energy_wh: row.try_get("energy_wh")?,
            flag: row.try_get("flag")?,
            counted_wh: row.try_get("counted_wh")?,
        })
    }
}

/// What pricing a meter's energy needs: its plan's versions, the company's zone and calendar.
pub(crate) struct Rates<'a> {
    pub(crate) versions: &'a [crate::tariff::TariffVersion],
    pub(crate) tz: chrono_tz::Tz,
    pub(crate) calendar: &'a crate::tariff::Calendar,
}

/// Rates `readings` (in reading order, after `start`) into `pending`, without touching the
/// database: the meter's new position (held when a reading stops it), its counters, and how
/// many intervals were rated. The one rating loop of the per-meter and the batched pass.
pub(crate) fn rate_readings(
    start: Position,
    counters: RatingState,
    readings: &[StoredReading],
    rates: &Rates<'_>,
    (meter, account): (Uuid, Uuid),
    pending: &mut PendingLines,
) -> CoreResult<(Position, RatingState, u64)> {
    let Position {
        read_at: mut last_read_at,
        energy_wh: mut last_energy,
        mut from_opening,
        ..
    } = start;
    let mut rating_state = counters;
    let mut rated = 0u64;
    let mut held = None;
    for r in readings {
        debug_assert!(r.read_at > last_read_at, "readings come after the position");
        match r.flag.as_deref() {
            // Never rated, never held, never a baseline.
            Some("out_of_order") => continue,
            Some(hold @ ("reset" | "gap" | "jump" | "ratio_mismatch")) => {
                held = Some((r.read_at, hold.to_owned()));
                break;
            }
            _ => {}
        }
        // The first interval of an account counts from its opening register value; after that
        // ingest's counted energy of the interval (rollovers included).
        let energy = if from_opening {
            match r.energy_wh.checked_sub(last_energy) {
                Some(wh) if wh >= 0 => Some(wh),
                _ => {
                    held = Some((r.read_at, "reset".to_owned()));
                    break;
                }
            }
        } else {
            r.counted_wh
        };
        if let Some(wh) = energy.filter(|wh| *wh > 0) {
            if rates.versions.is_empty() {
                held = Some((r.read_at, "no_tariff".to_owned()));
                break;
            }
            let usage = Usage {
                start: last_read_at,
                end: r.read_at,
                energy_wh: EnergyWh::from_wh(wh),
                tou_wh: None,
            };
            match rating::rate(
                &usage,
                rates.versions,
                rates.tz,
                rates.calendar,
                &rating_state,
            ) {
                Ok(result) => {
                    pending.push((meter, account), &usage, &result)?;
                    rating_state = result.state;
                    rated += 1;
                }
                Err(e) => {
                    held = Some((r.read_at, format!("rating: {e}")));
                    break;
                }
            }
        }
        last_read_at = r.read_at;
        last_energy = r.energy_wh;
        from_opening = false;
    }
    let position = Position {
        read_at: last_read_at,
        energy_wh: last_energy,
        from_opening,
        held,
    };
    Ok((position, rating_state, rated))
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

impl Position {
    /// The position a `rating_state` row holds (its hold is handled by the caller).
    pub(crate) fn of_state(row: &sqlx::postgres::PgRow) -> CoreResult<Position> {
        Ok(Position {
            read_at: row.try_get("last_read_at")?,
            energy_wh: row.try_get("last_energy_wh")?,
            from_opening: row.try_get("from_opening")?,
            held: None,
        })
    }
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

/// Charge lines waiting to be written together (one meter's, or a batch of meters').
#[derive(Default)]
pub(crate) struct PendingLines {
    meter: Vec<Uuid>,
    account: Vec<Uuid>,
    read_at: Vec<DateTime<Utc>>,
    start: Vec<DateTime<Utc>>,
    energy_wh: Vec<i64>,
    debit_fen: Vec<i64>,
    lines: Vec<serde_json::Value>,
}

impl PendingLines {
    fn push(
        &mut self,
        (meter, account): (Uuid, Uuid),
        usage: &Usage,
        result: &rating::Rated,
    ) -> CoreResult<()> {
        self.meter.push(meter);
        self.account.push(account);
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
    /// key, so the whole transaction rolls back.
    pub(crate) async fn write(self, conn: &mut PgConnection, now: DateTime<Utc>) -> CoreResult<()> {
        if self.read_at.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "insert into charge_lines (meter_id, read_at, account_id, interval_start, energy_wh, debit_fen, lines, rated_at)
             select m, r, a, s, e, d, l, $8
             from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::bigint[], $6::bigint[], $7::jsonb[])
                  as u(m, a, r, s, e, d, l)",
        )
        .bind(&self.meter)
        .bind(&self.account)
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

pub(crate) async fn raise_held_alarm(
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
    // A meter-side meter's charges post at once against the credit on it (the shadow balance
    // is compared with the meter's own remaining amount reading by reading: drift).
    let meter_side = is_meter_side(conn, account).await?;
    if !force
        && !waited
        && !meter_side
        && !crosses_a_level(conn, account, batch, &company.settings).await?
    {
        return Ok(false);
    }
    let txn = if batch > AmountFen::ZERO {
        let mut posting = charge_posting(account, meter, batch, last)?;
        if meter_side {
            posting.kind = TxnKind::MeterCharge;
            posting.legs[0].0 = AccountKey::OnMeter(meter);
        }
        Some(post::post(conn, principal, &posting).await?.txn.id)
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
    Ok(txn.is_some())
}

async fn is_meter_side(conn: &mut PgConnection, account: Uuid) -> CoreResult<bool> {
    let mode: Option<String> =
        sqlx::query_scalar("select prepayment_mode from shop_accounts where id = $1")
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(mode.as_deref() == Some("meter"))
}

/// The `charge_posting` of `meter`'s unposted lines worth `batch`, the last read at `last`: keyed
/// `post:<meter>:<last ms>`, the one form the per-meter and the batched pass both post (so the
/// same lines can never post twice, whichever path takes them).
pub(crate) fn charge_posting(
    account: Uuid,
    meter: Uuid,
    batch: AmountFen,
    last: DateTime<Utc>,
) -> CoreResult<Posting> {
    Ok(Posting {
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
    })
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
    batch_crosses_a_level(wallet, unposted, batch, s)
}

/// Whether the lines of `batch` (rated, among the account's `unposted` charges) took the
/// available balance across alarm 1, alarm 2 or the trip level.
pub(crate) fn batch_crosses_a_level(
    wallet: AmountFen,
    unposted: AmountFen,
    batch: AmountFen,
    s: &settings::CompanySettings,
) -> CoreResult<bool> {
    if batch <= AmountFen::ZERO {
        return Ok(false);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_never_split_an_account() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let m = Uuid::from_u128;
        let pairs = vec![
            (a, m(10)),
            (a, m(11)),
            (b, m(12)),
            (b, m(13)),
            (b, m(14)),
            (c, m(15)),
        ];
        let batches = batches_of_accounts(&pairs, 3);
        // The first batch runs over to take all of b.
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].len(), 5);
        assert_eq!(batches[1], vec![(c, m(15))]);
        assert_eq!(batches.concat(), pairs, "every meter once, in order");
        assert!(batches_of_accounts(&[], 3).is_empty());
        assert_eq!(batches_of_accounts(&pairs, 1).len(), 3);
    }
}
