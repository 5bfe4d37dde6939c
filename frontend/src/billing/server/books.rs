//! The server side of the books page (day report, daily close, cashier shifts) and of the
//! account page's invoice requests.

use super::{key_of, yuan_field};
use crate::billing::views::{BooksView, DayLineView, InvoiceView, ShiftView};
use crate::web::server::{
    field_error, finish, finish_keeping, read_err, read_session, session_for_change, UiError,
};
use crate::web::WebError;
use chrono::NaiveDate;
use powertab_core::auth::Principal;
use powertab_core::billing::{books, counter, invoices};
use powertab_core::tenancy::roles::{Need, Right};
use sqlx::PgConnection;
use uuid::Uuid;

fn local(principal: &Principal, t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&principal.tz())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// The report of `day` (default yesterday), the shifts and the latest closes.
pub async fn get_books(day: String) -> Result<BooksView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let yesterday = principal.today().pred_opt().unwrap_or(NaiveDate::MIN);
    let day = NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").unwrap_or(yesterday);
    let report = books::day_report(&mut tx, &principal, day)
        .await
        .map_err(read_err)?;
    let closes = books::closes(&mut tx, &principal).await.map_err(read_err)?;
    let shifts = counter::shifts(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    Ok(BooksView {
        day: day.to_string(),
        day_closed: report.closed,
        lines: report
            .lines
            .iter()
            .map(|l| DayLineView {
                kind: l.kind.clone(),
                method: l.method.clone(),
                count: l.count,
                amount_fen: l.amount_fen.fen(),
            })
            .collect(),
        blocking: report
            .open_shifts
            .iter()
            .map(|s| s.username.clone())
            .collect(),
        closed_through: closes
            .first()
            .map(|c| c.day.to_string())
            .unwrap_or_default(),
        closes: closes
            .iter()
            .take(30)
            .map(|c| (c.day.to_string(), local(&principal, c.closed_at)))
            .collect(),
        shifts: shifts
            .iter()
            .map(|s| ShiftView {
                username: s.username.clone(),
                opened_at: local(&principal, s.opened_at),
                closed_at: s
                    .closed_at
                    .map(|t| local(&principal, t))
                    .unwrap_or_default(),
                float_fen: s.float_fen.fen(),
                cash_taken_fen: s.cash_taken_fen.fen(),
                counted_cash_fen: s.counted_cash_fen.map(|a| a.fen()),
                difference_fen: s.difference_fen.map(|a| a.fen()),
            })
            .collect(),
        can_close: principal.can(Need::Act(Right::DailyClose)),
    })
}

pub async fn books_close(csrf: String, day: String) -> Result<(), WebError> {
    let kept = serde_json::json!({ "day": &day });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let day =
            NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").map_err(|_| field_error("day"))?;
        books::close_day(&mut tx, &principal, day).await?;
        tx.commit().await?;
        Ok(format!("/books?day={day}&ok=books.closed_ok"))
    }
    .await;
    finish_keeping(result, "close-day-form", &kept)
}

/// The account's invoice requests as the account page lists them.
pub async fn invoice_views(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> Result<Vec<InvoiceView>, WebError> {
    Ok(invoices::of_account(conn, principal, account)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|i| InvoiceView {
            id: i.id.to_string(),
            title: i.title,
            tax_number: i.tax_number,
            amount_fen: i.amount_fen.fen(),
            state: i.state,
            invoice_number: i.invoice_number.unwrap_or_default(),
            requested_at: local(principal, i.requested_at),
        })
        .collect())
}

pub async fn invoice_request(
    csrf: String,
    key: String,
    account_id: String,
    title: String,
    tax_number: String,
    amount: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "title": &title, "tax_number": &tax_number, "amount": &amount });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        let input = invoices::InvoiceInput {
            title,
            tax_number,
            amount_fen: yuan_field(&amount, "amount")?,
        };
        invoices::request(&mut tx, &principal, account, &input, &key)
            .await
            .map_err(|e| UiError::from(e).renamed(&[("amount_fen", "amount")]))?;
        tx.commit().await?;
        Ok(format!("/accounts/{account}?ok=invoice.asked"))
    }
    .await;
    finish_keeping(result, "invoice-form", &kept)
}

pub async fn invoice_settle(
    csrf: String,
    account_id: String,
    id: String,
    invoice_number: String,
    decision: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        let id: Uuid = id.parse().map_err(|_| field_error("id"))?;
        let (number, done) = match decision.as_str() {
            "issue" => (Some(invoice_number.as_str()), "invoice.issued"),
            "cancel" => (None, "invoice.cancelled"),
            _ => return Err(field_error("decision")),
        };
        invoices::settle(&mut tx, &principal, id, number).await?;
        tx.commit().await?;
        Ok(format!("/accounts/{account}?ok={done}"))
    }
    .await;
    finish(result)
}
