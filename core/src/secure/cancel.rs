//! The approved cancel of a failed purchase (DESIGN.md: "only an approved cancel moves money
//! from `in_transit` back to the wallet"). A purchase that failed (a key or reconciliation
//! alarm, a lost count) keeps its money in `in_transit:{meter}`; an operator with the accounts
//! right asks for the cancel with a reason, another person with the approve right decides, and
//! only then `purchase_cancelled` moves the amount back — once (keyed by the command). Refused
//! while the meter's read-back counts the purchase: then the credit is on the meter.

use crate::auth::Principal;
use crate::billing::approvals::{self, ApprovalKind, ApprovalRequest, Ask};
use crate::billing::ledger::post::{self, request_hash, Posting};
use crate::billing::ledger::{AccountKey, TxnKind};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::roles::{Need, Right};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// A failed purchase whose money may go back: (meter, account, amount).
async fn cancellable(
    conn: &mut PgConnection,
    command: Uuid,
) -> CoreResult<(Uuid, Uuid, AmountFen)> {
    let row = sqlx::query(
        "select c.meter_id, c.op, c.state, c.secure_sequence, c.secure_amount,
                (select account_id from secure_purchase_requests where command_id = c.id limit 1) as account_id,
                (select purchase_count from meter_secure_readback where meter_id = c.meter_id) as counted
         from commands c where c.id = $1 for update",
    )
    .bind(command)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("command"))?;
    let op: String = row.try_get("op")?;
    let state: String = row.try_get("state")?;
    if op != "purchase" || state != "failed" {
        return Err(CoreError::Conflict(format!(
            "only a failed purchase is cancelled (this is a {state} {op})"
        )));
    }
    let sequence: Option<i64> = row.try_get("secure_sequence")?;
    let counted: Option<i64> = row.try_get("counted")?;
    if counted.is_some_and(|c| sequence.is_some_and(|s| c >= s)) {
        return Err(CoreError::Conflict(
            "the meter counts this purchase: its credit is on the meter (reconcile instead)".into(),
        ));
    }
    let account: Uuid = row
        .try_get::<Option<Uuid>, _>("account_id")?
        .ok_or_else(|| CoreError::Conflict("the purchase was made for no account".into()))?;
    let amount = AmountFen::from_fen(row.try_get::<Option<i64>, _>("secure_amount")?.unwrap_or(0));
    let meter: Uuid = row.try_get("meter_id")?;
    let cancelled: bool = sqlx::query_scalar(
        "select exists (select 1 from ledger_transactions where idempotency_key = $1)",
    )
    .bind(format!("cancel:{command}"))
    .fetch_one(&mut *conn)
    .await?;
    if cancelled {
        return Err(CoreError::Conflict(
            "the purchase was cancelled already".into(),
        ));
    }
    if post::balance(conn, AccountKey::InTransit(meter)).await? < amount
        || amount <= AmountFen::ZERO
    {
        return Err(CoreError::Conflict(
            "its money is no longer in transit to the meter".into(),
        ));
    }
    Ok((meter, account, amount))
}

/// Asks for the cancel of failed purchase `command` (right `accounts`, a reason).
pub async fn request(
    conn: &mut PgConnection,
    principal: &Principal,
    command: Uuid,
    reason: &str,
    idempotency_key: &str,
) -> CoreResult<ApprovalRequest> {
    principal.require_read_company()?;
    // Another company's command (or none) is not found, whoever asks.
    let visible: bool = sqlx::query_scalar(
        "select exists (select 1 from commands c join meters m on m.id = c.meter_id
             left join shops s on s.id = m.shop_id
             where c.id = $1 and ($2::uuid[] is null or s.building_id = any($2)))",
    )
    .bind(command)
    .bind(principal.building_limit_param())
    .fetch_one(&mut *conn)
    .await?;
    if !visible {
        return Err(CoreError::NotFound("command"));
    }
    principal.require(Need::Act(Right::Accounts))?;
    let reason = approvals::checked_reason(reason)?;
    let (_, _, amount) = cancellable(conn, command).await?;
    approvals::ask(
        conn,
        principal,
        &Ask {
            kind: ApprovalKind::PurchaseCancel,
            target_id: command,
            read_at: None,
            energy_wh: None,
            amount_fen: Some(amount),
            reason,
            request_key: format!("client:{idempotency_key}"),
        },
    )
    .await
}

/// Approves request `id` (an approver other than the asker): the money goes back to the wallet.
pub async fn approve(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    idempotency_key: &str,
) -> CoreResult<ApprovalRequest> {
    principal.require_read_company()?;
    let request = approvals::get(conn, id).await?;
    if request.kind != ApprovalKind::PurchaseCancel
        || !approvals::visible(conn, principal, &request).await?
    {
        return Err(CoreError::NotFound("approval request"));
    }
    crate::billing::client_keys::claim(conn, idempotency_key, "approve", id).await?;
    let request = approvals::decidable(conn, principal, id).await?;
    let command = request.target_id;
    let (meter, account, amount) = match cancellable(conn, command).await {
        Ok(found) => found,
        Err(e) => {
            approvals::decide(conn, principal, id, "rejected", None).await?;
            return Err(e);
        }
    };
    let negative = amount
        .checked_neg()
        .ok_or_else(|| CoreError::Internal("amount overflows".into()))?;
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::PurchaseCancelled,
            idempotency_key: format!("cancel:{command}"),
            request_hash: request_hash(&[
                "cancel",
                &command.to_string(),
                &amount.fen().to_string(),
            ]),
            shop_account: Some(account),
            event_at: principal.now(),
            method: None,
            receipt: false,
            reverses: None,
            memo: request.reason.clone(),
            legs: vec![
                (AccountKey::Wallet(account), amount),
                (AccountKey::InTransit(meter), negative),
            ],
            keep_at_least: None,
        },
    )
    .await?;
    // The money that was out of step is back: the purchase's reconciliation alarm is answered.
    sqlx::query(
        "update field_alarms set cleared_at = $2 where target_id = $1 and kind = 'secure_reconcile'
           and cleared_at is null",
    )
    .bind(meter)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    approvals::decide(conn, principal, id, "done", Some(posted.txn.id)).await
}
