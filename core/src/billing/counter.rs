//! The counter (售电、退电): top-ups and refunds of a shop account by cash, card or bank transfer,
//! each one ledger transaction under the client's Idempotency-Key with a receipt number, and the
//! cashier shifts (交班) cash is taken in: cash posts to `clearing:cash:<shift>` of the cashier's
//! open shift, and closing a shift posts the counted difference to `adjustments`.

use super::accounts::{self, negate, AccountState, ShopAccount};
use super::ledger::post::{self, request_hash, Posted, Posting};
use super::ledger::{AccountKey, ClearingMethod, TxnKind};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

crate::vocabulary! {
    /// How money is taken or paid at the counter.
    pub enum CounterMethod {
        Cash = "cash",
        Card = "card",
        Transfer = "transfer",
    }
}

/// Largest single counter movement: ¥1,000,000 (a typo guard, not a business rule).
const COUNTER_AMOUNT_MAX: AmountFen = AmountFen::from_fen(100_000_000);

/// The clearing account `method` posts to for `principal`: card and transfer have one each;
/// cash goes to the cashier's open shift, which must exist.
pub async fn clearing_for(
    conn: &mut PgConnection,
    principal: &Principal,
    method: CounterMethod,
) -> CoreResult<AccountKey> {
    Ok(AccountKey::Clearing(match method {
        CounterMethod::Card => ClearingMethod::Card,
        CounterMethod::Transfer => ClearingMethod::Transfer,
        CounterMethod::Cash => ClearingMethod::Cash {
            shift: open_shift_of(conn, principal)
                .await?
                .ok_or_else(|| {
                    CoreError::Conflict("open your cashier shift before taking cash".into())
                })?
                .id,
        },
    }))
}

/// A counter movement asked for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct CounterInput {
    pub amount_fen: AmountFen,
    pub method: CounterMethod,
    /// Why (required for refunds).
    #[serde(default)]
    pub reason: String,
    /// Meter-side accounts: the meter a top-up's credit is bought for (DESIGN.md; by default
    /// the account's first meter).
    #[serde(default)]
    pub meter_id: Option<Uuid>,
}

/// What the counter did: the transaction and the account after it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct CounterReceipt {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub transaction: post::Transaction,
    pub account: ShopAccount,
    /// The Idempotency-Key was seen before with this request: nothing moved now.
    pub replayed: bool,
}

/// Sells credit to `account` (售电).
#[tracing::instrument(skip_all)]
pub async fn top_up(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    input: &CounterInput,
    idempotency_key: &str,
) -> CoreResult<CounterReceipt> {
    move_money(
        conn,
        principal,
        account,
        input,
        idempotency_key,
        TxnKind::TopUp,
    )
    .await
}

/// Pays credit back (退电): at most the available balance.
#[tracing::instrument(skip_all)]
pub async fn refund(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    input: &CounterInput,
    idempotency_key: &str,
) -> CoreResult<CounterReceipt> {
    move_money(
        conn,
        principal,
        account,
        input,
        idempotency_key,
        TxnKind::Refund,
    )
    .await
}

async fn move_money(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    input: &CounterInput,
    idempotency_key: &str,
    kind: TxnKind,
) -> CoreResult<CounterReceipt> {
    // First whether the caller may see the account at all (404), then what was asked.
    let account = accounts::lock_for_money(conn, principal, account_id).await?;
    principal.require(Need::Act(if kind == TxnKind::Refund {
        Right::Refund
    } else {
        Right::TopUp
    }))?;
    if kind == TxnKind::Refund && input.reason.trim().is_empty() {
        return Err(CoreError::field("reason", "say why the money is paid back"));
    }
    if input.amount_fen <= AmountFen::ZERO || input.amount_fen > COUNTER_AMOUNT_MAX {
        return Err(CoreError::field(
            "amount_fen",
            "more than 0 and at most ¥1,000,000",
        ));
    }
    if input.reason.chars().count() > 200 {
        return Err(CoreError::field("reason", "at most 200 characters"));
    }
    // The named meter joins the digest only when given (earlier digests unchanged), so the same
    // key for another meter is a different request.
    let meter = input.meter_id.map(|m| m.to_string()).unwrap_or_default();
    let (account_text, amount_text) = (account_id.to_string(), input.amount_fen.fen().to_string());
    let mut parts = vec![
        kind.as_str(),
        &account_text,
        &amount_text,
        input.method.as_str(),
        input.reason.trim(),
    ];
    if !meter.is_empty() {
        parts.push(&meter);
    }
    let digest = request_hash(&parts);
    super::client_keys::claim(conn, idempotency_key, kind.as_str(), account_id).await?;
    let key = format!("client:{idempotency_key}");
    // A replay answers before the account's state is looked at: the original went through.
    if let Some(posted) = post::replay(conn, &key, &digest).await? {
        return receipt(conn, principal, posted).await;
    }
    if account.state != AccountState::Open {
        return Err(CoreError::Conflict(format!(
            "the account is {}: no top-ups or refunds",
            account.state
        )));
    }
    let clearing = clearing_for(conn, principal, input.method).await?;
    let wallet = AccountKey::Wallet(account_id);
    let (wallet_amount, keep_at_least) = match kind {
        TxnKind::Refund => (
            negate(input.amount_fen)?,
            // The overdraft rule: a refund never takes the available balance below 0.
            Some((wallet, accounts::unposted_charges(conn, account_id).await?)),
        ),
        _ => (input.amount_fen, None),
    };
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind,
            idempotency_key: key,
            request_hash: digest,
            shop_account: Some(account_id),
            event_at: principal.now(),
            method: Some(input.method.as_str().to_owned()),
            receipt: true,
            reverses: None,
            memo: input.reason.trim().to_owned(),
            legs: vec![(wallet, wallet_amount), (clearing, negate(wallet_amount)?)],
            keep_at_least,
        },
    )
    .await?;
    audit::record(
        conn,
        principal,
        &format!("account.{kind}"),
        "shop_account",
        Some(account_id.to_string()),
        None,
        Some(serde_json::json!({
            "amount_fen": input.amount_fen, "method": input.method, "receipt_no": posted.txn.receipt_no,
        })),
    )
    .await?;
    if kind == TxnKind::TopUp && account.prepayment_mode == "meter" && !posted.replayed {
        request_purchase(
            conn,
            principal,
            account_id,
            input.meter_id,
            input.amount_fen,
            posted.txn.id,
        )
        .await?;
    }
    if kind == TxnKind::TopUp {
        let receipt_no = posted.txn.receipt_no.clone().unwrap_or_default();
        crate::power::tell_top_up(conn, principal, account_id, input.amount_fen, &receipt_no)
            .await?;
    }
    receipt(conn, principal, posted).await
}

/// A meter-side top-up asks for its credit to be bought onto the named meter (the settle worker
/// builds the purchase: `core::secure::settle`). The meter must be one of the account's.
pub(crate) async fn request_purchase(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    meter_id: Option<Uuid>,
    amount: AmountFen,
    txn: Uuid,
) -> CoreResult<()> {
    let meters: Vec<Uuid> = sqlx::query_scalar(
        "select meter_id from account_meters where account_id = $1 and left_at is null
         order by joined_at, meter_id",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    let meter = match meter_id {
        Some(wanted) if meters.contains(&wanted) => wanted,
        Some(_) => return Err(CoreError::field("meter_id", "not a meter of this account")),
        None => *meters
            .first()
            .ok_or_else(|| CoreError::Conflict("the account has no meter to buy for".into()))?,
    };
    sqlx::query(
        "insert into secure_purchase_requests (id, account_id, meter_id, amount_fen, source_txn, requested_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(account)
    .bind(meter)
    .bind(amount.fen())
    .bind(txn)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(crate::secure::readback::CHANNEL)
        .bind(format!("{}:{meter}", principal.company()?.schema.as_str()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn receipt(
    conn: &mut PgConnection,
    principal: &Principal,
    posted: Posted,
) -> CoreResult<CounterReceipt> {
    let account_id = posted
        .txn
        .shop_account_id
        .ok_or_else(|| CoreError::Internal("a counter transaction without account".into()))?;
    Ok(CounterReceipt {
        account: accounts::get(conn, principal, account_id).await?,
        transaction: posted.txn,
        replayed: posted.replayed,
    })
}

// ---------------------------------------------------------------------------------------------
// Cashier shifts

/// A cashier's shift.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shift {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The cashier's login name.
    pub username: String,
    pub opened_at: DateTime<Utc>,
    pub float_fen: AmountFen,
    /// Cash taken less cash paid out in this shift.
    pub cash_taken_fen: AmountFen,
    pub closed_at: Option<DateTime<Utc>>,
    pub counted_cash_fen: Option<AmountFen>,
    /// Counted − (float + cash taken); posted to `adjustments` at close.
    pub difference_fen: Option<AmountFen>,
}

/// The caller's open shift, if any.
pub async fn open_shift_of(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Option<Shift>> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "select id from cashier_shifts where user_id = $1 and closed_at is null",
    )
    .bind(principal.user_id)
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => shift(conn, id).await.map(Some),
        None => Ok(None),
    }
}

async fn shift(conn: &mut PgConnection, id: Uuid) -> CoreResult<Shift> {
    let row = sqlx::query(
        "select s.id, s.user_id, u.username, s.opened_at, s.float_fen, s.closed_at, s.counted_cash_fen,
                s.difference_fen
         from cashier_shifts s join users u on u.id = s.user_id where s.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("shift"))?;
    let drawer = post::balance(
        conn,
        AccountKey::Clearing(ClearingMethod::Cash { shift: id }),
    )
    .await?;
    Ok(Shift {
        id,
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        opened_at: row.try_get("opened_at")?,
        float_fen: row.try_get("float_fen")?,
        // The drawer's clearing account reads negative by what it took in.
        cash_taken_fen: negate(drawer)?,
        closed_at: row.try_get("closed_at")?,
        counted_cash_fen: row.try_get("counted_cash_fen")?,
        difference_fen: row.try_get("difference_fen")?,
    })
}

/// The company's cashier shifts: every open one, then the latest 100 closed, newest first.
#[tracing::instrument(skip_all)]
pub async fn shifts(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<Shift>> {
    principal.require_read_company()?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "(select id, opened_at, 0 as o from cashier_shifts where closed_at is null)
         union all
         (select id, opened_at, 1 from cashier_shifts where closed_at is not null order by closed_at desc limit 100)
         order by o, opened_at desc",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(shift(conn, id).await?);
    }
    Ok(out)
}

/// Opens the caller's shift with a cash float (one open shift per cashier).
pub async fn open_shift(
    conn: &mut PgConnection,
    principal: &Principal,
    float_fen: AmountFen,
) -> CoreResult<Shift> {
    if !(principal.can(Need::Act(Right::TopUp)) || principal.can(Need::Act(Right::Refund))) {
        return Err(CoreError::Forbidden(
            "shifts come with the top-up or refund right".into(),
        ));
    }
    if principal.user_id.is_nil() {
        return Err(CoreError::Forbidden("a shift belongs to a person".into()));
    }
    if float_fen < AmountFen::ZERO || float_fen > COUNTER_AMOUNT_MAX {
        return Err(CoreError::field("float_fen", "0 to ¥1,000,000"));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into cashier_shifts (id, user_id, opened_at, float_fen) values ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(principal.user_id)
    .bind(principal.now())
    .bind(float_fen)
    .execute(&mut *conn)
    .await
    .map_err(|e| match CoreError::from(e) {
        e if e.violates("cashier_shifts_one_open") => {
            CoreError::Conflict("your shift is already open".into())
        }
        e => e,
    })?;
    let opened = shift(conn, id).await?;
    audit::record(
        conn,
        principal,
        "shift.open",
        "cashier_shift",
        Some(id.to_string()),
        None,
        Some(serde_json::json!({ "float_fen": float_fen })),
    )
    .await?;
    Ok(opened)
}

/// Closes the caller's open shift with the cash counted in the drawer; a difference from float +
/// cash taken is posted to `adjustments` (DESIGN.md: Booking).
pub async fn close_shift(
    conn: &mut PgConnection,
    principal: &Principal,
    counted_cash_fen: AmountFen,
) -> CoreResult<Shift> {
    if counted_cash_fen < AmountFen::ZERO {
        return Err(CoreError::field("counted_cash_fen", "not negative"));
    }
    let open = open_shift_of(conn, principal)
        .await?
        .ok_or_else(|| CoreError::Conflict("you have no open shift".into()))?;
    sqlx::query("select 1 from cashier_shifts where id = $1 for update")
        .bind(open.id)
        .execute(&mut *conn)
        .await?;
    let expected = open
        .float_fen
        .checked_add(open.cash_taken_fen)
        .ok_or_else(|| CoreError::Internal("shift overflows".into()))?;
    let difference = counted_cash_fen
        .checked_sub(expected)
        .ok_or_else(|| CoreError::field("counted_cash_fen", "too large"))?;
    if difference != AmountFen::ZERO {
        let drawer = AccountKey::Clearing(ClearingMethod::Cash { shift: open.id });
        // More cash than expected: the drawer holds more (its account goes further below zero).
        post::post(
            conn,
            principal,
            &Posting {
                kind: TxnKind::Adjustment,
                idempotency_key: format!("shift:{}:difference", open.id),
                request_hash: request_hash(&["shift_close", &counted_cash_fen.fen().to_string()]),
                shop_account: None,
                event_at: principal.now(),
                method: Some("cash".into()),
                receipt: false,
                reverses: None,
                memo: "交班差额".into(),
                legs: vec![
                    (drawer, negate(difference)?),
                    (AccountKey::Adjustments, difference),
                ],
                keep_at_least: None,
            },
        )
        .await?;
    }
    sqlx::query(
        "update cashier_shifts set closed_at = $2, counted_cash_fen = $3, difference_fen = $4 where id = $1",
    )
    .bind(open.id)
    .bind(principal.now())
    .bind(counted_cash_fen)
    .bind(difference)
    .execute(&mut *conn)
    .await?;
    let closed = shift(conn, open.id).await?;
    audit::record(
        conn,
        principal,
        "shift.close",
        "cashier_shift",
        Some(open.id.to_string()),
        None,
        Some(serde_json::json!({ "counted_cash_fen": counted_cash_fen, "difference_fen": difference })),
    )
    .await?;
    Ok(closed)
}
