//! Emergency credit (应急电; DESIGN.md: Alarms, trip and restore): it moves no money; it lowers the
//! account's trip level — and its restore level with it, so a tripped shop gets its power back —
//! by the granted amount until it expires or the available balance is back above 0; at most
//! once per local calendar month. Granted by an operator with the `emergency_credit` right (tenants
//! grant it themselves with the self-service issue), audited; the rules run at once.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The most one grant may lower the levels by (¥10,000).
pub const AMOUNT_MAX_FEN: i64 = 1_000_000;
/// The longest a grant lasts.
pub const HOURS_MAX: i64 = 72;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmergencyCredit {
    pub id: Uuid,
    pub account_id: Uuid,
    pub amount_fen: AmountFen,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub granted_by: String,
}

/// Grants `amount` for `hours` to `account` and runs the rules.
#[tracing::instrument(skip_all, fields(%account))]
pub async fn grant(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    amount: AmountFen,
    hours: i64,
) -> CoreResult<EmergencyCredit> {
    crate::billing::accounts::get(conn, principal, account).await?;
    principal.require(Need::Act(Right::EmergencyCredit))?;
    grant_allowed(conn, principal, account, amount, hours).await
}

/// [`grant`] once the caller is known to be allowed: an operator with the right, or the
/// account's own tenant within the company's rules (`crate::selfservice`).
pub(crate) async fn grant_allowed(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    amount: AmountFen,
    hours: i64,
) -> CoreResult<EmergencyCredit> {
    let found = crate::billing::accounts::lock_for_money(conn, principal, account).await?;
    if amount <= AmountFen::ZERO || amount > AmountFen::from_fen(AMOUNT_MAX_FEN) {
        return Err(CoreError::field(
            "amount_fen",
            "more than 0 and at most ¥10,000",
        ));
    }
    if !(1..=HOURS_MAX).contains(&hours) {
        return Err(CoreError::field("hours", "from 1 to 72 hours"));
    }
    if found.state != crate::billing::accounts::AccountState::Open {
        return Err(CoreError::Conflict(
            "emergency credit is for open accounts".into(),
        ));
    }
    let now = principal.now();
    let month = now
        .with_timezone(&principal.tz())
        .format("%Y-%m")
        .to_string();
    let id = Uuid::now_v7();
    let granted_by = format!("user:{}", principal.user_id);
    let inserted = sqlx::query(
        "insert into emergency_credits (id, account_id, amount_fen, granted_at, expires_at, local_month, granted_by)
         values ($1, $2, $3, $4, $5, $6, $7) on conflict (account_id, local_month) do nothing",
    )
    .bind(id)
    .bind(account)
    .bind(amount)
    .bind(now)
    .bind(now + Duration::hours(hours))
    .bind(&month)
    .bind(&granted_by)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CoreError::Conflict(format!(
            "emergency credit was already granted in {month}: once per month"
        )));
    }
    audit::record(
        conn,
        principal,
        "account.emergency_credit",
        "shop_account",
        Some(account.to_string()),
        None,
        Some(serde_json::json!({ "amount_fen": amount, "hours": hours })),
    )
    .await?;
    super::evaluate(conn, principal, account).await?;
    get(conn, id).await
}

async fn get(conn: &mut PgConnection, id: Uuid) -> CoreResult<EmergencyCredit> {
    let r = sqlx::query(
        "select id, account_id, amount_fen, granted_at, expires_at, ended_at, granted_by
         from emergency_credits where id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(EmergencyCredit {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        amount_fen: r.try_get("amount_fen")?,
        granted_at: r.try_get("granted_at")?,
        expires_at: r.try_get("expires_at")?,
        ended_at: r.try_get("ended_at")?,
        granted_by: r.try_get("granted_by")?,
    })
}

/// The amount of `account`'s credit in force at `now` (0 without one), ending it first when it
/// expired or the available balance is back above 0. The caller holds the account's power row.
pub(crate) async fn in_force(
    conn: &mut PgConnection,
    account: Uuid,
    available: AmountFen,
    now: DateTime<Utc>,
) -> CoreResult<AmountFen> {
    let row = sqlx::query(
        "select id, amount_fen, expires_at from emergency_credits
         where account_id = $1 and ended_at is null and granted_at <= $2
         order by granted_at desc limit 1",
    )
    .bind(account)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(AmountFen::ZERO);
    };
    let expires_at: DateTime<Utc> = row.try_get("expires_at")?;
    if now >= expires_at || available > AmountFen::ZERO {
        sqlx::query("update emergency_credits set ended_at = $2 where id = $1")
            .bind(row.try_get::<Uuid, _>("id")?)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        return Ok(AmountFen::ZERO);
    }
    Ok(row.try_get("amount_fen")?)
}

/// The account's latest emergency credit, in force or not (404 for an account the caller may
/// not see).
pub async fn latest(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<Option<EmergencyCredit>> {
    crate::billing::accounts::get(conn, principal, account).await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "select id from emergency_credits where account_id = $1 order by granted_at desc limit 1",
    )
    .bind(account)
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => Ok(Some(get(conn, id).await?)),
        None => Ok(None),
    }
}
