//! The server side of what follows a close on the account page: the settlement slip, paying out
//! what the account is owed, collecting its arrears, and asking to write them off.

use super::{key_of, yuan_field};
use crate::billing::views::SettlementView;
use crate::web::server::{field_error, finish_keeping, read_err, session_for_change, UiError};
use crate::web::WebError;
use powertab_core::auth::Principal;
use powertab_core::billing::closing;
use powertab_core::billing::counter::CounterMethod;
use sqlx::PgConnection;
use uuid::Uuid;

/// The settlement of a closed account as the slip shows it.
pub async fn settlement_view(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<SettlementView, WebError> {
    let s = closing::settlement(conn, principal, id)
        .await
        .map_err(read_err)?;
    let tz = principal.tz();
    let local = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
    };
    Ok(SettlementView {
        closed_at: s.account.closed_at.map(local).unwrap_or_default(),
        receipt_no: s
            .close_out
            .as_ref()
            .and_then(|t| t.receipt_no.clone())
            .unwrap_or_default(),
        close_txn: s.close_out.as_ref().map(|t| t.id.to_string()),
        deposit_returned_fen: s.deposit_returned_fen.fen(),
        rounding_fen: s.rounding_fen.fen(),
        net_fen: s.net_fen.fen(),
        payable_fen: s.payable_fen.fen(),
        arrears_fen: s.arrears_fen.fen(),
        final_readings: s
            .final_readings
            .iter()
            .map(|r| {
                (
                    r.meter_number.clone(),
                    r.energy_wh.map(|e| e.to_string()).unwrap_or_default(),
                    r.manual,
                )
            })
            .collect(),
    })
}

/// Which of the three a form asked for.
#[derive(Clone, Copy)]
pub enum AfterClose {
    Payout,
    Collect,
}

/// Pays out (or collects) `amount` yuan by `method` on a closed account.
pub async fn account_money(
    what: AfterClose,
    csrf: String,
    key: String,
    account_id: String,
    amount: String,
    method: String,
) -> Result<(), WebError> {
    let form_id = match what {
        AfterClose::Payout => "payout-form",
        AfterClose::Collect => "collect-form",
    };
    let kept = serde_json::json!({ "amount": &amount, "method": &method });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        let amount = yuan_field(&amount, "amount")?;
        let method = method
            .parse::<CounterMethod>()
            .map_err(|_| field_error("method"))?;
        let txn = match what {
            AfterClose::Payout => {
                closing::payout(&mut tx, &principal, account, amount, method, &key).await
            }
            AfterClose::Collect => {
                closing::collect_arrears(&mut tx, &principal, account, amount, method, &key).await
            }
        }
        .map_err(|e| UiError::from(e).renamed(&[("amount_fen", "amount")]))?;
        tx.commit().await?;
        Ok(format!(
            "/accounts/{account}?ok=counter.done&receipt={}&txn={}",
            crate::web::server::encode(txn.receipt_no.as_deref().unwrap_or_default()),
            txn.id
        ))
    }
    .await;
    finish_keeping(result, form_id, &kept)
}

/// Asks an approver to write off the account's arrears.
pub async fn account_write_off(
    csrf: String,
    key: String,
    account_id: String,
    reason: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "reason": &reason });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        closing::request_write_off(&mut tx, &principal, account, &reason, &key).await?;
        tx.commit().await?;
        Ok(format!("/accounts/{account}?ok=account.write_off_asked"))
    }
    .await;
    finish_keeping(result, "write-off-form", &kept)
}
