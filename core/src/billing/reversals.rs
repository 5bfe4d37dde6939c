//! Reversals (冲正) of counter top-ups and refunds: the full amount, once per original, within
//! the company's window (default 30 days); above the company's threshold (default ¥500) only
//! with an approver — a holder of the `approve` right other than the requester — so the request
//! goes `requested → posted | rejected | withdrawn` (after 72 hours), and no money moves before
//! it is posted. A reversal of a top-up obeys the overdraft rule; a reversal of a refund always
//! posts. Cash posts in the open shift of whoever posts it.

use super::accounts::{self, negate};
use super::counter::{clearing_for, CounterMethod};
use super::ledger::post::{self, request_hash, Posted, Posting, Transaction};
use super::ledger::{AccountClass, AccountKey, TxnKind};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// An undecided request is withdrawn after this long.
pub const REQUEST_LIFETIME_H: i64 = 72;

/// A reversal asked for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReversalRequest {
    pub id: Uuid,
    pub txn_id: Uuid,
    pub amount_fen: AmountFen,
    pub reason: String,
    pub requested_by: Uuid,
    pub requested_at: DateTime<Utc>,
    /// `requested`, `posted`, `rejected` or `withdrawn`.
    pub state: String,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub posted_txn: Option<Uuid>,
}

/// What asking for a reversal did: posted at once (within the threshold) or waiting for an
/// approver.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ReversalOutcome {
    pub request: ReversalRequest,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub transaction: Option<Transaction>,
}

struct Rules {
    window_days: i64,
    approval_above: AmountFen,
}

async fn rules(conn: &mut PgConnection) -> CoreResult<Rules> {
    let row = sqlx::query("select reversal_window_days, reversal_approval_above_fen from settings")
        .fetch_one(&mut *conn)
        .await?;
    Ok(Rules {
        window_days: i64::from(row.try_get::<i32, _>("reversal_window_days")?),
        approval_above: row.try_get("reversal_approval_above_fen")?,
    })
}

/// The original counter movement `txn` and the amount it moved into (+) or out of (−) the wallet,
/// if the caller may see its account.
async fn original(
    conn: &mut PgConnection,
    principal: &Principal,
    txn: Uuid,
) -> CoreResult<(Transaction, Uuid, AmountFen)> {
    let found = post::load(conn, txn)
        .await?
        .ok_or(CoreError::NotFound("transaction"))?;
    let account = found
        .shop_account_id
        .ok_or(CoreError::NotFound("transaction"))?;
    // 404 for an account the caller may not see (another building).
    accounts::get(conn, principal, account).await?;
    if !matches!(found.kind, TxnKind::TopUp | TxnKind::Refund) {
        return Err(CoreError::Conflict(format!(
            "only counter top-ups and refunds are reversed here, not a {}",
            found.kind
        )));
    }
    let wallet = found
        .legs
        .iter()
        .find(|(k, _)| k.class() == AccountClass::Wallet)
        .map(|(_, a)| *a)
        .ok_or_else(|| CoreError::Internal("a counter movement without its wallet".into()))?;
    Ok((found, account, wallet))
}

/// Asks to reverse `txn`: posts at once when the amount is within the company's threshold and the
/// caller has the `reversal` right, else records a request for an approver.
#[tracing::instrument(skip_all)]
pub async fn request(
    conn: &mut PgConnection,
    principal: &Principal,
    txn: Uuid,
    reason: &str,
    idempotency_key: &str,
) -> CoreResult<ReversalOutcome> {
    let (found, _, wallet) = original(conn, principal, txn).await?;
    principal.require(Need::Act(Right::Reversal))?;
    refuse_credit_on_meter(conn, txn).await?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(CoreError::field(
            "reason",
            "say why, in at most 200 characters",
        ));
    }
    let amount = if wallet < AmountFen::ZERO {
        negate(wallet)?
    } else {
        wallet
    };
    super::client_keys::claim(conn, idempotency_key, "reversal", txn).await?;
    let key = format!("client:{idempotency_key}");
    // The same key again answers with what it did the first time.
    if let Some(existing) = by_key(conn, &key).await? {
        if existing.txn_id != txn {
            return Err(CoreError::IdempotencyKeyReused);
        }
        let transaction = match existing.posted_txn {
            Some(id) => post::load(conn, id).await?,
            None => None,
        };
        return Ok(ReversalOutcome {
            request: existing,
            transaction,
        });
    }
    let rules = rules(conn).await?;
    if principal.now() - found.posted_at > Duration::days(rules.window_days) {
        return Err(CoreError::Conflict(format!(
            "movements older than {} days are not reversed",
            rules.window_days
        )));
    }
    let already: bool = sqlx::query_scalar(
        "select exists (select 1 from ledger_transactions where reverses = $1)
             or exists (select 1 from reversal_requests where txn_id = $1 and state = 'requested')",
    )
    .bind(txn)
    .fetch_one(&mut *conn)
    .await?;
    if already {
        return Err(CoreError::Conflict(
            "this movement is already reversed or waiting for approval".into(),
        ));
    }
    let id = Uuid::now_v7();
    let now = principal.now();
    if amount > rules.approval_above {
        let request = insert_request(
            conn,
            principal,
            id,
            &found,
            amount,
            reason,
            &key,
            "requested",
        )
        .await?;
        return Ok(ReversalOutcome {
            request,
            transaction: None,
        });
    }
    let posted = post_reversal(conn, principal, &found, reason, &format!("{key}:posted")).await?;
    insert_request(conn, principal, id, &found, amount, reason, &key, "posted").await?;
    sqlx::query(
        "update reversal_requests set decided_by = $2, decided_at = $3, posted_txn = $4 where id = $1",
    )
    .bind(id)
    .bind(principal.user_id)
    .bind(now)
    .bind(posted.txn.id)
    .execute(&mut *conn)
    .await?;
    Ok(ReversalOutcome {
        request: get(conn, id).await?,
        transaction: Some(posted.txn),
    })
}

async fn by_key(conn: &mut PgConnection, key: &str) -> CoreResult<Option<ReversalRequest>> {
    let id: Option<Uuid> =
        sqlx::query_scalar("select id from reversal_requests where request_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    match id {
        Some(id) => get(conn, id).await.map(Some),
        None => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_request(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    found: &Transaction,
    amount: AmountFen,
    reason: &str,
    key: &str,
    state: &str,
) -> CoreResult<ReversalRequest> {
    sqlx::query(
        "insert into reversal_requests (id, txn_id, amount_fen, reason, request_key, requested_by, requested_at, state)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(found.id)
    .bind(amount)
    .bind(reason)
    .bind(key)
    .bind(principal.user_id)
    .bind(principal.now())
    .bind(state)
    .execute(&mut *conn)
    .await
    .map_err(|e| match CoreError::from(e) {
        e if e.violates("reversal_requests_one_open") => {
            CoreError::Conflict("this movement is already waiting for approval".into())
        }
        e => e,
    })?;
    audit::record(
        conn,
        principal,
        "reversal.request",
        "ledger_transaction",
        Some(found.id.to_string()),
        None,
        Some(serde_json::json!({ "amount_fen": amount, "reason": reason, "state": state })),
    )
    .await?;
    get(conn, id).await
}

/// Posts the reversal of `found`: its entries negated, cash in the poster's open shift.
/// A meter-side top-up whose credit was bought onto the meter (in transit or on it) is not
/// reversed: the money left the wallet, and only a verified `deduct` brings it back (DESIGN.md).
/// One still waiting to be bought is reversed and no longer bought.
async fn refuse_credit_on_meter(conn: &mut PgConnection, txn: Uuid) -> CoreResult<()> {
    let bought: Option<bool> = sqlx::query_scalar(
        "select bool_or(command_id is not null) from secure_purchase_requests where source_txn = $1",
    )
    .bind(txn)
    .fetch_one(&mut *conn)
    .await?;
    if bought == Some(true) {
        return Err(CoreError::Conflict(
            "this top-up's credit was sent to the meter (表内费控): it cannot be reversed; take the credit back off the meter with a deduct (表内扣回) on the meter-side page, then refund it at the counter".into(),
        ));
    }
    Ok(())
}

async fn post_reversal(
    conn: &mut PgConnection,
    principal: &Principal,
    found: &Transaction,
    reason: &str,
    key: &str,
) -> CoreResult<Posted> {
    // Checked again at posting, under the account's row lock (the settle worker's purchase
    // takes it first too): an approval may come after the purchase went out.
    sqlx::query("select 1 from shop_accounts where id = $1 for update")
        .bind(found.shop_account_id)
        .execute(&mut *conn)
        .await?;
    refuse_credit_on_meter(conn, found.id).await?;
    sqlx::query(
        "update secure_purchase_requests set done_at = $2 where source_txn = $1 and done_at is null",
    )
    .bind(found.id)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    let account = found
        .shop_account_id
        .ok_or_else(|| CoreError::Internal("a counter movement without account".into()))?;
    let method = found
        .method
        .as_deref()
        .and_then(|m| m.parse::<CounterMethod>().ok())
        .ok_or_else(|| CoreError::Internal("a counter movement without its method".into()))?;
    let mut legs = Vec::with_capacity(found.legs.len());
    for (k, a) in &found.legs {
        let k = match k.class() {
            AccountClass::ClearingCash => clearing_for(conn, principal, method).await?,
            _ => *k,
        };
        legs.push((k, negate(*a)?));
    }
    // Undoing a top-up takes money out: the overdraft rule applies. Undoing a refund always posts.
    let keep_at_least = if found.kind == TxnKind::TopUp {
        Some((
            AccountKey::Wallet(account),
            accounts::unposted_charges(conn, account).await?,
        ))
    } else {
        None
    };
    post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::Reversal,
            idempotency_key: key.to_owned(),
            request_hash: request_hash(&["reversal", &found.id.to_string()]),
            shop_account: Some(account),
            event_at: principal.now(),
            method: found.method.clone(),
            receipt: true,
            reverses: Some(found.id),
            memo: reason.to_owned(),
            legs,
            keep_at_least,
        },
    )
    .await
}

/// Approves request `id` and posts it (an approver other than the requester).
#[tracing::instrument(skip_all)]
pub async fn approve(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    idempotency_key: &str,
) -> CoreResult<ReversalOutcome> {
    let request = decidable(conn, principal, id).await?;
    super::client_keys::claim(conn, idempotency_key, "approve", id).await?;
    let (found, _, _) = original(conn, principal, request.txn_id).await?;
    let posted = post_reversal(
        conn,
        principal,
        &found,
        &request.reason,
        &format!("client:{idempotency_key}"),
    )
    .await?;
    decide(conn, principal, id, "posted", Some(posted.txn.id)).await?;
    Ok(ReversalOutcome {
        request: get(conn, id).await?,
        transaction: Some(posted.txn),
    })
}

/// Rejects request `id`: nothing moves.
pub async fn reject(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<ReversalRequest> {
    decidable(conn, principal, id).await?;
    decide(conn, principal, id, "rejected", None).await?;
    get(conn, id).await
}

/// Request `id`, locked, if `principal` may decide it now.
async fn decidable(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<ReversalRequest> {
    sqlx::query("select 1 from reversal_requests where id = $1 for update")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("reversal request"))?;
    let request = get(conn, id).await?;
    original(conn, principal, request.txn_id).await?;
    principal.require(Need::Act(Right::Approve))?;
    if request.requested_by == principal.user_id {
        return Err(CoreError::Forbidden(
            "an approver other than the requester decides".into(),
        ));
    }
    if request.state != "requested" {
        return Err(CoreError::Conflict(format!(
            "the request is {}",
            request.state
        )));
    }
    if principal.now() - request.requested_at > Duration::hours(REQUEST_LIFETIME_H) {
        decide(conn, principal, id, "withdrawn", None).await?;
        return Err(CoreError::Conflict(format!(
            "the request waited more than {REQUEST_LIFETIME_H} hours and is withdrawn"
        )));
    }
    Ok(request)
}

async fn decide(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    state: &str,
    posted: Option<Uuid>,
) -> CoreResult<()> {
    sqlx::query(
        "update reversal_requests set state = $2, decided_by = $3, decided_at = $4, posted_txn = $5 where id = $1",
    )
    .bind(id)
    .bind(state)
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .bind(principal.now())
    .bind(posted)
    .execute(&mut *conn)
    .await?;
    audit::record(
        conn,
        principal,
        &format!("reversal.{state}"),
        "reversal_request",
        Some(id.to_string()),
        None,
        None,
    )
    .await
}

async fn get(conn: &mut PgConnection, id: Uuid) -> CoreResult<ReversalRequest> {
    let r = sqlx::query(
        "select id, txn_id, amount_fen, reason, requested_by, requested_at, state, decided_by, decided_at, posted_txn
         from reversal_requests where id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("reversal request"))?;
    request_from_row(&r)
}

fn request_from_row(r: &sqlx::postgres::PgRow) -> CoreResult<ReversalRequest> {
    Ok(ReversalRequest {
        id: r.try_get("id")?,
        txn_id: r.try_get("txn_id")?,
        amount_fen: r.try_get("amount_fen")?,
        reason: r.try_get("reason")?,
        requested_by: r.try_get("requested_by")?,
        requested_at: r.try_get("requested_at")?,
        state: r.try_get("state")?,
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
        posted_txn: r.try_get("posted_txn")?,
    })
}

/// The approvals inbox: requests waiting for a decision (those past 72 hours read as withdrawn
/// and are left out), oldest first, within the caller's buildings.
pub async fn waiting(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Vec<ReversalRequest>> {
    principal.require_read_company()?;
    let since = principal.now() - Duration::hours(REQUEST_LIFETIME_H);
    let rows = sqlx::query(
        "select r.id, r.txn_id, r.amount_fen, r.reason, r.requested_by, r.requested_at, r.state,
                r.decided_by, r.decided_at, r.posted_txn
         from reversal_requests r
         join ledger_transactions t on t.id = r.txn_id
         join shop_accounts a on a.id = t.shop_account_id
         join shops s on s.id = a.shop_id
         where r.state = 'requested' and r.requested_at >= $1
           and ($2::uuid[] is null or s.building_id = any($2))
         order by r.requested_at limit 200",
    )
    .bind(since)
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(request_from_row).collect()
}
