//! Taking credit back off a meter-side meter before a counter refund (DESIGN.md: "refunding
//! credit on a meter is a verified `deduct`, then a counter refund"). An operator with the refund
//! right names an amount no larger than the shadow balance and the meter's read-back remaining
//! amount, with a reason; the deduct frame goes out on the purchase count like a purchase (one
//! money command at a time per meter), and only when the meter's counters verify it does the
//! settle worker move the amount `on_meter:{meter}` → wallet (`deduct_verified`). A meter that
//! answers 06 (less on it than asked) fails the deduct and nothing moves.

use super::frame::SecureOp;
use crate::auth::Principal;
use crate::billing::ledger::{post, AccountKey};
use crate::commands::Command;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::kernel::secrets::Keyring;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use sqlx::PgConnection;
use uuid::Uuid;

/// Queues a deduct of `amount` from meter-side meter `meter` of an open account.
pub async fn take_back(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
    meter: Uuid,
    amount: AmountFen,
    reason: &str,
) -> CoreResult<Command> {
    // 404 before 403: a meter the caller may not see does not exist for them.
    crate::field::meter(conn, principal, meter).await?;
    principal.require(Need::Act(Right::Refund))?;
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(CoreError::field(
            "reason",
            "say why, in at most 200 characters",
        ));
    }
    if amount <= AmountFen::ZERO {
        return Err(CoreError::field("amount_fen", "more than 0"));
    }
    let account: Option<(Uuid, String)> = sqlx::query_as(
        "select a.id, a.state from account_meters am join shop_accounts a on a.id = am.account_id
         where am.meter_id = $1 and am.left_at is null for update of a",
    )
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((account, state)) = account else {
        return Err(CoreError::Conflict(
            "the meter is in no open account: nothing of a tenant's is on it".into(),
        ));
    };
    if state != "open" {
        return Err(CoreError::Conflict(format!(
            "the account is {state}: its close takes the credit back"
        )));
    }
    let shadow = post::balance(conn, AccountKey::OnMeter(meter)).await?;
    let remaining: Option<i64> =
        sqlx::query_scalar("select remaining_fen from meter_secure_readback where meter_id = $1")
            .bind(meter)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(remaining) = remaining else {
        return Err(CoreError::Conflict(
            "the meter has not read back what it holds yet".into(),
        ));
    };
    let most = shadow.fen().min(remaining);
    if amount.fen() > most {
        return Err(CoreError::field(
            "amount_fen",
            format!(
                "at most {} yuan: what the meter holds and the platform reckons is on it",
                AmountFen::from_fen(most.max(0))
            ),
        ));
    }
    let source = format!("operator:{}", principal.user_id);
    let command = super::commands::enqueue(
        conn,
        keyring,
        principal,
        meter,
        SecureOp::Deduct,
        amount.fen(),
        &source,
    )
    .await?;
    audit::record(
        conn,
        principal,
        "secure.deduct",
        "meter",
        Some(meter.to_string()),
        None,
        Some(serde_json::json!({
            "account": account, "amount_fen": amount.fen(), "reason": reason, "command": command.id,
        })),
    )
    .await?;
    Ok(command)
}
