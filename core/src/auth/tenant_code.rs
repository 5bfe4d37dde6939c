//! Shop tenants' one-time SMS codes (issue 14: Tenant experience): a code sent to a phone
//! logs its owner in without a password, links the phone to every open account registered with
//! it (creating the tenant's login on first use), or resets the password.
//!
//! - Only an HMAC of each code is stored (`tenant_codes`), keyed by the token secret and the
//!   code's id, so a database dump reveals no working code.
//! - Asking for a code answers the same whether or not the phone belongs to anybody (a dead row
//!   is stored for an unknown phone and counts toward the limits), so the form cannot be used to
//!   find out who rents where. Limits: one code per phone per minute, five per hour, twenty per
//!   source address per hour.
//! - A code lives ten minutes and dies after five wrong guesses; wrong codes also count as
//!   failed logins in `control.login_throttle`, exactly like wrong passwords.
//! - Every deadline reads the configured clock.

use super::{
    audit_login, issue_pair, throttle_check, throttle_clear, throttle_fail, AuthConfig,
    LoginOutcome, LoginRow,
};
use crate::db::{self, Tx};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::names::{CompanySlug, NewPassword, PhoneNumber, SchemaName};
use crate::tenancy::roles::Role;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use sha2::Sha256;
use sqlx::{PgPool, Row};
use std::fmt;
use uuid::Uuid;

/// How long a code works.
pub const CODE_TTL_S: i64 = 600;
/// Wrong guesses that kill a code.
pub const CODE_ATTEMPTS_MAX: i32 = 5;
/// One code per phone within this many seconds.
pub const PHONE_RESEND_S: i64 = 60;
/// Codes per phone per hour.
pub const PHONE_CODES_PER_HOUR: i64 = 5;
/// Codes asked for from one address per hour.
pub const ADDRESS_CODES_PER_HOUR: i64 = 20;

/// What a code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CodePurpose {
    /// Log in (and link the phone to its accounts).
    Login,
    /// Set a new password.
    Reset,
}

impl CodePurpose {
    fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Login => "login",
            CodePurpose::Reset => "reset",
        }
    }
}

/// Asking for a code.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeRequest {
    /// The company's slug (the QR link carries it).
    pub company: String,
    pub phone: String,
    #[serde(default = "login_purpose")]
    pub purpose: CodePurpose,
}

fn login_purpose() -> CodePurpose {
    CodePurpose::Login
}

/// Logging in (or resetting the password) with a code.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeLogin {
    pub company: String,
    pub phone: String,
    pub code: String,
    /// Only for a password reset.
    #[serde(default)]
    pub new_password: String,
}

impl fmt::Debug for CodeLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeLogin")
            .field("company", &self.company)
            .field("phone", &self.phone)
            .finish_non_exhaustive()
    }
}

/// The one answer for every wrong code.
fn bad_code() -> CoreError {
    CoreError::field("code", "wrong or expired code")
}

fn parse_phone(text: &str) -> CoreResult<String> {
    PhoneNumber::parse(text)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| CoreError::field("phone", e.0))
}

/// The company a slug names, in any state (a suspended company's tenants still log in).
async fn company_by_slug(pool: &PgPool, text: &str) -> CoreResult<Option<(i64, SchemaName)>> {
    let Ok(slug) = CompanySlug::parse(text.trim().to_ascii_lowercase().as_str()) else {
        return Ok(None);
    };
    let row = sqlx::query("select id, schema_name from control.company where slug = $1")
        .bind(slug.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok((
            r.try_get("id")?,
            super::stored_schema(r.try_get("schema_name")?)?,
        ))
    })
    .transpose()
}

fn code_hash(config: &AuthConfig, id: Uuid, code: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(config.jwt_secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"tenant-code:");
    mac.update(id.as_bytes());
    mac.update(b":");
    mac.update(code.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Whether `phone` may get a code for `purpose`: a login code for a tenant login or the
/// registered phone of an open account; a reset code only for an existing tenant login.
async fn eligible(tx: &mut Tx, phone: &str, purpose: CodePurpose) -> CoreResult<bool> {
    let tenant: bool = sqlx::query_scalar(
        "select exists (select 1 from users
                        where username = $1 and role = 'shop_tenant' and status = 'active')",
    )
    .bind(phone)
    .fetch_one(&mut **tx)
    .await?;
    if tenant || purpose == CodePurpose::Reset {
        return Ok(tenant);
    }
    // A staff login that happens to be a phone number never gets a tenant code.
    let staff: bool = sqlx::query_scalar("select exists (select 1 from users where username = $1)")
        .bind(phone)
        .fetch_one(&mut **tx)
        .await?;
    if staff {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(
        "select exists (select 1 from shop_accounts
                        where holder_phone = $1 and state in ('open', 'closing'))",
    )
    .bind(phone)
    .fetch_one(&mut **tx)
    .await?)
}

/// Refuses when the phone or the address asked for too many codes lately.
async fn check_send_limits(
    tx: &mut Tx,
    phone: &str,
    source_ip: Option<&str>,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    let (last_minute, last_hour): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where created_at > $2), count(*) filter (where created_at > $3)
         from tenant_codes where phone = $1 and created_at > $3",
    )
    .bind(phone)
    .bind(now - Duration::seconds(PHONE_RESEND_S))
    .bind(now - Duration::hours(1))
    .fetch_one(&mut **tx)
    .await?;
    if last_minute > 0 {
        return Err(CoreError::Throttled(
            "a code was just sent; wait a minute before asking again".into(),
        ));
    }
    if last_hour >= PHONE_CODES_PER_HOUR {
        return Err(CoreError::Throttled(
            "too many codes for this phone; try again in an hour".into(),
        ));
    }
    if let Some(ip) = source_ip {
        let from_address: i64 = sqlx::query_scalar(
            "select count(*) from tenant_codes where source_ip = $1 and created_at > $2",
        )
        .bind(ip)
        .bind(now - Duration::hours(1))
        .fetch_one(&mut **tx)
        .await?;
        if from_address >= ADDRESS_CODES_PER_HOUR {
            return Err(CoreError::Throttled(
                "too many codes asked for from this address; try again later".into(),
            ));
        }
    }
    Ok(())
}

/// Sends a code to `request.phone` when it may have one; answers the same either way.
#[tracing::instrument(skip_all)]
pub async fn send_code(
    pool: &PgPool,
    config: &AuthConfig,
    request: &CodeRequest,
    source_ip: Option<&str>,
) -> CoreResult<()> {
    let phone = parse_phone(&request.phone)?;
    let Some((_, schema)) = company_by_slug(pool, &request.company).await? else {
        // No such company: nothing to send, and nothing to say about it.
        return Ok(());
    };
    let now = config.clock.now();
    let mut tx = db::begin_in(pool, &schema).await?;
    // One request per phone at a time, so two quick clicks cannot both pass the limits.
    sqlx::query("select pg_advisory_xact_lock(hashtext('tenant_code:' || $1))")
        .bind(&phone)
        .execute(&mut *tx)
        .await?;
    check_send_limits(&mut tx, &phone, source_ip, now).await?;
    let eligible = eligible(&mut tx, &phone, request.purpose).await?;
    let id = Uuid::now_v7();
    let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
    sqlx::query(
        "insert into tenant_codes (id, phone, purpose, code_hash, created_at, expires_at, attempts, source_ip)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&phone)
    .bind(request.purpose.as_str())
    .bind(code_hash(config, id, &code))
    .bind(now)
    .bind(now + Duration::seconds(CODE_TTL_S))
    // A dead row for a phone nobody registered: it counts toward the limits, and no guess
    // ever matches it.
    .bind(if eligible { 0 } else { CODE_ATTEMPTS_MAX })
    .bind(source_ip)
    .execute(&mut *tx)
    .await?;
    if eligible {
        let body = format!(
            "PowerTab 验证码 {code}，{} 分钟内有效，请勿告诉他人。",
            CODE_TTL_S / 60
        );
        let minutes = (CODE_TTL_S / 60).to_string();
        crate::notify::queue_to_phone(
            &mut tx,
            "login_code",
            &phone,
            &body,
            &[("code", &code), ("minutes", &minutes)],
            now,
        )
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("powertab_tenant_codes_total", "sent" => eligible.to_string()).increment(1);
    Ok(())
}

/// Uses up the newest live code of `phone` for `purpose` when `code` is it; counts a wrong
/// guess against the code otherwise. The caller commits either way.
async fn take_code(
    tx: &mut Tx,
    config: &AuthConfig,
    phone: &str,
    purpose: CodePurpose,
    code: &str,
) -> CoreResult<bool> {
    let now = config.clock.now();
    let row: Option<(Uuid, Vec<u8>)> = sqlx::query_as(
        "select id, code_hash from tenant_codes
         where phone = $1 and purpose = $2 and used_at is null and expires_at > $3 and attempts < $4
         order by created_at desc limit 1 for update",
    )
    .bind(phone)
    .bind(purpose.as_str())
    .bind(now)
    .bind(CODE_ATTEMPTS_MAX)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((id, stored)) = row else {
        return Ok(false);
    };
    let given = code_hash(config, id, code.trim());
    let same = crate::secure::primitives::constant_time_eq(&given, &stored);
    let update = if same {
        "update tenant_codes set used_at = $2 where id = $1"
    } else {
        "update tenant_codes set attempts = attempts + 1 where id = $1 and $2 is not null"
    };
    sqlx::query(update)
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(same)
}

/// Checks a code in the company's schema: the transaction (to go on with) when it was right,
/// a counted failure otherwise.
async fn verified(
    pool: &PgPool,
    config: &AuthConfig,
    input: &CodeLogin,
    purpose: CodePurpose,
    source_ip: Option<&str>,
) -> CoreResult<(String, i64, Tx)> {
    let phone = parse_phone(&input.phone)?;
    let account_key = format!("acct:{}/{phone}", input.company.trim().to_ascii_lowercase());
    let address_key = source_ip.map(|ip| format!("addr:{ip}"));
    throttle_check(pool, &account_key, address_key.as_deref()).await?;
    let Some((company_id, schema)) = company_by_slug(pool, &input.company).await? else {
        throttle_fail(pool, config, &account_key, address_key.as_deref()).await?;
        return Err(bad_code());
    };
    let mut tx = db::begin_in(pool, &schema).await?;
    if !take_code(&mut tx, config, &phone, purpose, &input.code).await? {
        tx.commit().await?;
        throttle_fail(pool, config, &account_key, address_key.as_deref()).await?;
        return Err(bad_code());
    }
    throttle_clear(pool, &account_key).await?;
    Ok((phone, company_id, tx))
}

/// The tenant login of `phone`, created on first use; `None` when the phone is somebody else's
/// login (staff) or a deactivated one.
async fn tenant_user(tx: &mut Tx, phone: &str, now: DateTime<Utc>) -> CoreResult<Option<LoginRow>> {
    let row: Option<(Uuid, String, String)> =
        sqlx::query_as("select id, role, status from users where username = $1")
            .bind(phone)
            .fetch_optional(&mut **tx)
            .await?;
    match row {
        Some((id, role, status)) => Ok((role == Role::ShopTenant.as_str() && status == "active")
            .then_some(LoginRow {
                id,
                password_hash: String::new(),
                role: Role::ShopTenant,
                active: true,
                must_change_password: false,
            })),
        None => {
            let id = crate::tenancy::users::insert_passwordless_tenant(tx, phone, now).await?;
            Ok(Some(LoginRow {
                id,
                password_hash: String::new(),
                role: Role::ShopTenant,
                active: true,
                must_change_password: false,
            }))
        }
    }
}

/// The tenant as the audit log names them: they act for themselves with a code.
fn tenant_actor(
    config: &AuthConfig,
    user: Uuid,
    phone: &str,
    source_ip: Option<&str>,
) -> super::Principal {
    super::Principal {
        user_id: user,
        username: phone.to_owned(),
        display_name: String::new(),
        role: Role::ShopTenant,
        rights: vec![],
        building_ids: vec![],
        company: None,
        must_change_password: false,
        source_ip: source_ip.map(str::to_owned),
        side_pool: None,
        actor: crate::tenancy::actor::Actor::Person,
        clock: config.clock.clone(),
    }
}

/// Links `user` to every open account registered with `phone` it is not linked to yet (audited
/// per account); returns how many it linked.
async fn link_registered_accounts(
    tx: &mut Tx,
    config: &AuthConfig,
    user: Uuid,
    phone: &str,
    source_ip: Option<&str>,
) -> CoreResult<u64> {
    let linked: Vec<Uuid> = sqlx::query_scalar(
        "insert into account_users (account_id, user_id, linked_at)
         select a.id, $2, $3 from shop_accounts a
         where a.holder_phone = $1 and a.state in ('open', 'closing')
         on conflict do nothing
         returning account_id",
    )
    .bind(phone)
    .bind(user)
    .bind(config.clock.now())
    .fetch_all(&mut **tx)
    .await?;
    let actor = tenant_actor(config, user, phone, source_ip);
    for account in &linked {
        crate::tenancy::audit::record(
            tx,
            &actor,
            "account.link_user",
            "shop_account",
            Some(account.to_string()),
            None,
            Some(serde_json::json!({ "user_id": user, "by": "sms_code" })),
        )
        .await?;
    }
    Ok(linked.len() as u64)
}

/// Logs a tenant in with a code: creates the login on first use and links the phone's
/// accounts. A wrong code is a failed login.
#[tracing::instrument(skip_all)]
pub async fn login_with_code(
    pool: &PgPool,
    config: &AuthConfig,
    input: &CodeLogin,
    source_ip: Option<&str>,
) -> CoreResult<LoginOutcome> {
    let (phone, company_id, mut tx) =
        verified(pool, config, input, CodePurpose::Login, source_ip).await?;
    let Some(row) = tenant_user(&mut tx, &phone, config.clock.now()).await? else {
        tx.commit().await?;
        return Err(CoreError::Unauthorized(
            "this phone cannot log in here; ask the property office".into(),
        ));
    };
    link_registered_accounts(&mut tx, config, row.id, &phone, source_ip).await?;
    let tokens = issue_pair(
        &mut tx,
        config,
        Uuid::now_v7(),
        row.id,
        Some(company_id),
        Role::ShopTenant,
    )
    .await?;
    audit_login(&mut tx, config, &row, &phone, Some(company_id), source_ip).await?;
    tx.commit().await?;
    let slug = input.company.trim().to_ascii_lowercase();
    Ok(LoginOutcome {
        tokens,
        role: Role::ShopTenant,
        company_slug: Some(slug),
        must_change_password: false,
    })
}

/// Sets a tenant's password with a reset code and ends their sessions.
#[tracing::instrument(skip_all)]
pub async fn reset_password(
    pool: &PgPool,
    config: &AuthConfig,
    input: &CodeLogin,
    source_ip: Option<&str>,
) -> CoreResult<()> {
    // The new password is checked first, so a weak one does not use up the code.
    let new = NewPassword::parse(&input.new_password)
        .map_err(|e| CoreError::field("new_password", e.0))?;
    let (phone, _, mut tx) = verified(pool, config, input, CodePurpose::Reset, source_ip).await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "select id from users where username = $1 and role = 'shop_tenant' and status = 'active'",
    )
    .bind(&phone)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = user else {
        tx.commit().await?;
        return Err(bad_code());
    };
    let hash = super::hash_password(&new).await?;
    sqlx::query(
        "update users set password_hash = $2, must_change_password = false, updated_at = $3 where id = $1",
    )
    .bind(user)
    .bind(hash)
    .bind(config.clock.now())
    .execute(&mut *tx)
    .await?;
    super::revoke_user_tokens(&mut tx, user).await?;
    crate::tenancy::audit::record(
        &mut tx,
        &tenant_actor(config, user, &phone, source_ip),
        "user.password_reset",
        "user",
        Some(user.to_string()),
        None,
        Some(serde_json::json!({ "by": "sms_code" })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
