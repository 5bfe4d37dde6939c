//! The REST API under `/api/v1` (DESIGN.md: API conventions) and its OpenAPI document, which
//! utoipa generates from the handlers themselves, so it lists every route that exists.

pub mod auth;
pub mod billing;
pub mod books;
pub mod company;
pub mod control;
pub mod error;
pub mod field;
pub mod fleet;
pub mod import;
pub mod notify;
pub mod payments;
pub mod platform;
pub mod property;
pub mod review;
pub mod secure;
pub mod selfservice;
pub mod session;
pub mod setup;
pub mod users;
pub mod xlsx;

use crate::app::AppState;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "PowerTab API",
        description = "Remote prepaid electricity for commercial buildings."
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        powertab_core::import::ImportKind
    ))
)]
struct ApiDoc;

/// Every API route, with the OpenAPI document describing them.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(platform::router())
        .merge(users::router())
        .merge(company::router())
        .merge(property::router())
        .merge(setup::router())
        .merge(field::router())
        .merge(fleet::router())
        .merge(control::router())
        .merge(notify::router())
        .merge(import::router())
        .merge(billing::router())
        .merge(review::router())
        .merge(books::router())
        .merge(secure::router())
        .merge(payments::router())
        .merge(selfservice::router())
}
