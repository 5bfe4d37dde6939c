//! Orders without a paid notice (issue 14: Payments — "a job queries the provider about orders
//! without a notice"). A notice can be lost (the provider gave up, our server was down for
//! longer than its retries); the payments worker asks the provider about every order of the last
//! two days that has no payment yet, at most once a minute per order:
//!
//! - **paid there** → booked exactly as the notice would have been ([`orders::credit`], the same
//!   key `pay:{provider}:{transaction_id}`: a late notice afterwards changes nothing, and an
//!   expired order is still credited and flagged);
//! - **not paid and our order expired** → closed at the provider, so it can no longer be paid;
//!   if the payer got in first, the close answers "paid" and the payment is booked instead.
//!
//! Only the sandbox provider exists so far; its side is `control.sandbox_trades`. WeChat Pay's
//! and Alipay's order query and close calls will answer the same [`TradeState`].

use super::orders::{self, PaidNotice, Provider};
use crate::auth::Principal;
use crate::kernel::error::CoreResult;
use crate::kernel::money::AmountFen;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Orders younger than this with no notice are left to the notice.
pub const QUERY_AFTER_S: i64 = 60;
/// The same order is asked about at most this often.
pub const QUERY_EVERY_S: i64 = 60;
/// Orders older than this are no longer asked about (reconciliation catches the rest).
pub const QUERY_WITHIN_H: i64 = 48;
/// Orders asked about per company per pass.
pub const QUERY_BATCH: i64 = 200;

/// What the provider says of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeState {
    Paid {
        transaction_id: String,
        amount_fen: AmountFen,
        paid_at: DateTime<Utc>,
    },
    NotPaid,
    Closed,
}

/// The sandbox provider's answer for `out_trade_no` of company `company_id`.
pub async fn sandbox_query(
    conn: &mut PgConnection,
    company_id: i64,
    out_trade_no: &str,
) -> CoreResult<TradeState> {
    let row = sqlx::query(
        "select state, transaction_id, amount_fen, paid_at from control.sandbox_trades
         where company_id = $1 and out_trade_no = $2",
    )
    .bind(company_id)
    .bind(out_trade_no)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(TradeState::NotPaid);
    };
    if row.try_get::<String, _>("state")? == "closed" {
        return Ok(TradeState::Closed);
    }
    Ok(TradeState::Paid {
        transaction_id: row
            .try_get::<Option<String>, _>("transaction_id")?
            .unwrap_or_default(),
        amount_fen: AmountFen::from_fen(row.try_get::<Option<i64>, _>("amount_fen")?.unwrap_or(0)),
        paid_at: row
            .try_get::<Option<DateTime<Utc>>, _>("paid_at")?
            .unwrap_or_default(),
    })
}

/// Closes an unpaid order at the sandbox provider; answers what it is now (paid, when the payer
/// got there first).
pub async fn sandbox_close(
    conn: &mut PgConnection,
    company_id: i64,
    out_trade_no: &str,
    now: DateTime<Utc>,
) -> CoreResult<TradeState> {
    sqlx::query(
        "insert into control.sandbox_trades (company_id, out_trade_no, state, created_at)
         values ($1, $2, 'closed', $3) on conflict do nothing",
    )
    .bind(company_id)
    .bind(out_trade_no)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sandbox_query(conn, company_id, out_trade_no).await
}

/// The sandbox provider takes a payment of `out_trade_no` (its pay page); `None` when the order
/// was closed there.
pub async fn sandbox_pay(
    conn: &mut PgConnection,
    company_id: i64,
    out_trade_no: &str,
    amount: AmountFen,
    now: DateTime<Utc>,
) -> CoreResult<Option<String>> {
    let transaction_id = format!("SBX-{out_trade_no}");
    sqlx::query(
        "insert into control.sandbox_trades
             (company_id, out_trade_no, state, transaction_id, amount_fen, paid_at, created_at)
         values ($1, $2, 'paid', $3, $4, $5, $5) on conflict do nothing",
    )
    .bind(company_id)
    .bind(out_trade_no)
    .bind(&transaction_id)
    .bind(amount.fen())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(match sandbox_query(conn, company_id, out_trade_no).await? {
        TradeState::Paid { transaction_id, .. } => Some(transaction_id),
        _ => None,
    })
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryReport {
    pub asked: u64,
    pub credited: u64,
    pub closed: u64,
}

/// Asks the provider about the company's orders without a payment (see the module doc); the
/// principal is the payments worker in the company, `conn` its schema's transaction.
pub async fn query_unnotified(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<QueryReport> {
    let now = principal.now();
    let company_id = principal.company()?.id;
    let due: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "select id, provider, out_trade_no, state from payment_orders
         where transaction_id is null and closed_at is null and state in ('created', 'expired')
           and created_at <= $1 and created_at > $2 and (queried_at is null or queried_at <= $3)
         order by created_at limit $4
         for update skip locked",
    )
    .bind(now - Duration::seconds(QUERY_AFTER_S))
    .bind(now - Duration::hours(QUERY_WITHIN_H))
    .bind(now - Duration::seconds(QUERY_EVERY_S))
    .bind(QUERY_BATCH)
    .fetch_all(&mut *conn)
    .await?;
    let mut report = QueryReport::default();
    for (id, provider, out_trade_no, state) in due {
        let Some(provider) = Provider::parse(&provider).filter(|p| *p == Provider::Sandbox) else {
            continue;
        };
        report.asked += 1;
        let mut answer = sandbox_query(conn, company_id, &out_trade_no).await?;
        if answer == TradeState::NotPaid && state == "expired" {
            answer = sandbox_close(conn, company_id, &out_trade_no, now).await?;
        }
        match answer {
            TradeState::Paid {
                transaction_id,
                amount_fen,
                paid_at,
            } => {
                let notice = PaidNotice {
                    provider,
                    out_trade_no: out_trade_no.clone(),
                    transaction_id,
                    amount_fen,
                    paid_at,
                };
                orders::credit(conn, principal, &notice).await?;
                report.credited += 1;
                tracing::warn!(order = %id, "a payment without a notice was found by the order query");
            }
            TradeState::Closed => {
                sqlx::query(
                    "update payment_orders set closed_at = $2, updated_at = $2 where id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                report.closed += 1;
            }
            TradeState::NotPaid => {}
        }
        sqlx::query("update payment_orders set queried_at = $2 where id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    if report.asked > 0 {
        metrics::counter!("powertab_payment_queries_total").increment(report.asked);
    }
    Ok(report)
}
