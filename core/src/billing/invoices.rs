//! Invoice (发票) requests of a shop account: recorded with the title, tax number and amount a
//! tenant asks for; an operator marks one issued with the number of the invoice made in the tax
//! system (PowerTab has no link to it), or cancels it. At most what the account paid in (top-ups
//! and online payments, less refunds and their reversals) is invoiced, counting every request not
//! cancelled.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// What a tenant asks to be invoiced.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceInput {
    /// 发票抬头: the company or person invoiced.
    pub title: String,
    /// 税号 (unified social credit code), empty for a person.
    #[serde(default)]
    pub tax_number: String,
    pub amount_fen: AmountFen,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceRequest {
    pub id: Uuid,
    pub account_id: Uuid,
    pub title: String,
    pub tax_number: String,
    pub amount_fen: AmountFen,
    /// `requested`, `issued` or `cancelled`.
    pub state: String,
    pub invoice_number: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
}

const SELECT: &str = "select id, account_id, title, tax_number, amount_fen, state, invoice_number,
        requested_at, issued_at from invoice_requests";

fn from_row(r: &sqlx::postgres::PgRow) -> CoreResult<InvoiceRequest> {
    Ok(InvoiceRequest {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        title: r.try_get("title")?,
        tax_number: r.try_get("tax_number")?,
        amount_fen: r.try_get("amount_fen")?,
        state: r.try_get("state")?,
        invoice_number: r.try_get("invoice_number")?,
        requested_at: r.try_get("requested_at")?,
        issued_at: r.try_get("issued_at")?,
    })
}

/// A tax number as the tax office writes it: 15 to 20 digits and capital letters.
fn valid_tax_number(text: &str) -> bool {
    text.is_empty()
        || ((15..=20).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
}

/// What the account paid in and may still be invoiced for.
async fn invoiceable(conn: &mut PgConnection, account: Uuid) -> CoreResult<AmountFen> {
    let paid: i64 = sqlx::query_scalar(
        "select coalesce(sum(e.amount_fen), 0)::bigint from ledger_transactions t
         join ledger_entries e on e.txn_id = t.id and e.account_key = 'wallet:' || $1::text
         where t.shop_account_id = $1
           and (t.kind in ('top_up', 'refund', 'online_payment', 'online_refund_requested', 'online_refund_failed')
                or (t.kind = 'reversal' and t.method is not null))",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    let asked: i64 = sqlx::query_scalar(
        "select coalesce(sum(amount_fen), 0)::bigint from invoice_requests
         where account_id = $1 and state <> 'cancelled'",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    AmountFen::from_fen(paid)
        .checked_sub(AmountFen::from_fen(asked))
        .ok_or_else(|| CoreError::Internal("invoiceable overflows".into()))
}

/// Records an invoice request for `account` (right `top_up`: the counter takes it). The same
/// key again answers with the first request.
#[tracing::instrument(skip_all)]
pub async fn request(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    input: &InvoiceInput,
    idempotency_key: &str,
) -> CoreResult<InvoiceRequest> {
    super::accounts::lock_for_money(conn, principal, account).await?;
    principal.require(Need::Act(Right::TopUp))?;
    super::client_keys::claim(conn, idempotency_key, "invoice", account).await?;
    let key = format!("client:{idempotency_key}");
    if let Some(r) = sqlx::query(&format!("{SELECT} where request_key = $1"))
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await?
    {
        let found = from_row(&r)?;
        if found.account_id != account || found.amount_fen != input.amount_fen {
            return Err(CoreError::IdempotencyKeyReused);
        }
        return Ok(found);
    }
    let title = input.title.trim();
    let tax_number = input.tax_number.trim().to_uppercase();
    let mut fields = std::collections::BTreeMap::new();
    if title.is_empty() || title.chars().count() > 200 {
        fields.insert("title".to_owned(), "1 to 200 characters".to_owned());
    }
    if !valid_tax_number(&tax_number) {
        fields.insert(
            "tax_number".to_owned(),
            "15 to 20 digits or capital letters, or empty for a person".to_owned(),
        );
    }
    let most = invoiceable(conn, account).await?;
    if input.amount_fen <= AmountFen::ZERO || input.amount_fen > most {
        fields.insert(
            "amount_fen".to_owned(),
            format!("more than 0 and at most ¥{most} (paid in and not yet invoiced)"),
        );
    }
    if !fields.is_empty() {
        return Err(CoreError::Validation {
            message: "please correct the highlighted fields".into(),
            fields,
        });
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into invoice_requests (id, account_id, title, tax_number, amount_fen, request_key, requested_by, requested_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(account)
    .bind(title)
    .bind(&tax_number)
    .bind(input.amount_fen)
    .bind(&key)
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    audit::record(
        conn,
        principal,
        "invoice.request",
        "shop_account",
        Some(account.to_string()),
        None,
        Some(serde_json::json!({ "title": title, "tax_number": tax_number, "amount_fen": input.amount_fen })),
    )
    .await?;
    get(conn, id).await
}

async fn get(conn: &mut PgConnection, id: Uuid) -> CoreResult<InvoiceRequest> {
    let r = sqlx::query(&format!("{SELECT} where id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("invoice request"))?;
    from_row(&r)
}

/// The invoice requests of `account`, newest first.
pub async fn of_account(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<Vec<InvoiceRequest>> {
    super::accounts::get(conn, principal, account).await?;
    let rows = sqlx::query(&format!(
        "{SELECT} where account_id = $1 order by requested_at desc limit 200"
    ))
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Requests waiting to be issued, oldest first, within the caller's buildings.
pub async fn waiting(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Vec<InvoiceRequest>> {
    principal.require_read_company()?;
    let rows = sqlx::query(
        "select i.id, i.account_id, i.title, i.tax_number, i.amount_fen, i.state, i.invoice_number,
                i.requested_at, i.issued_at
         from invoice_requests i join shop_accounts a on a.id = i.account_id join shops s on s.id = a.shop_id
         where i.state = 'requested' and ($1::uuid[] is null or s.building_id = any($1))
         order by i.requested_at limit 500",
    )
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Marks request `id` issued with the tax system's invoice number, or (`None`) cancels it
/// (right `accounts`). Only a waiting request changes.
#[tracing::instrument(skip_all)]
pub async fn settle(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    invoice_number: Option<&str>,
) -> CoreResult<InvoiceRequest> {
    let found = get(conn, id).await?;
    // 404 for an account the caller may not see.
    super::accounts::lock_for_money(conn, principal, found.account_id).await?;
    principal.require(Need::Act(Right::Accounts))?;
    let number = invoice_number.map(str::trim);
    if number.is_some_and(|n| {
        n.is_empty() || n.len() > 40 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }) {
        return Err(CoreError::field(
            "invoice_number",
            "the invoice's number: 1 to 40 letters, digits or dashes",
        ));
    }
    let done = sqlx::query(
        "update invoice_requests set state = $2, invoice_number = $3, issued_by = $4, issued_at = $5
         where id = $1 and state = 'requested'",
    )
    .bind(id)
    .bind(if number.is_some() { "issued" } else { "cancelled" })
    .bind(number)
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .bind(number.map(|_| principal.now()))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::Conflict(format!(
            "the request is {}",
            found.state
        )));
    }
    let after = get(conn, id).await?;
    audit::record(
        conn,
        principal,
        &format!("invoice.{}", after.state),
        "invoice_request",
        Some(id.to_string()),
        None,
        Some(serde_json::json!({ "invoice_number": number })),
    )
    .await?;
    Ok(after)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tax_numbers_are_digits_and_capitals() {
        assert!(super::valid_tax_number(""));
        assert!(super::valid_tax_number("91310000MA1FL0XX1A"));
        assert!(!super::valid_tax_number("9131 0000"));
        assert!(!super::valid_tax_number("91310000ma1fl0xx1a"));
    }
}
