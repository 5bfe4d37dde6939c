//! Serving `.xlsx` twins of lists: the sheet is written on the blocking pool and sent as an
//! attachment.

use super::error::{ApiError, ApiResult};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use powertab_core::kernel::xlsx::{Sheet, CONTENT_TYPE};
use powertab_core::CoreError;
use serde::Deserialize;

/// `?lang=` of exports: header language, `zh` (default) or `en`.
#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportLang {
    pub lang: Option<String>,
}

/// Writes `sheet` and answers it as `filename`.
pub async fn respond(sheet: Sheet, time_zone: String, filename: &str) -> ApiResult<Response> {
    let bytes = tokio::task::spawn_blocking(move || sheet.to_xlsx(&time_zone))
        .await
        .map_err(|e| ApiError::Core(CoreError::Internal(format!("export task: {e}"))))??;
    Ok((
        [
            (header::CONTENT_TYPE, CONTENT_TYPE.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
