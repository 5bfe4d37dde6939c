//! Server functions of the counter: the page's data, top-ups, refunds, shifts and opening an
//! account. Every money form carries the server-issued key (`key`) as its Idempotency-Key.

use super::views::*;
use crate::web::WebError;
use leptos::prelude::*;

#[server(prefix = "/sfn", endpoint = "counter")]
pub async fn get_counter(
    q: String,
    receipt: String,
    txn: String,
    open: String,
) -> Result<CounterView, WebError> {
    super::server::get_counter(q, receipt, txn, open).await
}

#[server(prefix = "/sfn", endpoint = "receipt")]
pub async fn get_receipt(id: String) -> Result<ReceiptView, WebError> {
    super::server::get_receipt(id).await
}

#[server(prefix = "/sfn", endpoint = "counter_top_up")]
pub async fn counter_top_up(
    csrf: String,
    key: String,
    account_id: String,
    amount: String,
    method: String,
    meter_id: Option<String>,
) -> Result<(), WebError> {
    super::server::move_money(csrf, key, account_id, amount, method, None, meter_id).await
}

#[server(prefix = "/sfn", endpoint = "counter_refund")]
pub async fn counter_refund(
    csrf: String,
    key: String,
    account_id: String,
    amount: String,
    method: String,
    reason: String,
) -> Result<(), WebError> {
    super::server::move_money(csrf, key, account_id, amount, method, Some(reason), None).await
}

#[server(prefix = "/sfn", endpoint = "shift_open")]
pub async fn shift_open(csrf: String, float: String) -> Result<(), WebError> {
    super::server::shift_open(csrf, float).await
}

#[server(prefix = "/sfn", endpoint = "shift_close")]
pub async fn shift_close(csrf: String, counted: String) -> Result<(), WebError> {
    super::server::shift_close(csrf, counted).await
}

#[server(prefix = "/sfn", endpoint = "account_open")]
pub async fn account_open(
    csrf: String,
    key: String,
    #[server(flatten)] form: OpenAccountForm,
) -> Result<(), WebError> {
    super::server::account_open(csrf, key, form).await
}

#[server(prefix = "/sfn", endpoint = "account_page")]
pub async fn get_account_page(id: String) -> Result<AccountPageView, WebError> {
    super::server::get_account_page(id).await
}

#[server(prefix = "/sfn", endpoint = "account_reverse")]
pub async fn account_reverse(
    csrf: String,
    key: String,
    account_id: String,
    txn_id: String,
    reason: String,
) -> Result<(), WebError> {
    super::server::account_reverse(csrf, key, account_id, txn_id, reason).await
}

#[server(prefix = "/sfn", endpoint = "account_close")]
pub async fn account_close(
    csrf: String,
    account_id: String,
    final_kwh: String,
    /// Meter-side: close with the last read-back amounts of meters that cannot be reached.
    #[server(default)]
    last_readback: Option<String>,
) -> Result<(), WebError> {
    super::server::account_close(csrf, account_id, final_kwh, last_readback).await
}

#[server(prefix = "/sfn", endpoint = "approvals")]
pub async fn get_approvals() -> Result<ApprovalsView, WebError> {
    super::server::review::get_approvals().await
}

#[server(prefix = "/sfn", endpoint = "approval_decide")]
pub async fn decide_approval(
    csrf: String,
    key: String,
    id: String,
    kind: String,
    decision: String,
) -> Result<(), WebError> {
    super::server::review::decide_approval(csrf, key, id, kind, decision).await
}

#[server(prefix = "/sfn", endpoint = "held_readings")]
pub async fn get_held() -> Result<HeldPageView, WebError> {
    super::server::review::get_held().await
}

#[server(prefix = "/sfn", endpoint = "held_release")]
pub async fn held_release(
    csrf: String,
    key: String,
    meter_id: String,
    kwh: String,
    reason: String,
) -> Result<(), WebError> {
    super::server::review::held_release(csrf, key, meter_id, kwh, reason).await
}

#[server(prefix = "/sfn", endpoint = "account_payout")]
pub async fn account_payout(
    csrf: String,
    key: String,
    account_id: String,
    amount: String,
    method: String,
) -> Result<(), WebError> {
    use super::server::settle::{account_money, AfterClose};
    account_money(AfterClose::Payout, csrf, key, account_id, amount, method).await
}

#[server(prefix = "/sfn", endpoint = "account_collect")]
pub async fn account_collect(
    csrf: String,
    key: String,
    account_id: String,
    amount: String,
    method: String,
) -> Result<(), WebError> {
    use super::server::settle::{account_money, AfterClose};
    account_money(AfterClose::Collect, csrf, key, account_id, amount, method).await
}

#[server(prefix = "/sfn", endpoint = "account_write_off")]
pub async fn account_write_off(
    csrf: String,
    key: String,
    account_id: String,
    reason: String,
) -> Result<(), WebError> {
    super::server::settle::account_write_off(csrf, key, account_id, reason).await
}

#[server(prefix = "/sfn", endpoint = "books")]
pub async fn get_books(day: String) -> Result<BooksView, WebError> {
    super::server::books::get_books(day).await
}

#[server(prefix = "/sfn", endpoint = "books_close")]
pub async fn books_close(csrf: String, day: String) -> Result<(), WebError> {
    super::server::books::books_close(csrf, day).await
}

#[server(prefix = "/sfn", endpoint = "account_link_tenant")]
pub async fn account_link_tenant(
    csrf: String,
    account_id: String,
    username: String,
) -> Result<(), WebError> {
    super::server::account_link_tenant(csrf, account_id, username).await
}

#[server(prefix = "/sfn", endpoint = "invoice_request")]
pub async fn invoice_request(
    csrf: String,
    key: String,
    account_id: String,
    title: String,
    tax_number: String,
    amount: String,
) -> Result<(), WebError> {
    super::server::books::invoice_request(csrf, key, account_id, title, tax_number, amount).await
}

#[server(prefix = "/sfn", endpoint = "invoice_settle")]
pub async fn invoice_settle(
    csrf: String,
    account_id: String,
    id: String,
    invoice_number: String,
    decision: String,
) -> Result<(), WebError> {
    super::server::books::invoice_settle(csrf, account_id, id, invoice_number, decision).await
}
