//! `/api/v1/company` and `/api/v1/audit-log*`: the caller's company and its audit log.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::response::Response;
use axum::Json;
use powertab_core::audit::{self, AuditEntry, AuditFilter};
use powertab_core::page::Page;
use powertab_core::roles::{Need, Right};
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

/// The caller's company with its quotas and current usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompanyInfo {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub time_zone: String,
    pub max_meters: i32,
    pub max_gateways: i32,
    pub max_operators: i32,
    pub active_staff: i64,
}

/// The caller's company.
#[utoipa::path(get, path = "/api/v1/company", tag = "company",
    responses((status = 200, body = CompanyInfo), (status = 404, body = ErrorBody)))]
async fn company(mut session: Session) -> ApiResult<Json<CompanyInfo>> {
    let scope = session.principal.company()?.clone();
    let row = sqlx::query(
        "select max_meters, max_gateways, max_operators,
                (select count(*) from users where status = 'active'
                   and role in ('company_admin', 'operator', 'auditor')) as active_staff
         from control.company where id = $1",
    )
    .bind(scope.id)
    .fetch_one(&mut *session.tx)
    .await?;
    Ok(Json(CompanyInfo {
        id: scope.id,
        slug: scope.slug,
        name: scope.name,
        status: scope.status,
        time_zone: scope.time_zone,
        max_meters: row.try_get("max_meters")?,
        max_gateways: row.try_get("max_gateways")?,
        max_operators: row.try_get("max_operators")?,
        active_staff: row.try_get("active_staff")?,
    }))
}

/// The company's audit log, filtered by `action` prefix, `actor`, `target_id`, `from`, `to`.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "company",
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
#[utoipa::path(get, path = "/api/v1/audit-log.xlsx", tag = "company",
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
