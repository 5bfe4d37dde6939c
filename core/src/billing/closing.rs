//! Closing an account (销户) in the order DESIGN.md (Account lifecycle) pins, for platform-side
//! meters: (1) `closing` — top-ups and refunds are refused from here on; (2) a final reading per
//! meter: its latest stored one when fresh, else one typed in (audited, never ingest's baseline);
//! (3) everything rated and posted; (4)–(5) one transaction keyed `close:<account>`: each meter's
//! carried rest of a fen rounded half-up to `rounding`, the deposit back to the wallet, and what
//! is left to `refunds_payable` (paid out later at the counter) or `arrears_receivable` (state
//! `closed_in_arrears`); (6) the meters leave the account and the shop is vacant again.
//! Then payouts of what the account is owed; and of a `closed_in_arrears` account, collection of
//! its arrears at the counter or their write-off with an approver (an `approvals` request) —
//! either way the account is `closed` once nothing is owed.

use super::accounts::{self, negate, AccountState, ShopAccount};
use super::approvals::{self, ApprovalKind, ApprovalRequest, Ask};
use super::counter::{clearing_for, CounterMethod};
use super::ledger::post::{self, request_hash, Posting, Transaction};
use super::ledger::{AccountKey, TxnKind};
use super::rating;
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::{AmountFen, EnergyWh};
use crate::tariff::rating::E5_PER_FEN;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// A final reading typed in for a meter without a fresh stored one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct FinalReading {
    pub meter_id: Uuid,
    pub energy_wh: EnergyWh,
}

/// What closing asks for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CloseAccount {
    #[serde(default)]
    pub final_readings: Vec<FinalReading>,
    /// Meter-side accounts whose meters cannot be reached: close with each meter's last
    /// read-back remaining amount (returned to the wallet; audited) instead of waiting for the
    /// secure trip and deduct.
    #[serde(default)]
    pub close_with_last_readback: bool,
}

/// The settlement of a closed account (the slip the counter prints).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Settlement {
    pub account: ShopAccount,
    /// The close-out transaction (none when nothing was left to settle).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub close_out: Option<Transaction>,
    pub deposit_returned_fen: AmountFen,
    pub rounding_fen: AmountFen,
    /// Owed to the tenant (positive) or by the tenant (negative) after the close.
    pub net_fen: AmountFen,
    /// What is still to be paid out (refunds payable less payouts made).
    pub payable_fen: AmountFen,
    /// What the tenant still owes (arrears less collections and write-offs).
    pub arrears_fen: AmountFen,
    /// Each meter's final reading.
    pub final_readings: Vec<ClosingReading>,
    /// A meter-side account still taking its credit back off its meters (secure trip, counters,
    /// deduct): what it waits for. The close finishes by itself when they are done.
    pub pending: Option<String>,
}

/// A meter's final reading as closing took it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosingReading {
    pub meter_id: Uuid,
    pub meter_number: String,
    pub energy_wh: Option<EnergyWh>,
    pub read_at: Option<DateTime<Utc>>,
    /// Typed in by an operator.
    pub manual: bool,
}

/// Closes `account_id`. Idempotent by its derived key: closing a closed account answers with its
/// settlement.
#[tracing::instrument(skip_all)]
pub async fn close(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    input: &CloseAccount,
) -> CoreResult<Settlement> {
    let account = accounts::lock_for_money(conn, principal, account_id).await?;
    principal.require(Need::Act(Right::Accounts))?;
    if matches!(
        account.state,
        AccountState::Closed | AccountState::ClosedInArrears
    ) {
        return settlement(conn, principal, account_id).await;
    }
    // (1) Closing: the counter refuses top-ups and refunds from here on.
    sqlx::query("update shop_accounts set state = 'closing', updated_at = now() where id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    let meter_side = account.prepayment_mode == "meter";
    let mut meter_stages = Vec::new();
    if meter_side {
        if input.close_with_last_readback {
            crate::secure::closing::decide_unreachable(conn, principal, account_id).await?;
        }
        // (2) for meter-side meters: their credit comes back first (the settle worker).
        meter_stages = crate::secure::closing::stages(conn, account_id).await?;
        if meter_stages
            .iter()
            .any(|m| m.stage.as_deref() != Some("done"))
        {
            return settlement(conn, principal, account_id).await;
        }
    }
    // (2)–(3) Final readings, everything rated and posted.
    let company = rating::CompanyRules::load(conn).await?;
    let fresh_after =
        principal.now() - chrono::Duration::seconds(i64::from(company.settings.stale_meter_s));
    let mut rest_e5 = 0i64;
    for (i, meter) in account.meters.iter().enumerate() {
        rating::rate_meter(conn, principal, &company, account_id, meter.meter_id).await?;
        let latest: Option<(DateTime<Utc>, EnergyWh)> =
            sqlx::query("select read_at, energy_wh from meter_latest where meter_id = $1")
                .bind(meter.meter_id)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get("read_at")?, r.try_get("energy_wh")?)))
                .transpose()?;
        let typed = input
            .final_readings
            .iter()
            .find(|f| f.meter_id == meter.meter_id)
            .map(|f| f.energy_wh);
        let (final_reading, manual) = match (latest, typed) {
            (Some((at, wh)), _) if at >= fresh_after => ((at, wh), false),
            (_, Some(wh)) => ((principal.now(), wh), true),
            _ => {
                return Err(CoreError::Validation {
                    message: "a final reading is needed".into(),
                    fields: [(
                        format!("final_readings.{i}.energy_wh"),
                        format!(
                            "meter {} has no fresh reading: type its final reading",
                            meter.meter_number
                        ),
                    )]
                    .into(),
                });
            }
        };
        let rest = rating::rate_final(
            conn,
            principal,
            account_id,
            meter.meter_id,
            manual.then_some(final_reading),
        )
        .await?;
        rest_e5 = rest_e5
            .checked_add(rest)
            .ok_or_else(|| CoreError::Internal("rest overflows".into()))?;
        // Fees up to the closing day are the account's too.
        super::fees::post_due(conn, principal, account_id, meter.meter_id).await?;
        rating::post_if_due(conn, principal, &company, account_id, meter.meter_id, true).await?;
        sqlx::query(
            "update account_meters set closing_energy_wh = $3, closing_read_at = $4, closing_manual = $5, left_at = $6
             where account_id = $1 and meter_id = $2",
        )
        .bind(account_id)
        .bind(meter.meter_id)
        .bind(final_reading.1)
        .bind(final_reading.0)
        .bind(manual)
        .bind(principal.now())
        .execute(&mut *conn)
        .await?;
    }
    if meter_side {
        settle_meters(conn, principal, account_id, &meter_stages).await?;
    }
    // (4)–(5) One close-out transaction.
    let wallet = post::balance(conn, AccountKey::Wallet(account_id)).await?;
    let deposit = post::balance(conn, AccountKey::Deposit(account_id)).await?;
    // Each meter's rest rounded half-up; summed per account, as the remainders are.
    let rounding = AmountFen::from_fen(if rest_e5 * 2 >= E5_PER_FEN {
        rest_e5.div_euclid(E5_PER_FEN) + 1
    } else {
        rest_e5.div_euclid(E5_PER_FEN)
    });
    let net = wallet
        .checked_add(deposit)
        .and_then(|n| n.checked_sub(rounding))
        .ok_or_else(|| CoreError::Internal("settlement overflows".into()))?;
    let mut legs = Vec::new();
    for (key, amount) in [
        (AccountKey::Wallet(account_id), negate(wallet)?),
        (AccountKey::Deposit(account_id), negate(deposit)?),
        (AccountKey::Rounding, rounding),
        (
            if net > AmountFen::ZERO {
                AccountKey::RefundsPayable
            } else {
                AccountKey::ArrearsReceivable(account_id)
            },
            net,
        ),
    ] {
        if amount != AmountFen::ZERO {
            legs.push((key, amount));
        }
    }
    if !legs.is_empty() {
        post::post(
            conn,
            principal,
            &Posting {
                kind: TxnKind::CloseOut,
                idempotency_key: format!("close:{account_id}"),
                request_hash: request_hash(&["close", &account_id.to_string()]),
                shop_account: Some(account_id),
                event_at: principal.now(),
                method: None,
                receipt: false,
                reverses: None,
                memo: "销户结算".into(),
                legs,
                keep_at_least: None,
            },
        )
        .await?;
    }
    // (6) The meters are released and the shop is vacant again.
    let state = if net < AmountFen::ZERO {
        AccountState::ClosedInArrears
    } else {
        AccountState::Closed
    };
    sqlx::query(
        "update shop_accounts set state = $2, closed_at = $3, updated_at = now() where id = $1",
    )
    .bind(account_id)
    .bind(state)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    sqlx::query("update shops set status = 'vacant', updated_at = now() where id = $1")
        .bind(account.shop_id)
        .execute(&mut *conn)
        .await?;
    let done = settlement(conn, principal, account_id).await?;
    audit::record(
        conn,
        principal,
        "account.close",
        "shop_account",
        Some(account_id.to_string()),
        None,
        Some(serde_json::json!({
            "net_fen": done.net_fen, "deposit_returned_fen": done.deposit_returned_fen,
            "rounding_fen": done.rounding_fen, "state": state,
        })),
    )
    .await?;
    Ok(done)
}

/// Meter-side close (DESIGN.md step 4): per meter, what the shadow balance still holds after the
/// deduct leaves `on_meter`: an unreachable meter's last read-back amount R to the wallet (the
/// operator's decision), the rest — shadow − R, the drift — to `adjustments`.
async fn settle_meters(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    meters: &[crate::secure::closing::MeterClosing],
) -> CoreResult<()> {
    for meter in meters {
        let m = meter.meter_id;
        if post::balance(conn, AccountKey::InTransit(m)).await? != AmountFen::ZERO {
            return Err(CoreError::Conflict(
                "a purchase's money is still in transit to a meter: it must be verified, or cancelled with approval, first"
                    .into(),
            ));
        }
        let shadow = post::balance(conn, AccountKey::OnMeter(m)).await?;
        let returned = AmountFen::from_fen(if meter.decided_by.is_some() {
            meter.remaining_fen.unwrap_or(0).max(0)
        } else {
            0
        });
        let drift = shadow
            .checked_sub(returned)
            .ok_or_else(|| CoreError::Internal("drift overflows".into()))?;
        let mut legs = Vec::new();
        for (key, amount) in [
            (AccountKey::OnMeter(m), negate(shadow)?),
            (AccountKey::Wallet(account_id), returned),
            (AccountKey::Adjustments, drift),
        ] {
            if amount != AmountFen::ZERO {
                legs.push((key, amount));
            }
        }
        if legs.is_empty() {
            continue;
        }
        post::post(
            conn,
            principal,
            &Posting {
                kind: TxnKind::MeterSettled,
                idempotency_key: format!("close:{account_id}:meter:{m}"),
                request_hash: request_hash(&[
                    "close_meter",
                    &account_id.to_string(),
                    &m.to_string(),
                ]),
                shop_account: Some(account_id),
                event_at: principal.now(),
                method: None,
                receipt: false,
                reverses: None,
                memo: "销户：表内余额结清".into(),
                legs,
                keep_at_least: None,
            },
        )
        .await?;
        audit::record(
            conn,
            principal,
            "account.close.meter_settled",
            "meter",
            Some(m.to_string()),
            None,
            Some(serde_json::json!({
                "account_id": account_id, "shadow_fen": shadow, "returned_fen": returned,
                "adjusted_fen": drift, "decided_by": meter.decided_by,
            })),
        )
        .await?;
    }
    Ok(())
}

/// The settlement of a closed account.
pub async fn settlement(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
) -> CoreResult<Settlement> {
    let account = accounts::get(conn, principal, account_id).await?;
    let id: Option<Uuid> =
        sqlx::query_scalar("select id from ledger_transactions where idempotency_key = $1")
            .bind(format!("close:{account_id}"))
            .fetch_optional(&mut *conn)
            .await?;
    let close_out = match id {
        Some(id) => post::load(conn, id).await?,
        None => None,
    };
    let leg = |class: &dyn Fn(&AccountKey) -> bool| {
        close_out
            .as_ref()
            .and_then(|t| t.legs.iter().find(|(k, _)| class(k)).map(|(_, a)| *a))
            .unwrap_or(AmountFen::ZERO)
    };
    let deposit_returned = negate(leg(&|k| matches!(k, AccountKey::Deposit(_))))?;
    let rounding = leg(&|k| *k == AccountKey::Rounding);
    let net = leg(&|k| {
        matches!(
            k,
            AccountKey::RefundsPayable | AccountKey::ArrearsReceivable(_)
        )
    });
    let payable = payable(conn, account_id).await?;
    let arrears_fen = arrears_owed(conn, account_id).await?;
    let final_readings = sqlx::query(
        "select am.meter_id, m.meter_number, am.closing_energy_wh, am.closing_read_at, am.closing_manual
         from account_meters am join meters m on m.id = am.meter_id
         where am.account_id = $1 order by m.meter_number",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(ClosingReading {
            meter_id: r.try_get("meter_id")?,
            meter_number: r.try_get("meter_number")?,
            energy_wh: r.try_get("closing_energy_wh")?,
            read_at: r.try_get("closing_read_at")?,
            manual: r.try_get("closing_manual")?,
        })
    })
    .collect::<CoreResult<Vec<_>>>()?;
    let pending = if account.state == AccountState::Closing && account.prepayment_mode == "meter" {
        let waiting: Vec<String> = crate::secure::closing::stages(conn, account_id)
            .await?
            .iter()
            .filter(|m| m.stage.as_deref() != Some("done"))
            .map(|m| {
                format!(
                    "{} ({})",
                    m.meter_id,
                    m.stage.as_deref().unwrap_or("trip queued")
                )
            })
            .collect();
        (!waiting.is_empty()).then(|| {
            format!(
                "taking the credit back off the meters (secure trip, then deduct): {}",
                waiting.join(", ")
            )
        })
    } else {
        None
    };
    Ok(Settlement {
        pending,
        arrears_fen,
        final_readings,
        account,
        close_out,
        deposit_returned_fen: deposit_returned,
        rounding_fen: rounding,
        net_fen: net,
        payable_fen: payable,
    })
}

/// What `refunds_payable` still owes this account: its close-out less its payouts.
async fn payable(conn: &mut PgConnection, account_id: Uuid) -> CoreResult<AmountFen> {
    let fen: i64 = sqlx::query_scalar(
        "select coalesce(sum(e.amount_fen), 0)::bigint from ledger_entries e
         join ledger_transactions t on t.id = e.txn_id
         where t.shop_account_id = $1 and e.account_key = 'refunds_payable'",
    )
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(AmountFen::from_fen(fen))
}

/// Pays out what a closed account is owed (right `payout`), at most that, with a receipt.
#[tracing::instrument(skip_all)]
pub async fn payout(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    amount: AmountFen,
    method: CounterMethod,
    idempotency_key: &str,
) -> CoreResult<Transaction> {
    let account = accounts::lock_for_money(conn, principal, account_id).await?;
    principal.require(Need::Act(Right::Payout))?;
    super::client_keys::claim(conn, idempotency_key, "payout", account_id).await?;
    let key = format!("client:{idempotency_key}");
    let digest = request_hash(&[
        "payout",
        &account_id.to_string(),
        &amount.fen().to_string(),
        method.as_str(),
    ]);
    if !matches!(account.state, AccountState::Closed) {
        return Err(CoreError::Conflict(
            "pay out only what a closed account is owed".into(),
        ));
    }
    let owed = payable(conn, account_id).await?;
    // A replay does not count against what is owed (its payout is already in `owed`).
    let replay: bool = sqlx::query_scalar(
        "select exists (select 1 from ledger_transactions where idempotency_key = $1)",
    )
    .bind(&key)
    .fetch_one(&mut *conn)
    .await?;
    if amount <= AmountFen::ZERO || (!replay && amount > owed) {
        return Err(CoreError::field(
            "amount_fen",
            format!("more than 0 and at most ¥{owed}"),
        ));
    }
    let clearing = clearing_for(conn, principal, method).await?;
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::Payout,
            idempotency_key: key,
            request_hash: digest,
            shop_account: Some(account_id),
            event_at: principal.now(),
            method: Some(method.as_str().to_owned()),
            receipt: true,
            reverses: None,
            memo: "退款支付".into(),
            legs: vec![
                (AccountKey::RefundsPayable, negate(amount)?),
                (clearing, amount),
            ],
            keep_at_least: None,
        },
    )
    .await?;
    if !posted.replayed {
        audit::record(
            conn,
            principal,
            "account.payout",
            "shop_account",
            Some(account_id.to_string()),
            None,
            Some(serde_json::json!({ "amount_fen": amount, "method": method })),
        )
        .await?;
    }
    Ok(posted.txn)
}

/// What a closed account still owes: its `arrears_receivable` balance, as a positive amount.
async fn arrears_owed(conn: &mut PgConnection, account_id: Uuid) -> CoreResult<AmountFen> {
    negate(post::balance(conn, AccountKey::ArrearsReceivable(account_id)).await?)
}

/// Marks a `closed_in_arrears` account `closed` once nothing is owed.
async fn settle_if_paid(conn: &mut PgConnection, account_id: Uuid) -> CoreResult<()> {
    if arrears_owed(conn, account_id).await? == AmountFen::ZERO {
        sqlx::query(
            "update shop_accounts set state = 'closed' where id = $1 and state = 'closed_in_arrears'",
        )
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Collects arrears of a `closed_in_arrears` account at the counter (right `top_up`): at most
/// what is owed, with a receipt; the account is `closed` when nothing is left.
#[tracing::instrument(skip_all)]
pub async fn collect_arrears(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    amount: AmountFen,
    method: CounterMethod,
    idempotency_key: &str,
) -> CoreResult<Transaction> {
    let account = accounts::lock_for_money(conn, principal, account_id).await?;
    principal.require(Need::Act(Right::TopUp))?;
    super::client_keys::claim(conn, idempotency_key, "collect_arrears", account_id).await?;
    let key = format!("client:{idempotency_key}");
    let digest = request_hash(&[
        "arrears",
        &account_id.to_string(),
        &amount.fen().to_string(),
        method.as_str(),
    ]);
    if let Some(done) = post::replay(conn, &key, &digest).await? {
        return Ok(done.txn);
    }
    if account.state != AccountState::ClosedInArrears {
        return Err(CoreError::Conflict(
            "only a closed account in arrears has arrears to collect".into(),
        ));
    }
    let owed = arrears_owed(conn, account_id).await?;
    if amount <= AmountFen::ZERO || amount > owed {
        return Err(CoreError::field(
            "amount_fen",
            format!("more than 0 and at most ¥{owed}"),
        ));
    }
    let clearing = clearing_for(conn, principal, method).await?;
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::ArrearsCollected,
            idempotency_key: key,
            request_hash: digest,
            shop_account: Some(account_id),
            event_at: principal.now(),
            method: Some(method.as_str().to_owned()),
            receipt: true,
            reverses: None,
            memo: "欠费收回".into(),
            legs: vec![
                (AccountKey::ArrearsReceivable(account_id), amount),
                (clearing, negate(amount)?),
            ],
            keep_at_least: None,
        },
    )
    .await?;
    settle_if_paid(conn, account_id).await?;
    audit::record(
        conn,
        principal,
        "account.arrears_collected",
        "shop_account",
        Some(account_id.to_string()),
        None,
        Some(serde_json::json!({ "amount_fen": amount, "method": method })),
    )
    .await?;
    Ok(posted.txn)
}

/// Asks to write off what a `closed_in_arrears` account owes (right `accounts`); an approver
/// other than the requester posts it ([`approve_write_off`]).
#[tracing::instrument(skip_all)]
pub async fn request_write_off(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    reason: &str,
    idempotency_key: &str,
) -> CoreResult<ApprovalRequest> {
    let account = accounts::lock_for_money(conn, principal, account_id).await?;
    principal.require(Need::Act(Right::Accounts))?;
    let reason = approvals::checked_reason(reason)?;
    let owed = arrears_owed(conn, account_id).await?;
    if account.state != AccountState::ClosedInArrears || owed == AmountFen::ZERO {
        return Err(CoreError::Conflict(
            "only a closed account in arrears has arrears to write off".into(),
        ));
    }
    approvals::ask(
        conn,
        principal,
        &Ask {
            kind: ApprovalKind::WriteOff,
            target_id: account_id,
            read_at: None,
            energy_wh: None,
            amount_fen: Some(owed),
            reason,
            request_key: format!("client:{idempotency_key}"),
        },
    )
    .await
}

/// Approves a write-off request and posts it (`arrears_receivable` against `adjustments`, keyed
/// `writeoff:<request>`): what is owed now, at most the amount asked for; the account is then
/// `closed` when nothing is left.
#[tracing::instrument(skip_all)]
pub async fn approve_write_off(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    idempotency_key: &str,
) -> CoreResult<ApprovalRequest> {
    principal.require_read_company()?;
    let request = approvals::get(conn, id).await?;
    if request.kind != ApprovalKind::WriteOff
        || !approvals::visible(conn, principal, &request).await?
    {
        return Err(CoreError::NotFound("approval request"));
    }
    super::client_keys::claim(conn, idempotency_key, "approve", id).await?;
    let account_id = request.target_id;
    accounts::lock_for_money(conn, principal, account_id).await?;
    let request = approvals::decidable(conn, principal, id).await?;
    let asked = request
        .amount_fen
        .ok_or_else(|| CoreError::Internal("a write-off request without amount".into()))?;
    let amount = arrears_owed(conn, account_id).await?.min(asked);
    if amount <= AmountFen::ZERO {
        approvals::decide(conn, principal, id, "rejected", None).await?;
        return Err(CoreError::Conflict(
            "nothing is owed any more: the request is closed".into(),
        ));
    }
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::WriteOff,
            idempotency_key: format!("writeoff:{id}"),
            request_hash: request_hash(&["writeoff", &id.to_string(), &amount.fen().to_string()]),
            shop_account: Some(account_id),
            event_at: principal.now(),
            method: None,
            receipt: false,
            reverses: None,
            memo: request.reason.clone(),
            legs: vec![
                (AccountKey::ArrearsReceivable(account_id), amount),
                (AccountKey::Adjustments, negate(amount)?),
            ],
            keep_at_least: None,
        },
    )
    .await?;
    settle_if_paid(conn, account_id).await?;
    approvals::decide(conn, principal, id, "done", Some(posted.txn.id)).await
}
