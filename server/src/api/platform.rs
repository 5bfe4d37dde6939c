//! `/api/v1/platform/*`: what platform staff do: onboard, suspend and reactivate companies, set
//! quotas, create company admins, enter a company, read the platform audit log. Company users get
//! 404 here; platform support gets 403 on changes.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use powertab_core::auth::TokenPair;
use powertab_core::kernel::page::Page;
use powertab_core::kernel::xlsx::{Cell, Column, Sheet};
use powertab_core::tenancy::audit::{self, AuditEntry, AuditFilter};
use powertab_core::tenancy::companies::{
    self, Company, CompanyFilter, NewAdmin, NewCompany, QuotaPatch,
};
use powertab_core::CoreError;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_companies, create_company))
        .routes(routes!(export_companies))
        .routes(routes!(get_company))
        .routes(routes!(set_quotas))
        .routes(routes!(suspend))
        .routes(routes!(reactivate))
        .routes(routes!(create_admin))
        .routes(routes!(enter))
        .routes(routes!(platform_audit))
        .routes(routes!(export_platform_audit))
        .routes(routes!(registration_problems))
        .routes(routes!(registration_refusals))
        .routes(routes!(ledger_checks))
        .routes(routes!(claim_registration))
}

/// Every DTU registration on the platform that breaks the rule (6–128 bytes, none a prefix of
/// another), with the gateways each overlaps (`company_id:identity`), for staff to follow up.
#[utoipa::path(get, path = "/api/v1/platform/registration-problems", tag = "platform",
    responses((status = 200, body = Vec<powertab_core::field::registration::Problem>), (status = 404, body = ErrorBody)))]
async fn registration_problems(
    mut session: Session,
) -> ApiResult<Json<Vec<powertab_core::field::registration::Problem>>> {
    require_platform(&session)?;
    if session.principal.company.is_some() {
        return Err(CoreError::NotFound("resource").into());
    }
    Ok(Json(
        powertab_core::field::registration::problems(&mut session.tx, None).await?,
    ))
}

/// Registrations companies tried to enter that overlapped another (or were refused unchecked
/// past the hourly limit), newest first: who, from where, which bytes.
#[utoipa::path(get, path = "/api/v1/platform/registration-refusals", tag = "platform",
    responses((status = 200, body = Vec<powertab_core::field::registration::Refusal>), (status = 404, body = ErrorBody)))]
async fn registration_refusals(
    mut session: Session,
) -> ApiResult<Json<Vec<powertab_core::field::registration::Refusal>>> {
    Ok(Json(
        powertab_core::field::registration::refusals(&mut session.tx, &session.principal).await?,
    ))
}

/// The nightly ledger check: each company's latest run, those with violations first.
#[utoipa::path(get, path = "/api/v1/platform/ledger-checks", tag = "platform",
    responses((status = 200, body = Vec<powertab_core::billing::ledger::check::CheckRun>), (status = 404, body = ErrorBody)))]
async fn ledger_checks(
    mut session: Session,
) -> ApiResult<Json<Vec<powertab_core::billing::ledger::check::CheckRun>>> {
    Ok(Json(
        powertab_core::billing::ledger::check::recent_runs(&mut session.tx, &session.principal)
            .await?,
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct ClaimInput {
    /// The refused registration, lowercase hex as listed.
    pub registration_hex: String,
    pub company_id: i64,
}

/// Hands a refused DTU registration to a company (platform admins; audited): its admins then
/// see it among their refused registrations and can enter the gateway.
#[utoipa::path(post, path = "/api/v1/platform/unclaimed-registrations/claim", tag = "platform",
    request_body = ClaimInput,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn claim_registration(
    mut session: Session,
    ApiJson(input): ApiJson<ClaimInput>,
) -> ApiResult<StatusCode> {
    powertab_core::field::fleet::claim_unclaimed(
        &mut session.tx,
        &session.principal,
        &input.registration_hex,
        input.company_id,
    )
    .await?;
    session.tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyList {
    pub items: Vec<Company>,
    pub next_cursor: Option<String>,
}

fn require_platform(session: &Session) -> ApiResult<()> {
    if session.principal.role.is_platform() {
        Ok(())
    } else {
        Err(CoreError::NotFound("resource").into())
    }
}

/// Companies, filtered by `status` and `q` (slug or name).
#[utoipa::path(get, path = "/api/v1/platform/companies", params(CompanyFilter), tag = "platform",
    responses((status = 200, body = CompanyList), (status = 404, body = ErrorBody)))]
async fn list_companies(
    State(state): State<AppState>,
    session: Session,
    ApiQuery(filter): ApiQuery<CompanyFilter>,
) -> ApiResult<Json<CompanyList>> {
    let items = companies::list(&state.pool, &session.principal, &filter).await?;
    Ok(Json(CompanyList {
        items,
        next_cursor: None,
    }))
}

/// Onboard a company: its record and its own schema.
#[utoipa::path(post, path = "/api/v1/platform/companies", tag = "platform", request_body = NewCompany,
    responses((status = 201, body = Company), (status = 422, body = ErrorBody)))]
async fn create_company(
    State(state): State<AppState>,
    session: Session,
    ApiJson(input): ApiJson<NewCompany>,
) -> ApiResult<(StatusCode, Json<Company>)> {
    let company = companies::create(&state.pool, &session.principal, &input).await?;
    Ok((StatusCode::CREATED, Json(company)))
}

/// The company list as Excel.
#[utoipa::path(get, path = "/api/v1/platform/companies.xlsx", params(CompanyFilter, ExportLang), tag = "platform",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_companies(
    State(state): State<AppState>,
    session: Session,
    ApiQuery(filter): ApiQuery<CompanyFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let items = companies::list(&state.pool, &session.principal, &filter).await?;
    let zh = lang.lang.as_deref() != Some("en");
    let h = |a: &str, b: &str| if zh { a.to_owned() } else { b.to_owned() };
    let sheet = Sheet {
        name: h("物业公司", "Companies"),
        columns: vec![
            Column::new("ID", 8.0),
            Column::new(h("登录标识", "Slug"), 16.0),
            Column::new(h("名称", "Name"), 28.0),
            Column::new(h("状态", "Status"), 10.0),
            Column::new(h("时区", "Time zone"), 16.0),
            Column::new(h("电表上限", "Max meters"), 10.0),
            Column::new(h("网关上限", "Max gateways"), 10.0),
            Column::new(h("操作员上限", "Max staff"), 10.0),
            Column::new(h("创建时间", "Created"), 20.0),
        ],
        rows: items
            .iter()
            .map(|c| {
                vec![
                    Cell::Int(c.id),
                    Cell::Text(c.slug.clone()),
                    Cell::Text(c.name.clone()),
                    Cell::Text(c.status.to_string()),
                    Cell::Text(c.time_zone.clone()),
                    Cell::Int(c.max_meters.into()),
                    Cell::Int(c.max_gateways.into()),
                    Cell::Int(c.max_operators.into()),
                    Cell::Time(c.created_at),
                ]
            })
            .collect(),
        totals: None,
    };
    xlsx::respond(sheet, "Asia/Shanghai".into(), "companies.xlsx").await
}

/// One company.
#[utoipa::path(get, path = "/api/v1/platform/companies/{id}", tag = "platform",
    params(("id" = i64, Path)), responses((status = 200, body = Company), (status = 404, body = ErrorBody)))]
async fn get_company(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> ApiResult<Json<Company>> {
    Ok(Json(
        companies::get(&state.pool, &session.principal, id).await?,
    ))
}

/// Change quotas (meters, gateways, staff users).
#[utoipa::path(patch, path = "/api/v1/platform/companies/{id}/quotas", tag = "platform",
    params(("id" = i64, Path)), request_body = QuotaPatch, responses((status = 200, body = Company)))]
async fn set_quotas(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<QuotaPatch>,
) -> ApiResult<Json<Company>> {
    Ok(Json(
        companies::set_quotas(&state.pool, &session.principal, id, &patch).await?,
    ))
}

/// Suspend: the company's users cannot log in or use their tokens; its field side keeps running.
#[utoipa::path(post, path = "/api/v1/platform/companies/{id}/suspend", tag = "platform",
    params(("id" = i64, Path)), responses((status = 200, body = Company), (status = 409, body = ErrorBody)))]
async fn suspend(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> ApiResult<Json<Company>> {
    Ok(Json(
        companies::set_status(&state.pool, &session.principal, id, false).await?,
    ))
}

/// Reactivate a suspended company.
#[utoipa::path(post, path = "/api/v1/platform/companies/{id}/reactivate", tag = "platform",
    params(("id" = i64, Path)), responses((status = 200, body = Company), (status = 409, body = ErrorBody)))]
async fn reactivate(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> ApiResult<Json<Company>> {
    Ok(Json(
        companies::set_status(&state.pool, &session.principal, id, true).await?,
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: Uuid,
}

/// Create a company admin with an initial password (changed at first login).
#[utoipa::path(post, path = "/api/v1/platform/companies/{id}/admins", tag = "platform",
    params(("id" = i64, Path)), request_body = NewAdmin, responses((status = 201, body = Created)))]
async fn create_admin(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<NewAdmin>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let user_id = companies::create_admin(&state.pool, &session.principal, id, &input).await?;
    Ok((StatusCode::CREATED, Json(Created { id: user_id })))
}

/// Enter a company: a token pair that works inside it with the caller's platform role.
#[utoipa::path(post, path = "/api/v1/platform/companies/{id}/enter", tag = "platform",
    params(("id" = i64, Path)), responses((status = 200, body = TokenPair), (status = 404, body = ErrorBody)))]
async fn enter(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(
        companies::enter(&state.pool, &state.auth, &session.principal, id).await?,
    ))
}

/// The platform audit log (company onboarding, suspension, entering, …), newest first.
#[utoipa::path(get, path = "/api/v1/platform/audit-log", params(AuditFilter), tag = "platform",
    responses((status = 200, body = Page<AuditEntry>)))]
async fn platform_audit(
    mut session: Session,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    require_platform(&session)?;
    powertab_core::db::set_schema(
        &mut session.tx,
        &powertab_core::kernel::names::SchemaName::control(),
    )
    .await?;
    Ok(Json(
        audit::list(&mut session.tx, &session.principal, &filter).await?,
    ))
}

/// The platform audit log as Excel.
#[utoipa::path(get, path = "/api/v1/platform/audit-log.xlsx", params(AuditFilter, ExportLang), tag = "platform",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_platform_audit(
    mut session: Session,
    ApiQuery(filter): ApiQuery<AuditFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    require_platform(&session)?;
    powertab_core::db::set_schema(
        &mut session.tx,
        &powertab_core::kernel::names::SchemaName::control(),
    )
    .await?;
    let entries = audit::list_for_export(&mut session.tx, &session.principal, &filter).await?;
    let sheet = audit::to_sheet(&entries, lang.lang.as_deref().unwrap_or("zh"));
    xlsx::respond(sheet, "Asia/Shanghai".into(), "platform-audit-log.xlsx").await
}
