//! The sandbox provider's hosted pay page (issue 14: Sandbox provider — demos and tests only).
//! It stands where WeChat Pay's or Alipay's cashier would: `GET /sandbox/pay/{slug}/{out_trade_no}`
//! shows the order and a pay button (a plain form: it works without JavaScript);
//! `POST` "pays" it: a transaction number is made, and a moment later a paid notice signed with
//! the company's sandbox key reaches the notify URL's handler — the same verification, inbox
//! and booking a real provider's notice goes through. Only companies a platform admin switched
//! the sandbox on for have this page; it moves no real money.

use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use powertab_core::kernel::money::AmountFen;
use powertab_core::payments::sandbox;

pub fn router() -> Router<AppState> {
    Router::new().route("/sandbox/pay/{slug}/{out_trade_no}", get(page).post(pay))
}

/// The order as the page shows it: (company name, amount, state, order id, company id).
async fn order_of(
    state: &AppState,
    slug: &str,
    out_trade_no: &str,
) -> Option<(String, AmountFen, String, uuid::Uuid, i64)> {
    let company: Option<(String, String, i64)> = sqlx::query_as(
        "select name, schema_name, id from control.company where slug = $1 and sandbox_payments",
    )
    .bind(slug)
    .fetch_optional(&state.pool)
    .await
    .ok()
    .flatten();
    let (name, schema, company_id) = company?;
    let schema = powertab_core::kernel::names::SchemaName::from_stored(&schema).ok()?;
    let mut tx = powertab_core::db::begin_in(&state.pool, &schema)
        .await
        .ok()?;
    let order: Option<(i64, String, uuid::Uuid)> = sqlx::query_as(
        "select amount_fen, state, id from payment_orders where provider = 'sandbox' and out_trade_no = $1",
    )
    .bind(out_trade_no)
    .fetch_optional(&mut *tx)
    .await
    .ok()
    .flatten();
    let (fen, order_state, id) = order?;
    Some((name, AmountFen::from_fen(fen), order_state, id, company_id))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(
    State(state): State<AppState>,
    Path((slug, out_trade_no)): Path<(String, String)>,
) -> Response {
    let Some((company, amount, order_state, id, _)) = order_of(&state, &slug, &out_trade_no).await
    else {
        return (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    };
    let action = match order_state.as_str() {
        "created" => format!(
            "<form method=\"post\"><button type=\"submit\" id=\"sandbox-pay\">确认支付 Pay ¥{amount}</button></form>"
        ),
        "credited" | "delivered" => format!(
            "<p id=\"sandbox-paid\">支付成功，已入账 Paid and credited</p>\
             <p><a href=\"/my/orders/{id}\" id=\"sandbox-back\">返回 Back</a></p>"
        ),
        other => format!("<p id=\"sandbox-state\">{}</p>", escape(other)),
    };
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>沙箱支付 Sandbox pay</title></head><body style=\"font-family:sans-serif;max-width:360px;margin:2em auto\">\
         <p><strong>沙箱支付（测试用，不产生真实资金）</strong><br>Sandbox payment: no real money</p>\
         <h1>{}</h1><p>订单 {}</p><p id=\"sandbox-amount\">¥{amount}</p>{action}</body></html>",
        escape(&company),
        escape(&out_trade_no)
    ))
    .into_response()
}

async fn pay(
    State(state): State<AppState>,
    Path((slug, out_trade_no)): Path<(String, String)>,
) -> Response {
    let Some((_, amount, order_state, id, company_id)) =
        order_of(&state, &slug, &out_trade_no).await
    else {
        return (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    };
    let Some(sandbox_key) = state.config.sandbox_payment_key.clone() else {
        return (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    };
    // Back where the payer came from, as a provider's return URL: the order's progress page.
    let back = format!("/my/orders/{id}");
    if order_state != "created" {
        return Redirect::to(&back).into_response();
    }
    // The sandbox's own book first, as a provider's: one order, one payment (a second click
    // sends the same payment again, booked once), and an order closed there cannot be paid.
    let now = state.auth.clock.now();
    let paid = match state.pool.acquire().await {
        Ok(mut conn) => {
            powertab_core::payments::query::sandbox_pay(
                &mut conn,
                company_id,
                &out_trade_no,
                amount,
                now,
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    let transaction_id = match paid {
        Ok(Some(transaction_id)) => transaction_id,
        Ok(None) => return Redirect::to(&back).into_response(),
        Err(e) => {
            tracing::error!(cause = %e, "the sandbox could not take the payment");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
    };
    let body = serde_json::to_vec(&sandbox::NoticeBody {
        out_trade_no: out_trade_no.clone(),
        transaction_id,
        amount_fen: amount.fen(),
        paid_at_ms: now.timestamp_millis(),
        trade_state: "SUCCESS".into(),
    })
    .unwrap_or_default();
    let key = sandbox::company_key(&sandbox_key, &slug);
    let (timestamp, nonce) = (
        now.timestamp().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (
            sandbox::SIGNATURE_HEADER,
            sandbox::sign(&key, &timestamp, &nonce, &body),
        ),
        (sandbox::TIMESTAMP_HEADER, timestamp),
        (sandbox::NONCE_HEADER, nonce),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    // Asynchronous, as a provider's notice is: the tenant's page follows the order meanwhile.
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, _) =
            crate::api::payments::accept(&state, "sandbox", &slug, &headers, &body).await;
        if status != StatusCode::OK {
            tracing::warn!(%status, "the sandbox's own paid notice was not accepted");
        }
    });
    Redirect::to(&back).into_response()
}
