//! `/api/v1/company` and `/api/v1/audit-log*`: the caller's company and its audit log.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::response::Response;
use axum::Json;
use powertab_core::kernel::page::Page;
use powertab_core::tenancy::audit::{self, AuditEntry, AuditFilter};
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::CoreError;
use serde::Serialize;
use sqlx::Row;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(company))
        .routes(routes!(audit_log))
        .routes(routes!(export_audit_log))
}

/// The caller's company with its quotas and current usage. Shop tenants get only what they
/// need to know their landlord: slug, name, time zone and contact (the rest is absent).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub slug: String,
    pub name: String,
    pub time_zone: String,
    pub contact_name: String,
    pub contact_phone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<powertab_core::tenancy::CompanyStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_meters: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gateways: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_operators: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_staff: Option<i64>,
}

/// The caller's company.
#[utoipa::path(get, path = "/api/v1/company", tag = "company",
    responses((status = 200, body = CompanyInfo), (status = 404, body = ErrorBody)))]
async fn company(mut session: Session) -> ApiResult<Json<CompanyInfo>> {
    let scope = session.principal.company()?.clone();
    let row = sqlx::query(
        "select max_meters, max_gateways, max_operators, contact_name, contact_phone,
                (select count(*) from users where status = 'active'
                   and role in ('company_admin', 'operator', 'auditor')) as active_staff
         from control.company where id = $1",
    )
    .bind(scope.id)
    .fetch_one(&mut *session.tx)
    .await?;
    let staff = session.principal.can(Need::ReadCompany);
    let only_staff = |value| staff.then_some(value);
    Ok(Json(CompanyInfo {
        id: only_staff(scope.id),
        slug: scope.slug,
        name: scope.name,
        time_zone: scope.time_zone,
        contact_name: row.try_get("contact_name")?,
        contact_phone: row.try_get("contact_phone")?,
        status: staff.then_some(scope.status),
        max_meters: staff.then(|| row.try_get("max_meters")).transpose()?,
        max_gateways: staff.then(|| row.try_get("max_gateways")).transpose()?,
        max_operators: staff.then(|| row.try_get("max_operators")).transpose()?,
        active_staff: staff.then(|| row.try_get("active_staff")).transpose()?,
    }))
}

/// The company's audit log, filtered by `action` prefix, `actor`, `target_id`, `from`, `to`.
#[utoipa::path(get, path = "/api/v1/audit-log", params(AuditFilter), tag = "company",
    responses((status = 200, body = Page<AuditEntry>), (status = 404, body = ErrorBody)))]
async fn audit_log(
    mut session: Session,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    session.principal.company()?;
    if !session.principal.can(Need::ReadCompany) {
        return Err(CoreError::NotFound("resource").into());
    }
    Ok(Json(
        audit::list(&mut session.tx, &session.principal, &filter).await?,
    ))
}

/// The company's audit log as Excel.
#[utoipa::path(get, path = "/api/v1/audit-log.xlsx", params(AuditFilter, ExportLang), tag = "company",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_audit_log(
    mut session: Session,
    ApiQuery(filter): ApiQuery<AuditFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let scope = session.principal.company()?.clone();
    if !session.principal.can(Need::ReadCompany) {
        return Err(CoreError::NotFound("resource").into());
    }
    session.principal.require(Need::Act(Right::Export))?;
    let entries = audit::list_for_export(&mut session.tx, &session.principal, &filter).await?;
    let sheet = audit::to_sheet(&entries, lang.lang.as_deref().unwrap_or("zh"));
    xlsx::respond(sheet, scope.time_zone, "audit-log.xlsx").await
}
