//! Taking the credit back off meter-side meters when their account closes (DESIGN.md: Account
//! lifecycle, step 2), driven by the settle worker because every step waits for a meter: per
//! meter a secure trip, verified (the meter stops counting down); the counters it read back give
//! the remaining amount R; a `deduct` of R when R > 0, verified (its ledger side moves R
//! `on_meter` → wallet). When every meter is done the worker finishes the close
//! (`billing::closing::close`), which rates the last readings and settles what the platform's
//! shadow balance says beyond R into `adjustments`. A meter that cannot be reached gets an
//! operator's audited decision instead ([`decide_unreachable`]): the last read-back amount is
//! returned to the wallet and stays on the meter.

use super::frame::SecureOp;
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets::Keyring;
use crate::tenancy::audit;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// Where one meter of a closing meter-side account is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterClosing {
    pub meter_id: Uuid,
    /// `trip`, `deduct` or `done`; `None` before the worker started on it.
    pub stage: Option<String>,
    pub remaining_fen: Option<i64>,
    pub decided_by: Option<String>,
}

/// The meters of closing `account` and their stage.
pub async fn stages(conn: &mut PgConnection, account: Uuid) -> CoreResult<Vec<MeterClosing>> {
    let rows = sqlx::query(
        "select am.meter_id, c.stage, c.remaining_fen, c.decided_by
         from account_meters am
         left join meter_side_closing c on c.account_id = am.account_id and c.meter_id = am.meter_id
         where am.account_id = $1 and am.left_at is null order by am.meter_id",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MeterClosing {
                meter_id: r.try_get("meter_id")?,
                stage: r.try_get("stage")?,
                remaining_fen: r.try_get("remaining_fen")?,
                decided_by: r.try_get("decided_by")?,
            })
        })
        .collect()
}

/// Advances every closing meter-side account of the company; finishes (closes) those whose
/// meters are all done. Returns how many were closed.
pub async fn advance_all(
    pool: &PgPool,
    principal: &Principal,
    keyring: &Keyring,
) -> CoreResult<u64> {
    let schema = principal.company()?.schema.clone();
    let accounts: Vec<Uuid> = {
        let mut tx = crate::db::begin_in(pool, &schema).await?;
        let ids = sqlx::query_scalar(
            "select id from shop_accounts where state = 'closing' and prepayment_mode = 'meter'",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        ids
    };
    let mut closed = 0;
    for account in accounts {
        let done = async {
            let mut tx = crate::db::begin_in(pool, &schema).await?;
            let all_done = advance(&mut tx, principal, keyring, account).await?;
            if all_done {
                crate::billing::closing::close(
                    &mut tx,
                    principal,
                    account,
                    &crate::billing::closing::CloseAccount::default(),
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, CoreError>(all_done)
        }
        .await;
        match done {
            Ok(true) => closed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%account, error = %e, "closing a meter-side account is retried next pass")
            }
        }
    }
    Ok(closed)
}

/// One step further on each meter of `account`; true when all are done.
pub async fn advance(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    account: Uuid,
) -> CoreResult<bool> {
    let mut all_done = true;
    for meter in stages(conn, account).await? {
        let done = match meter.stage.as_deref() {
            Some("done") => true,
            None => {
                start_trip(conn, principal, keyring, account, meter.meter_id, true).await?;
                false
            }
            Some("trip") => after_trip(conn, principal, keyring, account, meter.meter_id).await?,
            Some(_) => after_deduct(conn, principal, keyring, account, meter.meter_id).await?,
        };
        all_done &= done;
    }
    Ok(all_done)
}

/// The state of the command a closing row points at (`trip_command` or `deduct_command`).
async fn command_state(
    conn: &mut PgConnection,
    account: Uuid,
    meter: Uuid,
    column: &str,
) -> CoreResult<Option<String>> {
    Ok(sqlx::query_scalar(&format!(
        "select c.state from meter_side_closing m join commands c on c.id = m.{column}
         where m.account_id = $1 and m.meter_id = $2"
    ))
    .bind(account)
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Queues the secure trip (again, when `first` is false) unless a secure control command is
/// still unfinished on the meter — then the next pass tries.
async fn start_trip(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    account: Uuid,
    meter: Uuid,
    first: bool,
) -> CoreResult<()> {
    // Busy with another secure control command, or alarmed (a key the meter does not share:
    // trips would fail forever — the operator decides, e.g. closing with the last read-back).
    let alarmed: bool = sqlx::query_scalar(
        "select exists (select 1 from field_alarms where target_id = $1
             and kind in ('secure_key', 'secure_reconcile') and cleared_at is null
             and raised_at > now() - interval '10 minutes')",
    )
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    if alarmed || super::commands::control_unfinished(conn, meter).await? {
        return Ok(());
    }
    let trip = super::commands::enqueue(
        conn,
        keyring,
        principal,
        meter,
        SecureOp::Trip,
        0,
        "rule:close",
    )
    .await?;
    if first {
        sqlx::query(
            "insert into meter_side_closing (account_id, meter_id, stage, trip_command) values ($1, $2, 'trip', $3)",
        )
        .bind(account)
        .bind(meter)
        .bind(trip.id)
        .execute(&mut *conn)
        .await?;
    } else {
        set_stage(
            conn,
            account,
            meter,
            "trip",
            Some(("trip_command", trip.id)),
            None,
        )
        .await?;
    }
    Ok(())
}

async fn set_stage(
    conn: &mut PgConnection,
    account: Uuid,
    meter: Uuid,
    stage: &str,
    command: Option<(&str, Uuid)>,
    remaining_fen: Option<i64>,
) -> CoreResult<()> {
    let (column, id) = command.map_or(("trip_command", None), |(c, id)| (c, Some(id)));
    sqlx::query(&format!(
        "update meter_side_closing set stage = $3, {column} = coalesce($4, {column}),
             remaining_fen = coalesce($5, remaining_fen), updated_at = now()
         where account_id = $1 and meter_id = $2"
    ))
    .bind(account)
    .bind(meter)
    .bind(stage)
    .bind(id)
    .bind(remaining_fen)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the tripped meter holds: its counters read back after `since` (the trip's
/// verification), else what its last believed acknowledgement said; `None` while neither is
/// newer than the trip.
async fn remaining_on(
    conn: &mut PgConnection,
    meter: Uuid,
    since: chrono::DateTime<chrono::Utc>,
) -> CoreResult<Option<i64>> {
    let fen: Option<i64> = sqlx::query_scalar(
        "select coalesce(
             (select remaining_fen from meter_secure_readback where meter_id = $1 and read_at > $2),
             (select remaining_fen from meter_secure where meter_id = $1 and updated_at > $2))",
    )
    .bind(meter)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?;
    Ok(fen)
}

async fn after_trip(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    account: Uuid,
    meter: Uuid,
) -> CoreResult<bool> {
    match command_state(conn, account, meter, "trip_command")
        .await?
        .as_deref()
    {
        Some("verified") => deduct_remaining(conn, principal, keyring, account, meter).await,
        Some("failed" | "expired" | "cancelled") => {
            start_trip(conn, principal, keyring, account, meter, false).await?;
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Queues the deduct of what the tripped meter holds, or ends the meter's close when it holds
/// nothing (a negative amount on a meter is not credit to take back).
async fn deduct_remaining(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    account: Uuid,
    meter: Uuid,
) -> CoreResult<bool> {
    // Counters read after the last step of this meter's close (trip verified or deduct
    // refused): the meter no longer counts, so they are what it holds.
    let since: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "select greatest(
             (select updated_at from commands where id = m.trip_command),
             (select updated_at from commands where id = m.deduct_command))
         from meter_side_closing m where m.account_id = $1 and m.meter_id = $2",
    )
    .bind(account)
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    let Some(remaining) = remaining_on(conn, meter, since).await? else {
        return Ok(false);
    };
    if remaining <= 0 {
        set_stage(conn, account, meter, "done", None, Some(0)).await?;
        return Ok(true);
    }
    // One money command per meter: a purchase still settling is waited for.
    let busy: bool = sqlx::query_scalar(
        "select exists (select 1 from commands where meter_id = $1 and op in ('purchase', 'deduct')
             and state in ('queued', 'sent', 'acknowledged'))",
    )
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    if busy {
        return Ok(false);
    }
    let deduct = super::commands::enqueue(
        conn,
        keyring,
        principal,
        meter,
        SecureOp::Deduct,
        remaining,
        "rule:close",
    )
    .await?;
    set_stage(
        conn,
        account,
        meter,
        "deduct",
        Some(("deduct_command", deduct.id)),
        Some(remaining),
    )
    .await?;
    Ok(false)
}

async fn after_deduct(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: &Keyring,
    account: Uuid,
    meter: Uuid,
) -> CoreResult<bool> {
    match command_state(conn, account, meter, "deduct_command")
        .await?
        .as_deref()
    {
        Some("verified") => {
            set_stage(conn, account, meter, "done", None, None).await?;
            Ok(true)
        }
        // Refused (06: the meter holds less than asked) or lost: read what it holds and ask
        // again.
        Some("failed" | "expired" | "cancelled") => {
            deduct_remaining(conn, principal, keyring, account, meter).await
        }
        _ => Ok(false),
    }
}

/// An operator's decision for meters that cannot be reached: close with the last read-back
/// remaining amount (returned to the wallet by the close; the credit stays on the meter).
/// Audited per meter.
pub async fn decide_unreachable(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<()> {
    for meter in stages(conn, account).await? {
        if meter.stage.as_deref() == Some("done") {
            continue;
        }
        let last: Option<i64> = sqlx::query_scalar(
            "select remaining_fen from meter_secure_readback where meter_id = $1",
        )
        .bind(meter.meter_id)
        .fetch_optional(&mut *conn)
        .await?;
        let remaining = last.unwrap_or(0).max(0);
        sqlx::query(
            "insert into meter_side_closing (account_id, meter_id, stage, remaining_fen, decided_by)
             values ($1, $2, 'done', $3, $4)
             on conflict (account_id, meter_id) do update set stage = 'done',
                 remaining_fen = excluded.remaining_fen, decided_by = excluded.decided_by, updated_at = now()",
        )
        .bind(account)
        .bind(meter.meter_id)
        .bind(remaining)
        .bind(&principal.username)
        .execute(&mut *conn)
        .await?;
        audit::record(
            conn,
            principal,
            "account.close.meter_unreachable",
            "meter",
            Some(meter.meter_id.to_string()),
            None,
            Some(serde_json::json!({ "account_id": account, "last_readback_remaining_fen": remaining })),
        )
        .await?;
    }
    Ok(())
}
