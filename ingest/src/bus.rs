//! One RS485 bus behind a DTU socket (DESIGN.md: Ingest, Per bus): one outstanding request at
//! a time, the bus's gap between requests, a timeout around every request, bounded retries,
//! and a schedule per meter (every poll interval; a meter that stops answering is backed off so
//! that it never stalls its bus mates). Readings and poll outcomes go to the [`Writer`].

use crate::commands::Dispatch;
use crate::driver::{self, Driver, MeterConfig, Step};
use crate::framing::{self, Reply};
use crate::store::NewReading;
use crate::writer::{Message, PollOutcome, Writer};
use chrono::Utc;
use powertab_core::kernel::names::SchemaName;
use sqlx::{PgPool, Row};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use uuid::Uuid;

/// Retries of a required request after a timeout.
pub const RETRIES: u32 = 2;
/// The longest a dead meter waits between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How often the bus re-reads its meter list (new, changed, removed meters).
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// How often "last seen" is written while bytes keep arriving.
const SEEN_EVERY: Duration = Duration::from_secs(30);
/// Bytes kept while looking for a reply; a flood beyond it is noise.
const BUFFER_MAX: usize = 4096;

/// What a session needs to know about its bus.
#[derive(Debug, Clone)]
pub struct BusLink {
    pub schema: SchemaName,
    pub gateway_id: Uuid,
    pub bus_id: Uuid,
    pub port: i32,
    pub gap: Duration,
    pub timeout: Duration,
    /// Heartbeat and (when repeated) registration bytes, dropped wherever they arrive.
    pub noise: Vec<Vec<u8>>,
}

/// The bus `port` of gateway `gateway_id`, if it exists and is in use.
pub async fn load_link(
    pool: &PgPool,
    schema: &SchemaName,
    gateway_id: Uuid,
    port: i32,
) -> anyhow::Result<Option<BusLink>> {
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    let row = sqlx::query(
        "select b.id, b.gap_ms, b.timeout_ms, g.registration_hex, g.registration_repeats, g.heartbeat_hex
         from buses b join gateways g on g.id = b.gateway_id
         where g.id = $1 and b.number = $2 and b.removed_at is null and g.status = 'enabled'",
    )
    .bind(gateway_id)
    .bind(port)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let mut noise = Vec::new();
    if let Some(hex) = row.try_get::<Option<String>, _>("heartbeat_hex")? {
        noise.push(crate::framing::unhex(&hex));
    }
    if row.try_get::<bool, _>("registration_repeats")? {
        if let Some(hex) = row.try_get::<Option<String>, _>("registration_hex")? {
            noise.push(crate::framing::unhex(&hex));
        }
    }
    Ok(Some(BusLink {
        schema: schema.clone(),
        gateway_id,
        bus_id: row.try_get("id")?,
        port,
        gap: Duration::from_millis(row.try_get::<i32, _>("gap_ms")?.max(0) as u64),
        timeout: Duration::from_millis(row.try_get::<i32, _>("timeout_ms")?.max(1) as u64),
        noise,
    }))
}

/// A meter on the bus and its schedule.
struct Slot {
    meter_id: Uuid,
    driver: Box<dyn Driver>,
    /// The Modbus unit id of a meter-side meter, whose secure frames and counters this bus
    /// carries (SECURE-COMMAND.md: Carriage); `None` for platform-side meters.
    secure_unit: Option<u8>,
    ratios: (i64, i64),
    next_due: Instant,
    failures: u32,
}

async fn load_slots(pool: &PgPool, link: &BusLink, old: &[Slot]) -> anyhow::Result<Vec<Slot>> {
    let mut tx = powertab_core::db::begin_in(pool, &link.schema).await?;
    let rows = sqlx::query(
        "select id, model, address, register_map, dlt645_password, dlt645_operator, pt_ratio, ct_ratio,
                prepayment_mode
         from meters where bus_id = $1 and status = 'active' order by address",
    )
    .bind(link.bus_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let now = Instant::now();
    let mut slots = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        let meter_id: Uuid = r.try_get("id")?;
        let config = MeterConfig {
            model: r.try_get("model")?,
            address: r.try_get("address")?,
            register_map: r.try_get("register_map")?,
            dlt645_password: r.try_get("dlt645_password")?,
            dlt645_operator: r.try_get("dlt645_operator")?,
        };
        let driver = match driver::for_meter(&config) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%meter_id, error = %e, "meter not polled");
                continue;
            }
        };
        // A meter keeps its place in the schedule across reloads; new ones start at once,
        // spread a little so a bus does not start with a burst.
        let (next_due, failures) = old
            .iter()
            .find(|s| s.meter_id == meter_id)
            .map_or((now + Duration::from_millis(i as u64 * 10), 0), |s| {
                (s.next_due, s.failures)
            });
        // Secure frames travel over Modbus (0x0C00); a meter-side meter of another protocol is
        // polled but carries none.
        let secure_unit = (r.try_get::<String, _>("prepayment_mode")? == "meter")
            .then(|| config.address.parse::<u8>().ok())
            .flatten()
            .filter(|_| config.model != "dlt645");
        slots.push(Slot {
            meter_id,
            driver,
            secure_unit,
            ratios: (
                i64::from(r.try_get::<i32, _>("pt_ratio")?),
                i64::from(r.try_get::<i32, _>("ct_ratio")?),
            ),
            next_due,
            failures,
        });
    }
    Ok(slots)
}

/// How a bus session talks to its meters: a DTU socket carrying serial frames ([`Wire`]) or a
/// Modbus-TCP gateway (`crate::modbus_tcp`).
pub trait Transport: Send {
    /// Sends `step` and waits up to `timeout` for its reply (`None` on timeout), with the raw
    /// bytes it came in.
    fn transact(
        &mut self,
        step: &Step,
        timeout: Duration,
    ) -> impl std::future::Future<Output = std::io::Result<Option<(Reply, Vec<u8>)>>> + Send;
    /// Waits until `until`, handling whatever arrives meanwhile.
    fn idle(
        &mut self,
        until: Instant,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Whether anything arrived since the last call (for "last seen").
    fn take_activity(&mut self) -> bool;
}

/// A DTU socket, with what arrived but was not yet consumed.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    noise: Vec<Vec<u8>>,
    got_bytes: bool,
}

impl Wire {
    /// `initial` holds bytes that arrived with the registration.
    pub fn new(stream: TcpStream, initial: Vec<u8>, noise: Vec<Vec<u8>>) -> Wire {
        Wire {
            stream,
            buf: initial,
            noise,
            got_bytes: false,
        }
    }
}

impl Transport for Wire {
    fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.got_bytes)
    }

    /// Whatever is buffered before sending is stale (a late reply, noise) and dropped first.
    async fn transact(
        &mut self,
        step: &Step,
        timeout: Duration,
    ) -> std::io::Result<Option<(Reply, Vec<u8>)>> {
        self.buf.clear();
        self.stream.write_all(&step.request).await?;
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 512];
        loop {
            match framing::find(&self.buf, &step.expect, &self.noise) {
                Ok((reply, used)) => {
                    let raw = self.buf.drain(..used).collect();
                    return Ok(Some((reply, raw)));
                }
                Err(discard) => {
                    self.buf.drain(..discard.min(self.buf.len()));
                }
            }
            if self.buf.len() > BUFFER_MAX {
                self.buf.clear();
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(n)) => {
                    self.got_bytes = true;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Waits until `until`, reading (and dropping) whatever arrives: heartbeats, late replies.
    async fn idle(&mut self, until: Instant) -> std::io::Result<()> {
        let mut chunk = [0u8; 512];
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => self.got_bytes = true,
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// Polls the bus behind `wire` until the connection ends; commands for its meters (from
/// `dispatch`) run before the next scheduled poll.
pub async fn run<T: Transport>(
    mut wire: T,
    peer: String,
    link: BusLink,
    pool: PgPool,
    writer: Writer,
    interval: Duration,
    dispatch: Dispatch,
) -> anyhow::Result<()> {
    mark(&pool, &link, true, &peer).await;
    let (command_tx, mut command_rx) = crate::commands::channel();
    let mut pending: VecDeque<(Uuid, Uuid)> = VecDeque::new();
    let mut retries: Vec<(Instant, (Uuid, Uuid))> = Vec::new();
    let mut slots = load_slots(&pool, &link, &[]).await?;
    pending.extend(adopt(&pool, &link, &slots, &dispatch, &command_tx).await);
    let mut reloaded = Instant::now();
    let mut seen = Instant::now();
    loop {
        while let Ok(command) = command_rx.try_recv() {
            pending.push_back(command);
        }
        // Commands waiting to be sent again after no answer rejoin the line when due.
        let now = Instant::now();
        retries.retain(|(due, command)| {
            let waiting = *due > now;
            if !waiting {
                pending.push_back(*command);
            }
            waiting
        });
        if let Some(command) = pending.pop_front() {
            if let Some(retry) =
                run_command(&pool, &mut wire, &slots, &link, &writer, command).await?
            {
                retries.push(retry);
            }
            tokio::time::sleep(link.gap).await;
            continue;
        }
        if reloaded.elapsed() >= RELOAD_EVERY {
            match load_slots(&pool, &link, &slots).await {
                Ok(fresh) => {
                    slots = fresh;
                    pending.extend(adopt(&pool, &link, &slots, &dispatch, &command_tx).await);
                }
                Err(e) => tracing::warn!(error = %e, "reloading the bus's meters failed"),
            }
            reloaded = Instant::now();
        }
        if seen.elapsed() >= SEEN_EVERY && wire.take_activity() {
            mark(&pool, &link, true, &peer).await;
            seen = Instant::now();
        }
        let next = slots
            .iter()
            .map(|s| s.next_due)
            .chain(retries.iter().map(|(due, _)| *due))
            .min();
        let until = match next {
            // No meters yet: keep the connection, look again at the next reload.
            None => reloaded + RELOAD_EVERY.min(interval),
            Some(due) if due > Instant::now() => due.min(reloaded + RELOAD_EVERY),
            Some(_) if retries.iter().any(|(due, _)| *due <= Instant::now()) => continue,
            Some(_) => {
                let slot = slots
                    .iter_mut()
                    .min_by_key(|s| s.next_due)
                    .expect("a slot is due");
                poll_scheduled(&mut wire, slot, &link, &writer, interval).await?;
                tokio::time::sleep(link.gap).await;
                continue;
            }
        };
        // Reading the socket is cancel-safe: a command arriving meanwhile loses no bytes.
        tokio::select! {
            idle = wire.idle(until) => idle?,
            Some(command) = command_rx.recv() => pending.push_back(command),
        }
        if next.is_none() {
            reloaded -= RELOAD_EVERY;
        }
    }
}

/// Polls a scheduled meter and sets its next turn (dead meters back off).
async fn poll_scheduled<T: Transport>(
    wire: &mut T,
    slot: &mut Slot,
    link: &BusLink,
    writer: &Writer,
    interval: Duration,
) -> anyhow::Result<()> {
    let answered = poll_meter(wire, slot, link, writer).await?;
    let due = slot.next_due;
    if answered {
        slot.failures = 0;
        // Keep the rhythm (no drift), but never schedule into the past.
        slot.next_due = (due + interval).max(Instant::now());
    } else {
        slot.failures += 1;
        let backoff = interval
            .saturating_mul(1 << slot.failures.min(8).saturating_sub(1))
            .min(BACKOFF_MAX);
        slot.next_due = Instant::now() + backoff;
    }
    Ok(())
}

/// Routes the bus's meters' commands here and returns the ones queued while nobody listened
/// (after putting back those a lost sender left `sent`).
async fn adopt(
    pool: &PgPool,
    link: &BusLink,
    slots: &[Slot],
    dispatch: &Dispatch,
    to: &crate::commands::CommandSender,
) -> Vec<(Uuid, Uuid)> {
    let meters: Vec<Uuid> = slots.iter().map(|s| s.meter_id).collect();
    dispatch.route(&meters, to);
    let limit = i64::try_from(crate::commands::SESSION_COMMANDS_MAX).unwrap_or(i64::MAX);
    crate::commands::take_over(pool, &link.schema, &meters, crate::commands::BUS_OPS, limit)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading queued commands failed");
            Vec::new()
        })
}

/// Carries out one command: claims it in the queue (another process, or an earlier turn, may
/// have it already), runs it and reports the outcome. A relay command the meter did not answer
/// stays this session's (`sent`) and comes back as `Some(when, command)` to be sent again after
/// a growing wait (`commands::retry_backoff_s`), until it fails after `CONTROL_SENDS_MAX` sends
/// or expires. `read_now` polls the meter at once: the
/// answer acknowledges it, and it is verified when the writer has stored the reading. A relay
/// command is written through the meter's driver; once the meter accepts it the meter is polled
/// at once, and the reading's relay state verifies it (DESIGN.md: "verified when" — a `release`
/// or `keep_power_off` has nothing to read back, so the accepted write verifies it).
async fn run_command<T: Transport>(
    pool: &PgPool,
    wire: &mut T,
    slots: &[Slot],
    link: &BusLink,
    writer: &Writer,
    (meter_id, command): (Uuid, Uuid),
) -> anyhow::Result<Option<(Instant, (Uuid, Uuid))>> {
    use powertab_core::commands::{self as queue, State};
    let claimed = async {
        let mut tx = powertab_core::db::begin_in(pool, &link.schema).await?;
        let claimed = queue::claim(
            &mut tx,
            command,
            meter_id,
            crate::commands::BUS_OPS,
            crate::commands::holder(),
            crate::commands::BUS_LEASE,
            chrono::Utc::now(),
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(claimed)
    }
    .await?;
    let Ok(claimed) = claimed else {
        return Ok(None);
    };
    let settle = |to: State, detail: &'static str| {
        crate::commands::settle(pool, &link.schema, claimed.id, to, detail, None)
    };
    let Some(slot) = slots.iter().find(|s| s.meter_id == meter_id) else {
        settle(State::Failed, "the meter is not on this bus").await;
        return Ok(None);
    };
    if claimed.op == powertab_core::commands::Op::SyncClock {
        sync_clock(wire, slot, link, &settle).await?;
        return Ok(None);
    }
    if let Some(unit) = slot.secure_unit {
        if let Some(frame) = stored_frame(pool, link, &claimed).await? {
            return run_secure(pool, wire, slot, link, writer, &claimed, unit, &frame).await;
        }
    }
    if claimed.op.is_secure_only() {
        settle(
            State::Failed,
            "a secure command needs a meter-side Modbus meter and a stored frame",
        )
        .await;
        return Ok(None);
    }
    if let Some(control) = crate::commands::control_op(claimed.op) {
        match write_control(wire, slot, link, control).await? {
            Ok(()) => {
                settle(
                    claimed.op.state_after_done(None),
                    "the meter accepted the command",
                )
                .await;
                // The read-back: its relay state verifies trip, close and keep-power-on, as
                // soon as it is stored.
                tokio::time::sleep(link.gap).await;
                poll_meter(wire, slot, link, writer).await?;
                writer.flush_now().await;
            }
            Err(NO_ANSWER) => {
                if let Some(retry) = retry_later(pool, link, &claimed).await {
                    return Ok(Some(retry));
                }
                metrics::counter!("ingest_control_failures_total").increment(1);
                settle(State::Failed, "no answer").await;
            }
            Err(why) => {
                metrics::counter!("ingest_control_failures_total").increment(1);
                settle(State::Failed, why).await;
            }
        }
        return Ok(None);
    }
    let answered = poll_meter(wire, slot, link, writer).await?;
    writer.flush_now().await;
    if answered {
        settle(State::Acknowledged, "the meter answered").await;
    } else {
        settle(State::Failed, NO_ANSWER).await;
    }
    Ok(None)
}

/// The secure frame stored with a claimed command, if it has one.
async fn stored_frame(
    pool: &PgPool,
    link: &BusLink,
    claimed: &powertab_core::commands::Claimed,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut tx = powertab_core::db::begin_in(pool, &link.schema).await?;
    let stored = powertab_core::secure::commands::stored_frame(&mut tx, claimed.id).await?;
    tx.commit().await?;
    Ok(stored.map(|(bytes, _)| bytes))
}

/// Sends `step` until it is answered, like a poll's required request; `None` when every try
/// went unanswered.
async fn transact_retried<T: Transport>(
    wire: &mut T,
    step: &Step,
    link: &BusLink,
) -> anyhow::Result<Option<Reply>> {
    for attempt in 0..=RETRIES {
        if attempt > 0 {
            tokio::time::sleep(link.gap).await;
        }
        if let Some((reply, _)) = wire.transact(step, link.timeout).await? {
            return Ok(Some(reply));
        }
    }
    Ok(None)
}

/// Carries a secure command (SECURE-COMMAND.md: Carriage): the stored frame written at 0x0C00
/// exactly as the server built it, the acknowledgement read from 0x0C40 and kept with the
/// command, then the meter polled with its counters. Ingest judges nothing: the server's settle
/// worker checks the acknowledgement's MAC and the counters. The command stays this session's
/// (`sent`) and comes back for another send after a wait; a send after the meter applied it is
/// harmless (the meter answers `05` to a byte-identical resend), and once the settle worker has
/// moved it on, the next claim finds nothing to do. Purchases and deducts are never given up
/// (DESIGN.md); control frames end with their expiry.
#[allow(clippy::too_many_arguments)]
async fn run_secure<T: Transport>(
    pool: &PgPool,
    wire: &mut T,
    slot: &Slot,
    link: &BusLink,
    writer: &Writer,
    claimed: &powertab_core::commands::Claimed,
    unit: u8,
    frame: &[u8],
) -> anyhow::Result<Option<(Instant, (Uuid, Uuid))>> {
    use powertab_core::commands::State;
    let Some(write) = crate::secure::write_frame(unit, frame) else {
        crate::commands::settle(
            pool,
            &link.schema,
            claimed.id,
            State::Failed,
            "the stored frame is not a secure v1 frame",
            None,
        )
        .await;
        return Ok(None);
    };
    match transact_retried(wire, &write, link).await? {
        None => metrics::counter!("ingest_secure_unanswered_total").increment(1),
        Some(Reply::Rtu(framing::rtu::Reply::Exception(code))) => {
            // The meter does not take secure frames here: resending cannot help.
            metrics::counter!("ingest_secure_refused_total").increment(1);
            let detail = format!("the meter refused the secure frame (Modbus exception {code})");
            crate::commands::settle(pool, &link.schema, claimed.id, State::Failed, &detail, None)
                .await;
            return Ok(None);
        }
        Some(_) => {
            tokio::time::sleep(link.gap).await;
            let reply = transact_retried(wire, &crate::secure::read_ack(unit), link).await?;
            match crate::secure::ack_bytes(reply.as_ref()) {
                Some(ack) => store_ack(pool, link, claimed, &ack).await,
                None => metrics::counter!("ingest_secure_ack_missing_total").increment(1),
            }
            // The read-back: the counters verify the command (settle worker).
            tokio::time::sleep(link.gap).await;
            poll_meter(wire, slot, link, writer).await?;
            writer.flush_now().await;
        }
    }
    Ok(secure_recheck(pool, link, claimed).await)
}

async fn store_ack(
    pool: &PgPool,
    link: &BusLink,
    claimed: &powertab_core::commands::Claimed,
    ack: &[u8],
) {
    let stored = async {
        let mut tx = powertab_core::db::begin_in(pool, &link.schema).await?;
        let stored = powertab_core::secure::readback::store_ack(
            &mut tx,
            &link.schema,
            claimed.id,
            &[claimed.meter_id],
            ack,
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(stored)
    }
    .await;
    if let Err(e) = stored {
        tracing::warn!(command = %claimed.id, error = %e, "keeping a secure acknowledgement failed");
    }
}

/// Keeps a secure command `sent` for another look after a growing wait (5 s doubling up to
/// 60 s); `None` when it has no time left (a control frame past its expiry).
async fn secure_recheck(
    pool: &PgPool,
    link: &BusLink,
    claimed: &powertab_core::commands::Claimed,
) -> Option<(Instant, (Uuid, Uuid))> {
    let shift = u32::try_from(claimed.attempts.clamp(1, 5) - 1).unwrap_or(0);
    let wait_s = (5_i64 << shift).min(SECURE_RECHECK_MAX_S);
    hold_for(pool, link, claimed, wait_s, |at| {
        format!(
            "secure frame sent {} time(s); looking again at {at}",
            claimed.attempts
        )
    })
    .await
}

/// Keeps `claimed` this session's (`sent`) for another send in `wait_s` seconds, with the detail
/// `detail(at)`; the (when, command) to send it again, or `None` when the queue would not keep
/// it (expired by then, taken over, or the database failed — logged).
async fn hold_for(
    pool: &PgPool,
    link: &BusLink,
    claimed: &powertab_core::commands::Claimed,
    wait_s: i64,
    detail: impl FnOnce(String) -> String,
) -> Option<(Instant, (Uuid, Uuid))> {
    let now = Utc::now();
    let at = now + chrono::Duration::seconds(wait_s);
    let detail = detail(at.to_rfc3339());
    let held = async {
        let mut tx = powertab_core::db::begin_in(pool, &link.schema).await?;
        let held = powertab_core::commands::retry_later(
            &mut tx,
            claimed.id,
            crate::commands::holder(),
            at,
            crate::commands::BUS_LEASE,
            &detail,
            now,
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(held)
    }
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(command = %claimed.id, error = %e, "keeping a command for its next send failed");
        false
    });
    held.then(|| {
        let wait = Duration::from_secs(u64::try_from(wait_s).unwrap_or(0));
        (Instant::now() + wait, (claimed.meter_id, claimed.id))
    })
}

/// The longest wait between two sends of an unsettled secure command.
const SECURE_RECHECK_MAX_S: i64 = 60;

/// How long a broadcast is given on the line before the bus goes on (nobody answers it).
const BROADCAST_WAIT: Duration = Duration::from_millis(200);

/// Sets the meter's clock where its driver can (a DL/T 645 broadcast, which ends `acknowledged`:
/// DESIGN.md), else fails the command saying so. Meters keep China time.
async fn sync_clock<T: Transport, F, Fut>(
    wire: &mut T,
    slot: &Slot,
    link: &BusLink,
    settle: &F,
) -> anyhow::Result<()>
where
    F: Fn(powertab_core::commands::State, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use powertab_core::commands::State;
    let local = Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .naive_local();
    let Some(step) = slot.driver.sync_clock(local) else {
        settle(State::Failed, "this meter's driver cannot set its clock").await;
        return Ok(());
    };
    // No answer comes: the wait only keeps the line quiet while the meters take it.
    let _ = wire.transact(&step, BROADCAST_WAIT).await?;
    tokio::time::sleep(link.gap).await;
    settle(
        State::Acknowledged,
        "broadcast time sent (DL/T 645 broadcasts are not answered)",
    )
    .await;
    Ok(())
}

/// A relay command's outcome when every try of a step went unanswered.
const NO_ANSWER: &str = "no answer";

/// Keeps an unanswered relay command for another send after its backoff, if it has sends left
/// and time before its expiry; `None` when it should fail now.
async fn retry_later(
    pool: &PgPool,
    link: &BusLink,
    claimed: &powertab_core::commands::Claimed,
) -> Option<(Instant, (Uuid, Uuid))> {
    let wait_s = powertab_core::commands::retry_backoff_s(claimed.attempts)?;
    let retry = hold_for(pool, link, claimed, wait_s, |at| {
        format!(
            "no answer to send {}; sending again at {at}",
            claimed.attempts
        )
    })
    .await?;
    metrics::counter!("ingest_control_retries_total").increment(1);
    tracing::info!(command = %claimed.id, attempts = claimed.attempts, wait_s, "no answer: the command is sent again later");
    Some(retry)
}

/// Writes a relay command to one meter (each step retried like a poll's: the write is the same
/// every time, so a repeat is harmless). `Ok(Err(why))` when the meter cannot or will not;
/// I/O errors end the session.
async fn write_control<T: Transport>(
    wire: &mut T,
    slot: &Slot,
    link: &BusLink,
    op: driver::ControlOp,
) -> anyhow::Result<Result<(), &'static str>> {
    let Ok(steps) = slot.driver.control(op) else {
        return Ok(Err("this meter's driver cannot carry out the command"));
    };
    for (i, step) in steps.iter().enumerate() {
        if i > 0 && !link.gap.is_zero() {
            tokio::time::sleep(link.gap).await;
        }
        let mut reply = None;
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(link.gap).await;
            }
            if let Some((r, _)) = wire.transact(step, link.timeout).await? {
                reply = Some(r);
                break;
            }
        }
        match reply {
            None => return Ok(Err(NO_ANSWER)),
            Some(Reply::Rtu(framing::rtu::Reply::Exception(_)))
            | Some(Reply::Dlt645(framing::dlt645::Reply::Error(_))) => {
                return Ok(Err("the meter refused the command"));
            }
            Some(_) => {}
        }
    }
    Ok(Ok(()))
}

/// Polls one meter; `Ok(true)` when it answered. I/O errors end the session.
async fn poll_meter<T: Transport>(
    wire: &mut T,
    slot: &Slot,
    link: &BusLink,
    writer: &Writer,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut replies = Vec::new();
    let mut raw = Vec::new();
    let mut error = String::new();
    for (i, step) in slot.driver.poll().iter().enumerate() {
        // The gap separates requests; the caller waits it after the poll's last one.
        if i > 0 && !link.gap.is_zero() {
            tokio::time::sleep(link.gap).await;
        }
        let attempts = if step.optional { 1 } else { 1 + RETRIES };
        let mut reply = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(link.gap).await;
            }
            if let Some((r, bytes)) = wire.transact(step, link.timeout).await? {
                raw.extend_from_slice(&bytes);
                reply = Some(r);
                break;
            }
        }
        if reply.is_none() && !step.optional {
            error = "no answer".into();
            break;
        }
        replies.push(reply);
    }
    let mut ok = false;
    if error.is_empty() {
        match slot.driver.parse_poll(&replies) {
            Ok(mut values) => {
                if let Some(unit) = slot.secure_unit {
                    read_secure_counters(wire, unit, link, &mut values, &mut raw).await?;
                }
                let ratio_mismatch = slot.driver.energy_is_primary()
                    && values.meter_ratios.is_some_and(|r| r != slot.ratios);
                writer
                    .send(Message::Reading(
                        link.schema.clone(),
                        NewReading {
                            meter_id: slot.meter_id,
                            read_at: Utc::now(),
                            values,
                            raw,
                            ratio_mismatch,
                        },
                    ))
                    .await;
                ok = true;
            }
            Err(e) => error = e.to_string(),
        }
    }
    if !ok {
        metrics::counter!("ingest_poll_failures_total").increment(1);
    }
    writer
        .send(Message::Poll(
            link.schema.clone(),
            PollOutcome {
                meter_id: slot.meter_id,
                ok,
                latency_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
                error,
                at: Utc::now(),
            },
        ))
        .await;
    Ok(ok)
}

/// Adds a meter-side meter's secure counters (0x0C60) to its reading: they are its remaining
/// amount and purchase count (DESIGN.md: reconcile the secure counters, not Acrel's own
/// purchase-count register). A meter that does not answer them still gives its reading.
async fn read_secure_counters<T: Transport>(
    wire: &mut T,
    unit: u8,
    link: &BusLink,
    values: &mut driver::MeterValues,
    raw: &mut Vec<u8>,
) -> anyhow::Result<()> {
    tokio::time::sleep(link.gap).await;
    let step = crate::secure::read_counters(unit);
    let Some((reply, bytes)) = wire.transact(&step, link.timeout).await? else {
        metrics::counter!("ingest_secure_counters_unanswered_total").increment(1);
        return Ok(());
    };
    raw.extend_from_slice(&bytes);
    if let Some(counters) = crate::secure::counters(Some(&reply)) {
        values.remaining_fen = Some(counters.remaining_fen);
        values.purchase_count = Some(i64::from(counters.purchase_count));
        values.secure = Some(counters);
    }
    Ok(())
}

async fn mark(pool: &PgPool, link: &BusLink, online: bool, peer: &str) {
    let query = sqlx::query(
        "insert into bus_sessions (bus_id, gateway_id, online, peer, connected_at, last_seen_at, updated_at)
         values ($1, $2, $3, $4, now(), now(), now())
         on conflict (bus_id) do update set online = excluded.online, peer = excluded.peer,
             connected_at = case when bus_sessions.online then bus_sessions.connected_at else now() end,
             last_seen_at = now(), updated_at = now()",
    )
    .bind(link.bus_id)
    .bind(link.gateway_id)
    .bind(online)
    .bind(peer);
    crate::store::record(pool, &link.schema, query, "the bus session").await;
}

/// Records that the bus `port` of `gateway_id` went offline.
pub async fn mark_offline(pool: &PgPool, schema: &SchemaName, gateway_id: Uuid, port: i32) {
    let query = sqlx::query(
        "update bus_sessions s set online = false, updated_at = now() from buses b
         where b.id = s.bus_id and b.gateway_id = $1 and b.number = $2",
    )
    .bind(gateway_id)
    .bind(port);
    crate::store::record(pool, schema, query, "the bus as offline").await;
}
