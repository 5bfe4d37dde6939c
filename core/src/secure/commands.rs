//! Secure commands in the queue (DESIGN.md: Commands, secure rules). A meter-side meter is
//! commissioned first — its counters read and stored with the key version it holds — and every
//! frame after that carries the stored counter + 1: purchase and deduct on the purchase count,
//! the others on the control counter. The frame is built here, in the server process, and stored
//! with the command in the same transaction (`commands.secure_frame`), so every resend is the
//! same bytes. At most one purchase or deduct (a unique index backs it) and one secure control
//! command are unfinished per meter.

use super::frame::{self, Order, SecureOp};
use super::keys;
use crate::auth::Principal;
use crate::commands::{self as queue, Command, NewCommand};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets::Keyring;
use rand::RngCore;
use sqlx::PgConnection;
use uuid::Uuid;

/// How long a secure control command may wait to be sent (money commands never expire).
pub const CONTROL_VALID_S: i64 = 600;

pub use super::frame::Counters;

/// Records what commissioning read off the meter (and pins the key version it holds). The
/// first secure command waits for this: the platform never guesses a meter's counters.
pub async fn commission(
    conn: &mut PgConnection,
    keyring: &Keyring,
    meter_id: Uuid,
    counters: Counters,
    at: chrono::DateTime<chrono::Utc>,
    by: &str,
) -> CoreResult<()> {
    keys::meter_version(conn, keyring, meter_id, by).await?;
    sqlx::query(
        "update meter_secure set purchase_count = $2, control_count = $3, remaining_fen = $4,
             price_units = $5, counters_read_at = $6, updated_at = $6 where meter_id = $1",
    )
    .bind(meter_id)
    .bind(i64::from(counters.purchase_count))
    .bind(i64::from(counters.control_count))
    .bind(counters.remaining_fen)
    .bind(i64::from(counters.price_units))
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The stored counter the next `op` frame builds on, the meter's row locked so two requests
/// at once cannot take the same sequence.
async fn next_sequence(conn: &mut PgConnection, meter_id: Uuid, op: SecureOp) -> CoreResult<u32> {
    let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
        "select purchase_count, control_count from meter_secure where meter_id = $1 for update",
    )
    .bind(meter_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (purchases, controls) = row.unwrap_or((None, None));
    let stored = if op.uses_purchase_count() {
        purchases
    } else {
        controls
    };
    let stored = stored.ok_or_else(|| {
        CoreError::Conflict(
            "the meter's secure counters have not been read yet: commission it first".into(),
        )
    })?;
    // A meter that counts beyond what the platform verified took a command the platform did not
    // send (an out-of-band purchase): nothing more is built on it until it is reconciled.
    let seen: Option<(i64, i64)> = sqlx::query_as(
        "select purchase_count, control_count from meter_secure_readback where meter_id = $1",
    )
    .bind(meter_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((purchases, controls)) = seen {
        let seen = if op.uses_purchase_count() {
            purchases
        } else {
            controls
        };
        if seen > stored {
            return Err(CoreError::Conflict(format!(
                "the meter counts {seen} where the platform verified {stored}: it took a command the platform did not send; reconcile it first"
            )));
        }
    }
    u32::try_from(stored)
        .ok()
        .and_then(|s| s.checked_add(1))
        .ok_or_else(|| CoreError::Conflict("the meter's counter is exhausted".into()))
}

/// One secure control command at a time per meter (DESIGN.md): its frame carries control
/// counter + 1, so a second one built meanwhile would be stale on arrival. Race-free under the
/// meter's row lock taken by [`next_sequence`].
async fn refuse_second_control(conn: &mut PgConnection, meter_id: Uuid) -> CoreResult<()> {
    if control_unfinished(conn, meter_id).await? {
        return Err(CoreError::Conflict(
            "a secure control command is still unfinished on this meter; the next one waits for it"
                .into(),
        ));
    }
    Ok(())
}

/// No money goes to a meter being re-keyed: once the field loads the new key, a frame under the
/// old one would be refused with its money in transit.
async fn refuse_money_while_rekeying(conn: &mut PgConnection, meter_id: Uuid) -> CoreResult<()> {
    let pending: Option<Option<i32>> =
        sqlx::query_scalar("select rekey_to_version from meter_secure where meter_id = $1")
            .bind(meter_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(Some(version)) = pending {
        return Err(CoreError::Conflict(format!(
            "the meter is being re-keyed to key version {version}: money waits until the new key is verified"
        )));
    }
    Ok(())
}

/// Whether a secure control command (not a purchase or deduct) is unfinished on `meter_id`.
pub(crate) async fn control_unfinished(
    conn: &mut PgConnection,
    meter_id: Uuid,
) -> CoreResult<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from commands where meter_id = $1 and secure_frame is not null
             and op not in ('purchase', 'deduct') and state in ('queued', 'sent', 'acknowledged'))",
    )
    .bind(meter_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// Queues `op` for meter-side meter `meter_id` as a secure frame (`amount`: fen for purchase
/// and deduct, price units for set price, 0 otherwise), under the key version the meter holds.
pub async fn enqueue(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
    meter_id: Uuid,
    op: SecureOp,
    amount: i64,
    source: &str,
) -> CoreResult<Command> {
    enqueue_under(conn, keyring, principal, meter_id, op, amount, source, None).await
}

/// [`enqueue`] under master key `version` when given (a re-key's probe: `super::rekey`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn enqueue_under(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
    meter_id: Uuid,
    op: SecureOp,
    amount: i64,
    source: &str,
    version: Option<i32>,
) -> CoreResult<Command> {
    let mode: Option<String> =
        sqlx::query_scalar("select prepayment_mode from meters where id = $1")
            .bind(meter_id)
            .fetch_optional(&mut *conn)
            .await?;
    match mode.as_deref() {
        None => return Err(CoreError::NotFound("meter")),
        Some("meter") => {}
        Some(_) => {
            return Err(CoreError::Conflict(
                "secure frames are for meter-side meters; this one is platform-side".into(),
            ))
        }
    }
    let (_, held) = keys::meter_version(conn, keyring, meter_id, &principal.username).await?;
    let version = version.unwrap_or(held);
    let (number, meter_keys) = keys::meter_keys_at(conn, keyring, meter_id, version).await?;
    let sequence = next_sequence(conn, meter_id, op).await?;
    if op.uses_purchase_count() {
        refuse_money_while_rekeying(conn, meter_id).await?;
    }
    if !op.uses_purchase_count() {
        refuse_second_control(conn, meter_id).await?;
    }
    let now = principal.now();
    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let order = Order {
        op,
        meter: number,
        sequence,
        amount,
        issued_at: u32::try_from(now.timestamp())
            .map_err(|_| CoreError::Internal("the clock is outside u32 seconds".into()))?,
        nonce,
    };
    order
        .check()
        .map_err(|e| CoreError::field("amount", e.to_string()))?;
    let bytes = frame::build(&meter_keys, &order);
    let schema = principal.company()?.schema.clone();
    let expires_at =
        (!op.uses_purchase_count()).then(|| now + chrono::Duration::seconds(CONTROL_VALID_S));
    let command = queue::enqueue(
        conn,
        &schema,
        &NewCommand {
            meter_id,
            op: op.op(),
            source: source.to_owned(),
            detail: String::new(),
            expires_at,
            batch_id: None,
            retry_of: None,
        },
        now,
    )
    .await
    .map_err(|e| {
        if e.violates("commands_one_money_in_flight") {
            CoreError::Conflict(
                "a purchase or deduct is still unfinished on this meter; the next one waits for it"
                    .into(),
            )
        } else {
            e
        }
    })?;
    sqlx::query(
        "update commands set secure_frame = $2, secure_sequence = $3, secure_amount = $4,
             secure_key_version = $5
         where id = $1",
    )
    .bind(command.id)
    .bind(&bytes)
    .bind(i64::from(sequence))
    .bind(amount)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(command)
}

/// The frame stored with command `id` and the sequence it carries.
pub async fn stored_frame(conn: &mut PgConnection, id: Uuid) -> CoreResult<Option<(Vec<u8>, u32)>> {
    let row: Option<(Option<Vec<u8>>, Option<i64>)> =
        sqlx::query_as("select secure_frame, secure_sequence from commands where id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some((Some(bytes), Some(sequence))) => u32::try_from(sequence).ok().map(|s| (bytes, s)),
        _ => None,
    })
}
