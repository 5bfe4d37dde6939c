//! Remote control by people (DESIGN.md: Commands; Alarms, trip and restore): trip, close,
//! release, keep-power on and off on one meter, as typed commands with source
//! `operator:<user id>`, audited. Keep-power (保电) is a flag on the meter that no trip — the
//! rules' or a person's — passes; releasing it on a tripped account gives the tenant a fresh
//! trip notice and the full notice time before the rules trip again. An operator's trip or
//! close is an override the intended-state comparison keeps (`meters.relay_override`) until a
//! `release`. A meter-side meter (本地费控) gets each of these as a secure frame on its control
//! counter, and a close as `release`: it trips itself at zero credit, so the platform never
//! forces its relay closed.

use super::{Action, RULE_SOURCE};
use crate::auth::Principal;
use crate::commands::{self, Command, NewCommand, Op};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets::Keyring;
use crate::secure::frame::SecureOp;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::Duration;
use sqlx::PgConnection;
use uuid::Uuid;

/// A person's relay command waits this long for its meter's bus.
const OPERATOR_VALID_S: i64 = 600;

/// What ties an operator's command to others: the batch it is part of, the failed command it
/// sends again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    pub batch_id: Option<Uuid>,
    pub retry_of: Option<Uuid>,
}

/// A meter's power state as people see it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeterPower {
    /// Keep-power (保电): no trip reaches it.
    pub keep_power: bool,
    /// An operator's trip (`open`) or close (`closed`) that holds until a release.
    pub relay_override: Option<String>,
    /// Its account's rules tripped it.
    pub tripped: bool,
}

/// The power state of `meter_id` (404 for a meter the caller may not see).
pub async fn state(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<MeterPower> {
    crate::field::meter(conn, principal, meter_id).await?;
    let (keep_power, relay_override, tripped): (bool, Option<String>, bool) = sqlx::query_as(
        "select m.keep_power, m.relay_override,
                exists (select 1 from account_meters am
                        join account_power p on p.account_id = am.account_id
                        where am.meter_id = m.id and am.left_at is null and p.tripped_at is not null)
         from meters m where m.id = $1",
    )
    .bind(meter_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(MeterPower {
        keep_power,
        relay_override,
        tripped,
    })
}

/// Parses an operator's control op (422 for anything else).
pub fn control_op(text: &str) -> CoreResult<Op> {
    Op::parse(text.trim())
        .filter(|op| op.is_control())
        .ok_or_else(|| {
            CoreError::field(
                "op",
                "one of trip, close, release, keep_power_on, keep_power_off",
            )
        })
}

/// The right an op needs: `trip_close` for trip, close and release, `keep_power` for
/// keep-power on and off.
pub fn right_for(op: Op) -> Right {
    match op {
        Op::Trip | Op::Close | Op::Release => Right::TripClose,
        // Keep-power on and off: the only other control commands.
        _ => Right::KeepPower,
    }
}

/// Sends `op` (its text form) to `meter_id` for the principal (an operator with `trip_close`
/// for trip, close and release, `keep_power` for keep-power on and off).
#[tracing::instrument(skip_all, fields(%meter_id, op))]
pub async fn operate(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&Keyring>,
    meter_id: Uuid,
    op: &str,
) -> CoreResult<Command> {
    operate_linked(conn, principal, keyring, meter_id, op, Link::default()).await
}

/// [`operate`] for a command that sends a failed one again (`link.retry_of`).
pub async fn operate_linked(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&Keyring>,
    meter_id: Uuid,
    op: &str,
    link: Link,
) -> CoreResult<Command> {
    // 404 before 403 and 422: a meter the caller may not see does not exist for them.
    let meter = crate::field::meter(conn, principal, meter_id).await?;
    let op = control_op(op)?;
    principal.require(Need::Act(right_for(op)))?;
    if meter.status != crate::field::MeterStatus::Active {
        return Err(CoreError::Conflict("this meter was removed".into()));
    }
    let keep_power: bool =
        sqlx::query_scalar("select keep_power from meters where id = $1 for update")
            .bind(meter_id)
            .fetch_one(&mut *conn)
            .await?;
    if op == Op::Trip && keep_power {
        return Err(CoreError::Conflict(
            "the meter keeps power (保电): turn keep-power off first".into(),
        ));
    }
    apply(conn, principal, &[meter_id], op).await?;
    let meter_side = meter_side_of(conn, &[meter_id]).await?.contains(&meter_id);
    let command = send(conn, principal, keyring, meter_id, meter_side, op, link).await?;
    audit::record(
        conn,
        principal,
        "meter.control",
        "meter",
        Some(meter_id.to_string()),
        None,
        Some(serde_json::json!({ "op": op.as_str(), "command": command.id, "retry_of": link.retry_of })),
    )
    .await?;
    Ok(command)
}

/// What an operator's `op` changes on `meters` before the commands go out: an operator's trip
/// or close is the relay state the intended-state comparison keeps until a release; keep-power
/// on or off sets the flag and drops any override (keep-power-off gives a tripped account a
/// fresh notice).
pub(crate) async fn apply(
    conn: &mut PgConnection,
    principal: &Principal,
    meters: &[Uuid],
    op: Op,
) -> CoreResult<()> {
    match op {
        Op::Trip | Op::Close | Op::Release => {
            let wanted = match op {
                Op::Trip => Some("open"),
                Op::Close => Some("closed"),
                _ => None,
            };
            // A meter-side meter is never held closed by the platform (its close is a release).
            sqlx::query(
                "update meters set relay_override = case when prepayment_mode = 'meter'
                     and $2 = 'closed' then null else $2 end where id = any($1)",
            )
            .bind(meters)
            .bind(wanted)
            .execute(&mut *conn)
            .await?;
        }
        _ => {
            sqlx::query(
                "update meters set keep_power = $2, relay_override = null where id = any($1)",
            )
            .bind(meters)
            .bind(op == Op::KeepPowerOn)
            .execute(&mut *conn)
            .await?;
            if op == Op::KeepPowerOff {
                for meter in meters {
                    renotice(conn, principal, *meter).await?;
                }
            }
        }
    }
    Ok(())
}

/// Enqueues an operator's `op` for `meter_id` (source `operator:<user id>`); a meter-side meter
/// (`meter_side`, from [`meter_side_of`]) gets it as a secure frame ([`send_secure`]).
pub(crate) async fn send(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&Keyring>,
    meter_id: Uuid,
    meter_side: bool,
    op: Op,
    link: Link,
) -> CoreResult<Command> {
    if meter_side {
        return send_secure(conn, principal, keyring, meter_id, op, link).await;
    }
    let now = principal.now();
    let schema = principal.company()?.schema.clone();
    commands::enqueue(
        conn,
        &schema,
        &NewCommand {
            meter_id,
            op,
            source: format!("operator:{}", principal.user_id),
            detail: String::new(),
            expires_at: Some(now + Duration::seconds(OPERATOR_VALID_S)),
            batch_id: link.batch_id,
            retry_of: link.retry_of,
        },
        now,
    )
    .await
}

/// Those of `meters` that hold their own wallet (本地费控), in one query for a whole batch.
pub(crate) async fn meter_side_of(
    conn: &mut PgConnection,
    meters: &[Uuid],
) -> CoreResult<std::collections::HashSet<Uuid>> {
    let found: Vec<Uuid> = sqlx::query_scalar(
        "select id from meters where id = any($1) and prepayment_mode = 'meter'",
    )
    .bind(meters)
    .fetch_all(&mut *conn)
    .await?;
    Ok(found.into_iter().collect())
}

/// The secure command a person's `op` becomes on a meter-side meter. Such a meter trips itself
/// when its credit runs out, so the platform never forces its relay closed (DESIGN.md): a close
/// is sent as `release`, which hands the relay back to the meter's own credit rule.
pub fn secure_op_for(op: Op) -> SecureOp {
    match op {
        Op::Trip => SecureOp::Trip,
        Op::KeepPowerOn => SecureOp::KeepPowerOn,
        Op::KeepPowerOff => SecureOp::KeepPowerOff,
        _ => SecureOp::Release,
    }
}

/// [`send`] for a meter-side meter: a secure control frame on the meter's control counter, one
/// unfinished at a time (a second gets 409 until the first is verified or failed).
async fn send_secure(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&Keyring>,
    meter_id: Uuid,
    op: Op,
    link: Link,
) -> CoreResult<Command> {
    let keyring = keyring.ok_or_else(|| {
        CoreError::Conflict(
            "this meter is meter-side and no key store is configured: its secure commands cannot be built".into(),
        )
    })?;
    let source = format!("operator:{}", principal.user_id);
    let command = crate::secure::commands::enqueue(
        conn,
        keyring,
        principal,
        meter_id,
        secure_op_for(op),
        0,
        &source,
    )
    .await?;
    sqlx::query("update commands set batch_id = $2, retry_of = $3 where id = $1")
        .bind(command.id)
        .bind(link.batch_id)
        .bind(link.retry_of)
        .execute(&mut *conn)
        .await?;
    crate::commands::get(conn, principal, command.id).await
}

/// Keep-power released on a meter of a tripped account: the account is no longer counted as
/// tripped and its notice starts now, so the rules trip again only after the tenant was told
/// and the full notice time ran (DESIGN.md: "releasing keep-power re-evaluates after a notice
/// and a grace period").
async fn renotice(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<()> {
    let account: Option<Uuid> = sqlx::query_scalar(
        "update account_power p set tripped_at = null, noticed_at = $2, updated_at = $2
         from account_meters am
         where am.meter_id = $1 and am.left_at is null and p.account_id = am.account_id
           and p.tripped_at is not null
         returning p.account_id",
    )
    .bind(meter_id)
    .bind(principal.now())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(account) = account {
        super::evaluate::tell(conn, principal, account, Action::TripNotice).await?;
        tracing::info!(%account, source = RULE_SOURCE, "keep-power released: a fresh trip notice");
    }
    Ok(())
}
