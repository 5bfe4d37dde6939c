//! The server side of the import pages: an upload's dry run shown, and confirmed (rules in
//! `powertab_core::import`).

use crate::web::server::internal;
use crate::web::server::{finish, read_err, read_session, session_for_change, ui};
use crate::web::WebError;
use uuid::Uuid;

fn import_view(upload: powertab_core::import::Upload) -> super::views::ImportView {
    super::views::ImportView {
        id: upload.id.to_string(),
        kind: serde_json::to_value(upload.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        filename: upload.filename,
        rows: upload.report.rows,
        created: upload.report.created,
        errors: upload
            .report
            .errors
            .into_iter()
            .map(|e| (e.row, e.column, e.message))
            .collect(),
        confirmed: upload.confirmed,
    }
}

pub async fn get_import(id: String) -> Result<super::views::ImportView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id.parse().map_err(|_| internal("not_found"))?;
    let upload = powertab_core::import::upload(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    Ok(import_view(upload))
}

pub async fn confirm_import(csrf: String, id: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let upload = powertab_core::import::confirm(&mut tx, &principal, id).await?;
        if upload.report.committed {
            tx.commit().await?;
            Ok(format!("/import/{id}?ok=import.done"))
        } else {
            // Something changed since the dry run (a duplicate appeared): nothing was kept.
            Ok(format!("/import/{id}?error=validation_failed"))
        }
    }
    .await;
    finish(result)
}
