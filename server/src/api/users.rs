//! `/api/v1/users*`: a company's users, their roles, rights and building limits. Company admins
//! (and platform admins inside the company) change them; staff may read them.

use super::error::{ApiResult, ErrorBody};
use super::session::{ApiJson, ApiQuery, Session};
use super::xlsx::{self, ExportLang};
use crate::app::AppState;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use powertab_core::kernel::page::Page;
use powertab_core::tenancy::users::{self, NewUser, User, UserFilter, UserPatch};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(export_users))
        .routes(routes!(get_user, update_user))
        .routes(routes!(deactivate_user))
        .routes(routes!(reactivate_user))
        .routes(routes!(reset_password))
}

/// Users of the caller's company, filtered by `role`, `status` and `q`; newest first.
#[utoipa::path(get, path = "/api/v1/users", params(UserFilter), tag = "users",
    responses((status = 200, body = Page<User>), (status = 404, body = ErrorBody)))]
async fn list_users(
    mut session: Session,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(
        users::list(&mut session.tx, &session.principal, &filter).await?,
    ))
}

/// Create a user with an initial password (changed at first login).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    mut session: Session,
    ApiJson(input): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = users::create(&mut session.tx, &session.principal, &input).await?;
    session.tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// The user list as Excel.
#[utoipa::path(get, path = "/api/v1/users.xlsx", params(UserFilter, ExportLang), tag = "users",
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")))]
async fn export_users(
    mut session: Session,
    ApiQuery(filter): ApiQuery<UserFilter>,
    ApiQuery(lang): ApiQuery<ExportLang>,
) -> ApiResult<Response> {
    let items = users::list_for_export(&mut session.tx, &session.principal, &filter).await?;
    let tz = session.principal.company()?.time_zone.clone();
    let sheet = users::to_sheet(&items, lang.lang.as_deref().unwrap_or("zh"));
    xlsx::respond(sheet, tz, "users.xlsx").await
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
async fn get_user(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<User>> {
    Ok(Json(
        users::get(&mut session.tx, &session.principal, id).await?,
    ))
}

/// Change name, phone, role, rights or building limits.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    request_body = UserPatch, responses((status = 200, body = User), (status = 403, body = ErrorBody)))]
async fn update_user(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> ApiResult<Json<User>> {
    let user = users::update(&mut session.tx, &session.principal, id, &patch).await?;
    session.tx.commit().await?;
    Ok(Json(user))
}

/// Deactivate: the user's sessions end at the next request.
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 409, body = ErrorBody)))]
async fn deactivate_user(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<User>> {
    let user = users::set_active(&mut session.tx, &session.principal, id, false).await?;
    session.tx.commit().await?;
    Ok(Json(user))
}

/// Reactivate a deactivated user.
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 409, body = ErrorBody)))]
async fn reactivate_user(mut session: Session, Path(id): Path<Uuid>) -> ApiResult<Json<User>> {
    let user = users::set_active(&mut session.tx, &session.principal, id, true).await?;
    session.tx.commit().await?;
    Ok(Json(user))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordReset {
    /// New initial password; the user must change it at next login.
    pub password: String,
}

/// Reset a user's password to a new initial one.
#[utoipa::path(post, path = "/api/v1/users/{id}/reset-password", tag = "users", params(("id" = Uuid, Path)),
    request_body = PasswordReset, responses((status = 200, body = User)))]
async fn reset_password(
    mut session: Session,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<PasswordReset>,
) -> ApiResult<Json<User>> {
    let user =
        users::reset_password(&mut session.tx, &session.principal, id, &input.password).await?;
    session.tx.commit().await?;
    Ok(Json(user))
}
