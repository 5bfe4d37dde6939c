//! Maker-checker requests other than reversals (those keep their own table, `reversals.rs`):
//! a correction of a held reading above the company's energy threshold, and the write-off of a
//! closed account's arrears. A request is `requested → done | rejected | withdrawn` (after
//! [`REQUEST_LIFETIME_H`]); only a holder of the `approve` right other than the requester decides,
//! and nothing takes effect before it is approved. This module owns the request rows; what an
//! approval does belongs to the module of its kind (`review::approve_correction`,
//! `closing::approve_write_off`).

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::{AmountFen, EnergyWh};
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use crate::vocabulary;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

pub use super::reversals::REQUEST_LIFETIME_H;

vocabulary! {
    /// What an approval request asks for.
    pub enum ApprovalKind {
        /// Rate a held reading with an operator's energy above the company's threshold.
        ReadingCorrection = "reading_correction",
        /// Write off a closed account's arrears.
        WriteOff = "write_off",
        /// Move a failed purchase's money from `in_transit` back to the wallet (meter-side).
        PurchaseCancel = "purchase_cancel",
    }
}

/// A request waiting for, or decided by, an approver.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRequest {
    pub id: Uuid,
    pub kind: ApprovalKind,
    /// The meter (a correction) or the shop account (a write-off).
    pub target_id: Uuid,
    /// A correction: the held reading's time and the energy asked for.
    pub read_at: Option<DateTime<Utc>>,
    pub energy_wh: Option<EnergyWh>,
    /// A write-off: the amount.
    pub amount_fen: Option<AmountFen>,
    pub reason: String,
    pub requested_by: Uuid,
    pub requested_at: DateTime<Utc>,
    /// `requested`, `done`, `rejected` or `withdrawn`.
    pub state: String,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub outcome_txn: Option<Uuid>,
}

/// What a new request asks for.
pub(crate) struct Ask<'a> {
    pub kind: ApprovalKind,
    pub target_id: Uuid,
    pub read_at: Option<DateTime<Utc>>,
    pub energy_wh: Option<EnergyWh>,
    pub amount_fen: Option<AmountFen>,
    pub reason: &'a str,
    pub request_key: String,
}

/// A reason is required and short.
pub(crate) fn checked_reason(reason: &str) -> CoreResult<&str> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(CoreError::field(
            "reason",
            "say why, in at most 200 characters",
        ));
    }
    Ok(reason)
}

/// Records a request (the caller checked the target and the asker's right). The same request
/// key again answers with the first request.
pub(crate) async fn ask(
    conn: &mut PgConnection,
    principal: &Principal,
    ask: &Ask<'_>,
) -> CoreResult<ApprovalRequest> {
    let client_key = ask
        .request_key
        .strip_prefix("client:")
        .unwrap_or(&ask.request_key);
    super::client_keys::claim(conn, client_key, ask.kind.as_str(), ask.target_id).await?;
    if let Some(existing) = by_key(conn, &ask.request_key).await? {
        if existing.kind != ask.kind || existing.target_id != ask.target_id {
            return Err(CoreError::IdempotencyKeyReused);
        }
        return Ok(existing);
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into approval_requests (id, kind, target_id, read_at, energy_wh, amount_fen, reason,
             request_key, requested_by, requested_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(ask.kind)
    .bind(ask.target_id)
    .bind(ask.read_at)
    .bind(ask.energy_wh)
    .bind(ask.amount_fen)
    .bind(ask.reason)
    .bind(&ask.request_key)
    .bind(principal.user_id)
    .bind(principal.now())
    .execute(&mut *conn)
    .await
    .map_err(|e| match CoreError::from(e) {
        e if e.violates("approval_requests_one_open") => {
            CoreError::Conflict("a request for this is already waiting for an approver".into())
        }
        e => e,
    })?;
    audit::record(
        conn,
        principal,
        &format!("{}.request", ask.kind.as_str()),
        "approval_request",
        Some(id.to_string()),
        None,
        Some(serde_json::json!({
            "target_id": ask.target_id, "energy_wh": ask.energy_wh, "amount_fen": ask.amount_fen,
            "reason": ask.reason,
        })),
    )
    .await?;
    get(conn, id).await
}

async fn by_key(conn: &mut PgConnection, key: &str) -> CoreResult<Option<ApprovalRequest>> {
    let id: Option<Uuid> =
        sqlx::query_scalar("select id from approval_requests where request_key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
    match id {
        Some(id) => get(conn, id).await.map(Some),
        None => Ok(None),
    }
}

/// Request `id`, locked, when `principal` may decide it now: the approve right, not the
/// requester, still requested and within its lifetime (an expired one is withdrawn). The caller
/// checked that the principal may see the target.
pub(crate) async fn decidable(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<ApprovalRequest> {
    sqlx::query("select 1 from approval_requests where id = $1 for update")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("approval request"))?;
    let request = get(conn, id).await?;
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

/// Records the decision (`done`, `rejected`, `withdrawn`), audited.
pub(crate) async fn decide(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    state: &str,
    outcome_txn: Option<Uuid>,
) -> CoreResult<ApprovalRequest> {
    let done = sqlx::query(
        "update approval_requests set state = $2, decided_by = $3, decided_at = $4, outcome_txn = $5
         where id = $1 and state = 'requested'",
    )
    .bind(id)
    .bind(state)
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .bind(principal.now())
    .bind(outcome_txn)
    .execute(&mut *conn)
    .await?;
    debug_assert!(done.rows_affected() <= 1);
    let request = get(conn, id).await?;
    audit::record(
        conn,
        principal,
        &format!("{}.{state}", request.kind.as_str()),
        "approval_request",
        Some(id.to_string()),
        None,
        None,
    )
    .await?;
    Ok(request)
}

/// The kind and target of request `id` (for dispatching an approval to its module).
pub async fn kind_of(conn: &mut PgConnection, id: Uuid) -> CoreResult<ApprovalKind> {
    Ok(get(conn, id).await?.kind)
}

/// Rejects request `id` (any kind): nothing takes effect. The target must be visible to the
/// principal.
#[tracing::instrument(skip_all)]
pub async fn reject(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<ApprovalRequest> {
    principal.require_read_company()?;
    let request = get(conn, id).await?;
    if !visible(conn, principal, &request).await? {
        return Err(CoreError::NotFound("approval request"));
    }
    decidable(conn, principal, id).await?;
    decide(conn, principal, id, "rejected", None).await
}

/// Whether the principal's buildings cover the request's target.
pub(crate) async fn visible(
    conn: &mut PgConnection,
    principal: &Principal,
    request: &ApprovalRequest,
) -> CoreResult<bool> {
    let Some(limit) = principal.building_limit() else {
        return Ok(true);
    };
    let building: Option<Uuid> = match request.kind {
        ApprovalKind::ReadingCorrection => sqlx::query_scalar(
            "select s.building_id from meters m join shops s on s.id = m.shop_id where m.id = $1",
        ),
        ApprovalKind::WriteOff => sqlx::query_scalar(
            "select s.building_id from shop_accounts a join shops s on s.id = a.shop_id where a.id = $1",
        ),
        ApprovalKind::PurchaseCancel => sqlx::query_scalar(
            "select s.building_id from commands c join meters m on m.id = c.meter_id
             join shops s on s.id = m.shop_id where c.id = $1",
        ),
    }
    .bind(request.target_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(building.is_some_and(|b| limit.contains(&b)))
}

pub(crate) async fn get(conn: &mut PgConnection, id: Uuid) -> CoreResult<ApprovalRequest> {
    let r = sqlx::query(&format!("{SELECT} where r.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("approval request"))?;
    from_row(&r)
}

const SELECT: &str =
    "select r.id, r.kind, r.target_id, r.read_at, r.energy_wh, r.amount_fen, r.reason,
        r.requested_by, r.requested_at, r.state, r.decided_by, r.decided_at, r.outcome_txn
    from approval_requests r";

fn from_row(r: &sqlx::postgres::PgRow) -> CoreResult<ApprovalRequest> {
    Ok(ApprovalRequest {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        target_id: r.try_get("target_id")?,
        read_at: r.try_get("read_at")?,
        energy_wh: r.try_get("energy_wh")?,
        amount_fen: r.try_get("amount_fen")?,
        reason: r.try_get("reason")?,
        requested_by: r.try_get("requested_by")?,
        requested_at: r.try_get("requested_at")?,
        state: r.try_get("state")?,
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
        outcome_txn: r.try_get("outcome_txn")?,
    })
}

/// Requests waiting for a decision (those past their lifetime read as withdrawn and are left
/// out), oldest first, within the caller's buildings.
#[tracing::instrument(skip_all)]
pub async fn waiting(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Vec<ApprovalRequest>> {
    principal.require_read_company()?;
    let since = principal.now() - Duration::hours(REQUEST_LIFETIME_H);
    let rows = sqlx::query(&format!(
        "{SELECT}
         left join meters m on r.kind = 'reading_correction' and m.id = r.target_id
         left join shop_accounts a on r.kind = 'write_off' and a.id = r.target_id
         left join shops s on s.id = coalesce(m.shop_id, a.shop_id)
         where r.state = 'requested' and r.requested_at >= $1
           and ($2::uuid[] is null or s.building_id = any($2))
         order by r.requested_at limit 200"
    ))
    .bind(since)
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}
