//! The queue's storage: a command is a row in the company's `commands` table plus a NOTIFY on
//! [`CHANNEL`] in the same transaction, so ingest hears of it the moment it is committed.
//!
//! Every state change is one conditional `update … where state = any(<legal predecessors>)`,
//! so two processes racing for a command cannot both win and no caller can make a transition
//! [`State::may_become`] forbids; a refused change says what the command's state was. A claim
//! takes a lease: the claiming process answers for the command until `lease_until`, and a
//! `sent` command whose lease ran out is put back in the queue by whoever next holds the meter's
//! bus session ([`recover`]). "Verified" is decided by [`Op::proof`]: a `read_now` or a relay
//! command is verified by [`verify_by_readings`], called in the transaction that stores the
//! readings, so a reading the writer rejected or dropped verifies nothing.

use super::{Op, Proof, State};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The NOTIFY channel ingest listens on; payload `<schema>:<meter id>:<command id>`.
pub const CHANNEL: &str = "pt_commands";
/// A read-now nobody could carry out within this long is expired.
pub const READ_NOW_VALID_S: i64 = 120;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Command {
    pub id: Uuid,
    pub meter_id: Uuid,
    pub op: Op,
    pub state: State,
    /// Who asked: `operator:<user id>` or `rule:<name>`.
    pub source: String,
    pub detail: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last handed to a transport.
    pub sent_at: Option<DateTime<Utc>>,
    /// How many times it was handed to a transport.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The operator's batch it is part of.
    pub batch_id: Option<Uuid>,
    /// The command it sends again.
    pub retry_of: Option<Uuid>,
    /// When its sender tries again after no answer (it stays `sent` meanwhile).
    pub next_try_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, meter_id, op, state, source, detail, expires_at, sent_at, attempts, created_at, updated_at,
     batch_id, retry_of, next_try_at";

pub(crate) fn command_from(r: &sqlx::postgres::PgRow) -> CoreResult<Command> {
    let op: String = r.try_get("op")?;
    let state: String = r.try_get("state")?;
    Ok(Command {
        id: r.try_get("id")?,
        meter_id: r.try_get("meter_id")?,
        op: Op::parse(&op).ok_or_else(|| CoreError::Internal(format!("stored op {op:?}")))?,
        state: State::parse(&state)
            .ok_or_else(|| CoreError::Internal(format!("stored command state {state:?}")))?,
        source: r.try_get("source")?,
        detail: r.try_get("detail")?,
        expires_at: r.try_get("expires_at")?,
        sent_at: r.try_get("sent_at")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        batch_id: r.try_get("batch_id")?,
        retry_of: r.try_get("retry_of")?,
        next_try_at: r.try_get("next_try_at")?,
    })
}

fn texts<T: Copy>(items: &[T], as_str: fn(T) -> &'static str) -> Vec<String> {
    items.iter().map(|i| as_str(*i).to_owned()).collect()
}

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub meter_id: Uuid,
    pub op: Op,
    /// `operator:<user id>` or `rule:<name>`.
    pub source: String,
    pub detail: String,
    /// `None`: never expires (purchases and deducts, DESIGN.md).
    pub expires_at: Option<DateTime<Utc>>,
    /// The operator's batch it is part of (`control_batches`).
    pub batch_id: Option<Uuid>,
    /// The failed command an operator sends again with it (command centre).
    pub retry_of: Option<Uuid>,
}

/// Writes `new` as a queued command and notifies ingest in the caller's transaction (nothing is
/// announced unless it commits). A control command cancels the meter's queued opposite ones.
#[tracing::instrument(skip_all)]
pub async fn enqueue(
    conn: &mut PgConnection,
    schema: &crate::kernel::names::SchemaName,
    new: &NewCommand,
    now: DateTime<Utc>,
) -> CoreResult<Command> {
    if new.op.moves_money() && new.expires_at.is_some() {
        return Err(CoreError::Internal(
            "purchases and deducts never expire".into(),
        ));
    }
    refuse_unless_carried(conn, new.meter_id, new.op).await?;
    let id = Uuid::now_v7();
    let superseded = new.op.supersedes();
    if !superseded.is_empty() {
        sqlx::query(
            "update commands set state = 'cancelled', detail = $3, updated_at = $4
             where meter_id = $1 and state = 'queued' and op = any($2)",
        )
        .bind(new.meter_id)
        .bind(texts(&superseded, Op::as_str))
        .bind(format!("superseded by {} ({id})", new.op))
        .bind(now)
        .execute(&mut *conn)
        .await?;
        // One waiting for its retry after no answer would be sent after the new one: it ends
        // here (sent → failed; cancelled is only for queued commands).
        sqlx::query(
            "update commands set state = 'failed', detail = $3, updated_at = $4,
                 lease_holder = null, lease_until = null, next_try_at = null
             where meter_id = $1 and state = 'sent' and next_try_at is not null and op = any($2)",
        )
        .bind(new.meter_id)
        .bind(texts(&superseded, Op::as_str))
        .bind(format!(
            "superseded by {} ({id}) while waiting to be sent again",
            new.op
        ))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let row = sqlx::query(&format!(
        "insert into commands (id, meter_id, op, source, detail, expires_at, created_at, updated_at,
             batch_id, retry_of)
         values ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) returning {COLUMNS}"
    ))
    .bind(id)
    .bind(new.meter_id)
    .bind(new.op.as_str())
    .bind(&new.source)
    .bind(&new.detail)
    .bind(new.expires_at)
    .bind(now)
    .bind(new.batch_id)
    .bind(new.retry_of)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{}:{}:{id}", schema.as_str(), new.meter_id))
        .execute(&mut *conn)
        .await?;
    command_from(&row)
}

/// A clear refusal for an op the meter's route cannot carry ([`super::carried`]), instead of a
/// command that waits in the queue for nobody until it expires. Relay commands and read-now
/// reach every meter: no lookup (a batch enqueues thousands).
async fn refuse_unless_carried(conn: &mut PgConnection, meter_id: Uuid, op: Op) -> CoreResult<()> {
    use crate::field::vocabulary::{GatewayKind, MeterModel};
    if super::carried_everywhere(op) {
        return Ok(());
    }
    let route: Option<(String, String)> = sqlx::query_as(
        "select m.model, g.kind from meters m join buses b on b.id = m.bus_id
         join gateways g on g.id = b.gateway_id where m.id = $1",
    )
    .bind(meter_id)
    .fetch_optional(&mut *conn)
    .await?;
    let route = route.and_then(|(model, kind)| {
        Some(super::Route::of(
            MeterModel::parse(&model)?,
            GatewayKind::parse(&kind)?,
        ))
    });
    match route {
        Some(route) if super::carried(op, route) => Ok(()),
        Some(super::Route::Bus(model)) => Err(CoreError::Conflict(format!(
            "{op} cannot reach this meter: its driver ({}) does not carry it",
            model.as_str()
        ))),
        Some(super::Route::Mqtt) => Err(CoreError::Conflict(format!(
            "{op} cannot reach this meter: MQTT gateways do not take it"
        ))),
        None => Err(CoreError::Conflict(format!(
            "{op} cannot reach this meter: it is on no bus of a known gateway"
        ))),
    }
}

/// Staff who sell, switch or set up meters may ask for a read-now.
pub fn may_read_now(principal: &Principal) -> bool {
    [Right::TopUp, Right::TripClose, Right::Settings]
        .into_iter()
        .any(|r| principal.can(Need::Act(r)))
}

/// Asks ingest to read `meter_id` now, ahead of its schedule. Staff who sell, switch or set
/// up meters may ask; an open read-now of the same meter is reused rather than doubled.
#[tracing::instrument(skip_all)]
pub async fn read_now(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<Command> {
    let meter = crate::field::meter(conn, principal, meter_id).await?;
    if !may_read_now(principal) {
        return Err(CoreError::Forbidden("your role may not do this".into()));
    }
    if meter.status != crate::field::MeterStatus::Active {
        return Err(CoreError::Conflict("this meter was removed".into()));
    }
    let now = principal.now();
    let open = sqlx::query(&format!(
        "select {COLUMNS} from commands where meter_id = $1 and op = 'read_now'
           and state in ('queued', 'sent', 'acknowledged') and expires_at > $2"
    ))
    .bind(meter_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = open {
        return command_from(&row);
    }
    let new = NewCommand {
        meter_id,
        op: Op::ReadNow,
        source: format!("operator:{}", principal.user_id),
        detail: String::new(),
        expires_at: Some(now + Duration::seconds(READ_NOW_VALID_S)),
        batch_id: None,
        retry_of: None,
    };
    let schema = principal.company()?.schema.clone();
    let command = enqueue(conn, &schema, &new, now).await?;
    audit::record(
        conn,
        principal,
        "meter.read_now",
        "meter",
        Some(meter_id.to_string()),
        None,
        None,
    )
    .await?;
    Ok(command)
}

/// One command, for its state.
#[tracing::instrument(skip_all)]
pub async fn get(conn: &mut PgConnection, principal: &Principal, id: Uuid) -> CoreResult<Command> {
    principal.require_read_company()?;
    let row = sqlx::query(&format!("select {COLUMNS} from commands where id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("command"))?;
    let command = command_from(&row)?;
    // A command of a meter outside the caller's building limit does not exist for them.
    crate::field::meter(conn, principal, command.meter_id)
        .await
        .map_err(|_| CoreError::NotFound("command"))?;
    Ok(command)
}

/// A command a transport claimed: it is now `sent`, and the claimer answers for it until
/// `lease_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: Uuid,
    pub meter_id: Uuid,
    pub op: Op,
    pub sent_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub attempts: i32,
}

/// Why [`claim`] took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotClaimed {
    /// Not queued any more (another process took it, or it was settled), or not this meter's.
    Gone,
    /// It was past its expiry: now `expired`.
    Expired,
    /// This transport cannot carry the op; it stays queued.
    Unsupported,
}

/// Claims queued command `id` of `meter_id` for `holder` if its op is one of `ops`: atomically
/// `queued → sent` (one conditional update: of two racing claimers exactly one wins, however
/// many processes run), with a lease of `lease` from `now`. An expired command is settled
/// `expired` instead.
#[tracing::instrument(skip_all)]
pub async fn claim(
    conn: &mut PgConnection,
    id: Uuid,
    meter_id: Uuid,
    ops: &[Op],
    holder: &str,
    lease: Duration,
    now: DateTime<Utc>,
) -> CoreResult<Result<Claimed, NotClaimed>> {
    let expired = sqlx::query(
        "update commands set state = 'expired', updated_at = $3, lease_holder = null,
             lease_until = null, next_try_at = null
         where id = $1 and meter_id = $2 and expires_at <= $3
           and (state = 'queued' or (state = 'sent' and next_try_at is not null))",
    )
    .bind(id)
    .bind(meter_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if expired.rows_affected() > 0 {
        return Ok(Err(NotClaimed::Expired));
    }
    // A queued command, or one this holder keeps `sent` while it waits to try again (a retry
    // after no answer: the same sender, so the state stays `sent` and DESIGN.md's transitions
    // hold).
    let row = sqlx::query(
        "update commands set state = 'sent', sent_at = $4, lease_holder = $5, lease_until = $6,
             attempts = attempts + 1, updated_at = $4, next_try_at = null
         where id = $1 and meter_id = $2 and op = any($3)
           and (state = 'queued'
                or (state = 'sent' and lease_holder = $5 and next_try_at <= $4))
         returning op, attempts, expires_at",
    )
    .bind(id)
    .bind(meter_id)
    .bind(texts(ops, Op::as_str))
    .bind(now)
    .bind(holder)
    .bind(now + lease)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        let queued: Option<String> = sqlx::query_scalar(
            "select op from commands where id = $1 and meter_id = $2 and state = 'queued'",
        )
        .bind(id)
        .bind(meter_id)
        .fetch_optional(&mut *conn)
        .await?;
        return Ok(Err(if queued.is_some() {
            NotClaimed::Unsupported
        } else {
            NotClaimed::Gone
        }));
    };
    let op: String = row.try_get("op")?;
    Ok(Ok(Claimed {
        id,
        meter_id,
        op: Op::parse(&op).ok_or_else(|| CoreError::Internal(format!("stored op {op:?}")))?,
        sent_at: now,
        lease_until: now + lease,
        expires_at: row.try_get("expires_at")?,
        attempts: row.try_get("attempts")?,
    }))
}

/// After no answer, the holder of `sent` command `id` keeps it and tries again at `at` (the
/// lease runs until `lease` after that, so a sender that dies meanwhile hands it to recovery).
/// `false` when the command is no longer this holder's to retry (settled, expired, recovered).
#[tracing::instrument(skip_all)]
pub async fn retry_later(
    conn: &mut PgConnection,
    id: Uuid,
    holder: &str,
    at: DateTime<Utc>,
    lease: Duration,
    detail: &str,
    now: DateTime<Utc>,
) -> CoreResult<bool> {
    let held = sqlx::query(
        "update commands set next_try_at = $3, lease_until = $4, detail = $5, updated_at = $6
         where id = $1 and state = 'sent' and lease_holder = $2
           and (expires_at is null or expires_at > $3)",
    )
    .bind(id)
    .bind(holder)
    .bind(at)
    .bind(at + lease)
    .bind(detail)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(held.rows_affected() == 1)
}

/// What [`settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The command moved from this state.
    Moved(State),
    /// The transition is not allowed from the command's state (it stays there): a repeated
    /// acknowledgement, a late outcome of a settled command.
    Refused(State),
}

/// Moves command `id` to `to` with `detail`, if the design allows it from its current state
/// (checked in the same statement that changes it). `meters`, when given, limits the change to
/// commands of those meters (a gateway settles only its own).
#[tracing::instrument(skip_all)]
pub async fn settle(
    conn: &mut PgConnection,
    id: Uuid,
    to: State,
    detail: &str,
    meters: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> CoreResult<Settled> {
    settle_from(conn, id, &State::predecessors(to), to, detail, meters, now).await
}

/// Applies a transport's acknowledgement of command `id`: like [`settle`], but only from `sent`.
/// The first acknowledgement decides; a repeated one (gateways retry) finds the command
/// acknowledged or settled and changes nothing.
#[tracing::instrument(skip_all)]
pub async fn settle_ack(
    conn: &mut PgConnection,
    id: Uuid,
    to: State,
    detail: &str,
    meters: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> CoreResult<Settled> {
    let from: Vec<State> = State::predecessors(to)
        .into_iter()
        .filter(|s| *s == State::Sent)
        .collect();
    settle_from(conn, id, &from, to, detail, meters, now).await
}

async fn settle_from(
    conn: &mut PgConnection,
    id: Uuid,
    from: &[State],
    to: State,
    detail: &str,
    meters: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> CoreResult<Settled> {
    let moved: Option<String> = sqlx::query_scalar(
        "with before as (select id, state from commands where id = $1 for update)
         update commands c set state = $2, detail = $3, updated_at = $5,
             lease_holder = null, lease_until = null, next_try_at = null
         from before b
         where c.id = b.id and c.state = any($4) and ($6::uuid[] is null or c.meter_id = any($6))
         returning b.state",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(detail)
    .bind(texts(from, State::as_str))
    .bind(now)
    .bind(meters)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(state) = moved {
        return Ok(Settled::Moved(stored_state(&state)?));
    }
    let current: Option<String> = sqlx::query_scalar(
        "select state from commands where id = $1 and ($2::uuid[] is null or meter_id = any($2))",
    )
    .bind(id)
    .bind(meters)
    .fetch_optional(&mut *conn)
    .await?;
    match current {
        Some(state) => Ok(Settled::Refused(stored_state(&state)?)),
        None => Err(CoreError::NotFound("command")),
    }
}

fn stored_state(text: &str) -> CoreResult<State> {
    State::parse(text).ok_or_else(|| CoreError::Internal(format!("stored command state {text:?}")))
}

/// The op of command `id`, if it exists and belongs to one of `meters`, and whether it carries a
/// secure frame (then the meter's counters, not a gateway's word, settle it).
#[tracing::instrument(skip_all)]
pub async fn op_of(
    conn: &mut PgConnection,
    id: Uuid,
    meters: &[Uuid],
) -> CoreResult<Option<(Op, bool)>> {
    let row: Option<(String, bool)> = sqlx::query_as(
        "select op, secure_frame is not null from commands where id = $1 and meter_id = any($2)",
    )
    .bind(id)
    .bind(meters)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|(op, framed)| Op::parse(&op).map(|op| (op, framed))))
}

/// Settles every open command of this company past its expiry as `expired`; returns how many.
#[tracing::instrument(skip_all)]
pub async fn expire_due(conn: &mut PgConnection, now: DateTime<Utc>) -> CoreResult<u64> {
    let done = sqlx::query(
        "update commands set state = 'expired', updated_at = $1, lease_holder = null, lease_until = null,
             next_try_at = null
         where state in ('queued', 'sent', 'acknowledged') and expires_at <= $1",
    )
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Puts back in the queue the `sent` commands of `meters` whose sender's lease ran out before
/// `now` (it crashed or lost the bus between claim and outcome). Called by the process that now
/// holds those meters' bus session; returns how many came back.
#[tracing::instrument(skip_all)]
pub async fn recover(
    conn: &mut PgConnection,
    meters: &[Uuid],
    now: DateTime<Utc>,
) -> CoreResult<u64> {
    let done = sqlx::query(
        "update commands set state = 'queued', lease_holder = null, lease_until = null, updated_at = $2,
             next_try_at = null,
             detail = 'recovered: its sender stopped answering for it'
         where state = 'sent' and meter_id = any($1) and lease_until < $2
           and (expires_at is null or expires_at > $2)",
    )
    .bind(meters)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The queued, unexpired commands of `meters` whose op is one of `ops`, oldest first, as
/// (meter, command).
#[tracing::instrument(skip_all)]
pub async fn queued_for(
    conn: &mut PgConnection,
    meters: &[Uuid],
    ops: &[Op],
    now: DateTime<Utc>,
    limit: i64,
) -> CoreResult<Vec<(Uuid, Uuid)>> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select meter_id, id from commands where state = 'queued' and meter_id = any($1) and op = any($2)
           and (expires_at is null or expires_at > $3) order by created_at limit $4",
    )
    .bind(meters)
    .bind(texts(ops, Op::as_str))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// What a stored reading shows, for [`verify_by_readings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub meter_id: Uuid,
    pub read_at: DateTime<Utc>,
    pub relay_closed: Option<bool>,
    /// The meter reports [`super::CLOSE_ALLOWED`]: a `close` it was sent is done.
    pub close_allowed: bool,
}

/// Verifies the open commands the stored readings `seen` prove (DESIGN.md's table): a
/// `read_now` by a reading read at or after it was sent, a relay command by a later reading
/// showing the wanted relay state. Called in the transaction that stores the readings, so only
/// stored readings count. A secure command is left to its counters (the settle worker): a relay
/// reading cannot tell which frame the meter counted. Returns how many were verified.
#[tracing::instrument(skip_all)]
pub async fn verify_by_readings(
    conn: &mut PgConnection,
    seen: &[Observed],
    now: DateTime<Utc>,
) -> CoreResult<u64> {
    if seen.is_empty() {
        return Ok(0);
    }
    let read_now = Op::ReadNow.as_str();
    let (mut opens, mut closes) = (Vec::new(), Vec::new());
    for op in Op::ALL {
        if let Proof::Relay { closed } = op.proof() {
            if closed { &mut closes } else { &mut opens }.push(op.as_str().to_owned());
        }
    }
    let meter_ids: Vec<Uuid> = seen.iter().map(|s| s.meter_id).collect();
    let read_at: Vec<DateTime<Utc>> = seen.iter().map(|s| s.read_at).collect();
    let relay: Vec<Option<bool>> = seen.iter().map(|s| s.relay_closed).collect();
    let allowed: Vec<bool> = seen.iter().map(|s| s.close_allowed).collect();
    let done = sqlx::query(
        "update commands c set state = 'verified', updated_at = $7, lease_holder = null, lease_until = null,
             next_try_at = null,
             detail = case when c.op = $4 then 'reading stored'
                           when s.close_allowed and c.op = 'close' and s.relay_closed = false
                             then 'close allowed: the relay waits for the tenant''s button'
                           else 'a reading shows the relay' end
         from unnest($1::uuid[], $2::timestamptz[], $3::boolean[], $8::boolean[])
           as s(meter_id, read_at, relay_closed, close_allowed)
         where c.meter_id = s.meter_id and c.state in ('sent', 'acknowledged') and c.sent_at <= s.read_at
           and c.secure_frame is null
           and (c.op = $4 or (c.op = any($5) and s.relay_closed = false)
                or (c.op = any($6) and s.relay_closed = true)
                or (c.op = 'close' and s.close_allowed))",
    )
    .bind(&meter_ids)
    .bind(&read_at)
    .bind(&relay)
    .bind(read_now)
    .bind(&opens)
    .bind(&closes)
    .bind(now)
    .bind(&allowed)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
