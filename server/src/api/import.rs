//! `/api/v1/import*`: Excel templates and the import of shops, gateways and meters (dry run
//! with every row's errors, or an all-or-nothing import). The file is the raw request body.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::session::{ApiQuery, Session};
use super::xlsx;
use crate::app::AppState;
use axum::body::Bytes;
use axum::response::Response;
use axum::Json;
use powertab_core::import::{self, ImportKind, ImportReport};
use powertab_core::tenancy::audit;
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::CoreError;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(template))
        .routes(routes!(run_import))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TemplateQuery {
    kind: ImportKind,
}

/// The Excel template for `kind` (shops, gateways or meters): headers and one example row.
#[utoipa::path(get, path = "/api/v1/import/template.xlsx", params(TemplateQuery), tag = "import",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn template(session: Session, ApiQuery(q): ApiQuery<TemplateQuery>) -> ApiResult<Response> {
    session.principal.company()?;
    if !session.principal.can(Need::ReadCompany) {
        return Err(CoreError::NotFound("resource").into());
    }
    let tz = session.principal.company()?.time_zone.clone();
    let name = format!(
        "{}-template.xlsx",
        serde_json::to_value(q.kind)
            .expect("an enum")
            .as_str()
            .unwrap_or("import")
    );
    xlsx::respond(import::template(q.kind), tz, &name).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    kind: ImportKind,
    /// Decides the format: `.csv` is read as UTF-8 CSV, anything else as a spreadsheet.
    filename: String,
    #[serde(default)]
    dry_run: bool,
}

/// Import a file of `kind`. `dry_run=true` checks every row and keeps nothing; otherwise the
/// rows are kept only when none has an error. The report lists (row, column, message).
#[utoipa::path(post, path = "/api/v1/import", params(ImportQuery), tag = "import", request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ImportReport), (status = 422, body = ErrorBody)))]
async fn run_import(
    mut session: Session,
    ApiQuery(q): ApiQuery<ImportQuery>,
    body: Bytes,
) -> ApiResult<Json<ImportReport>> {
    session.principal.company()?;
    if !session.principal.can(Need::ReadCompany) {
        return Err(CoreError::NotFound("resource").into());
    }
    session.principal.require(Need::Act(Right::Settings))?;
    let filename = q.filename.clone();
    let rows = tokio::task::spawn_blocking(move || import::read_rows(&body, &filename))
        .await
        .map_err(|e| ApiError::Core(CoreError::Internal(format!("reading the file: {e}"))))??;
    let report = import::import(
        &mut session.tx,
        &session.principal,
        q.kind,
        &rows,
        q.dry_run,
    )
    .await?;
    if report.committed {
        let summary = serde_json::json!({"kind": q.kind, "file": q.filename, "rows": report.rows, "created": report.created});
        audit::record(
            &mut session.tx,
            &session.principal,
            "import",
            "import",
            None,
            None,
            Some(summary),
        )
        .await?;
        session.tx.commit().await?;
    }
    Ok(Json(report))
}
