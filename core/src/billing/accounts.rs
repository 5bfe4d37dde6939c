//! Shop accounts (开户): an account holds a shop's prepaid money for one tenancy, with the
//! meters it pays for and the reading each starts from. A shop has at most one account that is
//! not closed, a meter is in at most one open account (unique indexes, migration company/0015).
//! Opening takes an optional deposit (its own account, never spendable) and opening credit (from
//! `promotions`), each one ledger transaction keyed by the account.

use super::counter::{clearing_for, CounterMethod};
use super::ledger::post::{self, request_hash, Posting};
use super::ledger::{AccountKey, TxnKind};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::{AmountFen, EnergyWh};
use crate::kernel::names::PhoneNumber;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

crate::vocabulary! {
    /// Where an account is in its life (DESIGN.md: Account lifecycle).
    pub enum AccountState {
        Open = "open",
        /// Being closed: top-ups, refunds and new payment orders are refused.
        Closing = "closing",
        Closed = "closed",
        /// Closed owing money (collected later or written off with approval).
        ClosedInArrears = "closed_in_arrears",
    }
}

/// A meter of an account and the reading the account starts from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountMeter {
    pub meter_id: Uuid,
    pub meter_number: String,
    pub opening_energy_wh: EnergyWh,
    pub opening_read_at: DateTime<Utc>,
    /// Typed in by an operator because no fresh reading was stored.
    pub opening_manual: bool,
    /// Meter-side: the credit an operator confirmed was on the meter at opening.
    pub opening_remaining_fen: Option<i64>,
}

/// A shop account with its balances.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShopAccount {
    pub id: Uuid,
    pub shop_id: Uuid,
    pub building_id: Uuid,
    pub shop_number: String,
    pub shop_name: String,
    pub holder_name: String,
    pub holder_phone: String,
    pub state: AccountState,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub meters: Vec<AccountMeter>,
    pub wallet_fen: AmountFen,
    pub deposit_fen: AmountFen,
    /// Wallet − unposted charges: what alarms and trips act on, and the most a refund may take.
    /// Negative is arrears (欠费).
    pub available_fen: AmountFen,
    /// `platform` or `meter` (DESIGN.md: an account is one or the other, never mixed).
    pub prepayment_mode: String,
    /// Meter-side accounts: credit bought and not yet verified on the meters, and the credit the
    /// meters hold by the platform's reckoning (the shadow balance).
    pub in_transit_fen: AmountFen,
    pub on_meter_fen: AmountFen,
}

/// A meter to put into a new account: its opening reading is its latest stored one when that is
/// fresh, else the one typed in here (audited).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct OpeningMeter {
    pub meter_id: Uuid,
    #[serde(default)]
    pub manual_energy_wh: Option<EnergyWh>,
    /// Meter-side meters: the credit the operator confirms is on the meter when its read-back
    /// remaining amount is not 0 (an audited decision; it stays on the meter and is left out of
    /// the drift).
    #[serde(default)]
    pub accept_remaining_fen: Option<i64>,
}

/// What opening an account takes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct OpenAccount {
    pub shop_id: Uuid,
    pub holder_name: String,
    #[serde(default)]
    pub holder_phone: String,
    pub meters: Vec<OpeningMeter>,
    /// 押金, taken by `deposit_method`.
    #[serde(default)]
    pub deposit_fen: AmountFen,
    #[serde(default)]
    pub deposit_method: Option<CounterMethod>,
    /// Credit given at opening, from `promotions`.
    #[serde(default)]
    pub opening_credit_fen: AmountFen,
}

impl OpenAccount {
    fn digest(&self) -> String {
        let meters: Vec<String> = self
            .meters
            .iter()
            .map(|m| {
                // The confirmation joins the digest only when given (older digests unchanged).
                let accepted = m
                    .accept_remaining_fen
                    .map_or(String::new(), |fen| format!(";accept={fen}"));
                format!(
                    "{}={:?}{accepted}",
                    m.meter_id,
                    m.manual_energy_wh.map(EnergyWh::wh)
                )
            })
            .collect();
        request_hash(&[
            "open_account",
            &self.shop_id.to_string(),
            self.holder_name.trim(),
            self.holder_phone.trim(),
            &meters.join(","),
            &self.deposit_fen.fen().to_string(),
            self.deposit_method.map_or("", CounterMethod::as_str),
            &self.opening_credit_fen.fen().to_string(),
        ])
    }
}

/// Opens an account for a shop (`idempotency_key` from the client: a replay returns the same
/// account; the same key for another opening is refused).
#[tracing::instrument(skip_all)]
pub async fn open(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &OpenAccount,
    idempotency_key: &str,
) -> CoreResult<ShopAccount> {
    principal.require(Need::Act(Right::Accounts))?;
    let key = format!("client:{idempotency_key}");
    let digest = input.digest();
    super::client_keys::claim(conn, idempotency_key, "open_account", input.shop_id).await?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(&key)
        .execute(&mut *conn)
        .await?;
    if let Some(row) =
        sqlx::query("select id, open_request_hash from shop_accounts where open_key = $1")
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await?
    {
        if row.try_get::<String, _>("open_request_hash")? != digest {
            return Err(CoreError::IdempotencyKeyReused);
        }
        return get(conn, principal, row.try_get("id")?).await;
    }
    let checked = check_opening(conn, principal, input).await?;
    let now = principal.now();
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into shop_accounts (id, shop_id, holder_name, holder_phone, opened_at, open_key, open_request_hash,
             prepayment_mode)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(input.shop_id)
    .bind(input.holder_name.trim())
    .bind(&checked.phone)
    .bind(now)
    .bind(&key)
    .bind(&digest)
    .bind(&checked.mode)
    .execute(&mut *conn)
    .await
    .map_err(|e| taken(e.into()))?;
    for m in &checked.meters {
        sqlx::query(
            "insert into account_meters (account_id, meter_id, opening_energy_wh, opening_read_at, opening_manual, joined_at,
                 opening_remaining_fen)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(m.meter_id)
        .bind(m.opening_energy_wh)
        .bind(m.opening_read_at)
        .bind(m.opening_manual)
        .bind(now)
        .bind(m.opening_remaining_fen)
        .execute(&mut *conn)
        .await
        .map_err(|e| taken(e.into()))?;
        // Rating starts at zero for each (meter, account), from the opening reading.
        sqlx::query(
            "insert into rating_state (account_id, meter_id, last_read_at, last_energy_wh) values ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(m.meter_id)
        .bind(m.opening_read_at)
        .bind(m.opening_energy_wh)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("update shops set status = 'occupied', updated_at = now() where id = $1")
        .bind(input.shop_id)
        .execute(&mut *conn)
        .await?;
    post_opening_money(conn, principal, id, input, now).await?;
    let account = get(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "account.open",
        "shop_account",
        Some(id.to_string()),
        None,
        Some(serde_json::to_value(&account).unwrap_or_default()),
    )
    .await?;
    Ok(account)
}

/// A unique index refused the opening: the shop or a meter already has an open account.
fn taken(err: CoreError) -> CoreError {
    match &err {
        e if e.violates("shop_accounts_one_per_shop") => {
            CoreError::Conflict("this shop already has an open account".into())
        }
        e if e.violates("account_meters_one_open") => {
            CoreError::Conflict("a meter is already in another open account".into())
        }
        _ => err,
    }
}

async fn post_opening_money(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    input: &OpenAccount,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    if input.deposit_fen > AmountFen::ZERO {
        let method = input.deposit_method.unwrap_or(CounterMethod::Cash);
        let clearing = clearing_for(conn, principal, method).await?;
        post::post(
            conn,
            principal,
            &Posting {
                kind: TxnKind::DepositTaken,
                idempotency_key: format!("open:{id}:deposit"),
                request_hash: input.digest(),
                shop_account: Some(id),
                event_at: now,
                method: Some(method.as_str().to_owned()),
                receipt: true,
                reverses: None,
                memo: "押金".into(),
                legs: vec![
                    (AccountKey::Deposit(id), input.deposit_fen),
                    (clearing, negate(input.deposit_fen)?),
                ],
                keep_at_least: None,
            },
        )
        .await?;
    }
    if input.opening_credit_fen > AmountFen::ZERO {
        post::post(
            conn,
            principal,
            &Posting {
                kind: TxnKind::OpeningCredit,
                idempotency_key: format!("open:{id}:credit"),
                request_hash: input.digest(),
                shop_account: Some(id),
                event_at: now,
                method: None,
                receipt: false,
                reverses: None,
                memo: String::new(),
                legs: vec![
                    (AccountKey::Wallet(id), input.opening_credit_fen),
                    (AccountKey::Promotions, negate(input.opening_credit_fen)?),
                ],
                keep_at_least: None,
            },
        )
        .await?;
    }
    Ok(())
}

pub(crate) fn negate(amount: AmountFen) -> CoreResult<AmountFen> {
    amount
        .checked_neg()
        .ok_or_else(|| CoreError::field("amount_fen", "too large"))
}

struct CheckedOpening {
    phone: String,
    meters: Vec<AccountMeter>,
    /// `platform` or `meter`: every meter of the account is the same.
    mode: String,
}

async fn check_opening(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &OpenAccount,
) -> CoreResult<CheckedOpening> {
    let mut fields = BTreeMap::new();
    let name_len = input.holder_name.trim().chars().count();
    if name_len == 0 || name_len > 100 {
        fields.insert("holder_name".into(), "1–100 characters".into());
    }
    let phone = match input.holder_phone.trim() {
        "" => String::new(),
        text => PhoneNumber::parse(text)
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|e| {
                fields.insert("holder_phone".into(), e.0.into());
                String::new()
            }),
    };
    for (field, amount) in [
        ("deposit_fen", input.deposit_fen),
        ("opening_credit_fen", input.opening_credit_fen),
    ] {
        if amount < AmountFen::ZERO {
            fields.insert(field.into(), "not negative".into());
        }
    }
    if input.meters.is_empty() || input.meters.len() > 50 {
        fields.insert("meters".into(), "1 to 50 meters of the shop".into());
    }
    let shop = sqlx::query("select building_id, status from shops where id = $1")
        .bind(input.shop_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(shop) = shop else {
        return Err(CoreError::NotFound("shop"));
    };
    let building_id: Uuid = shop.try_get("building_id")?;
    if principal
        .building_limit()
        .is_some_and(|ids| !ids.contains(&building_id))
    {
        return Err(CoreError::NotFound("shop"));
    }
    if shop.try_get::<String, _>("status")? == "closed" {
        fields.insert("shop_id".into(), "the shop is closed".into());
    }
    let settings = crate::tenancy::settings::load(conn).await?;
    let fresh_after =
        principal.now() - chrono::Duration::seconds(i64::from(settings.stale_meter_s));
    let mut meters = Vec::new();
    let mut modes = std::collections::BTreeSet::new();
    for (i, wanted) in input.meters.iter().enumerate() {
        let row = sqlx::query(
            "select m.meter_number, m.shop_id, m.status, m.prepayment_mode, l.read_at, l.energy_wh
             from meters m left join meter_latest l on l.meter_id = m.id where m.id = $1",
        )
        .bind(wanted.meter_id)
        .fetch_optional(&mut *conn)
        .await?;
        let field = format!("meters.{i}.meter_id");
        let Some(row) = row else {
            fields.insert(field, "no such meter".into());
            continue;
        };
        if row.try_get::<Option<Uuid>, _>("shop_id")? != Some(input.shop_id) {
            fields.insert(field, "the meter is not this shop's".into());
            continue;
        }
        if row.try_get::<String, _>("status")? != "active" {
            fields.insert(field, "the meter was removed".into());
            continue;
        }
        let mode: String = row.try_get("prepayment_mode")?;
        let accepted = if mode == "meter" {
            match meter_side_opening(conn, principal, wanted).await? {
                Ok(accepted) => accepted,
                Err(MeterSideRefusal::Meter(why)) => {
                    fields.insert(field, why);
                    continue;
                }
                Err(MeterSideRefusal::Remaining(why)) => {
                    fields.insert(format!("meters.{i}.accept_remaining_fen"), why);
                    continue;
                }
            }
        } else {
            None
        };
        modes.insert(mode);
        let latest: Option<(DateTime<Utc>, EnergyWh)> =
            match (row.try_get("read_at")?, row.try_get("energy_wh")?) {
                (Some(at), Some(wh)) => Some((at, wh)),
                _ => None,
            };
        let opening = match (wanted.manual_energy_wh, latest) {
            (Some(wh), _) if wh < EnergyWh::ZERO => {
                fields.insert(
                    format!("meters.{i}.manual_energy_wh"),
                    "not negative".into(),
                );
                continue;
            }
            // A typed reading is taken only when no fresh one is stored: the stored one is
            // what billing will count from.
            (_, Some((at, wh))) if at >= fresh_after => (wh, at, false),
            (Some(wh), _) => (wh, principal.now(), true),
            (None, _) => {
                fields.insert(
                    format!("meters.{i}.manual_energy_wh"),
                    "no fresh reading is stored: type the meter's reading".into(),
                );
                continue;
            }
        };
        meters.push(AccountMeter {
            meter_id: wanted.meter_id,
            meter_number: row.try_get("meter_number")?,
            opening_energy_wh: opening.0,
            opening_read_at: opening.1,
            opening_manual: opening.2,
            opening_remaining_fen: accepted,
        });
    }
    if modes.len() > 1 {
        fields.insert(
            "meters".into(),
            "an account is platform-side or meter-side, never mixed".into(),
        );
    }
    let mode = modes.pop_first().unwrap_or_else(|| "platform".into());
    if mode == "meter"
        && (input.deposit_fen > AmountFen::ZERO || input.opening_credit_fen > AmountFen::ZERO)
    {
        fields.insert(
            "opening_credit_fen".into(),
            "meter-side accounts open without deposit or opening credit: top up to buy credit onto the meter".into(),
        );
    }
    if !fields.is_empty() {
        return Err(CoreError::Validation {
            message: "the account cannot be opened".into(),
            fields,
        });
    }
    Ok(CheckedOpening {
        phone,
        meters,
        mode,
    })
}

/// One account, if the caller may see it (operators limited to buildings see their buildings').
pub async fn get(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<ShopAccount> {
    require_read_accounts(principal)?;
    list_where(conn, principal, Some(id), None)
        .await?
        .into_iter()
        .next()
        .ok_or(CoreError::NotFound("account"))
}

/// Accounts matching `q` (shop number or name, holder name or phone, meter number), newest first.
pub async fn search(
    conn: &mut PgConnection,
    principal: &Principal,
    q: &str,
) -> CoreResult<Vec<ShopAccount>> {
    require_read_accounts(principal)?;
    list_where(conn, principal, None, Some(q.trim())).await
}

/// Staff read every account of the company (within their buildings); a shop tenant reads the
/// accounts linked to them (`account_users`), read-only, closed ones included.
fn require_read_accounts(principal: &Principal) -> CoreResult<()> {
    if principal.role == crate::tenancy::roles::Role::ShopTenant && principal.company.is_some() {
        return Ok(());
    }
    principal.require_read_company()
}

/// A shop-tenant user of this company linked to `account` (right `accounts`): from now on they
/// read it — and keep reading it after it closes. Audited.
#[tracing::instrument(skip_all)]
pub async fn link_user(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    user: Uuid,
) -> CoreResult<Vec<LinkedUser>> {
    let found = get(conn, principal, account).await?;
    principal.require(Need::Act(Right::Accounts))?;
    if !matches!(found.state, AccountState::Open | AccountState::Closing) {
        return Err(CoreError::Conflict(
            "link tenants to an open account".into(),
        ));
    }
    let role: Option<String> = sqlx::query_scalar("select role from users where id = $1")
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
    if role.as_deref() != Some("shop_tenant") {
        return Err(CoreError::field(
            "user_id",
            "a shop-tenant user of this company",
        ));
    }
    sqlx::query(
        "insert into account_users (account_id, user_id, linked_at, linked_by) values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(account)
    .bind(user)
    .bind(principal.now())
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .execute(&mut *conn)
    .await?;
    crate::tenancy::audit::record(
        conn,
        principal,
        "account.link_user",
        "shop_account",
        Some(account.to_string()),
        None,
        Some(serde_json::json!({ "user_id": user })),
    )
    .await?;
    linked_users(conn, principal, account).await
}

/// Links the shop-tenant user who logs in as `username` (a phone number) to `account`, as
/// [`link_user`] does: the account page's form takes the login a person knows, not an id.
pub async fn link_username(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    username: &str,
) -> CoreResult<Vec<LinkedUser>> {
    // The account first: another company's id answers 404 before anything else.
    get(conn, principal, account).await?;
    principal.require(Need::Act(Right::Accounts))?;
    let user: Option<(Uuid, String, String)> =
        sqlx::query_as("select id, role, status from users where username = $1")
            .bind(username.trim())
            .fetch_optional(&mut *conn)
            .await?;
    let user = match user {
        Some((id, role, status)) if role == "shop_tenant" && status == "active" => id,
        Some(_) => {
            return Err(CoreError::field(
                "username",
                "this login is not an active shop tenant's",
            ))
        }
        // An invitation: a phone number nobody logs in with yet becomes the tenant's login,
        // and they are told by SMS how to sign in with a code.
        None => invite_tenant(conn, principal, account, username).await?,
    };
    link_user(conn, principal, account, user).await
}

/// Creates the tenant login of `phone` (no password: they sign in with SMS codes and may set one
/// with a reset code) and queues the invitation message.
async fn invite_tenant(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    phone: &str,
) -> CoreResult<Uuid> {
    let phone = crate::kernel::names::PhoneNumber::parse(phone)
        .map_err(|e| CoreError::field("username", e.0))?;
    let phone = phone.as_str();
    let now = principal.now();
    let id = crate::tenancy::users::insert_passwordless_tenant(conn, phone, now).await?;
    crate::tenancy::audit::record(
        conn,
        principal,
        "user.invite",
        "user",
        Some(id.to_string()),
        None,
        Some(serde_json::json!({ "username": phone, "account_id": account })),
    )
    .await?;
    let shop: String = sqlx::query_scalar(
        "select s.number || ' ' || s.name from shop_accounts a join shops s on s.id = a.shop_id
         where a.id = $1",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    let company = principal.company()?.name.clone();
    let body = format!(
        "{company}邀请您查看商铺 {shop} 的电费账户：扫描电表上的二维码，用本手机号和短信验证码登录。"
    );
    crate::notify::queue_to_phone(
        conn,
        "invitation",
        phone,
        &body,
        &[("company", &company), ("shop", &shop)],
        now,
    )
    .await?;
    Ok(id)
}

/// Records a print of transaction `txn`'s receipt (the caller read it with [`receipt`]) and
/// returns how many prints came before: more than 0 makes this one a reprint (补打).
pub async fn record_print(
    conn: &mut PgConnection,
    principal: &Principal,
    txn: Uuid,
) -> CoreResult<i64> {
    let before: i64 = sqlx::query_scalar("select count(*) from receipt_prints where txn_id = $1")
        .bind(txn)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("insert into receipt_prints (txn_id, printed_at, printed_by) values ($1, $2, $3)")
        .bind(txn)
        .bind(principal.now())
        .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
        .execute(&mut *conn)
        .await?;
    Ok(before)
}

/// A tenant user linked to an account.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkedUser {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub linked_at: DateTime<Utc>,
}

/// The tenant users linked to `account`.
pub async fn linked_users(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<Vec<LinkedUser>> {
    get(conn, principal, account).await?;
    let rows = sqlx::query(
        "select u.id, u.username, u.display_name, au.linked_at from account_users au
         join users u on u.id = au.user_id where au.account_id = $1 order by au.linked_at",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LinkedUser {
                user_id: r.try_get("id")?,
                username: r.try_get("username")?,
                display_name: r.try_get("display_name")?,
                linked_at: r.try_get("linked_at")?,
            })
        })
        .collect()
}

async fn list_where(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Option<Uuid>,
    q: Option<&str>,
) -> CoreResult<Vec<ShopAccount>> {
    let pattern = q.map(|q| {
        format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let rows = sqlx::query(
        "select a.id, a.shop_id, s.building_id, s.number, s.name, a.holder_name, a.holder_phone,
                a.state, a.opened_at, a.closed_at, a.prepayment_mode,
                coalesce((select sum(l.balance_fen) from ledger_accounts l join account_meters am
                            on l.key = 'in_transit:' || am.meter_id
                          where am.account_id = a.id and am.left_at is null), 0)::bigint as in_transit_fen,
                coalesce((select sum(l.balance_fen) from ledger_accounts l join account_meters am
                            on l.key = 'on_meter:' || am.meter_id
                          where am.account_id = a.id and am.left_at is null), 0)::bigint as on_meter_fen,
                coalesce((select balance_fen from ledger_accounts where key = 'wallet:' || a.id), 0) as wallet_fen,
                coalesce((select balance_fen from ledger_accounts where key = 'deposit:' || a.id), 0) as deposit_fen
         from shop_accounts a join shops s on s.id = a.shop_id
         where ($1::uuid is null or a.id = $1)
           and ($2::uuid[] is null or s.building_id = any($2))
           and ($4::uuid is null or exists (select 1 from account_users au where au.account_id = a.id and au.user_id = $4))
           and ($3::text is null or s.number ilike $3 or s.name ilike $3 or a.holder_name ilike $3
                or a.holder_phone ilike $3
                or exists (select 1 from account_meters am join meters m on m.id = am.meter_id
                           where am.account_id = a.id and m.meter_number ilike $3))
         order by a.opened_at desc limit 50",
    )
    .bind(id)
    .bind(principal.building_limit_param())
    .bind(pattern)
    // A tenant sees only the accounts linked to them.
    .bind((principal.role == crate::tenancy::roles::Role::ShopTenant).then_some(principal.user_id))
    .fetch_all(&mut *conn)
    .await?;
    let mut accounts = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let wallet_fen: AmountFen = row.try_get("wallet_fen")?;
        let state: String = row.try_get("state")?;
        accounts.push(ShopAccount {
            id,
            shop_id: row.try_get("shop_id")?,
            building_id: row.try_get("building_id")?,
            shop_number: row.try_get("number")?,
            shop_name: row.try_get("name")?,
            holder_name: row.try_get("holder_name")?,
            holder_phone: row.try_get("holder_phone")?,
            state: state
                .parse()
                .map_err(|_| CoreError::Internal(format!("account state {state}")))?,
            opened_at: row.try_get("opened_at")?,
            closed_at: row.try_get("closed_at")?,
            meters: meters_of(conn, id).await?,
            wallet_fen,
            deposit_fen: row.try_get("deposit_fen")?,
            available_fen: available(wallet_fen, unposted_charges(conn, id).await?)?,
            prepayment_mode: row.try_get("prepayment_mode")?,
            in_transit_fen: row.try_get("in_transit_fen")?,
            on_meter_fen: row.try_get("on_meter_fen")?,
        });
    }
    Ok(accounts)
}

async fn meters_of(conn: &mut PgConnection, account: Uuid) -> CoreResult<Vec<AccountMeter>> {
    let rows = sqlx::query(
        "select am.meter_id, m.meter_number, am.opening_energy_wh, am.opening_read_at, am.opening_manual,
                am.opening_remaining_fen
         from account_meters am join meters m on m.id = am.meter_id
         where am.account_id = $1 and am.left_at is null order by m.meter_number",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AccountMeter {
                meter_id: r.try_get("meter_id")?,
                meter_number: r.try_get("meter_number")?,
                opening_energy_wh: r.try_get("opening_energy_wh")?,
                opening_read_at: r.try_get("opening_read_at")?,
                opening_manual: r.try_get("opening_manual")?,
                opening_remaining_fen: r.try_get("opening_remaining_fen")?,
            })
        })
        .collect()
}

/// Charges rated but not yet posted to the wallet (the rating worker posts them in batches).
pub async fn unposted_charges(conn: &mut PgConnection, account: Uuid) -> CoreResult<AmountFen> {
    let fen: i64 = sqlx::query_scalar(
        "select coalesce(sum(debit_fen), 0)::bigint from charge_lines where account_id = $1 and not posted",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    Ok(AmountFen::from_fen(fen))
}

/// Available = wallet − unposted charges, checked.
pub fn available(wallet: AmountFen, unposted: AmountFen) -> CoreResult<AmountFen> {
    wallet
        .checked_sub(unposted)
        .ok_or_else(|| CoreError::Internal("available balance overflows".into()))
}

/// Why a meter-side meter cannot open an account: the meter itself, or the credit on it that the
/// operator has not confirmed.
enum MeterSideRefusal {
    Meter(String),
    Remaining(String),
}

/// A meter-side meter may open an account once the platform holds its counters and its
/// read-back remaining amount is 0, or the operator confirms exactly what is on it. `Ok(Err(why))`
/// refuses it; `Ok(Ok(accepted))` is the confirmed amount, if any.
async fn meter_side_opening(
    conn: &mut PgConnection,
    principal: &Principal,
    wanted: &OpeningMeter,
) -> CoreResult<Result<Option<i64>, MeterSideRefusal>> {
    let commissioned: Option<Option<i64>> =
        sqlx::query_scalar("select purchase_count from meter_secure where meter_id = $1")
            .bind(wanted.meter_id)
            .fetch_optional(&mut *conn)
            .await?;
    let versions = crate::tariff::plans::versions_by_meter(conn, &[wanted.meter_id])
        .await?
        .remove(&wanted.meter_id)
        .unwrap_or_default();
    let today = principal.now().with_timezone(&principal.tz()).date_naive();
    if crate::secure::settle::flat_price_today(&versions, today).is_none() {
        return Ok(Err(MeterSideRefusal::Meter(
            "a meter-side meter needs a flat tariff plan (the meter counts at one price)".into(),
        )));
    }
    if commissioned.flatten().is_none() {
        return Ok(Err(MeterSideRefusal::Meter(
            "the meter's secure counters have not been read yet: wait for it to be commissioned"
                .into(),
        )));
    }
    let remaining: Option<i64> =
        sqlx::query_scalar("select remaining_fen from meter_secure_readback where meter_id = $1")
            .bind(wanted.meter_id)
            .fetch_optional(&mut *conn)
            .await?;
    let remaining = remaining.unwrap_or(0);
    Ok(match wanted.accept_remaining_fen {
        _ if remaining == 0 => Ok(None),
        Some(accepted) if accepted == remaining => Ok(Some(accepted)),
        _ => Err(MeterSideRefusal::Remaining(format!(
            "the meter holds {} yuan: confirm that amount to open (it stays on the meter, recorded)",
            crate::kernel::money::AmountFen::from_fen(remaining)
        ))),
    })
}

/// The account, locked for a money movement (the caller checks its state), if the caller may see
/// it.
pub(crate) async fn lock_for_money(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<ShopAccount> {
    sqlx::query("select 1 from shop_accounts where id = $1 for update")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    get(conn, principal, id).await
}

/// The active meters of `shop`, as an opening takes them (the whole shop by default).
pub async fn meters_of_shop(
    conn: &mut PgConnection,
    principal: &Principal,
    shop: Uuid,
) -> CoreResult<Vec<Uuid>> {
    principal.require_read_company()?;
    Ok(sqlx::query_scalar(
        "select m.id from meters m join shops s on s.id = m.shop_id
         where m.shop_id = $1 and m.status = 'active' and ($2::uuid[] is null or s.building_id = any($2))
         order by m.meter_number",
    )
    .bind(shop)
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?)
}

/// A meter of a shop as an opening sees it: its latest stored reading and whether that one is
/// fresh enough to open from (or a reading must be typed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpeningReading {
    pub meter_id: Uuid,
    pub meter_number: String,
    pub latest: Option<(DateTime<Utc>, EnergyWh)>,
    /// Read within the company's stale limit: the opening counts from it, a typed one is ignored.
    pub fresh: bool,
    /// A meter-side meter: the remaining amount it last read back (fen; `None` before any), which
    /// an opening must find 0 or have an operator confirm.
    pub meter_side: bool,
    pub read_back_remaining_fen: Option<i64>,
}

/// The active meters of `shop` with what an opening would count from — the form's rows.
pub async fn opening_readings(
    conn: &mut PgConnection,
    principal: &Principal,
    shop: Uuid,
) -> CoreResult<Vec<OpeningReading>> {
    let meters = meters_of_shop(conn, principal, shop).await?;
    let settings = crate::tenancy::settings::load(conn).await?;
    // The same rule as `check_opening`.
    let fresh_after =
        principal.now() - chrono::Duration::seconds(i64::from(settings.stale_meter_s));
    let rows = sqlx::query(
        "select m.id, m.meter_number, l.read_at, l.energy_wh, m.prepayment_mode = 'meter' as meter_side,
                b.remaining_fen
         from unnest($1::uuid[]) with ordinality as w(id, n)
         join meters m on m.id = w.id left join meter_latest l on l.meter_id = m.id
         left join meter_secure_readback b on b.meter_id = m.id
         order by w.n",
    )
    .bind(&meters)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let latest: Option<(DateTime<Utc>, EnergyWh)> =
                match (r.try_get("read_at")?, r.try_get("energy_wh")?) {
                    (Some(at), Some(wh)) => Some((at, wh)),
                    _ => None,
                };
            Ok(OpeningReading {
                meter_id: r.try_get("id")?,
                meter_number: r.try_get("meter_number")?,
                fresh: latest.is_some_and(|(at, _)| at >= fresh_after),
                latest,
                meter_side: r.try_get("meter_side")?,
                read_back_remaining_fen: r.try_get("remaining_fen")?,
            })
        })
        .collect()
}

/// One movement of an account's wallet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    pub transaction_id: Uuid,
    pub posted_at: DateTime<Utc>,
    pub event_at: DateTime<Utc>,
    pub kind: super::ledger::TxnKind,
    pub receipt_no: Option<String>,
    pub method: Option<String>,
    pub memo: String,
    /// What it did to the wallet (+ in, − out).
    pub amount_fen: AmountFen,
    pub balance_fen: AmountFen,
}

/// An account's wallet over a period: the balance before it, every movement in it with its
/// source, and the balance after it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub account_id: Uuid,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub opening_fen: AmountFen,
    pub lines: Vec<StatementLine>,
    pub closing_fen: AmountFen,
}

/// The statement of `account` for postings in [`from`, `to`) (either end open).
pub async fn statement(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> CoreResult<Statement> {
    get(conn, principal, account).await?;
    let wallet = AccountKey::Wallet(account).to_string();
    let opening: i64 = sqlx::query_scalar(
        "select coalesce(sum(e.amount_fen), 0)::bigint from ledger_entries e
         join ledger_transactions t on t.id = e.txn_id
         where e.account_key = $1 and $2::timestamptz is not null and t.posted_at < $2",
    )
    .bind(&wallet)
    .bind(from)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "select t.id, t.posted_at, t.event_at, t.kind, t.receipt_no, t.method, t.memo, e.amount_fen
         from ledger_entries e join ledger_transactions t on t.id = e.txn_id
         where e.account_key = $1 and ($2::timestamptz is null or t.posted_at >= $2)
           and ($3::timestamptz is null or t.posted_at < $3)
         order by t.posted_at, t.id limit 10000",
    )
    .bind(&wallet)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let mut balance = AmountFen::from_fen(opening);
    let mut lines = Vec::with_capacity(rows.len());
    for r in rows {
        let amount: AmountFen = r.try_get("amount_fen")?;
        balance = balance
            .checked_add(amount)
            .ok_or_else(|| CoreError::Internal("statement overflows".into()))?;
        let kind: String = r.try_get("kind")?;
        lines.push(StatementLine {
            transaction_id: r.try_get("id")?,
            posted_at: r.try_get("posted_at")?,
            event_at: r.try_get("event_at")?,
            kind: kind
                .parse()
                .map_err(|_| CoreError::Internal(format!("transaction kind {kind}")))?,
            receipt_no: r.try_get("receipt_no")?,
            method: r.try_get("method")?,
            memo: r.try_get("memo")?,
            amount_fen: amount,
            balance_fen: balance,
        });
    }
    Ok(Statement {
        account_id: account,
        from,
        to,
        opening_fen: AmountFen::from_fen(opening),
        lines,
        closing_fen: balance,
    })
}

/// A printed receipt of one counter movement (top-up, refund, reversal, payout, deposit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub transaction: super::ledger::post::Transaction,
    pub account: ShopAccount,
    pub company_name: String,
    /// What it did to the wallet (+ in, − out), or to the deposit / refunds payable when it did
    /// not touch the wallet.
    pub amount_fen: AmountFen,
}

/// The receipt of transaction `txn`, if it has one and the caller may see its account.
pub async fn receipt(
    conn: &mut PgConnection,
    principal: &Principal,
    txn: Uuid,
) -> CoreResult<Receipt> {
    let transaction = super::ledger::post::load(conn, txn)
        .await?
        .filter(|t| t.receipt_no.is_some())
        .ok_or(CoreError::NotFound("receipt"))?;
    let account_id = transaction
        .shop_account_id
        .ok_or(CoreError::NotFound("receipt"))?;
    let account = get(conn, principal, account_id).await?;
    let amount_fen = transaction
        .legs
        .iter()
        .find(|(k, _)| k.shop_account() == Some(account_id))
        .or_else(|| {
            transaction
                .legs
                .iter()
                .find(|(k, _)| *k == AccountKey::RefundsPayable)
        })
        .map(|(_, a)| *a)
        .unwrap_or(AmountFen::ZERO);
    Ok(Receipt {
        company_name: principal.company()?.name.clone(),
        transaction,
        account,
        amount_fen,
    })
}
