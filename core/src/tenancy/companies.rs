//! Property companies, managed by platform staff: onboarding (a `control.company` row and its
//! own migrated schema, atomically), the first admin, suspension and reactivation (which take
//! effect on the next request and revoke refresh tokens), quotas, and the audited `enter` call
//! that lets platform staff work inside a company.

use crate::auth::{self, AuthConfig, Principal, TokenPair};
use crate::db;
use crate::db::migrate;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::names::{CompanySlug, NewPassword, SchemaName, Username};
use crate::tenancy::audit;
use crate::tenancy::audit::snapshot as to_json;
use crate::tenancy::roles::Role;
use crate::tenancy::status::CompanyStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A company as platform staff see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Company {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub status: CompanyStatus,
    pub time_zone: String,
    pub max_meters: i32,
    pub max_gateways: i32,
    pub max_operators: i32,
    pub contact_name: String,
    pub contact_phone: String,
    pub created_at: DateTime<Utc>,
}

/// Onboarding input. Quotas default to the column defaults when absent.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewCompany {
    pub slug: String,
    pub name: String,
    pub time_zone: Option<String>,
    pub max_meters: Option<i32>,
    pub max_gateways: Option<i32>,
    pub max_operators: Option<i32>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
}

/// The first company admin, created by platform staff.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewAdmin {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    /// Initial password; the admin must change it at first login.
    pub password: String,
}

fn require_platform_admin(actor: &Principal) -> CoreResult<()> {
    match actor.role {
        Role::PlatformAdmin => Ok(()),
        Role::PlatformSupport => Err(CoreError::Forbidden("platform support is read-only".into())),
        // Company users never see platform resources.
        _ => Err(CoreError::NotFound("resource")),
    }
}

fn require_platform(actor: &Principal) -> CoreResult<()> {
    if actor.role.is_platform() {
        Ok(())
    } else {
        Err(CoreError::NotFound("resource"))
    }
}

struct Checked {
    slug: CompanySlug,
    name: String,
    time_zone: String,
}

fn check_new(input: &NewCompany) -> CoreResult<Checked> {
    let mut fields = BTreeMap::new();
    let slug = CompanySlug::parse(&input.slug);
    if let Err(e) = &slug {
        fields.insert("slug".into(), e.0.to_string());
    }
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        fields.insert("name".into(), "1–100 characters".into());
    }
    let time_zone = input
        .time_zone
        .clone()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| "Asia/Shanghai".into());
    if time_zone.parse::<chrono_tz::Tz>().is_err() {
        fields.insert(
            "time_zone".into(),
            "an IANA time zone such as Asia/Shanghai".into(),
        );
    }
    for (field, value) in [
        ("max_meters", input.max_meters),
        ("max_gateways", input.max_gateways),
        ("max_operators", input.max_operators),
    ] {
        if value.is_some_and(|v| !(0..=10_000_000).contains(&v)) {
            fields.insert(field.into(), "between 0 and 10,000,000".into());
        }
    }
    if !fields.is_empty() {
        return Err(CoreError::Validation {
            message: "please correct the highlighted fields".into(),
            fields,
        });
    }
    Ok(Checked {
        slug: slug.expect("checked above"),
        name,
        time_zone,
    })
}

const COMPANY_COLUMNS: &str =
    "id, slug, name, status, time_zone, max_meters, max_gateways, max_operators,
     contact_name, contact_phone, created_at";

fn company_from(row: sqlx::postgres::PgRow) -> CoreResult<Company> {
    Ok(Company {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        time_zone: row.try_get("time_zone")?,
        max_meters: row.try_get("max_meters")?,
        max_gateways: row.try_get("max_gateways")?,
        max_operators: row.try_get("max_operators")?,
        contact_name: row.try_get("contact_name")?,
        contact_phone: row.try_get("contact_phone")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Onboards a company: its row in `control`, its schema, migrated, in one transaction.
#[tracing::instrument(skip_all)]
pub async fn create(pool: &PgPool, actor: &Principal, input: &NewCompany) -> CoreResult<Company> {
    require_platform_admin(actor)?;
    let checked = check_new(input)?;
    let mut tx = pool.begin().await?;
    let taken: bool =
        sqlx::query_scalar("select exists (select 1 from control.company where slug = $1)")
            .bind(checked.slug.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if taken {
        return Err(CoreError::field("slug", "this slug is taken"));
    }
    // The schema name needs the id, so the row is inserted with a unique placeholder first.
    let id: i64 = sqlx::query_scalar(
        "insert into control.company
             (slug, name, schema_name, time_zone, max_meters, max_gateways, max_operators,
              contact_name, contact_phone)
         values ($1, $2, 'pending:' || $1, $3, coalesce($4, 5000), coalesce($5, 500), coalesce($6, 50),
                 coalesce($7, ''), coalesce($8, ''))
         returning id",
    )
    .bind(checked.slug.as_str())
    .bind(&checked.name)
    .bind(&checked.time_zone)
    .bind(input.max_meters)
    .bind(input.max_gateways)
    .bind(input.max_operators)
    .bind(input.contact_name.as_deref())
    .bind(input.contact_phone.as_deref())
    .fetch_one(&mut *tx)
    .await?;
    let schema = SchemaName::for_company(id);
    sqlx::query("update control.company set schema_name = $2 where id = $1")
        .bind(id)
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await?;
    migrate::migrate_schema_in(&mut tx, &schema, migrate::COMPANY).await?;
    let company = get_in(&mut tx, id).await?;
    audit::record_platform(
        &mut tx,
        actor,
        "company.create",
        Some(id),
        None,
        Some(to_json(&company)),
    )
    .await?;
    tx.commit().await?;
    Ok(company)
}

async fn get_in(conn: &mut PgConnection, id: i64) -> CoreResult<Company> {
    let row = sqlx::query(&format!(
        "select {COMPANY_COLUMNS} from control.company where id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(CoreError::NotFound("company"))?;
    company_from(row)
}

/// One company, for platform staff.
#[tracing::instrument(skip_all)]
pub async fn get(pool: &PgPool, actor: &Principal, id: i64) -> CoreResult<Company> {
    require_platform(actor)?;
    let mut conn = pool.acquire().await?;
    get_in(&mut conn, id).await
}

/// Filters of the company list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct CompanyFilter {
    pub status: Option<String>,
    /// Matches slug or name.
    pub q: Option<String>,
}

/// Every company (the platform has few hundred at most; the list is not paginated).
#[tracing::instrument(skip_all)]
pub async fn list(
    pool: &PgPool,
    actor: &Principal,
    filter: &CompanyFilter,
) -> CoreResult<Vec<Company>> {
    require_platform(actor)?;
    let rows = sqlx::query(&format!(
        "select {COMPANY_COLUMNS} from control.company
         where ($1::text is null or status = $1)
           and ($2::text is null or slug ilike '%' || $2 || '%' or name ilike '%' || $2 || '%')
         order by id"
    ))
    .bind(filter.status.as_deref().filter(|s| !s.is_empty()))
    .bind(filter.q.as_deref().filter(|s| !s.is_empty()))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(company_from).collect()
}

/// Suspends (`active = false`) or reactivates a company. Suspension revokes every refresh
/// token of the company; access tokens stop working on the next request because every request
/// checks the company's status.
#[tracing::instrument(skip_all)]
pub async fn set_status(
    pool: &PgPool,
    actor: &Principal,
    id: i64,
    active: bool,
) -> CoreResult<Company> {
    require_platform_admin(actor)?;
    let mut tx = pool.begin().await?;
    let before = get_in(&mut tx, id).await?;
    let status = if active {
        CompanyStatus::Active
    } else {
        CompanyStatus::Suspended
    };
    if before.status == status {
        return Err(CoreError::Conflict(format!(
            "the company is already {status}"
        )));
    }
    sqlx::query("update control.company set status = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(status)
        .execute(&mut *tx)
        .await?;
    if !active {
        auth::revoke_company_tokens(&mut tx, id).await?;
    }
    let after = get_in(&mut tx, id).await?;
    let action = if active {
        "company.reactivate"
    } else {
        "company.suspend"
    };
    audit::record_platform(
        &mut tx,
        actor,
        action,
        Some(id),
        Some(to_json(&before)),
        Some(to_json(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Quota changes by platform admins.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaPatch {
    pub max_meters: Option<i32>,
    pub max_gateways: Option<i32>,
    pub max_operators: Option<i32>,
}

/// Changes a company's quotas.
#[tracing::instrument(skip_all)]
pub async fn set_quotas(
    pool: &PgPool,
    actor: &Principal,
    id: i64,
    patch: &QuotaPatch,
) -> CoreResult<Company> {
    require_platform_admin(actor)?;
    check_new(&NewCompany {
        slug: "placeholder".into(),
        name: "placeholder".into(),
        max_meters: patch.max_meters,
        max_gateways: patch.max_gateways,
        max_operators: patch.max_operators,
        ..NewCompany::default()
    })?;
    let mut tx = pool.begin().await?;
    let before = get_in(&mut tx, id).await?;
    sqlx::query(
        "update control.company set max_meters = coalesce($2, max_meters),
             max_gateways = coalesce($3, max_gateways), max_operators = coalesce($4, max_operators),
             updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(patch.max_meters)
    .bind(patch.max_gateways)
    .bind(patch.max_operators)
    .execute(&mut *tx)
    .await?;
    let after = get_in(&mut tx, id).await?;
    audit::record_platform(
        &mut tx,
        actor,
        "company.quotas",
        Some(id),
        Some(to_json(&before)),
        Some(to_json(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Creates a company admin in company `id` (the first one, or another). The password is
/// initial: it must be changed at first login.
#[tracing::instrument(skip_all)]
pub async fn create_admin(
    pool: &PgPool,
    actor: &Principal,
    id: i64,
    input: &NewAdmin,
) -> CoreResult<Uuid> {
    require_platform_admin(actor)?;
    let mut fields = BTreeMap::new();
    let username = Username::parse(&input.username);
    if let Err(e) = &username {
        fields.insert("username".into(), e.0.to_string());
    }
    let password = NewPassword::parse(&input.password);
    if let Err(e) = &password {
        fields.insert("password".into(), e.0.to_string());
    }
    if !fields.is_empty() {
        return Err(CoreError::Validation {
            message: "please correct the highlighted fields".into(),
            fields,
        });
    }
    let hash = auth::hash_password(&password.expect("checked")).await?;
    let mut tx = pool.begin().await?;
    let company = auth::load_company(&mut tx, id)
        .await?
        .ok_or(CoreError::NotFound("company"))?;
    db::set_schema(&mut tx, &company.schema).await?;
    let user_id = crate::tenancy::users::insert_user(
        &mut tx,
        id,
        &crate::tenancy::users::UserRow {
            username: username.expect("checked").as_str().to_owned(),
            display_name: input.display_name.trim().to_owned(),
            phone: String::new(),
            role: Role::CompanyAdmin,
            rights: vec![],
            building_ids: vec![],
        },
        &hash,
    )
    .await?;
    let after = serde_json::json!({"username": input.username.trim(), "role": "company_admin"});
    audit::record(
        &mut tx,
        actor,
        "user.create",
        "user",
        Some(user_id.to_string()),
        None,
        Some(after.clone()),
    )
    .await?;
    audit::record_platform(
        &mut tx,
        actor,
        "company.create_admin",
        Some(id),
        None,
        Some(after),
    )
    .await?;
    tx.commit().await?;
    Ok(user_id)
}

/// Platform staff enter a company: a token pair scoped to it, with their own platform role
/// (support stays read-only). Audited in both the platform's and the company's log.
#[tracing::instrument(skip_all)]
pub async fn enter(
    pool: &PgPool,
    config: &AuthConfig,
    actor: &Principal,
    id: i64,
) -> CoreResult<TokenPair> {
    require_platform(actor)?;
    let mut tx = pool.begin().await?;
    let company = auth::load_company(&mut tx, id)
        .await?
        .ok_or(CoreError::NotFound("company"))?;
    audit::record_platform(&mut tx, actor, "company.enter", Some(id), None, None).await?;
    db::set_schema(&mut tx, &company.schema).await?;
    audit::record(
        &mut tx,
        actor,
        "platform.enter",
        "company",
        Some(id.to_string()),
        None,
        None,
    )
    .await?;
    let pair = auth::issue_entered(&mut tx, config, actor, id).await?;
    tx.commit().await?;
    Ok(pair)
}

/// Creates a platform staff user (used by `powertab user create` and the demo).
#[tracing::instrument(skip_all)]
pub async fn create_platform_user(
    pool: &PgPool,
    username: &str,
    display_name: &str,
    password: &str,
    role: Role,
    must_change_password: bool,
) -> CoreResult<Uuid> {
    if !role.is_platform() {
        return Err(CoreError::field(
            "role",
            "platform_admin or platform_support",
        ));
    }
    let username = Username::parse(username).map_err(|e| CoreError::field("username", e.0))?;
    let password = NewPassword::parse(password).map_err(|e| CoreError::field("password", e.0))?;
    let hash = auth::hash_password(&password).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into control.platform_user (id, username, display_name, password_hash, role, must_change_password)
         values ($1, $2, $3, $4, $5, $6) on conflict (username) do nothing",
    )
    .bind(id)
    .bind(username.as_str())
    .bind(display_name)
    .bind(hash)
    .bind(role.as_str())
    .bind(must_change_password)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CoreError::field("username", "this username is taken"));
    }
    Ok(id)
}

/// A company quota (stored in `control.company`, counted in the company's schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Active company admins, operators and auditors.
    Staff,
    Gateways,
    /// Active meters.
    Meters,
}

impl Quota {
    fn column(self) -> &'static str {
        match self {
            Quota::Staff => "max_operators",
            Quota::Gateways => "max_gateways",
            Quota::Meters => "max_meters",
        }
    }

    fn count_sql(self) -> &'static str {
        match self {
            Quota::Staff => {
                "select count(*) from users where status = 'active'
                   and role in ('company_admin', 'operator', 'auditor')"
            }
            Quota::Gateways => "select count(*) from gateways where status <> 'removed'",
            Quota::Meters => "select count(*) from meters where status = 'active'",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Quota::Staff => "staff users",
            Quota::Gateways => "gateways",
            Quota::Meters => "meters",
        }
    }
}

/// Checks that `adding` more fit the company's quota. Runs in the caller's company-scoped
/// transaction and locks the company row, so two concurrent creations cannot both pass.
#[tracing::instrument(skip_all)]
pub async fn check_quota(
    conn: &mut PgConnection,
    company_id: i64,
    quota: Quota,
    adding: usize,
) -> CoreResult<()> {
    let max: i32 = sqlx::query_scalar(&format!(
        "select {} from control.company where id = $1 for update",
        quota.column()
    ))
    .bind(company_id)
    .fetch_one(&mut *conn)
    .await?;
    let count: i64 = sqlx::query_scalar(quota.count_sql())
        .fetch_one(&mut *conn)
        .await?;
    let adding = i64::try_from(adding).unwrap_or(i64::MAX);
    if count.saturating_add(adding) > i64::from(max) {
        return Err(CoreError::QuotaExceeded(format!(
            "the company's quota of {max} {} would be exceeded",
            quota.what()
        )));
    }
    Ok(())
}

/// Finds a company by slug (CLI and demo).
#[tracing::instrument(skip_all)]
pub async fn find_by_slug(pool: &PgPool, slug: &str) -> CoreResult<Option<Company>> {
    let row = sqlx::query(&format!(
        "select {COMPANY_COLUMNS} from control.company where slug = $1"
    ))
    .bind(slug.trim().to_ascii_lowercase())
    .fetch_optional(pool)
    .await?;
    row.map(company_from).transpose()
}

/// Compile-time check: service futures must be `Send` to run in axum handlers (an iterator
/// adapter or `sqlx::raw_sql` held across an await silently breaks this).
#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: &T) {}
    #[allow(dead_code)]
    fn futures_are_send(pool: &sqlx::PgPool, actor: &super::Principal, input: &super::NewCompany) {
        let f = super::create(pool, actor, input);
        assert_send(&f);
    }
}
