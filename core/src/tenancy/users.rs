//! A company's users: staff (company admins, operators, auditors) and shop tenants. Company
//! admins create them, grant operators rights per action, limit them to buildings, deactivate
//! and reactivate them and reset their passwords. Every change is audited; deactivation and
//! resets revoke refresh tokens. Staff count toward the company's operator quota.
//! All functions run inside the caller's company-scoped transaction.

use crate::auth::{self, Principal};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::names::{NewPassword, PhoneNumber, Username};
use crate::kernel::page::{self, Page};
use crate::kernel::xlsx::{Cell, Column, Sheet};
use crate::tenancy::audit;
use crate::tenancy::audit::snapshot as json;
use crate::tenancy::roles::{Need, Right, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A user as admins see it (never the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub phone: String,
    pub role: Role,
    pub status: String,
    pub must_change_password: bool,
    pub rights: Vec<Right>,
    pub building_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// The stored fields of a new user.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub username: String,
    pub display_name: String,
    pub phone: String,
    pub role: Role,
    pub rights: Vec<Right>,
    pub building_ids: Vec<Uuid>,
}

/// What an admin sends to create a user.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewUser {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub phone: String,
    pub role: Role,
    /// Initial password; the user must change it at first login.
    pub password: String,
    #[serde(default)]
    pub rights: Vec<Right>,
    #[serde(default)]
    pub building_ids: Vec<Uuid>,
}

/// What an admin may change on a user; absent fields stay as they are.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserPatch {
    pub display_name: Option<String>,
    pub phone: Option<String>,
    pub role: Option<Role>,
    pub rights: Option<Vec<Right>>,
    pub building_ids: Option<Vec<Uuid>>,
}

/// Filters of the user list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct UserFilter {
    pub role: Option<Role>,
    pub status: Option<String>,
    /// Matches username, display name or phone.
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

const USER_COLUMNS: &str =
    "id, username, display_name, phone, role, status, must_change_password, rights, building_ids, created_at";

fn user_from(row: sqlx::postgres::PgRow) -> CoreResult<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        phone: row.try_get("phone")?,
        role: role.parse().map_err(CoreError::Internal)?,
        status: row.try_get("status")?,
        must_change_password: row.try_get("must_change_password")?,
        rights: row
            .try_get::<Vec<String>, _>("rights")?
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect(),
        building_ids: row.try_get("building_ids")?,
        created_at: row.try_get("created_at")?,
    })
}

fn rights_text(rights: &[Right]) -> Vec<String> {
    let mut names: Vec<String> = rights.iter().map(|r| r.as_str().to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

/// Inserts a user after checking the username is free and the staff quota allows it.
#[tracing::instrument(skip_all)]
pub async fn insert_user(
    conn: &mut PgConnection,
    company_id: i64,
    row: &UserRow,
    password_hash: &str,
) -> CoreResult<Uuid> {
    let taken: bool = sqlx::query_scalar("select exists (select 1 from users where username = $1)")
        .bind(&row.username)
        .fetch_one(&mut *conn)
        .await?;
    if taken {
        return Err(CoreError::field("username", "this username is taken"));
    }
    if row.role.is_company_staff() {
        crate::tenancy::companies::check_quota(
            conn,
            company_id,
            crate::tenancy::companies::Quota::Staff,
            1,
        )
        .await?;
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into users (id, username, display_name, phone, password_hash, role, rights, building_ids)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&row.username)
    .bind(&row.display_name)
    .bind(&row.phone)
    .bind(password_hash)
    .bind(row.role.as_str())
    .bind(rights_text(&row.rights))
    .bind(&row.building_ids)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Creates a company user (admins only).
#[tracing::instrument(skip_all)]
pub async fn create(
    conn: &mut PgConnection,
    actor: &Principal,
    input: &NewUser,
) -> CoreResult<User> {
    actor.require(Need::Administer)?;
    let company_id = actor.company()?.id;
    let mut fields = BTreeMap::new();
    let username = Username::parse(&input.username);
    if let Err(e) = &username {
        fields.insert("username".to_owned(), e.0.to_string());
    }
    let password = NewPassword::parse(&input.password);
    if let Err(e) = &password {
        fields.insert("password".to_owned(), e.0.to_string());
    }
    let phone = if input.phone.trim().is_empty() {
        Ok(String::new())
    } else {
        PhoneNumber::parse(&input.phone).map(|p| p.as_str().to_owned())
    };
    if let Err(e) = &phone {
        fields.insert("phone".to_owned(), e.0.to_string());
    }
    if input.display_name.chars().count() > 100 {
        fields.insert(
            "display_name".to_owned(),
            "at most 100 characters".to_owned(),
        );
    }
    if input.role == Role::ShopTenant && PhoneNumber::parse(&input.username).is_err() {
        fields.insert(
            "username".to_owned(),
            "shop tenants log in with their mobile number".to_owned(),
        );
    }
    // Platform roles live in `control`; a company can only have company roles.
    if input.role.is_platform() {
        fields.insert("role".to_owned(), "not a company role".to_owned());
    }
    if !fields.is_empty() {
        return Err(CoreError::Validation {
            message: "please correct the highlighted fields".into(),
            fields,
        });
    }
    let hash = auth::hash_password(&password.expect("checked")).await?;
    let rights = if input.role == Role::Operator {
        input.rights.clone()
    } else {
        vec![]
    };
    let row = UserRow {
        username: username.expect("checked").as_str().to_owned(),
        display_name: input.display_name.trim().to_owned(),
        phone: phone.expect("checked"),
        role: input.role,
        rights,
        building_ids: input.building_ids.clone(),
    };
    let id = insert_user(conn, company_id, &row, &hash).await?;
    let user = get(conn, actor, id).await?;
    audit::record(
        conn,
        actor,
        "user.create",
        "user",
        Some(id.to_string()),
        None,
        Some(json(&user)),
    )
    .await?;
    Ok(user)
}

/// One user of the caller's company.
#[tracing::instrument(skip_all)]
pub async fn get(conn: &mut PgConnection, actor: &Principal, id: Uuid) -> CoreResult<User> {
    actor.company()?;
    // Staff see users; a shop tenant sees only itself.
    if !actor.can(Need::ReadCompany) && actor.user_id != id {
        return Err(CoreError::NotFound("user"));
    }
    let row = sqlx::query(&format!("select {USER_COLUMNS} from users where id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(CoreError::NotFound("user"))?;
    user_from(row)
}

/// Lists users of the caller's company, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    actor: &Principal,
    filter: &UserFilter,
) -> CoreResult<Page<User>> {
    actor.company()?;
    if !actor.can(Need::ReadCompany) {
        return Err(CoreError::NotFound("resource"));
    }
    let limit = page::limit(filter.limit)?;
    let cursor = page::decode_cursor(filter.cursor.as_deref())?;
    let rows = query(conn, filter, cursor, limit + 1).await?;
    Ok(page::page_from(rows, limit, |u| u.id))
}

/// Every user matching `filter`, for export.
#[tracing::instrument(skip_all)]
pub async fn list_for_export(
    conn: &mut PgConnection,
    actor: &Principal,
    filter: &UserFilter,
) -> CoreResult<Vec<User>> {
    actor.company()?;
    if !actor.can(Need::ReadCompany) {
        return Err(CoreError::NotFound("resource"));
    }
    actor.require(Need::Act(Right::Export))?;
    query(conn, filter, None, page::EXPORT_ROWS_MAX).await
}

async fn query(
    conn: &mut PgConnection,
    filter: &UserFilter,
    cursor: Option<Uuid>,
    fetch: i64,
) -> CoreResult<Vec<User>> {
    let mut q = QueryBuilder::new(format!("select {USER_COLUMNS} from users where true"));
    if let Some(role) = filter.role {
        q.push(" and role = ").push_bind(role.as_str());
    }
    if let Some(status) = filter.status.as_deref().filter(|s| !s.is_empty()) {
        q.push(" and status = ").push_bind(status.to_owned());
    }
    if let Some(text) = filter.q.as_deref().filter(|s| !s.is_empty()) {
        let pattern = format!("%{}%", text.replace('%', "\\%").replace('_', "\\_"));
        q.push(" and (username ilike ").push_bind(pattern.clone());
        q.push(" or display_name ilike ").push_bind(pattern.clone());
        q.push(" or phone ilike ").push_bind(pattern).push(")");
    }
    if let Some(cursor) = cursor {
        q.push(" and id < ").push_bind(cursor);
    }
    q.push(" order by id desc limit ").push_bind(fetch);
    let rows = q.build().fetch_all(conn).await?;
    rows.into_iter().map(user_from).collect()
}

/// Changes a user's name, phone, role, rights or building limits (admins only).
#[tracing::instrument(skip_all)]
pub async fn update(
    conn: &mut PgConnection,
    actor: &Principal,
    id: Uuid,
    patch: &UserPatch,
) -> CoreResult<User> {
    // Existence first: a user the caller cannot see is 404, never 403.
    let before = get(conn, actor, id).await?;
    actor.require(Need::Administer)?;
    let mut fields = BTreeMap::new();
    if let Some(role) = patch.role {
        if role.is_platform() || (role == Role::ShopTenant) != (before.role == Role::ShopTenant) {
            fields.insert(
                "role".to_owned(),
                "staff roles change only among staff roles".to_owned(),
            );
        }
        if id == actor.user_id && role != before.role {
            fields.insert(
                "role".to_owned(),
                "you cannot change your own role".to_owned(),
            );
        }
    }
    let phone = match patch.phone.as_deref().map(str::trim) {
        Some("") => Some(String::new()),
        Some(text) => match PhoneNumber::parse(text) {
            Ok(p) => Some(p.as_str().to_owned()),
            Err(e) => {
                fields.insert("phone".to_owned(), e.0.to_string());
                None
            }
        },
        None => None,
    };
    if !fields.is_empty() {
        return Err(CoreError::Validation {
            message: "please correct the highlighted fields".into(),
            fields,
        });
    }
    let role = patch.role.unwrap_or(before.role);
    let rights = if role == Role::Operator {
        patch
            .rights
            .clone()
            .unwrap_or_else(|| before.rights.clone())
    } else {
        vec![]
    };
    sqlx::query(
        "update users set display_name = coalesce($2, display_name), phone = coalesce($3, phone),
             role = $4, rights = $5, building_ids = coalesce($6, building_ids), updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(patch.display_name.as_deref().map(str::trim))
    .bind(phone)
    .bind(role.as_str())
    .bind(rights_text(&rights))
    .bind(patch.building_ids.as_ref())
    .execute(&mut *conn)
    .await?;
    if role != before.role {
        // Tokens carry the role: end the user's sessions so the new role applies at once.
        auth::revoke_user_tokens(conn, id).await?;
    }
    let after = get(conn, actor, id).await?;
    audit::record(
        conn,
        actor,
        "user.update",
        "user",
        Some(id.to_string()),
        Some(json(&before)),
        Some(json(&after)),
    )
    .await?;
    Ok(after)
}

/// Deactivates or reactivates a user (admins only). Deactivation revokes refresh tokens and
/// takes effect on the user's next request.
#[tracing::instrument(skip_all)]
pub async fn set_active(
    conn: &mut PgConnection,
    actor: &Principal,
    id: Uuid,
    active: bool,
) -> CoreResult<User> {
    let before = get(conn, actor, id).await?;
    actor.require(Need::Administer)?;
    let company_id = actor.company()?.id;
    if id == actor.user_id && !active {
        return Err(CoreError::Conflict("you cannot deactivate yourself".into()));
    }
    let status = if active { "active" } else { "inactive" };
    if before.status == status {
        return Err(CoreError::Conflict(format!("the user is already {status}")));
    }
    if active && before.role.is_company_staff() {
        crate::tenancy::companies::check_quota(
            conn,
            company_id,
            crate::tenancy::companies::Quota::Staff,
            1,
        )
        .await?;
    }
    sqlx::query("update users set status = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    if !active {
        auth::revoke_user_tokens(conn, id).await?;
    }
    let after = get(conn, actor, id).await?;
    let action = if active {
        "user.reactivate"
    } else {
        "user.deactivate"
    };
    audit::record(
        conn,
        actor,
        action,
        "user",
        Some(id.to_string()),
        Some(json(&before)),
        Some(json(&after)),
    )
    .await?;
    Ok(after)
}

/// Sets a new initial password that the user must change at next login (admins only).
#[tracing::instrument(skip_all)]
pub async fn reset_password(
    conn: &mut PgConnection,
    actor: &Principal,
    id: Uuid,
    password: &str,
) -> CoreResult<User> {
    get(conn, actor, id).await?;
    actor.require(Need::Administer)?;
    if id == actor.user_id {
        // Otherwise a stolen 15-minute token becomes the account for good: one's own change
        // asks for the current password.
        return Err(CoreError::Forbidden(
            "change your own password with your current one, not by a reset".into(),
        ));
    }
    let password = NewPassword::parse(password).map_err(|e| CoreError::field("password", e.0))?;
    let hash = auth::hash_password(&password).await?;
    sqlx::query("update users set password_hash = $2, must_change_password = true, updated_at = now() where id = $1")
        .bind(id)
        .bind(hash)
        .execute(&mut *conn)
        .await?;
    auth::revoke_user_tokens(conn, id).await?;
    audit::record(
        conn,
        actor,
        "user.reset_password",
        "user",
        Some(id.to_string()),
        None,
        None,
    )
    .await?;
    get(conn, actor, id).await
}

/// The user list as an Excel sheet.
pub fn to_sheet(users: &[User], lang: &str) -> Sheet {
    let zh = lang != "en";
    let h = |zh_text: &str, en_text: &str| {
        if zh {
            zh_text.to_owned()
        } else {
            en_text.to_owned()
        }
    };
    let columns = vec![
        Column::new(h("用户名", "Username"), 20.0),
        Column::new(h("姓名", "Name"), 16.0),
        Column::new(h("手机", "Phone"), 14.0),
        Column::new(h("角色", "Role"), 14.0),
        Column::new(h("状态", "Status"), 10.0),
        Column::new(h("权限", "Rights"), 40.0),
        Column::new(h("限定建筑数", "Buildings limited to"), 12.0),
        Column::new(h("创建时间", "Created"), 20.0),
    ];
    let rows = users
        .iter()
        .map(|u| {
            vec![
                Cell::Text(u.username.clone()),
                Cell::Text(u.display_name.clone()),
                Cell::Text(u.phone.clone()),
                Cell::Text(u.role.as_str().to_owned()),
                Cell::Text(u.status.clone()),
                Cell::Text(rights_text(&u.rights).join(", ")),
                Cell::Int(u.building_ids.len() as i64),
                Cell::Time(u.created_at),
            ]
        })
        .collect();
    Sheet {
        name: h("用户", "Users"),
        columns,
        rows,
        totals: None,
    }
}

/// Creates the shop-tenant login of `phone` with no password ('!' is no argon2 hash, so no
/// password matches it): tenants sign in with SMS codes and may set a password with a reset
/// code. Used by the first code login and by an operator's invitation; the caller audits.
pub(crate) async fn insert_passwordless_tenant(
    conn: &mut sqlx::PgConnection,
    phone: &str,
    now: DateTime<Utc>,
) -> CoreResult<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into users (id, username, phone, password_hash, role, must_change_password,
             created_at, updated_at)
         values ($1, $2, $2, '!', 'shop_tenant', false, $3, $3)",
    )
    .bind(id)
    .bind(phone)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(id)
}
