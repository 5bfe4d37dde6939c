//! Payment orders and how a verified paid notice becomes money (issue 14: Payments; DESIGN.md:
//! Money and the ledger). An order is made for one account — by its tenant or an operator with
//! the top-up right — with an amount within the online limits and, for a meter-side account, the
//! meter to credit; it waits [`ORDER_VALID_S`] for the payment. A provider's paid notice, once its
//! signature is verified (the provider modules' job), is handed to [`credit`], which in one
//! transaction, keyed `pay:{provider}:{transaction_id}` so nothing posts twice:
//! - credits the wallet (`online_payment`, wallet + / `clearing:{provider}` −) and moves the order
//!   to `credited` — also when the order had expired or was cancelled (flagged for an operator);
//!   a meter-side account's credit is then bought onto its meter like a counter top-up;
//! - puts a paid amount that is not the order's into `suspense` (`amount_mismatch`, flagged);
//! - puts a payment that names no order of ours into `suspense`;
//! - credits `refunds_payable` for an account no longer open (`online_payment_closed`, flagged).
//!
//! A repeated notice answers what the first did.

use crate::auth::Principal;
use crate::billing::accounts::{self, AccountState};
use crate::billing::ledger::post::{self, request_hash, Posting};
use crate::billing::ledger::{AccountKey, ClearingMethod, TxnKind};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::roles::{Need, Right, Role};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// How long an order waits for its payment before our timer expires it.
pub const ORDER_VALID_S: i64 = 15 * 60;
/// The smallest online top-up (¥1: providers charge a fee per payment).
pub const ONLINE_MIN: AmountFen = AmountFen::from_fen(100);
/// The largest online top-up (¥50,000).
pub const ONLINE_MAX: AmountFen = AmountFen::from_fen(5_000_000);

crate::vocabulary! {
    /// Who takes the payment.
    pub enum Provider {
        /// Demos and tests only, switched on per company by a platform admin.
        Sandbox = "sandbox",
        Wechat = "wechat",
        Alipay = "alipay",
    }
}

impl Provider {
    /// The clearing account its money passes through.
    pub fn clearing(self) -> AccountKey {
        AccountKey::Clearing(match self {
            Provider::Sandbox => ClearingMethod::Sandbox,
            Provider::Wechat => ClearingMethod::Wechat,
            Provider::Alipay => ClearingMethod::Alipay,
        })
    }
}

/// A payment order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: Uuid,
    pub provider: String,
    /// Our order number at the provider.
    pub out_trade_no: String,
    pub account_id: Uuid,
    pub meter_id: Option<Uuid>,
    pub amount_fen: AmountFen,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub transaction_id: Option<String>,
    pub paid_amount_fen: Option<AmountFen>,
    pub paid_at: Option<DateTime<Utc>>,
    pub credited_txn: Option<Uuid>,
    pub flag: Option<String>,
}

fn order_of(r: &sqlx::postgres::PgRow) -> CoreResult<Order> {
    Ok(Order {
        id: r.try_get("id")?,
        provider: r.try_get("provider")?,
        out_trade_no: r.try_get("out_trade_no")?,
        account_id: r.try_get("account_id")?,
        meter_id: r.try_get("meter_id")?,
        amount_fen: AmountFen::from_fen(r.try_get("amount_fen")?),
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        transaction_id: r.try_get("transaction_id")?,
        paid_amount_fen: r
            .try_get::<Option<i64>, _>("paid_amount_fen")?
            .map(AmountFen::from_fen),
        paid_at: r.try_get("paid_at")?,
        credited_txn: r.try_get("credited_txn")?,
        flag: r.try_get("flag")?,
    })
}

const COLUMNS: &str =
    "id, provider, out_trade_no, account_id, meter_id, amount_fen, state, created_at,
    expires_at, transaction_id, paid_amount_fen, paid_at, credited_txn, flag";

/// A fresh order number: the date and 12 random digits-and-letters (providers take 6–32 of
/// `[A-Za-z0-9_-]`; never guessable, so one tenant cannot name another's order).
fn out_trade_no(now: DateTime<Utc>) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let tail: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("PT{}{tail}", now.format("%Y%m%d"))
}

/// Makes an order of `amount` for `account` (its tenant, or an operator with the top-up right);
/// a meter-side account names the meter to credit (its only meter when `meter_id` is `None`).
pub async fn create(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    provider: Provider,
    amount: AmountFen,
    meter_id: Option<Uuid>,
) -> CoreResult<Order> {
    // 404 for an account the caller may not see (a tenant sees only their own).
    let account = accounts::lock_for_money(conn, principal, account_id).await?;
    if principal.role != Role::ShopTenant {
        principal.require(Need::Act(Right::TopUp))?;
    }
    if amount < ONLINE_MIN || amount > ONLINE_MAX {
        return Err(CoreError::field(
            "amount_fen",
            format!("from {ONLINE_MIN} to {ONLINE_MAX} yuan"),
        ));
    }
    if account.state != AccountState::Open {
        return Err(CoreError::Conflict(format!(
            "the account is {}: no top-ups",
            account.state
        )));
    }
    let meter_id = match meter_id {
        Some(m) if account.meters.iter().any(|a| a.meter_id == m) => Some(m),
        Some(_) => return Err(CoreError::field("meter_id", "not a meter of this account")),
        None => None,
    };
    let now = principal.now();
    let row = sqlx::query(&format!(
        "insert into payment_orders (id, provider, out_trade_no, account_id, meter_id, amount_fen,
             state, created_by, created_at, expires_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, 'created', $7, $8, $9, $8)
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(provider.as_str())
    .bind(out_trade_no(now))
    .bind(account_id)
    .bind(meter_id)
    .bind(amount.fen())
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .bind(now)
    .bind(now + Duration::seconds(ORDER_VALID_S))
    .fetch_one(&mut *conn)
    .await?;
    order_of(&row)
}

/// Whether the caller's company takes `provider` (the sandbox only where a platform admin
/// switched it on; the real providers once their credentials are entered).
pub async fn takes(
    conn: &mut PgConnection,
    principal: &Principal,
    provider: Provider,
) -> CoreResult<bool> {
    let company = principal.company()?.id;
    match provider {
        Provider::Sandbox => Ok(sqlx::query_scalar(
            "select sandbox_payments from control.company where id = $1",
        )
        .bind(company)
        .fetch_one(&mut *conn)
        .await?),
        _ => Ok(false),
    }
}

/// Where the payer pays `order` (the provider's cashier; the sandbox's hosted page).
pub fn pay_url(company_slug: &str, order: &Order) -> String {
    format!("/sandbox/pay/{company_slug}/{}", order.out_trade_no)
}

/// Makes an order as [`create`] does, once the company is known to take `provider`; answers it
/// with where to pay it. 404 before anything else for an account the caller may not see.
pub async fn start(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    provider: Provider,
    amount: AmountFen,
    meter_id: Option<Uuid>,
) -> CoreResult<(Order, String)> {
    accounts::get(conn, principal, account_id).await?;
    if !takes(conn, principal, provider).await? {
        return Err(CoreError::field(
            "provider",
            "the company does not take this provider",
        ));
    }
    let order = create(conn, principal, account_id, provider, amount, meter_id).await?;
    let url = pay_url(&principal.company()?.slug, &order);
    Ok((order, url))
}

/// The newest `limit` orders of `account`, if the caller may see it.
pub async fn of_account(
    conn: &mut PgConnection,
    principal: &Principal,
    account_id: Uuid,
    limit: i64,
) -> CoreResult<Vec<Order>> {
    accounts::get(conn, principal, account_id).await?;
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from payment_orders where account_id = $1
         order by created_at desc limit $2"
    ))
    .bind(account_id)
    .bind(limit.clamp(1, 200))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(order_of).collect()
}

/// Order `id`, if the caller may see its account.
pub async fn get(conn: &mut PgConnection, principal: &Principal, id: Uuid) -> CoreResult<Order> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from payment_orders where id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("payment order"))?;
    let order = order_of(&row)?;
    accounts::get(conn, principal, order.account_id)
        .await
        .map_err(|_| CoreError::NotFound("payment order"))?;
    Ok(order)
}

/// A paid notice, its signature already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidNotice {
    pub provider: Provider,
    pub out_trade_no: String,
    /// The provider's own number for the payment.
    pub transaction_id: String,
    pub amount_fen: AmountFen,
    pub paid_at: DateTime<Utc>,
}

/// What [`credit`] did with a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credited {
    /// The account's wallet has it (`flag` when an operator should look).
    Wallet {
        order: Uuid,
        txn: Uuid,
        flag: Option<&'static str>,
    },
    /// The account had closed: it is owed back (`refunds_payable`).
    RefundsPayable { order: Uuid, txn: Uuid },
    /// Not the order's amount, or no order of ours: `suspense`.
    Suspense { order: Option<Uuid>, txn: Uuid },
    /// The same payment again: nothing more happened.
    Already { txn: Uuid },
}

/// Books verified paid notice `notice` (the principal is the system worker in the company).
pub async fn credit(
    conn: &mut PgConnection,
    principal: &Principal,
    notice: &PaidNotice,
) -> CoreResult<Credited> {
    if notice.amount_fen <= AmountFen::ZERO || notice.transaction_id.trim().is_empty() {
        return Err(CoreError::field("amount_fen", "a payment of more than 0"));
    }
    let key = format!("pay:{}:{}", notice.provider.as_str(), notice.transaction_id);
    let digest = request_hash(&[
        "pay",
        notice.provider.as_str(),
        &notice.transaction_id,
        &notice.out_trade_no,
        &notice.amount_fen.fen().to_string(),
    ]);
    if let Some(posted) = post::replay(conn, &key, &digest).await? {
        return Ok(Credited::Already { txn: posted.txn.id });
    }
    let row = sqlx::query(&format!(
        "select {COLUMNS} from payment_orders where provider = $1 and out_trade_no = $2 for update"
    ))
    .bind(notice.provider.as_str())
    .bind(&notice.out_trade_no)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(order) = row.as_ref().map(order_of).transpose()? else {
        let txn = suspense(conn, principal, notice, &key, &digest, None).await?;
        tracing::warn!(provider = notice.provider.as_str(), out_trade_no = %notice.out_trade_no,
            "a payment names no order of ours: in suspense");
        return Ok(Credited::Suspense { order: None, txn });
    };
    // The account's row before the order is updated: every money path locks it first.
    let account = accounts::lock_for_money(conn, principal, order.account_id).await?;
    if order.credited_txn.is_some() {
        // A second payment of an order already paid (another transaction id).
        let txn = suspense(conn, principal, notice, &key, &digest, Some(order.id)).await?;
        mark(
            conn,
            order.id,
            None,
            notice,
            None,
            Some("paid_twice"),
            principal,
        )
        .await?;
        return Ok(Credited::Suspense {
            order: Some(order.id),
            txn,
        });
    }
    if notice.amount_fen != order.amount_fen {
        let txn = suspense(conn, principal, notice, &key, &digest, Some(order.id)).await?;
        mark(
            conn,
            order.id,
            Some("amount_mismatch"),
            notice,
            Some(txn),
            Some("amount_mismatch"),
            principal,
        )
        .await?;
        tracing::warn!(order = %order.id, asked = order.amount_fen.fen(), paid = notice.amount_fen.fen(),
            "a payment of another amount than its order's: in suspense");
        return Ok(Credited::Suspense {
            order: Some(order.id),
            txn,
        });
    }
    let flag = match order.state.as_str() {
        "expired" => Some("paid_after_expiry"),
        "cancelled" => Some("paid_after_cancel"),
        _ => None,
    };
    if account.state != AccountState::Open {
        let (txn, _) = book(
            conn,
            principal,
            notice,
            &key,
            &digest,
            &order,
            TxnKind::OnlinePaymentClosed,
            AccountKey::RefundsPayable,
        )
        .await?;
        mark(
            conn,
            order.id,
            Some("credited"),
            notice,
            Some(txn),
            Some("account_closed"),
            principal,
        )
        .await?;
        return Ok(Credited::RefundsPayable {
            order: order.id,
            txn,
        });
    }
    let (txn, receipt_no) = book(
        conn,
        principal,
        notice,
        &key,
        &digest,
        &order,
        TxnKind::OnlinePayment,
        AccountKey::Wallet(order.account_id),
    )
    .await?;
    mark(
        conn,
        order.id,
        Some("credited"),
        notice,
        Some(txn),
        flag,
        principal,
    )
    .await?;
    if account.prepayment_mode == "meter" {
        crate::billing::counter::request_purchase(
            conn,
            principal,
            order.account_id,
            order.meter_id,
            notice.amount_fen,
            txn,
        )
        .await?;
    }
    crate::power::tell_top_up(
        conn,
        principal,
        order.account_id,
        notice.amount_fen,
        &receipt_no,
    )
    .await?;
    Ok(Credited::Wallet {
        order: order.id,
        txn,
        flag,
    })
}

/// Posts the payment from the provider's clearing to `to` (the wallet, or refunds payable).
#[allow(clippy::too_many_arguments)]
async fn book(
    conn: &mut PgConnection,
    principal: &Principal,
    notice: &PaidNotice,
    key: &str,
    digest: &str,
    order: &Order,
    kind: TxnKind,
    to: AccountKey,
) -> CoreResult<(Uuid, String)> {
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind,
            idempotency_key: key.to_owned(),
            request_hash: digest.to_owned(),
            shop_account: Some(order.account_id),
            event_at: notice.paid_at,
            method: Some(notice.provider.as_str().to_owned()),
            receipt: true,
            reverses: None,
            memo: format!("{} {}", notice.out_trade_no, notice.transaction_id),
            legs: vec![
                (to, notice.amount_fen),
                (notice.provider.clearing(), negate(notice.amount_fen)?),
            ],
            keep_at_least: None,
        },
    )
    .await?;
    Ok((posted.txn.id, posted.txn.receipt_no.unwrap_or_default()))
}

/// Posts a payment that cannot be credited to `suspense`.
async fn suspense(
    conn: &mut PgConnection,
    principal: &Principal,
    notice: &PaidNotice,
    key: &str,
    digest: &str,
    order: Option<Uuid>,
) -> CoreResult<Uuid> {
    let posted = post::post(
        conn,
        principal,
        &Posting {
            kind: TxnKind::Suspense,
            idempotency_key: key.to_owned(),
            request_hash: digest.to_owned(),
            shop_account: None,
            event_at: notice.paid_at,
            method: Some(notice.provider.as_str().to_owned()),
            receipt: false,
            reverses: None,
            memo: format!(
                "{} {}{}",
                notice.out_trade_no,
                notice.transaction_id,
                order.map(|o| format!(" order {o}")).unwrap_or_default()
            ),
            legs: vec![
                (AccountKey::Suspense, notice.amount_fen),
                (notice.provider.clearing(), negate(notice.amount_fen)?),
            ],
            keep_at_least: None,
        },
    )
    .await?;
    Ok(posted.txn.id)
}

/// Records on order `id` what the notice did: its new state (if any), the payment, the
/// transaction, the flag.
async fn mark(
    conn: &mut PgConnection,
    id: Uuid,
    state: Option<&str>,
    notice: &PaidNotice,
    txn: Option<Uuid>,
    flag: Option<&str>,
    principal: &Principal,
) -> CoreResult<()> {
    sqlx::query(
        "update payment_orders set state = coalesce($2, state),
             transaction_id = coalesce(transaction_id, $3), paid_amount_fen = coalesce(paid_amount_fen, $4),
             paid_at = coalesce(paid_at, $5), credited_txn = coalesce(credited_txn, $6),
             flag = coalesce($7, flag), updated_at = $8
         where id = $1",
    )
    .bind(id)
    .bind(state)
    // The second payment of an order keeps the first one's numbers (it is in the suspense memo).
    .bind((txn.is_some()).then_some(&notice.transaction_id))
    .bind(txn.is_some().then_some(notice.amount_fen.fen()))
    .bind(txn.is_some().then_some(notice.paid_at))
    .bind(txn.filter(|_| state == Some("credited")))
    .bind(flag)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn negate(amount: AmountFen) -> CoreResult<AmountFen> {
    amount
        .checked_neg()
        .ok_or_else(|| CoreError::Internal("amount overflow".into()))
}

/// Expires the company's orders whose time ran out unpaid; how many.
pub async fn expire_due(conn: &mut PgConnection, now: DateTime<Utc>) -> CoreResult<u64> {
    Ok(sqlx::query(
        "update payment_orders set state = 'expired', updated_at = $1
         where state = 'created' and expires_at <= $1",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
