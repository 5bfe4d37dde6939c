//! `/api/v1/accounts*`, `/api/v1/shifts*`: shop accounts and the counter (DESIGN.md: Money and
//! the ledger). Every money-moving POST requires an `Idempotency-Key` header: the same key
//! returns the original result, the same key with another body answers 409.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx;
use crate::app::AppState;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::NaiveDate;
use powertab_core::billing::accounts::{self, OpenAccount, ShopAccount, Statement};
use powertab_core::billing::closing::{self, CloseAccount, Settlement};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod, CounterReceipt, Shift};
use powertab_core::billing::reversals::{self, ReversalOutcome, ReversalRequest};
use powertab_core::kernel::money::AmountFen;
use powertab_core::kernel::xlsx::{Cell, Column, Sheet};
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::CoreError;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_accounts, open_account))
        .routes(routes!(get_account))
        .routes(routes!(account_statement))
        .routes(routes!(export_statement))
        .routes(routes!(top_up))
        .routes(routes!(close_account))
        .routes(routes!(get_settlement))
        .routes(routes!(payout))
        .routes(routes!(collect_arrears))
        .routes(routes!(grant_emergency_credit))
        .routes(routes!(get_levels, set_levels))
        .routes(routes!(account_users, link_account_user))
        .routes(routes!(request_write_off))
        .routes(routes!(refund))
        .routes(routes!(reverse))
        .routes(routes!(waiting_reversals))
        .routes(routes!(approve_reversal))
        .routes(routes!(reject_reversal))
        .routes(routes!(current_shift))
        .routes(routes!(open_shift))
        .routes(routes!(close_shift))
}

/// The `Idempotency-Key` header of a money-moving request: 1 to 100 visible ASCII characters.
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or_default();
        if value.is_empty() || value.len() > 100 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CoreError::field(
                "Idempotency-Key",
                "money-moving requests carry an Idempotency-Key header of 1 to 100 visible ASCII characters",
            )
            .into());
        }
        Ok(IdempotencyKey(value.to_owned()))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AccountQuery {
    /// Shop number or name, holder name or phone, or meter number.
    q: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountList {
    pub items: Vec<ShopAccount>,
    pub next_cursor: Option<String>,
}

/// Accounts the caller may see matching `q` (newest first, at most 50).
#[utoipa::path(get, path = "/api/v1/accounts", params(AccountQuery), tag = "billing",
    responses((status = 200, body = AccountList)))]
async fn search_accounts(
    mut session: Session,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> ApiResult<Json<AccountList>> {
    let items = accounts::search(
        &mut session.tx,
        &session.principal,
        q.q.as_deref().unwrap_or_default(),
    )
    .await?;
    Ok(Json(AccountList {
        items,
        next_cursor: None,
    }))
}

/// Open a shop's account (开户) with its meters, an optional deposit and opening credit.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "billing", request_body = OpenAccount,
    params(("Idempotency-Key" = String, Header, description = "one per opening")),
    responses((status = 201, body = ShopAccount), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn open_account(
    mut session: Session,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<OpenAccount>,
) -> ApiResult<(StatusCode, Json<ShopAccount>)> {
    let account = accounts::open(&mut session.tx, &session.principal, &input, &key).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(account)))
}

/// One account with its meters and balances.
#[utoipa::path(get, path = "/api/v1/accounts/{id}", tag = "billing",
    responses((status = 200, body = ShopAccount), (status = 404, body = ErrorBody)))]
async fn get_account(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<ShopAccount>> {
    Ok(Json(
        accounts::get(&mut session.tx, &session.principal, id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PeriodQuery {
    /// First local day (YYYY-MM-DD), inclusive.
    from: Option<NaiveDate>,
    /// Last local day (YYYY-MM-DD), inclusive.
    to: Option<NaiveDate>,
    /// `en` for English headers in the Excel twin.
    lang: Option<String>,
}

async fn load_statement(session: &mut Session, id: Uuid, q: &PeriodQuery) -> ApiResult<Statement> {
    let tz = session.principal.tz();
    // Local midnights (the later instant across a DST gap), as rating takes them.
    let midnight = |day| powertab_core::tariff::rating::local_instant(tz, day, 0);
    let from = q.from.map(midnight);
    let to = q.to.and_then(|d| d.succ_opt()).map(midnight);
    Ok(accounts::statement(&mut session.tx, &session.principal, id, from, to).await?)
}

/// The account's statement for a period of local days: opening balance, every movement with its
/// source, closing balance.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/statement", tag = "billing", params(PeriodQuery),
    responses((status = 200, body = Statement), (status = 404, body = ErrorBody)))]
async fn account_statement(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> ApiResult<Json<Statement>> {
    Ok(Json(load_statement(&mut session, id, &q).await?))
}

/// The statement as Excel.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/statement.xlsx", tag = "billing", params(PeriodQuery),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_statement(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> ApiResult<Response> {
    let statement = load_statement(&mut session, id, &q).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let zh = q.lang.as_deref() != Some("en");
    let h = |a: &str, b: &str| if zh { a.to_owned() } else { b.to_owned() };
    let mut rows = vec![vec![
        Cell::Empty,
        Cell::Text(h("期初余额", "Opening balance")),
        Cell::Empty,
        Cell::Empty,
        Cell::Empty,
        Cell::Empty,
        Cell::MoneyFen(statement.opening_fen.fen()),
    ]];
    for line in &statement.lines {
        rows.push(vec![
            Cell::Time(line.posted_at),
            Cell::Text(line.kind.to_string()),
            Cell::Text(line.receipt_no.clone().unwrap_or_default()),
            Cell::Text(line.method.clone().unwrap_or_default()),
            Cell::Text(line.memo.clone()),
            Cell::MoneyFen(line.amount_fen.fen()),
            Cell::MoneyFen(line.balance_fen.fen()),
        ]);
    }
    let sheet = Sheet {
        name: h("对账单", "Statement"),
        columns: vec![
            Column::new(h("时间", "Time"), 20.0),
            Column::new(h("类型", "Kind"), 16.0),
            Column::new(h("收据号", "Receipt"), 16.0),
            Column::new(h("方式", "Method"), 10.0),
            Column::new(h("摘要", "Memo"), 24.0),
            Column::new(h("金额(元)", "Amount (yuan)"), 14.0),
            Column::new(h("余额(元)", "Balance (yuan)"), 14.0),
        ],
        rows,
        totals: None,
    };
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(sheet, tz, "statement.xlsx").await
}

/// Close the account (销户): final readings, everything rated and posted, the settlement in one
/// transaction (`close:<account>`); closing again answers with the same settlement.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/close", tag = "billing", request_body = CloseAccount,
    params(("Idempotency-Key" = String, Header, description = "required like every money request; closing is idempotent by account")),
    responses((status = 200, body = Settlement), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn close_account(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(_key): IdempotencyKey,
    ApiJson(input): ApiJson<CloseAccount>,
) -> ApiResult<Json<Settlement>> {
    let done = closing::close(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(done))
}

/// The settlement of a closed account (the slip).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/settlement", tag = "billing",
    responses((status = 200, body = Settlement), (status = 404, body = ErrorBody)))]
async fn get_settlement(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<Settlement>> {
    Ok(Json(
        closing::settlement(&mut session.tx, &session.principal, id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PayoutInput {
    pub amount_fen: AmountFen,
    pub method: CounterMethod,
}

/// Pay out what a closed account is owed (right `payout`), with a receipt.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/payout", tag = "billing", request_body = PayoutInput,
    params(("Idempotency-Key" = String, Header, description = "one per payout")),
    responses((status = 201, body = Object), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn payout(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<PayoutInput>,
) -> ApiResult<(
    StatusCode,
    Json<powertab_core::billing::ledger::post::Transaction>,
)> {
    let txn = closing::payout(
        &mut session.tx,
        &session.principal,
        id,
        input.amount_fen,
        input.method,
        &key,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(txn)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkedUserList {
    pub items: Vec<accounts::LinkedUser>,
    pub next_cursor: Option<String>,
}

/// The shop-tenant users linked to the account (they read it, and keep reading it once closed).
#[utoipa::path(get, path = "/api/v1/accounts/{id}/users", tag = "billing",
    responses((status = 200, body = LinkedUserList), (status = 404, body = ErrorBody)))]
async fn account_users(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<LinkedUserList>> {
    let items = accounts::linked_users(&mut session.tx, &session.principal, id).await?;
    Ok(Json(LinkedUserList {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LinkUserInput {
    /// An existing shop-tenant user.
    #[serde(default)]
    pub user_id: Option<Uuid>,
    /// Or the tenant's phone number: a phone nobody logs in with yet is invited (a tenant
    /// login is created and an `invitation` SMS sent; they sign in with SMS codes).
    #[serde(default)]
    pub username: Option<String>,
}

/// Link a shop-tenant user to an open account (right `accounts`), by id or by phone number
/// (inviting a new tenant).
#[utoipa::path(post, path = "/api/v1/accounts/{id}/users", tag = "billing", request_body = LinkUserInput,
    responses((status = 201, body = LinkedUserList), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn link_account_user(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<LinkUserInput>,
) -> ApiResult<(StatusCode, Json<LinkedUserList>)> {
    let items = match (input.user_id, input.username.as_deref()) {
        (Some(user), None) => {
            accounts::link_user(&mut session.tx, &session.principal, id, user).await?
        }
        (None, Some(phone)) => {
            accounts::link_username(&mut session.tx, &session.principal, id, phone).await?
        }
        _ => {
            // Another company's account answers 404 before the input is judged.
            accounts::get(&mut session.tx, &session.principal, id).await?;
            return Err(CoreError::field("user_id", "give either user_id or username").into());
        }
    };
    session.tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(LinkedUserList {
            items,
            next_cursor: None,
        }),
    ))
}

/// An account's alarm, trip and restore levels: its own (null = the company default) and the ones
/// in force.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/levels", tag = "billing",
    responses((status = 200, body = powertab_core::power::levels::LevelsView), (status = 404, body = ErrorBody)))]
async fn get_levels(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<powertab_core::power::levels::LevelsView>> {
    Ok(Json(
        powertab_core::power::levels::get(&mut session.tx, &session.principal, id).await?,
    ))
}

/// Set an account's own levels (right `accounts`; null follows the company default): the levels
/// in force must keep alarm 1 ≥ alarm 2 ≥ 0 and restore above −overdraft limit. Audited; the
/// power rules run at once.
#[utoipa::path(put, path = "/api/v1/accounts/{id}/levels", tag = "billing",
    request_body = powertab_core::power::levels::AccountLevels,
    responses((status = 200, body = powertab_core::power::levels::LevelsView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_levels(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<powertab_core::power::levels::AccountLevels>,
) -> ApiResult<Json<powertab_core::power::levels::LevelsView>> {
    let view =
        powertab_core::power::levels::set(&mut session.tx, &session.principal, id, &input).await?;
    session.tx.commit().await?;
    Ok(Json(view))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct EmergencyCreditInput {
    #[schema(value_type = i64)]
    amount_fen: powertab_core::kernel::money::AmountFen,
    hours: i64,
}

/// Grant emergency credit (应急电; right `emergency_credit`): no money moves; the account's trip
/// and restore levels drop by `amount_fen` for `hours` (1–72) or until the available balance is
/// back above 0; once per local month (409 after). The power rules run at once (a tripped shop
/// is closed again).
#[utoipa::path(post, path = "/api/v1/accounts/{id}/emergency-credit", tag = "billing", request_body = EmergencyCreditInput,
    responses((status = 201, body = powertab_core::power::emergency::EmergencyCredit), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn grant_emergency_credit(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<EmergencyCreditInput>,
) -> ApiResult<(
    StatusCode,
    Json<powertab_core::power::emergency::EmergencyCredit>,
)> {
    let credit = powertab_core::power::emergency::grant(
        &mut session.tx,
        &session.principal,
        id,
        input.amount_fen,
        input.hours,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(credit)))
}

/// Collect arrears of a closed account in arrears (right `top_up`), at most what is owed, with a
/// receipt; the account is `closed` when nothing is left.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/arrears/collect", tag = "billing", request_body = PayoutInput,
    params(("Idempotency-Key" = String, Header, description = "one per collection")),
    responses((status = 201, body = Object), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn collect_arrears(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<PayoutInput>,
) -> ApiResult<(
    StatusCode,
    Json<powertab_core::billing::ledger::post::Transaction>,
)> {
    let txn = closing::collect_arrears(
        &mut session.tx,
        &session.principal,
        id,
        input.amount_fen,
        input.method,
        &key,
    )
    .await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(txn)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WriteOffInput {
    pub reason: String,
}

/// Ask to write off what a closed account in arrears owes (right `accounts`): an approver
/// decides it under `/api/v1/approvals`.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/write-off", tag = "billing", request_body = WriteOffInput,
    params(("Idempotency-Key" = String, Header, description = "asking again with it answers with the same request")),
    responses((status = 202, body = powertab_core::billing::approvals::ApprovalRequest), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn request_write_off(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<WriteOffInput>,
) -> ApiResult<(
    StatusCode,
    Json<powertab_core::billing::approvals::ApprovalRequest>,
)> {
    let request =
        closing::request_write_off(&mut session.tx, &session.principal, id, &input.reason, &key)
            .await?;
    session.tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(request)))
}

/// Sell credit at the counter (售电).
#[utoipa::path(post, path = "/api/v1/accounts/{id}/top-up", tag = "billing", request_body = CounterInput,
    params(("Idempotency-Key" = String, Header, description = "one per top-up")),
    responses((status = 201, body = CounterReceipt), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn top_up(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<CounterInput>,
) -> ApiResult<(StatusCode, Json<CounterReceipt>)> {
    let done = counter::top_up(&mut session.tx, &session.principal, id, &input, &key).await?;
    session.tx.commit().await?;
    Ok((status_of(&done), Json(done)))
}

/// Pay credit back at the counter (退电), at most the available balance.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/refund", tag = "billing", request_body = CounterInput,
    params(("Idempotency-Key" = String, Header, description = "one per refund")),
    responses((status = 201, body = CounterReceipt), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn refund(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<CounterInput>,
) -> ApiResult<(StatusCode, Json<CounterReceipt>)> {
    let done = counter::refund(&mut session.tx, &session.principal, id, &input, &key).await?;
    session.tx.commit().await?;
    Ok((status_of(&done), Json(done)))
}

/// 201 for a movement made now, 200 for a replay of one made before.
fn status_of(done: &CounterReceipt) -> StatusCode {
    if done.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReversalInput {
    pub reason: String,
}

/// Reverse (冲正) a counter top-up or refund: posted at once (201) within the company's
/// threshold, else a request for an approver (202).
#[utoipa::path(post, path = "/api/v1/transactions/{id}/reversal", tag = "billing", request_body = ReversalInput,
    params(("Idempotency-Key" = String, Header, description = "one per reversal")),
    responses((status = 201, body = ReversalOutcome), (status = 202, body = ReversalOutcome),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reverse(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<ReversalInput>,
) -> ApiResult<(StatusCode, Json<ReversalOutcome>)> {
    let outcome =
        reversals::request(&mut session.tx, &session.principal, id, &input.reason, &key).await?;
    session.tx.commit().await?;
    let status = if outcome.transaction.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(outcome)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReversalList {
    pub items: Vec<ReversalRequest>,
    pub next_cursor: Option<String>,
}

/// The approvals inbox: reversals waiting for a decision, oldest first.
#[utoipa::path(get, path = "/api/v1/reversals", tag = "billing", responses((status = 200, body = ReversalList)))]
async fn waiting_reversals(mut session: Session) -> ApiResult<Json<ReversalList>> {
    let items = reversals::waiting(&mut session.tx, &session.principal).await?;
    Ok(Json(ReversalList {
        items,
        next_cursor: None,
    }))
}

/// Approve a reversal request and post it (an approver other than the requester).
#[utoipa::path(post, path = "/api/v1/reversals/{id}/approve", tag = "billing",
    params(("Idempotency-Key" = String, Header, description = "one per approval")),
    responses((status = 201, body = ReversalOutcome), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_reversal(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
) -> ApiResult<(StatusCode, Json<ReversalOutcome>)> {
    let outcome = reversals::approve(&mut session.tx, &session.principal, id, &key).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(outcome)))
}

/// Reject a reversal request: nothing moves.
#[utoipa::path(post, path = "/api/v1/reversals/{id}/reject", tag = "billing",
    responses((status = 200, body = ReversalRequest), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reject_reversal(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ReversalRequest>> {
    let request = reversals::reject(&mut session.tx, &session.principal, id).await?;
    session.tx.commit().await?;
    Ok(Json(request))
}

/// The caller's open cashier shift, or null.
#[utoipa::path(get, path = "/api/v1/shifts/current", tag = "billing",
    responses((status = 200, body = Option<Shift>)))]
async fn current_shift(mut session: Session) -> ApiResult<Json<Option<Shift>>> {
    session.principal.require_read_company()?;
    Ok(Json(
        counter::open_shift_of(&mut session.tx, &session.principal).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ShiftOpen {
    #[serde(default)]
    pub float_fen: AmountFen,
}

/// Open the caller's cashier shift (交班) with a cash float.
#[utoipa::path(post, path = "/api/v1/shifts/open", tag = "billing", request_body = ShiftOpen,
    responses((status = 201, body = Shift), (status = 409, body = ErrorBody)))]
async fn open_shift(
    mut session: Session,
    ApiJson(input): ApiJson<ShiftOpen>,
) -> ApiResult<(StatusCode, Json<Shift>)> {
    let shift = counter::open_shift(&mut session.tx, &session.principal, input.float_fen).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(shift)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ShiftClose {
    pub counted_cash_fen: AmountFen,
}

/// Close the caller's shift with the cash counted; a difference posts to `adjustments`.
#[utoipa::path(post, path = "/api/v1/shifts/close", tag = "billing", request_body = ShiftClose,
    responses((status = 200, body = Shift), (status = 409, body = ErrorBody)))]
async fn close_shift(
    mut session: Session,
    ApiJson(input): ApiJson<ShiftClose>,
) -> ApiResult<Json<Shift>> {
    let shift =
        counter::close_shift(&mut session.tx, &session.principal, input.counted_cash_fen).await?;
    session.tx.commit().await?;
    Ok(Json(shift))
}
