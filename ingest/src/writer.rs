//! The one way readings reach the database: bus sessions hand readings and poll outcomes to a
//! writer task, which stores them per company in batches (every [`FLUSH_MS`] or
//! [`BATCH_MAX`] readings). When the database is unavailable the writer keeps what it has, up
//! to [`BUFFER_MAX`] readings, and retries; beyond that it drops the oldest, counting and
//! logging every reading it drops (metric `ingest_readings_dropped_total`).

use crate::store::{self, NewReading};
use chrono::{DateTime, Utc};
use powertab_core::kernel::names::SchemaName;
use sqlx::PgPool;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// How often the writer stores what it has.
pub const FLUSH_MS: u64 = 500;
/// Readings per batch.
pub const BATCH_MAX: usize = 2_000;
/// Readings kept while the database is unavailable (about 3 minutes of 10,000 meters).
pub const BUFFER_MAX: usize = 200_000;

/// How one poll of a meter went.
#[derive(Debug, Clone)]
pub struct PollOutcome {
    pub meter_id: Uuid,
    pub ok: bool,
    pub latency_ms: i32,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// What bus sessions send.
// Readings are nearly every message: boxing them would allocate once per reading for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Message {
    Reading(SchemaName, NewReading),
    Poll(SchemaName, PollOutcome),
    /// Store what is pending now: a command's read-back waits for its reading to be stored.
    Flush,
}

/// The sending side, cloned into every bus session.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Message>,
}

impl Writer {
    /// Starts the writer task on `pool`; it ends when every sender is gone, after a last flush.
    pub fn start(pool: PgPool) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(10_000);
        let task = tokio::spawn(run(pool, rx));
        (Writer { tx }, task)
    }

    pub async fn send(&self, message: Message) {
        // The channel is bounded: a slow database slows the polling instead of growing memory.
        let _ = self.tx.send(message).await;
    }

    /// Asks for what was sent so far to be stored now rather than at the next tick (a relay
    /// command is verified by the reading that follows it: DESIGN.md's table).
    pub async fn flush_now(&self) {
        let _ = self.tx.send(Message::Flush).await;
    }
}

struct Pending {
    readings: BTreeMap<String, (SchemaName, VecDeque<NewReading>)>,
    polls: BTreeMap<String, (SchemaName, BTreeMap<Uuid, Vec<PollOutcome>>)>,
    buffered: usize,
    /// Readings kept at most ([`BUFFER_MAX`]; tests use a small one).
    buffer_max: usize,
}

impl Pending {
    fn new(buffer_max: usize) -> Pending {
        Pending {
            readings: BTreeMap::new(),
            polls: BTreeMap::new(),
            buffered: 0,
            buffer_max,
        }
    }

    fn add(&mut self, message: Message) {
        match message {
            Message::Reading(schema, reading) => {
                let entry = self
                    .readings
                    .entry(schema.as_str().to_owned())
                    .or_insert_with(|| (schema, VecDeque::new()));
                entry.1.push_back(reading);
                self.buffered += 1;
                if self.buffered > self.buffer_max {
                    self.drop_oldest();
                }
            }
            Message::Poll(schema, outcome) => {
                self.polls
                    .entry(schema.as_str().to_owned())
                    .or_insert_with(|| (schema, BTreeMap::new()))
                    .1
                    .entry(outcome.meter_id)
                    .or_default()
                    .push(outcome);
            }
            Message::Flush => {}
        }
    }

    /// Drops the oldest reading of the company with the most waiting: one busy company's
    /// backlog must not cost the others their readings.
    fn drop_oldest(&mut self) {
        if let Some((_, (schema, queue))) =
            self.readings.iter_mut().max_by_key(|(_, (_, q))| q.len())
        {
            if queue.pop_front().is_some() {
                self.buffered -= 1;
                metrics::counter!("ingest_readings_dropped_total").increment(1);
                tracing::error!(
                    schema = schema.as_str(),
                    "reading buffer full: dropped the oldest reading"
                );
            }
        }
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Message>) {
    let mut pending = Pending::new(BUFFER_MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(FLUSH_MS));
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Message::Flush) => {
                    // Whatever else already waits goes into the same flush (many buses ask at
                    // once: one batch, not one per ask).
                    while let Ok(m) = rx.try_recv() {
                        pending.add(m);
                    }
                }
                Some(m) => {
                    pending.add(m);
                    if pending.buffered < BATCH_MAX {
                        continue;
                    }
                }
                None => {
                    flush(&pool, &mut pending).await;
                    return;
                }
            },
            _ = tick.tick() => {}
        }
        flush(&pool, &mut pending).await;
    }
}

/// Stores what is pending; what fails stays for the next flush.
async fn flush(pool: &PgPool, pending: &mut Pending) {
    for (schema, queue) in pending.readings.values_mut() {
        while !queue.is_empty() {
            let n = queue.len().min(BATCH_MAX);
            let batch: Vec<NewReading> = queue.iter().take(n).cloned().collect();
            match store::store_batch(pool, schema, &batch).await {
                Ok(report) => {
                    queue.drain(..n);
                    pending.buffered -= n;
                    metrics::counter!("ingest_readings_stored_total")
                        .increment(report.stored as u64);
                    metrics::counter!("ingest_readings_rejected_total")
                        .increment(report.rejected_time as u64);
                    metrics::counter!("ingest_readings_flagged_total")
                        .increment(report.flagged as u64);
                }
                Err(e) => {
                    tracing::warn!(schema = schema.as_str(), error = %e, buffered = pending.buffered,
                        "storing readings failed; keeping them and retrying");
                    break;
                }
            }
        }
    }
    pending.readings.retain(|_, (_, q)| !q.is_empty());
    let polls = std::mem::take(&mut pending.polls);
    for (_, (schema, by_meter)) in polls {
        if let Err(e) = store_polls(pool, &schema, &by_meter).await {
            // Poll statistics are best effort: a lost update is corrected by the next one.
            tracing::warn!(schema = schema.as_str(), error = %e, "storing poll statistics failed");
        }
    }
}

async fn store_polls(
    pool: &PgPool,
    schema: &SchemaName,
    by_meter: &BTreeMap<Uuid, Vec<PollOutcome>>,
) -> anyhow::Result<()> {
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    for (meter_id, outcomes) in by_meter {
        let polls = outcomes.len() as i64;
        let failures = outcomes.iter().filter(|o| !o.ok).count() as i64;
        let last = outcomes.last().expect("at least one outcome");
        let trailing_failures = outcomes.iter().rev().take_while(|o| !o.ok).count() as i32;
        let last_ok = outcomes.iter().rev().find(|o| o.ok);
        sqlx::query(
            "insert into meter_polls (meter_id, polls, failures, consecutive_failures, last_latency_ms, last_ok_at, last_error, updated_at)
             values ($1, $2, $3, $4, $5, $6, $7, now())
             on conflict (meter_id) do update set polls = meter_polls.polls + excluded.polls,
                 failures = meter_polls.failures + excluded.failures,
                 consecutive_failures = case when $8 then excluded.consecutive_failures
                                             else meter_polls.consecutive_failures + excluded.consecutive_failures end,
                 last_latency_ms = coalesce(excluded.last_latency_ms, meter_polls.last_latency_ms),
                 last_ok_at = coalesce(excluded.last_ok_at, meter_polls.last_ok_at),
                 last_error = excluded.last_error, updated_at = now()",
        )
        .bind(meter_id)
        .bind(polls)
        .bind(failures)
        .bind(trailing_failures)
        .bind(last_ok.map(|o| o.latency_ms))
        .bind(last_ok.map(|o| o.at))
        .bind(if last.ok { "" } else { last.error.as_str() })
        .bind(last_ok.is_some())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::MeterValues;

    fn reading(meter: u128, energy_wh: i64) -> NewReading {
        NewReading {
            meter_id: Uuid::from_u128(meter),
            read_at: Utc::now(),
            values: MeterValues {
                energy_wh,
                ..MeterValues::default()
            },
            raw: Vec::new(),
            ratio_mismatch: false,
        }
    }

    fn queue(pending: &Pending, company: i64) -> Vec<i64> {
        pending
            .readings
            .get(SchemaName::for_company(company).as_str())
            .map(|(_, q)| q.iter().map(|r| r.values.energy_wh).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_reading_of_the_busiest_company() {
        let mut pending = Pending::new(3);
        for wh in [1, 2, 3] {
            pending.add(Message::Reading(SchemaName::for_company(1), reading(1, wh)));
        }
        pending.add(Message::Reading(
            SchemaName::for_company(2),
            reading(2, 100),
        ));
        assert_eq!(pending.buffered, 3);
        assert_eq!(
            queue(&pending, 1),
            [2, 3],
            "company 1's oldest reading went"
        );
        assert_eq!(
            queue(&pending, 2),
            [100],
            "the quiet company keeps its reading"
        );
    }

    #[tokio::test]
    async fn readings_stay_while_the_database_is_down() {
        // Nothing listens on port 1: every store fails.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
            .unwrap();
        let mut pending = Pending::new(10);
        for wh in [1, 2] {
            pending.add(Message::Reading(SchemaName::for_company(1), reading(1, wh)));
        }
        flush(&pool, &mut pending).await;
        assert_eq!(pending.buffered, 2);
        assert_eq!(
            queue(&pending, 1),
            [1, 2],
            "kept, in order, for the next flush"
        );
    }
}
