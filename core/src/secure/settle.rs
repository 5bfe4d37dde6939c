//! The settle worker of meter-side prepayment (DESIGN.md: Commands, secure rules; Money and the
//! ledger, meter-side meters), run in the server process — the only one holding keys. A pass over
//! one company:
//! 1. **commissions** meter-side meters whose counters the field read back but the platform has
//!    not stored yet (their key version is pinned at the same time);
//! 2. **settles** every unfinished secure command from what the field brought back: the
//!    acknowledgement (believed only after its MAC checks out under the meter's key) and the
//!    counters ([`decide`] holds DESIGN.md's mapping, exactly); a verified purchase moves its
//!    amount `in_transit` → `on_meter`, a verified deduct `on_meter` → wallet, and the meter's
//!    stored counters advance;
//! 3. **buys**: the open purchase requests of a meter with nothing in flight become one purchase
//!    of at most the wallet's balance, the money moving wallet → `in_transit` in the transaction
//!    that stores the command and its frame.

use super::commands::{self as secure_commands, Counters};
use super::frame::{verify_ack, Ack, AckError, AckStatus, Order, SecureOp};
use super::keys;
use crate::auth::Principal;
use crate::billing::ledger::post::{self, request_hash, Posting};
use crate::billing::ledger::{AccountKey, TxnKind};
use crate::commands::{self as queue, State};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::kernel::secrets::Keyring;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Acknowledgements of one command not believed (bad MAC, another meter) before it fails.
pub const ACK_REFUSALS_MAX: i32 = 3;

/// Who the worker is in audit rows and key look-ups.
pub const WORKER: &str = "system:secure";

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub commissioned: u64,
    pub verified: u64,
    pub acknowledged: u64,
    pub resent: u64,
    pub failed: u64,
    pub acks_refused: u64,
    pub purchases: u64,
    /// Meter-side accounts whose close finished (their meters' credit taken back).
    pub closed: u64,
    /// Set-price frames queued (commissioning, a new tariff version's day).
    pub prices: u64,
    /// Drift and out-of-band alarms raised.
    pub alarms: u64,
    pub errors: u64,
}

/// Which alarm a failed command raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// The meter does not share the platform's key for it (01, 02).
    Key,
    /// The counts are out of step: a frame lost or malformed, or a purchase the platform did
    /// not make (reconcile the meter).
    Reconcile,
}

impl Alarm {
    fn kind(self) -> &'static str {
        match self {
            Alarm::Key => "secure_key",
            Alarm::Reconcile => "secure_reconcile",
        }
    }
}

/// What to do with an unfinished secure command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new: wait for the field.
    Wait,
    /// The counters read back the expected count (and, for set price, the price).
    Verified {
        remaining_fen: i64,
        price_units: u32,
    },
    /// The meter accepted it (00) or had already applied it (05); the counters will verify it.
    Acknowledged,
    /// `03` while the meter counts expected − 1: send the same bytes again.
    Resend,
    /// The acknowledgement is not believed (bad MAC, another command): dropped, the frame is
    /// sent again.
    RefuseAck(String),
    Failed {
        detail: String,
        alarm: Option<Alarm>,
    },
}

/// DESIGN.md's mapping for a command of `op` carrying `expected` (and `amount`, for set price's
/// price), in `state`, from the checked acknowledgement and the counters read back after the
/// command was made (`None` when there are none since).
pub fn decide(
    op: SecureOp,
    state: State,
    expected: u32,
    amount: i64,
    ack: Option<Result<Ack, AckError>>,
    counters: Option<Counters>,
) -> Decision {
    if let Some(c) = counters {
        let count = c.count_for(op);
        if count == expected {
            if op == SecureOp::SetPrice && i64::from(c.price_units) != amount {
                return Decision::Failed {
                    detail: format!(
                        "the meter counted the set price but reads price {} units, not {amount}",
                        c.price_units
                    ),
                    alarm: Some(Alarm::Reconcile),
                };
            }
            return Decision::Verified {
                remaining_fen: c.remaining_fen,
                price_units: c.price_units,
            };
        }
        if count > expected {
            return Decision::Failed {
                detail: format!(
                    "the meter counts {count}, beyond the {expected} this command carries: a command the platform did not send"
                ),
                alarm: Some(Alarm::Reconcile),
            };
        }
    }
    let ack = match ack {
        None => return Decision::Wait,
        Some(Err(e)) => return Decision::RefuseAck(e.to_string()),
        Some(Ok(ack)) => ack,
    };
    match ack.status {
        AckStatus::Accepted | AckStatus::AlreadyApplied => {
            if state == State::Sent {
                Decision::Acknowledged
            } else {
                Decision::Wait
            }
        }
        AckStatus::BadSequence => match counters.map(|c| c.count_for(op)) {
            None => Decision::Wait,
            Some(count) if count.checked_add(1) == Some(expected) => Decision::Resend,
            Some(count) => Decision::Failed {
                detail: format!(
                    "the meter refused the sequence and counts {count}, behind the {expected} sent"
                ),
                alarm: Some(Alarm::Reconcile),
            },
        },
        AckStatus::BadMac => Decision::Failed {
            detail: "the meter refused the frame's MAC: it holds another key".into(),
            alarm: Some(Alarm::Key),
        },
        AckStatus::WrongMeter => Decision::Failed {
            detail: "the meter answered for another meter number".into(),
            alarm: Some(Alarm::Key),
        },
        AckStatus::NotEnoughCredit => Decision::Failed {
            detail: format!(
                "not enough credit on the meter (it holds {} fen)",
                ack.remaining_fen
            ),
            alarm: None,
        },
        AckStatus::Malformed => Decision::Failed {
            detail: "the meter found the frame malformed".into(),
            alarm: Some(Alarm::Reconcile),
        },
    }
}

/// One pass over the company of `principal` (the system worker inside it).
pub async fn run_pass(
    pool: &PgPool,
    principal: &Principal,
    keyring: &Keyring,
) -> CoreResult<PassReport> {
    let schema = principal.company()?.schema.clone();
    let mut report = PassReport::default();
    let (to_commission, open, buyers) = {
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let to_commission: Vec<Uuid> = sqlx::query_scalar(
            "select b.meter_id from meter_secure_readback b
             join meters m on m.id = b.meter_id
             left join meter_secure s on s.meter_id = b.meter_id
             where m.prepayment_mode = 'meter' and m.status = 'active'
               and (s.meter_id is null or s.purchase_count is null)",
        )
        .fetch_all(&mut *tx)
        .await?;
        let open: Vec<Uuid> = sqlx::query_scalar(
            "select c.id from commands c
             left join meter_secure_readback b on b.meter_id = c.meter_id
             where c.secure_frame is not null and c.state in ('sent', 'acknowledged')
               and (c.secure_ack is not null or b.read_at > c.created_at)
             order by c.created_at",
        )
        .fetch_all(&mut *tx)
        .await?;
        let buyers: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "select distinct r.account_id, r.meter_id from secure_purchase_requests r
             where r.done_at is null
               -- A meter with an open key or reconciliation alarm gets no more money until an
               -- operator has looked: it would only join the purchase in transit.
               and not exists (select 1 from field_alarms f where f.target_id = r.meter_id
                     and f.kind in ('secure_key', 'secure_reconcile') and f.cleared_at is null)
               and not exists (select 1 from commands c where c.meter_id = r.meter_id
                     and c.op in ('purchase', 'deduct') and c.state in ('queued', 'sent', 'acknowledged'))
               -- A meter being re-keyed takes no money until its new key is verified.
               and not exists (select 1 from meter_secure s where s.meter_id = r.meter_id
                     and s.rekey_to_version is not null)",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        (to_commission, open, buyers)
    };
    for meter in to_commission {
        let done = async {
            let mut tx = crate::db::begin_in(pool, &schema).await?;
            commission_from_readback(&mut tx, keyring, meter).await?;
            tx.commit().await?;
            Ok::<_, CoreError>(())
        }
        .await;
        match done {
            Ok(()) => report.commissioned += 1,
            Err(e) => {
                tracing::warn!(%meter, error = %e, "commissioning a meter-side meter failed");
                report.errors += 1;
            }
        }
    }
    for id in open {
        let done = async {
            let mut tx = crate::db::begin_in(pool, &schema).await?;
            let decision = settle_one(&mut tx, principal, keyring, id).await?;
            tx.commit().await?;
            Ok::<_, CoreError>(decision)
        }
        .await;
        match done {
            Ok(Some(Decision::Verified { .. })) => report.verified += 1,
            Ok(Some(Decision::Acknowledged)) => report.acknowledged += 1,
            Ok(Some(Decision::Resend)) => report.resent += 1,
            Ok(Some(Decision::RefuseAck(_))) => report.acks_refused += 1,
            Ok(Some(Decision::Failed { .. })) => report.failed += 1,
            Ok(Some(Decision::Wait) | None) => {}
            Err(e) => {
                tracing::warn!(command = %id, error = %e, "settling a secure command failed");
                report.errors += 1;
            }
        }
    }
    match sync_prices(pool, principal, keyring).await {
        Ok(pushed) => report.prices += pushed,
        Err(e) => {
            tracing::warn!(error = %e, "pushing prices to meter-side meters failed");
            report.errors += 1;
        }
    }
    let alarms = async {
        // Drift and out-of-band alarms look at every meter-side meter of the company: once a
        // minute, not on every pass (a pass follows each acknowledgement and count change).
        if !alarms_due(&schema, principal.now()) {
            return Ok(0);
        }
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let raised = super::reports::raise_alarms(&mut tx, principal).await?;
        tx.commit().await?;
        Ok::<_, CoreError>(raised)
    }
    .await;
    match alarms {
        Ok(raised) => report.alarms += raised,
        Err(e) => {
            tracing::warn!(error = %e, "raising drift and reconciliation alarms failed");
            report.errors += 1;
        }
    }
    match super::closing::advance_all(pool, principal, keyring).await {
        Ok(closed) => report.closed += closed,
        Err(e) => {
            tracing::warn!(error = %e, "advancing meter-side closes failed");
            report.errors += 1;
        }
    }
    for (account, meter) in buyers {
        let done = async {
            let mut tx = crate::db::begin_in(pool, &schema).await?;
            let bought = buy(&mut tx, principal, keyring, account, meter).await?;
            tx.commit().await?;
            Ok::<_, CoreError>(bought)
        }
        .await;
        match done {
            Ok(true) => report.purchases += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%meter, error = %e, "building a purchase failed; it is tried next pass");
                report.errors += 1;
            }
        }
    }
    Ok(report)
}

/// How often a company's drift and reconciliation alarms are looked at.
const ALARMS_EVERY_S: i64 = 60;

/// Whether the company of `schema` is due for its alarm look at `now` (this process's record;
/// another process looking too only repeats an idempotent check).
fn alarms_due(schema: &crate::kernel::names::SchemaName, now: DateTime<Utc>) -> bool {
    static LOOKED: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut looked = LOOKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let due = looked
        .get(schema.as_str())
        .is_none_or(|at| now - *at >= chrono::Duration::seconds(ALARMS_EVERY_S) || now < *at);
    if due {
        looked.insert(schema.as_str().to_owned(), now);
    }
    due
}

/// The price a meter-side meter must count at today: its plan's version in force on the local
/// date, when that version is flat (DESIGN.md: meter-side mode takes flat plans only).
pub(crate) fn flat_price_today(
    versions: &[crate::tariff::TariffVersion],
    today: chrono::NaiveDate,
) -> Option<i64> {
    let version = versions
        .iter()
        .filter(|v| v.effective <= today)
        .max_by_key(|v| v.effective)?;
    let flat = version.seasons.is_empty()
        && version.tiers.is_none()
        && version
            .prices
            .keys()
            .all(|p| *p == crate::tariff::Period::Flat);
    flat.then(|| version.price_of(crate::tariff::Period::Flat))
        .filter(|p| super::frame::PRICE_UNITS_RANGE.contains(p))
}

/// Pushes the price of the day to every commissioned meter-side meter that counts at another
/// one (at commissioning, and at the first pass after a version's 00:00 local), one set-price
/// frame at a time per meter. A meter on a plan that is not flat gets no price (and is reported
/// by the drift).
async fn sync_prices(pool: &PgPool, principal: &Principal, keyring: &Keyring) -> CoreResult<u64> {
    let schema = principal.company()?.schema.clone();
    let today = principal.now().with_timezone(&principal.tz()).date_naive();
    let mut tx = crate::db::begin_in(pool, &schema).await?;
    let rows: Vec<(Uuid, Option<i64>)> = sqlx::query_as(
        "select m.id, s.price_units from meters m join meter_secure s on s.meter_id = m.id
         where m.prepayment_mode = 'meter' and m.status = 'active' and s.purchase_count is not null
           and m.tariff_plan_id is not null and s.rekey_to_version is null
           -- After a key or reconciliation alarm the price is tried again every 10 minutes, not
           -- every pass (its verification clears a key alarm).
           and not exists (select 1 from field_alarms f where f.target_id = m.id
                 and f.kind in ('secure_key', 'secure_reconcile') and f.cleared_at is null
                 and f.raised_at > now() - interval '10 minutes')
           and not exists (select 1 from commands c where c.meter_id = m.id and c.secure_frame is not null
                 and c.op not in ('purchase', 'deduct') and c.state in ('queued', 'sent', 'acknowledged'))",
    )
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let versions = crate::tariff::plans::versions_by_meter(&mut tx, &ids).await?;
    tx.commit().await?;
    let mut pushed = 0;
    for (meter, counting) in rows {
        let Some(price) = versions
            .get(&meter)
            .and_then(|v| flat_price_today(v, today))
        else {
            continue;
        };
        if counting == Some(price) {
            continue;
        }
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        secure_commands::enqueue(
            &mut tx,
            keyring,
            principal,
            meter,
            SecureOp::SetPrice,
            price,
            "rule:price",
        )
        .await?;
        tx.commit().await?;
        pushed += 1;
    }
    Ok(pushed)
}

/// Stores the read-back counters of `meter` as its commissioned counters.
async fn commission_from_readback(
    conn: &mut PgConnection,
    keyring: &Keyring,
    meter: Uuid,
) -> CoreResult<()> {
    let Some((counters, at)) = readback(conn, meter).await? else {
        return Ok(());
    };
    secure_commands::commission(conn, keyring, meter, counters, at, WORKER).await?;
    tracing::info!(%meter, purchase_count = counters.purchase_count, control_count = counters.control_count,
        "meter-side meter commissioned from its read-back counters");
    Ok(())
}

/// The counters last read back from `meter`, and when.
pub async fn readback(
    conn: &mut PgConnection,
    meter: Uuid,
) -> CoreResult<Option<(Counters, DateTime<Utc>)>> {
    let row = sqlx::query(
        "select purchase_count, control_count, remaining_fen, price_units, read_at
         from meter_secure_readback where meter_id = $1",
    )
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let u32_of = |name: &str| -> CoreResult<u32> {
        let value: i64 = row.try_get(name)?;
        u32::try_from(value).map_err(|_| CoreError::Internal(format!("stored {name} {value}")))
    };
    Ok(Some((
        Counters {
            purchase_count: u32_of("purchase_count")?,
            control_count: u32_of("control_count")?,
            remaining_fen: row.try_get("remaining_fen")?,
            price_units: u32_of("price_units")?,
        },
        row.try_get("read_at")?,
    )))
}

/// Decides and applies one command's outcome, under its row lock (another server skips it).
async fn settle_one(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    id: Uuid,
) -> CoreResult<Option<Decision>> {
    let row = sqlx::query(
        "select c.meter_id, c.op, c.state, c.secure_sequence, c.secure_ack, c.secure_amount,
                c.created_at, c.secure_key_version, s.key_version as held_version
         from commands c left join meter_secure s on s.meter_id = c.meter_id
         where c.id = $1 and c.state in ('sent', 'acknowledged') and c.secure_frame is not null
         for update of c skip locked",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let meter: Uuid = row.try_get("meter_id")?;
    let op_text: String = row.try_get("op")?;
    let op = crate::commands::Op::parse(&op_text)
        .and_then(SecureOp::of)
        .ok_or_else(|| CoreError::Internal(format!("secure command with op {op_text}")))?;
    let state_text: String = row.try_get("state")?;
    let state = State::parse(&state_text)
        .ok_or_else(|| CoreError::Internal(format!("stored state {state_text}")))?;
    let expected = u32::try_from(
        row.try_get::<Option<i64>, _>("secure_sequence")?
            .unwrap_or(0),
    )
    .map_err(|_| CoreError::Internal("stored sequence".into()))?;
    let amount: i64 = row.try_get::<Option<i64>, _>("secure_amount")?.unwrap_or(0);
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    let ack_bytes: Option<Vec<u8>> = row.try_get("secure_ack")?;
    let held: Option<i32> = row.try_get("held_version")?;
    // The frame's own version (a re-key's probe is built under the version to come).
    let built: Option<i32> = row
        .try_get::<Option<i32>, _>("secure_key_version")?
        .or(held);
    let probe = built.is_some() && built != held;
    let ack = check_ack(
        conn, keyring, meter, op, expected, amount, &ack_bytes, built,
    )
    .await?;
    // A probe the meter answered under the key it still holds: it was not re-keyed yet.
    let still_old = probe
        && matches!(ack, Some(Err(_)))
        && matches!(
            check_ack(conn, keyring, meter, op, expected, amount, &ack_bytes, held).await?,
            Some(Ok(_))
        );
    let ack_status = ack.as_ref().map(|a| match a {
        Ok(ack) => format!("{:02x}", ack.status.code()),
        Err(e) => format!("refused: {e}"),
    });
    // Only counters read after the command was made can speak of it.
    let counters = readback(conn, meter)
        .await?
        .filter(|(_, at)| *at > created_at)
        .map(|(c, _)| c);
    // A believed acknowledgement tells what the meter holds after it, whatever its status (a
    // refused deduct is then asked again for what is really there).
    let acked_remaining = match &ack {
        Some(Ok(a)) => Some(a.remaining_fen),
        _ => None,
    };
    let mut decision = decide(op, state, expected, amount, ack, counters);
    if still_old {
        decision = Decision::Failed {
            detail: format!(
                "the meter answered under key version {}: it was not re-keyed yet; load the new key, then verify again",
                held.unwrap_or_default()
            ),
            alarm: None,
        };
    }
    let now = principal.now();
    if let Decision::RefuseAck(why) = &decision {
        let refusals: i32 = sqlx::query_scalar(
            "update commands set secure_refusals = secure_refusals + 1 where id = $1
             returning secure_refusals",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        // The counters have not shown it applied (they come first): a meter that keeps
        // answering under another key never will.
        if refusals >= ACK_REFUSALS_MAX {
            decision = Decision::Failed {
                detail: format!(
                    "{refusals} acknowledgements did not check out under the meter's key ({why}): it holds another key"
                ),
                alarm: Some(Alarm::Key),
            };
        }
    }
    if let Some(fen) = acked_remaining {
        sqlx::query(
            "update meter_secure set remaining_fen = $2, updated_at = $3 where meter_id = $1",
        )
        .bind(meter)
        .bind(fen)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(status) = &ack_status {
        sqlx::query("update commands set secure_status = $2 where id = $1")
            .bind(id)
            .bind(status)
            .execute(&mut *conn)
            .await?;
    }
    match &decision {
        Decision::Wait => {}
        Decision::Verified {
            remaining_fen,
            price_units,
        } => {
            queue::settle(
                conn,
                id,
                State::Verified,
                "the meter's counters read back the expected count",
                None,
                now,
            )
            .await?;
            advance_counters(conn, meter, op, expected, *remaining_fen, *price_units, now).await?;
            if probe {
                super::rekey::switched(conn, principal, meter, built.unwrap_or_default()).await?;
            }
            // The meter took a frame under the platform's key: a key alarm's cause is gone.
            sqlx::query(
                "update field_alarms set cleared_at = $2 where target_id = $1 and kind = 'secure_key'
                   and cleared_at is null",
            )
            .bind(meter)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            post_verified(conn, principal, id, meter, op, amount).await?;
            if op == SecureOp::Purchase {
                // Online payments bought with this purchase are on the meter now.
                sqlx::query(
                    "update payment_orders set state = 'delivered', updated_at = $2
                     where state = 'credited' and credited_txn in
                       (select source_txn from secure_purchase_requests where command_id = $1)",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
        }
        Decision::Acknowledged => {
            queue::settle(
                conn,
                id,
                State::Acknowledged,
                "the meter accepted the frame",
                None,
                now,
            )
            .await?;
        }
        Decision::Resend | Decision::RefuseAck(_) => {
            // The frame goes again with its next send (ingest keeps it `sent`); the
            // acknowledgement that led here is not kept to be judged twice.
            let why = match &decision {
                Decision::RefuseAck(why) => {
                    metrics::counter!("secure_acks_refused_total").increment(1);
                    tracing::warn!(command = %id, %meter, %why, "a secure acknowledgement is not believed");
                    format!("acknowledgement not believed ({why}); the frame is sent again")
                }
                _ => "the meter counts one behind: the frame is sent again".into(),
            };
            sqlx::query(
                "update commands set secure_ack = null, detail = $2, updated_at = $3 where id = $1",
            )
            .bind(id)
            .bind(why)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        Decision::Failed { detail, alarm } => {
            queue::settle(conn, id, State::Failed, detail, None, now).await?;
            if let Some(alarm) = alarm {
                raise(conn, *alarm, meter, detail).await?;
            }
            if op == SecureOp::Purchase {
                // The money stays in `in_transit` until an approved cancel (DESIGN.md).
                raise(
                    conn,
                    Alarm::Reconcile,
                    meter,
                    &format!("a purchase failed with its money in transit: {detail}"),
                )
                .await?;
            }
        }
    }
    Ok(Some(decision))
}

/// Acknowledgement `bytes` of the frame (`op`, `sequence`, `amount`) checked under master key
/// `version` of `meter` (`None` without an acknowledgement or a version).
#[allow(clippy::too_many_arguments)]
async fn check_ack(
    conn: &mut PgConnection,
    keyring: &Keyring,
    meter: Uuid,
    op: SecureOp,
    sequence: u32,
    amount: i64,
    bytes: &Option<Vec<u8>>,
    version: Option<i32>,
) -> CoreResult<Option<Result<Ack, AckError>>> {
    let (Some(bytes), Some(version)) = (bytes, version) else {
        return Ok(None);
    };
    let (number, meter_keys) = keys::meter_keys_at(conn, keyring, meter, version).await?;
    let order = Order {
        op,
        meter: number,
        sequence,
        amount,
        issued_at: 0,
        nonce: [0; 8],
    };
    Ok(Some(verify_ack(&meter_keys, &order, bytes)))
}

/// The meter's stored counters after a verified command.
async fn advance_counters(
    conn: &mut PgConnection,
    meter: Uuid,
    op: SecureOp,
    sequence: u32,
    remaining_fen: i64,
    price_units: u32,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    let column = if op.uses_purchase_count() {
        "purchase_count"
    } else {
        "control_count"
    };
    let advanced = sqlx::query(&format!(
        "update meter_secure set {column} = $2, remaining_fen = $3, price_units = $4,
             counters_read_at = $5, updated_at = $5
         where meter_id = $1 and {column} < $2"
    ))
    .bind(meter)
    .bind(i64::from(sequence))
    .bind(remaining_fen)
    .bind(i64::from(price_units))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // The sequence was stored + 1 when the frame was built and only verification moves it.
    debug_assert_eq!(advanced.rows_affected(), 1, "counters advance once");
    Ok(())
}

/// The ledger side of a verified purchase (in_transit → on_meter) or deduct (on_meter →
/// wallet), keyed by the command so it posts once.
async fn post_verified(
    conn: &mut PgConnection,
    principal: &Principal,
    command: Uuid,
    meter: Uuid,
    op: SecureOp,
    amount_fen: i64,
) -> CoreResult<()> {
    let (kind, from, to_wallet) = match op {
        SecureOp::Purchase => (
            TxnKind::PurchaseVerified,
            AccountKey::InTransit(meter),
            false,
        ),
        SecureOp::Deduct => (TxnKind::DeductVerified, AccountKey::OnMeter(meter), true),
        _ => return Ok(()),
    };
    let account = account_of_command(conn, command).await?;
    let amount = AmountFen::from_fen(amount_fen);
    let to = if to_wallet {
        AccountKey::Wallet(account)
    } else {
        AccountKey::OnMeter(meter)
    };
    post::post(
        conn,
        principal,
        &Posting {
            kind,
            idempotency_key: format!("{kind}:{command}"),
            request_hash: request_hash(&[
                kind.as_str(),
                &command.to_string(),
                &amount_fen.to_string(),
            ]),
            shop_account: Some(account),
            event_at: principal.now(),
            method: None,
            receipt: false,
            reverses: None,
            memo: String::new(),
            legs: vec![(to, amount), (from, negate(amount)?)],
            keep_at_least: None,
        },
    )
    .await?;
    Ok(())
}

/// The shop account a money command was made for (its purchase request, or the deduct's close).
async fn account_of_command(conn: &mut PgConnection, command: Uuid) -> CoreResult<Uuid> {
    let account: Option<Uuid> = sqlx::query_scalar(
        "select coalesce(
             (select account_id from secure_purchase_requests where command_id = $1 limit 1),
             (select am.account_id from commands c join account_meters am on am.meter_id = c.meter_id
               where c.id = $1 and am.joined_at <= c.created_at
                 and (am.left_at is null or am.left_at >= c.created_at)
               order by am.joined_at desc limit 1))",
    )
    .bind(command)
    .fetch_one(&mut *conn)
    .await?;
    account.ok_or_else(|| CoreError::Internal(format!("money command {command} has no account")))
}

fn negate(amount: AmountFen) -> CoreResult<AmountFen> {
    amount
        .checked_neg()
        .ok_or_else(|| CoreError::Internal("amount overflows".into()))
}

/// Raises `alarm` on `meter` once (an open one is kept).
async fn raise(conn: &mut PgConnection, alarm: Alarm, meter: Uuid, detail: &str) -> CoreResult<()> {
    sqlx::query(
        "insert into field_alarms (id, kind, target_id, detail) values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(alarm.kind())
    .bind(meter)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    tracing::warn!(%meter, kind = alarm.kind(), %detail, "secure alarm");
    Ok(())
}

/// Turns `meter`'s open purchase requests of `account` into one purchase of at most the wallet's
/// balance; false when there is nothing to buy (the requests are closed all the same when the
/// wallet is empty, so they do not wait for money that was spent).
async fn buy(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    account: Uuid,
    meter: Uuid,
) -> CoreResult<bool> {
    // The account's row first (the order every money path locks in); a closing account buys
    // nothing more (its credit is being taken back).
    let open: Option<String> =
        sqlx::query_scalar("select state from shop_accounts where id = $1 for update")
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?;
    if open.as_deref() != Some("open") {
        return Ok(false);
    }
    let requests: Vec<(Uuid, i64)> = sqlx::query_as(
        "select id, amount_fen from secure_purchase_requests
         where account_id = $1 and meter_id = $2 and done_at is null
         order by requested_at for update skip locked",
    )
    .bind(account)
    .bind(meter)
    .fetch_all(&mut *conn)
    .await?;
    if requests.is_empty() {
        return Ok(false);
    }
    let asked = requests
        .iter()
        .try_fold(0i64, |sum, (_, fen)| sum.checked_add(*fen))
        .ok_or_else(|| CoreError::Internal("purchase requests overflow".into()))?;
    let wallet = post::balance(conn, AccountKey::Wallet(account)).await?;
    let amount = asked.min(wallet.fen());
    let ids: Vec<Uuid> = requests.iter().map(|(id, _)| *id).collect();
    let now = principal.now();
    if amount <= 0 {
        sqlx::query("update secure_purchase_requests set done_at = $2 where id = any($1)")
            .bind(&ids)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        return Ok(false);
    }
    let command = secure_commands::enqueue(
        conn,
        keyring,
        principal,
        meter,
        SecureOp::Purchase,
        amount,
        "rule:purchase",
    )
    .await?;
    let fen = AmountFen::from_fen(amount);
    post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::Purchase,
            idempotency_key: format!("purchase:{}", command.id),
            request_hash: request_hash(&["purchase", &command.id.to_string(), &amount.to_string()]),
            shop_account: Some(account),
            event_at: now,
            method: None,
            receipt: false,
            reverses: None,
            memo: String::new(),
            legs: vec![
                (AccountKey::InTransit(meter), fen),
                (AccountKey::Wallet(account), negate(fen)?),
            ],
            // The overdraft rule: a purchase never takes the wallet below 0.
            keep_at_least: Some((AccountKey::Wallet(account), AmountFen::ZERO)),
        },
    )
    .await?;
    sqlx::query(
        "update secure_purchase_requests set done_at = $2, command_id = $3 where id = any($1)",
    )
    .bind(&ids)
    .bind(now)
    .bind(command.id)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::frame::MeterNumber;

    fn counters(purchases: u32, controls: u32) -> Option<Counters> {
        Some(Counters {
            purchase_count: purchases,
            control_count: controls,
            remaining_fen: 1_000,
            price_units: 8_500,
        })
    }

    fn ack(status: AckStatus) -> Option<Result<Ack, AckError>> {
        Some(Ok(Ack {
            op: SecureOp::Purchase,
            meter: MeterNumber::parse("1").unwrap(),
            sequence: 5,
            status,
            remaining_fen: 300,
            purchase_count: 5,
        }))
    }

    fn purchase(ack: Option<Result<Ack, AckError>>, c: Option<Counters>) -> Decision {
        decide(SecureOp::Purchase, State::Sent, 5, 1_000, ack, c)
    }

    fn failed_with(d: Decision) -> Option<Alarm> {
        match d {
            Decision::Failed { alarm, .. } => alarm,
            other => panic!("not failed: {other:?}"),
        }
    }

    #[test]
    fn the_counters_verify_and_a_count_beyond_is_a_mismatch() {
        assert!(matches!(
            purchase(None, counters(5, 0)),
            Decision::Verified {
                remaining_fen: 1_000,
                ..
            }
        ));
        // Whatever the ack said: the counters are the proof.
        assert!(matches!(
            purchase(ack(AckStatus::BadSequence), counters(5, 0)),
            Decision::Verified { .. }
        ));
        assert_eq!(
            failed_with(purchase(None, counters(6, 0))),
            Some(Alarm::Reconcile)
        );
        // A control command counts on the control counter, not the purchase count.
        let trip = decide(SecureOp::Trip, State::Sent, 3, 0, None, counters(5, 3));
        assert!(matches!(trip, Decision::Verified { .. }));
        assert_eq!(
            decide(SecureOp::Trip, State::Sent, 3, 0, None, counters(3, 2)),
            Decision::Wait
        );
    }

    #[test]
    fn a_set_price_is_verified_only_with_its_price() {
        let right = decide(
            SecureOp::SetPrice,
            State::Sent,
            2,
            8_500,
            None,
            counters(0, 2),
        );
        assert!(matches!(
            right,
            Decision::Verified {
                price_units: 8_500,
                ..
            }
        ));
        let wrong = decide(
            SecureOp::SetPrice,
            State::Sent,
            2,
            9_000,
            None,
            counters(0, 2),
        );
        assert_eq!(failed_with(wrong), Some(Alarm::Reconcile));
    }

    #[test]
    fn acknowledgements_map_as_design_says() {
        assert_eq!(
            purchase(ack(AckStatus::Accepted), None),
            Decision::Acknowledged
        );
        assert_eq!(
            purchase(ack(AckStatus::AlreadyApplied), counters(4, 0)),
            Decision::Acknowledged
        );
        // Already acknowledged: nothing more until the counters come.
        assert_eq!(
            decide(
                SecureOp::Purchase,
                State::Acknowledged,
                5,
                1,
                ack(AckStatus::Accepted),
                None
            ),
            Decision::Wait
        );
        assert_eq!(
            purchase(ack(AckStatus::BadSequence), counters(4, 0)),
            Decision::Resend
        );
        assert_eq!(purchase(ack(AckStatus::BadSequence), None), Decision::Wait);
        assert_eq!(
            failed_with(purchase(ack(AckStatus::BadSequence), counters(3, 0))),
            Some(Alarm::Reconcile)
        );
        assert_eq!(
            failed_with(purchase(ack(AckStatus::BadMac), None)),
            Some(Alarm::Key)
        );
        assert_eq!(
            failed_with(purchase(ack(AckStatus::WrongMeter), None)),
            Some(Alarm::Key)
        );
        assert_eq!(
            failed_with(purchase(ack(AckStatus::NotEnoughCredit), None)),
            None
        );
        assert_eq!(
            failed_with(purchase(ack(AckStatus::Malformed), None)),
            Some(Alarm::Reconcile)
        );
        assert!(matches!(
            purchase(Some(Err(AckError::Mac)), None),
            Decision::RefuseAck(_)
        ));
        assert_eq!(purchase(None, None), Decision::Wait);
    }
}
