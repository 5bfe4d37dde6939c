//! The rating worker's batch: a group of meters (whole accounts) rated, charged for fees and
//! posted in **one** database transaction with a handful of statements for all of them — their
//! rating states locked together, their new readings read together, every line written with one
//! insert, every due batch of charges posted with one [`post_many`] — instead of a transaction
//! and a dozen round trips per meter. The rules are the per-meter ones of [`super::rating`]
//! (the same rating loop, [`rate_readings`]; the same posting rule, [`batch_crosses_a_level`]);
//! only the plumbing differs. A batch that fails rolls back whole and the pass redoes its meters
//! one by one, so one bad meter costs only itself.

use super::ledger::post::{post_many, Posting};
use super::rating::{
    batch_crosses_a_level, charge_posting, counters_of, raise_held_alarm, rate_readings,
    CompanyRules, PassReport, PendingLines, Position, Rates, StoredReading, POSTING_INTERVAL_S,
    READINGS_PER_PASS,
};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tariff::rating::RatingState;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// A meter of the batch whose rating state this transaction holds.
struct Held {
    account: Uuid,
    meter: Uuid,
    start: Position,
    counters: RatingState,
    /// Whether fees may be due (the last fee date is before today).
    fees_due: bool,
}

/// Rates, charges fees and posts `pairs` (account, meter) in one transaction; meters another
/// worker holds are skipped (that worker does them).
#[tracing::instrument(skip_all, fields(meters = pairs.len()))]
pub(crate) async fn run(
    pool: &PgPool,
    principal: &Principal,
    company: &CompanyRules,
    pairs: &[(Uuid, Uuid)],
) -> CoreResult<PassReport> {
    let schema = principal.company()?.schema.clone();
    let mut tx = crate::db::begin_in(pool, &schema).await?;
    let held = lock_states(&mut tx, principal, pairs).await?;
    let mut report = PassReport {
        meters: held.len() as u64,
        ..PassReport::default()
    };
    if held.is_empty() {
        tx.commit().await?;
        return Ok(report);
    }
    let (rated, stopped) = rate_all(&mut tx, principal, company, &held).await?;
    report.readings_rated = rated;
    report.held = stopped;
    for m in held.iter().filter(|m| m.fees_due) {
        report.fees +=
            u64::from(super::fees::post_due(&mut tx, principal, m.account, m.meter).await?);
    }
    report.postings = post_due(&mut tx, principal, company, &held).await?;
    tx.commit().await?;
    Ok(report)
}

/// Locks the rating states of `pairs` that are not held for review and not locked by another
/// worker.
async fn lock_states(
    conn: &mut PgConnection,
    principal: &Principal,
    pairs: &[(Uuid, Uuid)],
) -> CoreResult<Vec<Held>> {
    let (accounts, meters): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    let rows = sqlx::query(
        "select r.account_id, r.meter_id, r.last_read_at, r.last_energy_wh, r.from_opening,
                r.month_year, r.month, r.month_wh, r.year, r.year_wh, r.remainder_e5, r.fees_through
         from rating_state r join unnest($1::uuid[], $2::uuid[]) as w(a, m)
              on r.account_id = w.a and r.meter_id = w.m
         where r.held_at is null
         order by r.account_id, r.meter_id
         for update of r skip locked",
    )
    .bind(&accounts)
    .bind(&meters)
    .fetch_all(&mut *conn)
    .await?;
    let today = principal.today();
    rows.iter()
        .map(|r| {
            let fees_through: Option<NaiveDate> = r.try_get("fees_through")?;
            Ok(Held {
                account: r.try_get("account_id")?,
                meter: r.try_get("meter_id")?,
                start: Position::of_state(r)?,
                counters: counters_of(r)?,
                fees_due: fees_through.is_none_or(|d| d < today),
            })
        })
        .collect()
}

/// Rates every held meter's new readings: one read, one insert of lines, one update of states.
/// (readings rated, meters stopped by a held reading)
async fn rate_all(
    conn: &mut PgConnection,
    principal: &Principal,
    company: &CompanyRules,
    held: &[Held],
) -> CoreResult<(u64, u64)> {
    let mut readings = new_readings(conn, held).await?;
    let with_readings: Vec<Uuid> = held
        .iter()
        .filter(|m| readings.contains_key(&m.meter))
        .map(|m| m.meter)
        .collect();
    if with_readings.is_empty() {
        return Ok((0, 0));
    }
    let versions = crate::tariff::plans::versions_by_meter(conn, &with_readings).await?;
    let now = principal.now();
    let mut pending = PendingLines::default();
    let mut states = StateUpdates::default();
    let (mut rated, mut stopped) = (0u64, Vec::new());
    for m in held {
        let Some(new) = readings.remove(&m.meter) else {
            continue;
        };
        let rates = Rates {
            versions: versions.get(&m.meter).map_or(&[], Vec::as_slice),
            tz: principal.tz(),
            calendar: &company.calendar,
        };
        let start = Position {
            held: None,
            ..m.start
        };
        let (position, counters, n) = rate_readings(
            start,
            m.counters,
            &new,
            &rates,
            (m.meter, m.account),
            &mut pending,
        )?;
        rated += n;
        if let Some((at, why)) = &position.held {
            stopped.push((m.meter, *at, why.clone()));
        }
        states.push(m.account, m.meter, &position, &counters, now);
    }
    pending.write(conn, now).await?;
    states.write(conn).await?;
    for (meter, at, why) in &stopped {
        raise_held_alarm(conn, *meter, *at, why).await?;
    }
    Ok((rated, stopped.len() as u64))
}

/// The readings after each held meter's position, in reading order, up to
/// [`READINGS_PER_PASS`] a meter.
async fn new_readings(
    conn: &mut PgConnection,
    held: &[Held],
) -> CoreResult<HashMap<Uuid, Vec<StoredReading>>> {
    let meters: Vec<Uuid> = held.iter().map(|m| m.meter).collect();
    let after: Vec<DateTime<Utc>> = held.iter().map(|m| m.start.read_at).collect();
    let rows = sqlx::query(
        "select w.m as meter_id, x.read_at, x.energy_wh, x.flag, x.counted_wh
         from unnest($1::uuid[], $2::timestamptz[]) as w(m, t)
         cross join lateral (select read_at, energy_wh, flag, counted_wh from readings
                             where meter_id = w.m and read_at > w.t order by read_at limit $3) x
         order by w.m, x.read_at",
    )
    .bind(&meters)
    .bind(&after)
    .bind(READINGS_PER_PASS)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_meter: HashMap<Uuid, Vec<StoredReading>> = HashMap::new();
    for row in &rows {
        by_meter
            .entry(row.try_get("meter_id")?)
            .or_default()
            .push(StoredReading::from_row(row)?);
    }
    Ok(by_meter)
}

/// New rating states, written with one statement (as `rating::save_state` writes one).
#[derive(Default)]
struct StateUpdates {
    account: Vec<Uuid>,
    meter: Vec<Uuid>,
    read_at: Vec<DateTime<Utc>>,
    energy_wh: Vec<i64>,
    from_opening: Vec<bool>,
    month_year: Vec<Option<i32>>,
    month: Vec<Option<i32>>,
    month_wh: Vec<i64>,
    year: Vec<Option<i32>>,
    year_wh: Vec<i64>,
    remainder_e5: Vec<i64>,
    held_at: Vec<Option<DateTime<Utc>>>,
    held_reason: Vec<Option<String>>,
    now: Option<DateTime<Utc>>,
}

impl StateUpdates {
    fn push(
        &mut self,
        account: Uuid,
        meter: Uuid,
        position: &Position,
        counters: &RatingState,
        now: DateTime<Utc>,
    ) {
        self.account.push(account);
        self.meter.push(meter);
        self.read_at.push(position.read_at);
        self.energy_wh.push(position.energy_wh);
        self.from_opening.push(position.from_opening);
        self.month_year.push(counters.month.map(|(y, _)| y));
        self.month
            .push(counters.month.map(|(_, m)| i32::try_from(m).unwrap_or(1)));
        self.month_wh.push(counters.month_wh.wh());
        self.year.push(counters.year);
        self.year_wh.push(counters.year_wh.wh());
        self.remainder_e5.push(counters.remainder_e5);
        self.held_at.push(position.held.as_ref().map(|_| now));
        self.held_reason
            .push(position.held.as_ref().map(|(_, why)| why.clone()));
        self.now = Some(now);
    }

    async fn write(self, conn: &mut PgConnection) -> CoreResult<()> {
        let Some(now) = self.now else { return Ok(()) };
        sqlx::query(
            "update rating_state r set last_read_at = u.t, last_energy_wh = u.e, from_opening = u.o,
                 month_year = u.my, month = u.mo, month_wh = u.mw, year = u.y, year_wh = u.yw,
                 remainder_e5 = u.rem, held_at = u.ha, held_reason = u.hr, updated_at = $14
             from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bigint[], $5::boolean[],
                         $6::int[], $7::int[], $8::bigint[], $9::int[], $10::bigint[], $11::bigint[],
                         $12::timestamptz[], $13::text[])
                  as u(a, m, t, e, o, my, mo, mw, y, yw, rem, ha, hr)
             where r.account_id = u.a and r.meter_id = u.m",
        )
        .bind(&self.account)
        .bind(&self.meter)
        .bind(&self.read_at)
        .bind(&self.energy_wh)
        .bind(&self.from_opening)
        .bind(&self.month_year)
        .bind(&self.month)
        .bind(&self.month_wh)
        .bind(&self.year)
        .bind(&self.year_wh)
        .bind(&self.remainder_e5)
        .bind(&self.held_at)
        .bind(&self.held_reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// A meter's unposted charge lines.
struct Unposted {
    account: Uuid,
    meter: Uuid,
    fen: AmountFen,
    oldest_rated_at: DateTime<Utc>,
    last_read_at: DateTime<Utc>,
}

/// Posts every held meter's unposted lines that are due (the oldest waited
/// [`POSTING_INTERVAL_S`], or the available balance crossed a level) as one `charge_posting`
/// each, all with one [`post_many`] (which tells the accounts' listeners); marks the lines.
/// Returns the transactions posted.
async fn post_due(
    conn: &mut PgConnection,
    principal: &Principal,
    company: &CompanyRules,
    held: &[Held],
) -> CoreResult<u64> {
    let unposted = unposted_lines(conn, held).await?;
    if unposted.is_empty() {
        return Ok(0);
    }
    let now = principal.now();
    let waited = |u: &Unposted| now - u.oldest_rated_at >= Duration::seconds(POSTING_INTERVAL_S);
    let to_check: BTreeSet<Uuid> = unposted
        .iter()
        .filter(|u| !waited(u) && u.fen > AmountFen::ZERO)
        .map(|u| u.account)
        .collect();
    let available = available_parts(conn, &to_check).await?;
    let mut due = Vec::new();
    for u in &unposted {
        let crossed = match available.get(&u.account) {
            Some((wallet, account_unposted)) if !waited(u) => {
                batch_crosses_a_level(*wallet, *account_unposted, u.fen, &company.settings)?
            }
            _ => false,
        };
        if waited(u) || crossed {
            due.push(u);
        }
    }
    let charged: Vec<&Unposted> = due
        .iter()
        .copied()
        .filter(|u| u.fen > AmountFen::ZERO)
        .collect();
    let postings: Vec<Posting> = charged
        .iter()
        .map(|u| charge_posting(u.account, u.meter, u.fen, u.last_read_at))
        .collect::<CoreResult<_>>()?;
    let ids = post_many(conn, principal, &postings).await?;
    let txn_of: HashMap<Uuid, Uuid> = charged
        .iter()
        .zip(&ids)
        .map(|(u, id)| (u.meter, *id))
        .collect();
    mark_posted(conn, &due, &txn_of).await?;
    Ok(postings.len() as u64)
}

async fn unposted_lines(conn: &mut PgConnection, held: &[Held]) -> CoreResult<Vec<Unposted>> {
    let accounts: Vec<Uuid> = held.iter().map(|m| m.account).collect();
    let meters: Vec<Uuid> = held.iter().map(|m| m.meter).collect();
    let rows = sqlx::query(
        "select c.account_id, c.meter_id, coalesce(sum(c.debit_fen), 0)::bigint as fen,
                min(c.rated_at) as oldest, max(c.read_at) as last
         from charge_lines c join unnest($1::uuid[], $2::uuid[]) as w(a, m)
              on c.account_id = w.a and c.meter_id = w.m
         where not c.posted
         group by c.account_id, c.meter_id",
    )
    .bind(&accounts)
    .bind(&meters)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Unposted {
                account: r.try_get("account_id")?,
                meter: r.try_get("meter_id")?,
                fen: AmountFen::from_fen(r.try_get("fen")?),
                oldest_rated_at: r.try_get("oldest")?,
                last_read_at: r.try_get("last")?,
            })
        })
        .collect()
}

/// Each account's wallet balance and unposted charges (all its meters'), the two parts of its
/// available balance.
async fn available_parts(
    conn: &mut PgConnection,
    accounts: &BTreeSet<Uuid>,
) -> CoreResult<HashMap<Uuid, (AmountFen, AmountFen)>> {
    if accounts.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = accounts.iter().copied().collect();
    let rows = sqlx::query(
        "select w.a as account_id,
                coalesce((select balance_fen from ledger_accounts where key = 'wallet:' || w.a), 0)::bigint as wallet,
                coalesce((select sum(debit_fen) from charge_lines c where c.account_id = w.a and not c.posted), 0)::bigint as unposted
         from unnest($1::uuid[]) as w(a)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("account_id")?,
                (
                    AmountFen::from_fen(r.try_get("wallet")?),
                    AmountFen::from_fen(r.try_get("unposted")?),
                ),
            ))
        })
        .collect()
}

/// Marks the due meters' lines posted (up to the last one the posting carried); a 0-fen batch's
/// lines are done without a transaction.
async fn mark_posted(
    conn: &mut PgConnection,
    due: &[&Unposted],
    txn_of: &HashMap<Uuid, Uuid>,
) -> CoreResult<()> {
    let accounts: Vec<Uuid> = due.iter().map(|u| u.account).collect();
    let meters: Vec<Uuid> = due.iter().map(|u| u.meter).collect();
    let txns: Vec<Option<Uuid>> = due.iter().map(|u| txn_of.get(&u.meter).copied()).collect();
    let last: Vec<DateTime<Utc>> = due.iter().map(|u| u.last_read_at).collect();
    let marked = sqlx::query(
        "update charge_lines c set posted = true, posted_txn = u.txn
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[]) as u(a, m, txn, last)
         where c.account_id = u.a and c.meter_id = u.m and not c.posted and c.read_at <= u.last",
    )
    .bind(&accounts)
    .bind(&meters)
    .bind(&txns)
    .bind(&last)
    .execute(&mut *conn)
    .await?;
    if (marked.rows_affected() as usize) < due.len() {
        return Err(CoreError::Internal(format!(
            "{} meters' lines were due but only {} lines were marked posted",
            due.len(),
            marked.rows_affected()
        )));
    }
    Ok(())
}
