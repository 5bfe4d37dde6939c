//! `/api/v1/day-closes*`, `/api/v1/day-report*`, `/api/v1/shifts`, `/api/v1/invoices*`,
//! `/api/v1/accounts/{id}/invoices`: the daily close (日结) and its report, the cashier shifts,
//! invoice (发票) requests, and the energy no account was billed for (`/api/v1/unbilled-energy`).

use super::billing::IdempotencyKey;
use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx;
use crate::app::AppState;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::NaiveDate;
use powertab_core::billing::books::{self, DayClose, DayReport};
use powertab_core::billing::counter::{self, Shift};
use powertab_core::billing::invoices::{self, InvoiceInput, InvoiceRequest};
use powertab_core::kernel::xlsx::{Cell, Column, Sheet};
use powertab_core::tenancy::roles::{Need, Right};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_closes, close_day))
        .routes(routes!(day_report))
        .routes(routes!(export_day_report))
        .routes(routes!(list_shifts))
        .routes(routes!(account_invoices, request_invoice))
        .routes(routes!(waiting_invoices))
        .routes(routes!(issue_invoice))
        .routes(routes!(cancel_invoice))
        .routes(routes!(unbilled_energy))
        .routes(routes!(export_unbilled_energy))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CloseList {
    pub items: Vec<DayClose>,
    pub next_cursor: Option<String>,
}

/// The latest daily closes, newest first.
#[utoipa::path(get, path = "/api/v1/day-closes", tag = "billing", responses((status = 200, body = CloseList)))]
async fn list_closes(mut session: Session) -> ApiResult<Json<CloseList>> {
    let items = books::closes(&mut session.tx, &session.principal).await?;
    Ok(Json(CloseList {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CloseDayInput {
    /// The local date to close through (a day that is over).
    pub day: NaiveDate,
}

/// Close the books through a day (日结, right `daily_close`): every shift holding its
/// transactions must be closed; the day and all before it are frozen.
#[utoipa::path(post, path = "/api/v1/day-closes", tag = "billing", request_body = CloseDayInput,
    responses((status = 201, body = DayClose), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn close_day(
    mut session: Session,
    ApiJson(input): ApiJson<CloseDayInput>,
) -> ApiResult<(StatusCode, Json<DayClose>)> {
    let done = books::close_day(&mut session.tx, &session.principal, input.day).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(done)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DayQuery {
    /// The local date (default: yesterday).
    day: Option<NaiveDate>,
    /// `en` for English column names (the `.xlsx`).
    lang: Option<String>,
}

async fn load_report(session: &mut Session, q: &DayQuery) -> ApiResult<DayReport> {
    let day = q.day.unwrap_or_else(|| {
        session
            .principal
            .today()
            .pred_opt()
            .unwrap_or(NaiveDate::MIN)
    });
    Ok(books::day_report(&mut session.tx, &session.principal, day).await?)
}

/// What a day booked, per kind and method, and the shifts that block its close.
#[utoipa::path(get, path = "/api/v1/day-report", tag = "billing", params(DayQuery),
    responses((status = 200, body = DayReport)))]
async fn day_report(
    mut session: Session,
    ApiQuery(q): ApiQuery<DayQuery>,
) -> ApiResult<Json<DayReport>> {
    Ok(Json(load_report(&mut session, &q).await?))
}

/// The day report as Excel.
#[utoipa::path(get, path = "/api/v1/day-report.xlsx", tag = "billing", params(DayQuery),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_day_report(
    mut session: Session,
    ApiQuery(q): ApiQuery<DayQuery>,
) -> ApiResult<Response> {
    let report = load_report(&mut session, &q).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let zh = q.lang.as_deref() != Some("en");
    let h = |a: &str, b: &str| if zh { a.to_owned() } else { b.to_owned() };
    let rows = report
        .lines
        .iter()
        .map(|l| {
            vec![
                Cell::Text(report.day.to_string()),
                Cell::Text(l.kind.clone()),
                Cell::Text(l.method.clone()),
                Cell::Int(l.count),
                Cell::MoneyFen(l.amount_fen.fen()),
            ]
        })
        .collect();
    let sheet = Sheet {
        name: h("日结", "Day report"),
        columns: vec![
            Column::new(h("日期", "Date"), 12.0),
            Column::new(h("类型", "Kind"), 18.0),
            Column::new(h("方式", "Method"), 10.0),
            Column::new(h("笔数", "Count"), 8.0),
            Column::new(h("金额(元)", "Amount (yuan)"), 14.0),
        ],
        rows,
        totals: None,
    };
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(sheet, tz, &format!("day-report-{}.xlsx", report.day)).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShiftList {
    pub items: Vec<Shift>,
    pub next_cursor: Option<String>,
}

/// Cashier shifts, open ones first, then the latest closed.
#[utoipa::path(get, path = "/api/v1/shifts", tag = "billing", responses((status = 200, body = ShiftList)))]
async fn list_shifts(mut session: Session) -> ApiResult<Json<ShiftList>> {
    let items = counter::shifts(&mut session.tx, &session.principal).await?;
    Ok(Json(ShiftList {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceList {
    pub items: Vec<InvoiceRequest>,
    pub next_cursor: Option<String>,
}

/// The account's invoice requests, newest first.
#[utoipa::path(get, path = "/api/v1/accounts/{id}/invoices", tag = "billing",
    responses((status = 200, body = InvoiceList), (status = 404, body = ErrorBody)))]
async fn account_invoices(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<InvoiceList>> {
    let items = invoices::of_account(&mut session.tx, &session.principal, id).await?;
    Ok(Json(InvoiceList {
        items,
        next_cursor: None,
    }))
}

/// Record an invoice request (right `top_up`): at most what the account paid in and is not yet
/// invoiced.
#[utoipa::path(post, path = "/api/v1/accounts/{id}/invoices", tag = "billing", request_body = InvoiceInput,
    params(("Idempotency-Key" = String, Header, description = "one per request")),
    responses((status = 201, body = InvoiceRequest), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn request_invoice(
    mut session: Session,
    Path(id): Path<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(input): ApiJson<InvoiceInput>,
) -> ApiResult<(StatusCode, Json<InvoiceRequest>)> {
    let request = invoices::request(&mut session.tx, &session.principal, id, &input, &key).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(request)))
}

/// Invoice requests waiting to be issued, oldest first.
#[utoipa::path(get, path = "/api/v1/invoices", tag = "billing", responses((status = 200, body = InvoiceList)))]
async fn waiting_invoices(mut session: Session) -> ApiResult<Json<InvoiceList>> {
    let items = invoices::waiting(&mut session.tx, &session.principal).await?;
    Ok(Json(InvoiceList {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct IssueInput {
    /// The number of the invoice made in the tax system.
    pub invoice_number: String,
}

/// Mark an invoice request issued (right `accounts`).
#[utoipa::path(post, path = "/api/v1/invoices/{id}/issue", tag = "billing", request_body = IssueInput,
    responses((status = 200, body = InvoiceRequest), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn issue_invoice(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<IssueInput>,
) -> ApiResult<Json<InvoiceRequest>> {
    let done = invoices::settle(
        &mut session.tx,
        &session.principal,
        id,
        Some(&input.invoice_number),
    )
    .await?;
    session.tx.commit().await?;
    Ok(Json(done))
}

/// Cancel an invoice request (right `accounts`).
#[utoipa::path(post, path = "/api/v1/invoices/{id}/cancel", tag = "billing",
    responses((status = 200, body = InvoiceRequest), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_invoice(
    mut session: Session,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<InvoiceRequest>> {
    let done = invoices::settle(&mut session.tx, &session.principal, id, None).await?;
    session.tx.commit().await?;
    Ok(Json(done))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PeriodQuery {
    /// First local date (default: 30 days ago).
    from: Option<NaiveDate>,
    /// Last local date (default: today).
    to: Option<NaiveDate>,
    lang: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnbilledList {
    pub items: Vec<powertab_core::billing::changes::UnbilledDay>,
    pub next_cursor: Option<String>,
}

async fn load_unbilled(
    session: &mut Session,
    q: &PeriodQuery,
) -> ApiResult<Vec<powertab_core::billing::changes::UnbilledDay>> {
    let to = q.to.unwrap_or_else(|| session.principal.today());
    let from = q.from.unwrap_or(to - chrono::Duration::days(30));
    Ok(
        powertab_core::billing::changes::unbilled(&mut session.tx, &session.principal, from, to)
            .await?,
    )
}

/// Energy platform-side meters counted on days no open account held them (unbilled, never lost).
#[utoipa::path(get, path = "/api/v1/unbilled-energy", tag = "billing", params(PeriodQuery),
    responses((status = 200, body = UnbilledList), (status = 422, body = ErrorBody)))]
async fn unbilled_energy(
    mut session: Session,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> ApiResult<Json<UnbilledList>> {
    let items = load_unbilled(&mut session, &q).await?;
    Ok(Json(UnbilledList {
        items,
        next_cursor: None,
    }))
}

/// The unbilled energy as Excel.
#[utoipa::path(get, path = "/api/v1/unbilled-energy.xlsx", tag = "billing", params(PeriodQuery),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_unbilled_energy(
    mut session: Session,
    ApiQuery(q): ApiQuery<PeriodQuery>,
) -> ApiResult<Response> {
    let items = load_unbilled(&mut session, &q).await?;
    session.principal.require(Need::Act(Right::Export))?;
    let zh = q.lang.as_deref() != Some("en");
    let h = |a: &str, b: &str| if zh { a.to_owned() } else { b.to_owned() };
    let rows = items
        .iter()
        .map(|u| {
            vec![
                Cell::Text(u.day.to_string()),
                Cell::Text(u.meter_number.clone()),
                Cell::Text(u.shop_number.clone().unwrap_or_default()),
                Cell::Int(u.energy_wh.wh()),
            ]
        })
        .collect();
    let sheet = Sheet {
        name: h("未计费电量", "Unbilled energy"),
        columns: vec![
            Column::new(h("日期", "Date"), 12.0),
            Column::new(h("表号", "Meter"), 16.0),
            Column::new(h("商铺", "Shop"), 10.0),
            Column::new(h("电量(Wh)", "Energy (Wh)"), 14.0),
        ],
        rows,
        totals: None,
    };
    let tz = session.principal.company()?.time_zone.clone();
    xlsx::respond(sheet, tz, "unbilled-energy.xlsx").await
}
