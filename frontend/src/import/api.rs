//! Server functions of the import pages: an upload's dry run, and confirming it (the upload
//! itself is a multipart POST handled by the server crate, `server/src/web.rs`).

use super::views::*;
use crate::web::WebError;
use leptos::prelude::*;

#[server(prefix = "/sfn", endpoint = "import_upload")]
pub async fn get_import(id: String) -> Result<ImportView, WebError> {
    super::server::get_import(id).await
}

/// Imports a checked upload for real.
#[server(prefix = "/sfn", endpoint = "import_confirm")]
pub async fn confirm_import(csrf: String, id: String) -> Result<(), WebError> {
    super::server::confirm_import(csrf, id).await
}
