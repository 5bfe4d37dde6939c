//! Login, tokens and the per-request principal (DESIGN.md: Tenancy, login and access).
//!
//! - Passwords are argon2id hashes, computed on the blocking pool so the async runtime never
//!   stalls on them.
//! - Access tokens are short-lived HS256 JWTs carrying user id, company id and role; only HS256
//!   is accepted, so `alg: none` and algorithm-confusion tokens fail.
//! - Refresh tokens are random opaque strings stored as sha256 hashes; each use rotates them, and
//!   presenting a rotated one again revokes its whole family (a stolen token gets one use at
//!   most).
//! - Failed logins are counted per account and per source address in `control.login_throttle`
//!   (shared by every server process) and lock out for a while past configurable thresholds.
//! - `resolve` turns a verified token into a [`Principal`] and a transaction, checking in
//!   `control` on every request that the company and the user are still active; [`boundary`]
//!   is where every kind of request (REST, server function, upload) gets its session.

pub mod boundary;
pub mod tenant_code;

use crate::db::{self, Tx};
use crate::kernel::clock::SharedClock;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::names::{CompanySlug, NewPassword, SchemaName};
use crate::tenancy::actor::Actor;
use crate::tenancy::roles::{allows, Need, Right, Role};
use crate::tenancy::status::CompanyStatus;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use std::fmt;
use uuid::Uuid;

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Login throttling thresholds (configurable, so tests can set their own); a key left out keeps
/// its default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ThrottleConfig {
    /// Failed logins of one account within `window_s` before it is locked.
    pub account_failures_max: i32,
    /// Failed logins from one address within `window_s` before it is locked.
    pub address_failures_max: i32,
    pub window_s: i64,
    pub lockout_s: i64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account_failures_max: 5,
            address_failures_max: 50,
            window_s: 900,
            lockout_s: 900,
        }
    }
}

/// Everything the auth service needs from configuration.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 key for access tokens; at least 32 bytes.
    pub jwt_secret: Secret,
    pub access_ttl_s: i64,
    pub refresh_ttl_s: i64,
    pub throttle: ThrottleConfig,
    /// The clock sessions and every request's principal read "now" from.
    pub clock: SharedClock,
}

impl AuthConfig {
    pub const ACCESS_TTL_S_DEFAULT: i64 = 900;
    pub const REFRESH_TTL_S_DEFAULT: i64 = 30 * 24 * 3600;
}

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id (`control.platform_user` for platform roles, the company's `users` otherwise).
    pub sub: Uuid,
    /// Company the token works in; none for platform staff outside a company.
    pub cid: Option<i64>,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    /// The refresh-token family (the browser session) the token belongs to; the web's CSRF
    /// token is bound to it ([`csrf_token_for`]). None for tokens issued outside a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<Uuid>,
}

/// An access token plus its refresh token.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    /// The web's CSRF token for this session (cookie sessions only; never in an answer).
    #[serde(skip)]
    pub csrf: String,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenPair(***)")
    }
}

/// The company a request works in.
#[derive(Debug, Clone, Serialize)]
pub struct CompanyScope {
    pub id: i64,
    pub slug: String,
    pub name: String,
    #[serde(skip)]
    pub schema: SchemaName,
    pub time_zone: String,
    /// `time_zone`, parsed once when the scope is loaded.
    #[serde(skip)]
    pub tz: chrono_tz::Tz,
    pub status: CompanyStatus,
}

/// Who is calling, resolved once per request.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// Operator rights; company and platform admins implicitly hold all.
    pub rights: Vec<Right>,
    /// Buildings an operator is limited to; empty means all.
    pub building_ids: Vec<Uuid>,
    pub company: Option<CompanyScope>,
    pub must_change_password: bool,
    /// Where the request came from, for the audit log.
    #[serde(skip)]
    pub source_ip: Option<String>,
    /// A pool for records that must outlive the request's transaction: a refused change rolls
    /// its transaction back, but the refusal itself is counted and audited (DTU registration
    /// overlaps, DESIGN.md: Ingest). `None` for actors built outside a request.
    #[serde(skip)]
    pub side_pool: Option<PgPool>,
    /// A person, or the system acting on its own (recorded as such in the audit log).
    pub actor: Actor,
    /// Where this principal's "now" comes from (tests choose instants).
    #[serde(skip)]
    pub clock: SharedClock,
}

impl Principal {
    /// The system acting as `worker` (a platform-wide worker or the command line): every right
    /// of platform staff, no user id, audited as `system:<worker>`. Enter a company with
    /// [`Principal::in_company`].
    pub fn system(worker: &str, clock: SharedClock) -> Principal {
        Principal {
            user_id: Uuid::nil(),
            username: format!("system:{worker}"),
            display_name: String::new(),
            role: Role::PlatformAdmin,
            rights: vec![],
            building_ids: vec![],
            company: None,
            must_change_password: false,
            source_ip: None,
            side_pool: None,
            actor: Actor::System {
                worker: worker.to_owned(),
            },
            clock,
        }
    }

    /// This principal inside `company` (a system worker doing one company's work).
    pub fn in_company(mut self, company: CompanyScope) -> Principal {
        self.company = Some(company);
        self
    }

    /// Now, by this principal's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The time zone of the company this principal works in (the default outside one).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.company
            .as_ref()
            .map_or(crate::kernel::clock::DEFAULT_TIME_ZONE, |c| c.tz)
    }

    /// Today's date in the company's time zone, by this principal's clock.
    pub fn today(&self) -> chrono::NaiveDate {
        self.now().with_timezone(&self.tz()).date_naive()
    }

    /// Whether this principal may do `need` in its company (false outside a company).
    pub fn can(&self, need: Need) -> bool {
        self.company.is_some() && allows(self.role, &self.rights, need)
    }

    /// `Forbidden` unless [`Principal::can`].
    pub fn require(&self, need: Need) -> CoreResult<()> {
        if self.can(need) {
            Ok(())
        } else {
            Err(CoreError::Forbidden("your role may not do this".into()))
        }
    }

    /// `NotFound` unless the caller works in a company and may read its data (shop tenants and
    /// platform staff outside a company see no company resources at all).
    pub fn require_read_company(&self) -> CoreResult<()> {
        self.company()?;
        if self.can(Need::ReadCompany) {
            Ok(())
        } else {
            Err(CoreError::NotFound("resource"))
        }
    }

    /// The buildings an operator is limited to (DESIGN.md: Tenancy, roles); `None` when the
    /// caller sees the whole company. The limit covers those buildings' shops, their meters and
    /// accounts, and the gateways that carry at least one of those meters.
    pub fn building_limit(&self) -> Option<&[Uuid]> {
        (self.role == Role::Operator && !self.building_ids.is_empty())
            .then_some(self.building_ids.as_slice())
    }

    /// The building limit as a query parameter (`$n::uuid[] is null or … = any($n)`).
    pub fn building_limit_param(&self) -> Option<Vec<Uuid>> {
        self.building_limit().map(<[Uuid]>::to_vec)
    }

    /// `Forbidden` for an operator limited to buildings: gateway edits and meters without a
    /// shop concern more than their buildings.
    pub fn require_unlimited(&self) -> CoreResult<()> {
        match self.building_limit() {
            Some(_) => Err(CoreError::Forbidden(
                "an operator limited to buildings may not do this".into(),
            )),
            None => Ok(()),
        }
    }

    /// The company scope, or `NotFound` for platform staff who have not entered one (company
    /// resources do not exist for them).
    pub fn company(&self) -> CoreResult<&CompanyScope> {
        self.company.as_ref().ok_or(CoreError::NotFound("company"))
    }
}

// ---------------------------------------------------------------------------------------------
// Passwords

/// Hashes a password with argon2id on the blocking pool.
#[tracing::instrument(skip_all)]
pub async fn hash_password(password: &NewPassword) -> CoreResult<String> {
    let password = password.expose().to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CoreError::Internal(format!("argon2: {e}")))
    })
    .await
    .map_err(|e| CoreError::Internal(format!("hashing task: {e}")))?
}

/// Verifies a password against a stored hash on the blocking pool. A malformed hash verifies
/// nothing.
#[tracing::instrument(skip_all)]
pub async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A real hash of a throwaway password, verified against when the user does not exist so that
/// unknown and known usernames take the same time. Computed once per process.
async fn decoy_hash() -> String {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_init(|| async {
            let pw = NewPassword::parse("decoy password 0").expect("the decoy meets the policy");
            hash_password(&pw).await.unwrap_or_default()
        })
        .await
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// Seconds a token's expiry may lag behind the clock (clock skew between server processes).
const TOKEN_LEEWAY_S: i64 = 5;

/// Signs an access token for `sub` in `cid` with `role`.
pub fn issue_access(
    config: &AuthConfig,
    sub: Uuid,
    cid: Option<i64>,
    role: Role,
) -> CoreResult<String> {
    issue_access_in(config, sub, cid, role, None)
}

/// Signs an access token that belongs to refresh-token family `fam`.
fn issue_access_in(
    config: &AuthConfig,
    sub: Uuid,
    cid: Option<i64>,
    role: Role,
    fam: Option<Uuid>,
) -> CoreResult<String> {
    let iat = config.clock.now().timestamp();
    let claims = Claims {
        sub,
        cid,
        role,
        iat,
        exp: iat + config.access_ttl_s,
        fam,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(config.jwt_secret.expose().as_bytes()),
    )
    .map_err(|e| CoreError::Internal(format!("jwt: {e}")))
}

/// Verifies signature, algorithm and expiry of an access token. Expiry is measured by the
/// configured clock (jsonwebtoken would read the system clock), like the token's `iat`.
pub fn decode_access(config: &AuthConfig, token: &str) -> CoreResult<Claims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(config.jwt_secret.expose().as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|_| CoreError::Unauthorized("invalid token".into()))?;
    if claims.exp.saturating_add(TOKEN_LEEWAY_S) < config.clock.now().timestamp() {
        return Err(CoreError::Unauthorized("token expired".into()));
    }
    Ok(claims)
}

fn new_refresh_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Stores a new refresh token of `family_id` and signs the matching access token.
async fn issue_pair(
    conn: &mut sqlx::PgConnection,
    config: &AuthConfig,
    family_id: Uuid,
    user_id: Uuid,
    company_id: Option<i64>,
    role: Role,
) -> CoreResult<TokenPair> {
    let refresh_token = new_refresh_secret();
    sqlx::query(
        "insert into control.refresh_token
             (token_hash, family_id, company_id, user_id, is_platform_user, expires_at)
         values ($1, $2, $3, $4, $5, now() + $6 * interval '1 second')",
    )
    .bind(refresh_hash(&refresh_token))
    .bind(family_id)
    .bind(company_id)
    .bind(user_id)
    .bind(role.is_platform())
    .bind(config.refresh_ttl_s)
    .execute(conn)
    .await?;
    Ok(TokenPair {
        access_token: issue_access_in(config, user_id, company_id, role, Some(family_id))?,
        refresh_token,
        expires_in: config.access_ttl_s,
        refresh_expires_in: config.refresh_ttl_s,
        csrf: csrf_token_for(config, family_id),
    })
}

// ---------------------------------------------------------------------------------------------
// Login

/// What the login form sends. `company` is the slug; empty for platform staff.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginInput {
    #[serde(default)]
    pub company: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for LoginInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginInput")
            .field("company", &self.company)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub tokens: TokenPair,
    pub role: Role,
    pub company_slug: Option<String>,
    pub must_change_password: bool,
}

/// The one answer for every wrong login, so it reveals nothing about which part was wrong.
fn bad_login() -> CoreError {
    CoreError::Unauthorized("wrong company, username or password".into())
}

/// A stored user as login sees it.
struct LoginRow {
    id: Uuid,
    password_hash: String,
    role: Role,
    active: bool,
    must_change_password: bool,
}

/// Checks credentials, throttling and statuses, and issues tokens.
#[tracing::instrument(skip_all)]
pub async fn login(
    pool: &PgPool,
    config: &AuthConfig,
    input: &LoginInput,
    source_ip: Option<&str>,
) -> CoreResult<LoginOutcome> {
    let company_text = input.company.trim().to_ascii_lowercase();
    let username = input.username.trim();
    let account_key = format!("acct:{company_text}/{username}");
    let address_key = source_ip.map(|ip| format!("addr:{ip}"));
    throttle_check(pool, &account_key, address_key.as_deref()).await?;

    let found = find_login(pool, &company_text, username).await?;
    let (row, company) = match found {
        Some(found) => found,
        None => {
            // Spend the same time as a real check, then count the failure.
            verify_password(decoy_hash().await, input.password.clone()).await;
            throttle_fail(pool, config, &account_key, address_key.as_deref()).await?;
            return Err(bad_login());
        }
    };
    if !verify_password(row.password_hash.clone(), input.password.clone()).await {
        throttle_fail(pool, config, &account_key, address_key.as_deref()).await?;
        return Err(bad_login());
    }
    if !row.active {
        return Err(CoreError::Unauthorized(
            "this account is deactivated".into(),
        ));
    }
    if let Some((_, _, status)) = &company {
        // A suspended company's shop tenants still log in and pay (DESIGN.md: Tenancy): shops
        // are not harmed by their landlord's account state.
        if status != "active" && row.role != Role::ShopTenant {
            return Err(CoreError::Unauthorized("this company is suspended".into()));
        }
    }
    throttle_clear(pool, &account_key).await?;
    let mut tx = pool.begin().await?;
    let company_id = company.as_ref().map(|(id, _, _)| *id);
    let tokens = issue_pair(
        &mut tx,
        config,
        Uuid::now_v7(),
        row.id,
        company_id,
        row.role,
    )
    .await?;
    audit_login(&mut tx, config, &row, username, company_id, source_ip).await?;
    tx.commit().await?;
    Ok(LoginOutcome {
        tokens,
        role: row.role,
        company_slug: company.map(|(_, slug, _)| slug),
        must_change_password: row.must_change_password,
    })
}

/// Records a successful login in the company's audit log (platform staff: the platform's).
async fn audit_login(
    tx: &mut Tx,
    config: &AuthConfig,
    row: &LoginRow,
    username: &str,
    company_id: Option<i64>,
    source_ip: Option<&str>,
) -> CoreResult<()> {
    let actor = Principal {
        user_id: row.id,
        username: username.to_owned(),
        display_name: String::new(),
        role: row.role,
        rights: vec![],
        building_ids: vec![],
        company: None,
        must_change_password: row.must_change_password,
        source_ip: source_ip.map(str::to_owned),
        side_pool: None,
        actor: Actor::Person,
        clock: config.clock.clone(),
    };
    match company_id {
        Some(id) => {
            let company = load_company(tx, id)
                .await?
                .ok_or(CoreError::NotFound("company"))?;
            db::set_schema(tx, &company.schema).await?;
            crate::tenancy::audit::record(
                tx,
                &actor,
                "user.login",
                "user",
                Some(row.id.to_string()),
                None,
                None,
            )
            .await
        }
        None => {
            crate::tenancy::audit::record_platform(tx, &actor, "platform.login", None, None, None)
                .await
        }
    }
}

/// Finds the user for a login: platform staff when `company` is empty, else the company's user.
async fn find_login(
    pool: &PgPool,
    company: &str,
    username: &str,
) -> CoreResult<Option<(LoginRow, Option<(i64, String, String)>)>> {
    let to_row = |r: sqlx::postgres::PgRow| -> CoreResult<LoginRow> {
        let role: String = r.try_get("role")?;
        Ok(LoginRow {
            id: r.try_get("id")?,
            password_hash: r.try_get("password_hash")?,
            role: role.parse().map_err(CoreError::Internal)?,
            active: r.try_get::<String, _>("status")? == "active",
            must_change_password: r.try_get("must_change_password")?,
        })
    };
    if company.is_empty() {
        let row = sqlx::query(
            "select id, password_hash, role, status, must_change_password
             from control.platform_user where username = $1",
        )
        .bind(username)
        .fetch_optional(pool)
        .await?;
        return row.map(|r| Ok((to_row(r)?, None))).transpose();
    }
    let Ok(slug) = CompanySlug::parse(company) else {
        return Ok(None);
    };
    let Some(company_row) =
        sqlx::query("select id, slug, schema_name, status from control.company where slug = $1")
            .bind(slug.as_str())
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    let schema = stored_schema(company_row.try_get("schema_name")?)?;
    let mut tx = db::begin_in(pool, &schema).await?;
    let row = sqlx::query(
        "select id, password_hash, role, status, must_change_password from users where username = $1",
    )
    .bind(username)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let company = (
        company_row.try_get("id")?,
        company_row.try_get("slug")?,
        company_row.try_get("status")?,
    );
    row.map(|r| Ok((to_row(r)?, Some(company)))).transpose()
}

fn stored_schema(text: String) -> CoreResult<SchemaName> {
    SchemaName::from_stored(&text).map_err(|e| CoreError::Internal(format!("{text}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Throttling

async fn throttle_check(
    pool: &PgPool,
    account_key: &str,
    address_key: Option<&str>,
) -> CoreResult<()> {
    let locked: bool = sqlx::query_scalar(
        "select exists (select 1 from control.login_throttle
                        where key in ($1, $2) and locked_until > now())",
    )
    .bind(account_key)
    .bind(address_key.unwrap_or(""))
    .fetch_one(pool)
    .await?;
    if locked {
        metrics::counter!("powertab_login_throttled_total").increment(1);
        return Err(CoreError::Throttled(
            "too many failed logins; try again later".into(),
        ));
    }
    Ok(())
}

async fn throttle_fail(
    pool: &PgPool,
    config: &AuthConfig,
    account_key: &str,
    address_key: Option<&str>,
) -> CoreResult<()> {
    metrics::counter!("powertab_login_failed_total").increment(1);
    let t = &config.throttle;
    let keys = [
        (Some(account_key), t.account_failures_max),
        (address_key, t.address_failures_max),
    ];
    for (key, failures_max) in keys {
        let Some(key) = key else { continue };
        // A failure outside the window starts a new window.
        sqlx::query(
            "insert into control.login_throttle as t (key, failures, window_started_at)
             values ($1, 1, now())
             on conflict (key) do update set
                 failures = case when t.window_started_at < now() - $2 * interval '1 second'
                                 then 1 else t.failures + 1 end,
                 window_started_at = case when t.window_started_at < now() - $2 * interval '1 second'
                                          then now() else t.window_started_at end,
                 locked_until = case when (case when t.window_started_at < now() - $2 * interval '1 second'
                                                then 1 else t.failures + 1 end) >= $3
                                     then now() + $4 * interval '1 second' else t.locked_until end",
        )
        .bind(key)
        .bind(t.window_s)
        .bind(failures_max)
        .bind(t.lockout_s)
        .execute(pool)
        .await?;
    }
    Ok(())
}

async fn throttle_clear(pool: &PgPool, account_key: &str) -> CoreResult<()> {
    sqlx::query("delete from control.login_throttle where key = $1")
        .bind(account_key)
        .execute(pool)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Refresh and logout

/// How long a used refresh token still rotates instead of counting as stolen: a browser whose
/// two tabs (or two parallel requests) refresh at once presents the same cookie twice, and that
/// must not log the user out. Reuse after the window revokes the family.
pub const REFRESH_REUSE_GRACE_S: i64 = 10;

/// Rotates a refresh token: the presented one is used up and a new pair is issued. A token that
/// was already used revokes its whole family, unless it was used within the last
/// [`REFRESH_REUSE_GRACE_S`] (rows are locked, so parallel refreshes of one token run in turn).
#[tracing::instrument(skip_all)]
pub async fn refresh(
    pool: &PgPool,
    config: &AuthConfig,
    refresh_token: &str,
) -> CoreResult<TokenPair> {
    let invalid = || CoreError::Unauthorized("invalid refresh token".into());
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "select family_id, company_id, user_id, is_platform_user,
                used_at is not null as used, revoked_at is not null as revoked,
                expires_at < now() as expired,
                coalesce(used_at > now() - $2 * interval '1 second', false) as within_grace
         from control.refresh_token where token_hash = $1 for update",
    )
    .bind(refresh_hash(refresh_token))
    .bind(REFRESH_REUSE_GRACE_S)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(invalid)?;
    let family_id: Uuid = row.try_get("family_id")?;
    let within_grace: bool = row.try_get("within_grace")?;
    if row.try_get::<bool, _>("used")? && !within_grace {
        // Reuse of a rotated token: somebody else has a copy. End every session of this login.
        sqlx::query("update control.refresh_token set revoked_at = now() where family_id = $1 and revoked_at is null")
            .bind(family_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::warn!(%family_id, "refresh token reuse: family revoked");
        return Err(invalid());
    }
    if row.try_get::<bool, _>("revoked")? || row.try_get::<bool, _>("expired")? {
        return Err(invalid());
    }
    let user_id: Uuid = row.try_get("user_id")?;
    let company_id: Option<i64> = row.try_get("company_id")?;
    let is_platform: bool = row.try_get("is_platform_user")?;
    let role = current_role(&mut tx, user_id, company_id, is_platform)
        .await?
        .ok_or_else(invalid)?;
    sqlx::query("update control.refresh_token set used_at = now() where token_hash = $1")
        .bind(refresh_hash(refresh_token))
        .execute(&mut *tx)
        .await?;
    let pair = issue_pair(&mut tx, config, family_id, user_id, company_id, role).await?;
    tx.commit().await?;
    Ok(pair)
}

/// The role of an active user in an active company (platform staff may work in a suspended
/// company); `None` when either is no longer active.
async fn current_role(
    tx: &mut Tx,
    user_id: Uuid,
    company_id: Option<i64>,
    is_platform: bool,
) -> CoreResult<Option<Role>> {
    if is_platform {
        let role: Option<String> = sqlx::query_scalar(
            "select role from control.platform_user where id = $1 and status = 'active'",
        )
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
        return role
            .map(|r| r.parse().map_err(CoreError::Internal))
            .transpose();
    }
    let Some(company_id) = company_id else {
        return Ok(None);
    };
    let Some(company) = load_company(tx, company_id).await? else {
        return Ok(None);
    };
    db::set_schema(tx, &company.schema).await?;
    let role: Option<String> =
        sqlx::query_scalar("select role from users where id = $1 and status = 'active'")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    let role: Option<Role> = role
        .map(|r| r.parse().map_err(CoreError::Internal))
        .transpose()?;
    // In a suspended company only shop tenants keep their sessions.
    Ok(role.filter(|r| company.status == CompanyStatus::Active || *r == Role::ShopTenant))
}

/// Revokes one refresh token (logout). Unknown tokens are ignored: logging out twice is fine.
#[tracing::instrument(skip_all)]
pub async fn logout(pool: &PgPool, refresh_token: &str) -> CoreResult<()> {
    sqlx::query(
        "update control.refresh_token set revoked_at = now()
         where family_id = (select family_id from control.refresh_token where token_hash = $1)
           and revoked_at is null",
    )
    .bind(refresh_hash(refresh_token))
    .execute(pool)
    .await?;
    Ok(())
}

/// Revokes every refresh token of a user (deactivation, password reset).
#[tracing::instrument(skip_all)]
pub async fn revoke_user_tokens(conn: &mut sqlx::PgConnection, user_id: Uuid) -> CoreResult<()> {
    sqlx::query("update control.refresh_token set revoked_at = now() where user_id = $1 and revoked_at is null")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes every staff refresh token in a company (suspension); shop tenants keep theirs.
#[tracing::instrument(skip_all)]
pub async fn revoke_company_tokens(
    conn: &mut sqlx::PgConnection,
    company_id: i64,
) -> CoreResult<()> {
    // Shop tenants keep their sessions: they still log in and pay while the company is
    // suspended (DESIGN.md: Tenancy). Their ids are read from the company's own schema.
    let Some(company) = load_company(conn, company_id).await? else {
        return Ok(());
    };
    let tenants: Vec<Uuid> = sqlx::query_scalar(&format!(
        "select id from {}.users where role = 'shop_tenant'",
        company.schema.as_str()
    ))
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "update control.refresh_token set revoked_at = now()
         where company_id = $1 and revoked_at is null
           and (is_platform_user or user_id <> all($2))",
    )
    .bind(company_id)
    .bind(&tenants)
    .execute(conn)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Per-request resolution

/// Reads a company row from `control`.
#[tracing::instrument(skip_all)]
pub async fn load_company(
    conn: &mut sqlx::PgConnection,
    company_id: i64,
) -> CoreResult<Option<CompanyScope>> {
    let row = sqlx::query(
        "select id, slug, name, schema_name, time_zone, status from control.company where id = $1",
    )
    .bind(company_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(CompanyScope {
            id: r.try_get("id")?,
            slug: r.try_get("slug")?,
            name: r.try_get("name")?,
            schema: stored_schema(r.try_get("schema_name")?)?,
            tz: crate::kernel::clock::time_zone(r.try_get("time_zone")?),
            time_zone: r.try_get("time_zone")?,
            status: r.try_get("status")?,
        })
    })
    .transpose()
}

/// Turns verified claims into the caller and a transaction: scoped to the company's schema when
/// the token names one, else to `control`. Fails with `Unauthorized` when the user or company is
/// no longer active, so suspension and deactivation take effect on the very next request.
#[tracing::instrument(skip_all)]
pub async fn resolve(
    pool: &PgPool,
    claims: &Claims,
    source_ip: Option<String>,
    clock: &SharedClock,
) -> CoreResult<(Principal, Tx)> {
    let gone = || CoreError::Unauthorized("session ended: sign in again".into());
    let mut tx = pool.begin().await?;
    let company = match claims.cid {
        Some(cid) => Some(load_company(&mut tx, cid).await?.ok_or_else(gone)?),
        None => None,
    };
    if let Some(company) = &company {
        // Platform staff may still enter a suspended company to look into it.
        // Shop tenants keep their balance and online top-up (DESIGN.md: Tenancy).
        if company.status != CompanyStatus::Active
            && !claims.role.is_platform()
            && claims.role != Role::ShopTenant
        {
            return Err(CoreError::Unauthorized("this company is suspended".into()));
        }
    }
    let row = if claims.role.is_platform() {
        sqlx::query(
            "select username, display_name, role, status, must_change_password,
                    '{}'::text[] as rights, '{}'::uuid[] as building_ids
             from control.platform_user where id = $1",
        )
        .bind(claims.sub)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        let company = company.as_ref().ok_or_else(gone)?;
        db::set_schema(&mut tx, &company.schema).await?;
        sqlx::query(
            "select username, display_name, role, status, must_change_password, rights, building_ids
             from users where id = $1",
        )
        .bind(claims.sub)
        .fetch_optional(&mut *tx)
        .await?
    };
    let row = row.ok_or_else(gone)?;
    if row.try_get::<String, _>("status")? != "active" {
        return Err(gone());
    }
    let role: Role = row
        .try_get::<String, _>("role")?
        .parse()
        .map_err(CoreError::Internal)?;
    // A token minted for another role (the role changed since) is not honoured.
    if role != claims.role {
        return Err(gone());
    }
    let rights = row
        .try_get::<Vec<String>, _>("rights")?
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    match &company {
        Some(c) => db::set_schema(&mut tx, &c.schema).await?,
        None => db::set_schema(&mut tx, &SchemaName::control()).await?,
    }
    // The request's span (server::app) says from here on whose request it is.
    let span = tracing::Span::current();
    span.record("user_id", tracing::field::display(claims.sub));
    if let Some(company) = &company {
        span.record("company_id", company.id);
    }
    let principal = Principal {
        user_id: claims.sub,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        role,
        rights,
        building_ids: row.try_get("building_ids")?,
        company,
        must_change_password: row.try_get("must_change_password")?,
        source_ip,
        side_pool: Some(pool.clone()),
        actor: Actor::Person,
        clock: clock.clone(),
    };
    Ok((principal, tx))
}

/// Changes the caller's own password after checking the current one, clears the forced-change
/// flag and ends the caller's other sessions.
#[tracing::instrument(skip_all)]
pub async fn change_own_password(
    tx: &mut Tx,
    principal: &Principal,
    current: &str,
    new: &str,
) -> CoreResult<()> {
    let new = NewPassword::parse(new).map_err(|e| CoreError::field("new_password", e.0))?;
    let table = if principal.role.is_platform() {
        "control.platform_user"
    } else {
        "users"
    };
    let hash: String =
        sqlx::query_scalar(&format!("select password_hash from {table} where id = $1"))
            .bind(principal.user_id)
            .fetch_one(&mut **tx)
            .await?;
    if !verify_password(hash, current.to_owned()).await {
        return Err(CoreError::field("current_password", "wrong password"));
    }
    if current == new.expose() {
        return Err(CoreError::field(
            "new_password",
            "must differ from the current password",
        ));
    }
    let hash = hash_password(&new).await?;
    sqlx::query(&format!(
        "update {table} set password_hash = $2, must_change_password = false, updated_at = now() where id = $1"
    ))
    .bind(principal.user_id)
    .bind(hash)
    .execute(&mut **tx)
    .await?;
    revoke_user_tokens(tx, principal.user_id).await?;
    crate::tenancy::audit::record(
        tx,
        principal,
        "user.password_change",
        "user",
        Some(principal.user_id.to_string()),
        None,
        None,
    )
    .await?;
    Ok(())
}

/// Issues platform staff a token pair outside any company again (leaving an entered company).
#[tracing::instrument(skip_all)]
pub async fn issue_platform(
    conn: &mut sqlx::PgConnection,
    config: &AuthConfig,
    principal: &Principal,
) -> CoreResult<TokenPair> {
    if !principal.role.is_platform() {
        return Err(CoreError::Forbidden(
            "only platform staff work outside a company".into(),
        ));
    }
    issue_pair(
        conn,
        config,
        Uuid::now_v7(),
        principal.user_id,
        None,
        principal.role,
    )
    .await
}

/// Issues a token pair that works inside `company_id` for platform staff (the `enter` call).
#[tracing::instrument(skip_all)]
pub async fn issue_entered(
    conn: &mut sqlx::PgConnection,
    config: &AuthConfig,
    principal: &Principal,
    company_id: i64,
) -> CoreResult<TokenPair> {
    issue_pair(
        conn,
        config,
        Uuid::now_v7(),
        principal.user_id,
        Some(company_id),
        principal.role,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Web session cookies (shared by the REST middleware and the Leptos server functions)

/// HttpOnly cookie with the access token.
pub const ACCESS_COOKIE: &str = "pt_access";
/// HttpOnly cookie with the refresh token, sent only to the session paths.
pub const REFRESH_COOKIE: &str = "pt_refresh";
/// Readable cookie holding the CSRF token that forms and `X-CSRF-Token` headers must repeat.
pub const CSRF_COOKIE: &str = "pt_csrf";

/// The CSRF token of browser session `family`: an HMAC of the session under the token key, so a
/// token planted in a cookie by anyone else (a sibling subdomain, a proxy) never matches, and
/// it stays the same across refresh-token rotations (a form opened before one still posts).
pub fn csrf_token_for(config: &AuthConfig, family: Uuid) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(config.jwt_secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"powertab-csrf:");
    mac.update(family.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..18])
}

/// Whether `given` is the CSRF token of the session the access token `claims` belong to.
pub fn csrf_matches(config: &AuthConfig, claims: &Claims, given: &str) -> bool {
    claims.fam.is_some_and(|family| {
        !given.is_empty() && constant_time_eq(&csrf_token_for(config, family), given)
    })
}

/// Whether a cookie-authenticated change comes from our own pages. `Sec-Fetch-Site` (sent by
/// every current browser, and not settable by page scripts) decides when present: `same-origin`,
/// or `none` (typed by the user). Without it an `Origin` must name the host the request was sent
/// to (behind a proxy that rewrites `Host`, browsers still send `Sec-Fetch-Site`). Requests with
/// neither header (curl, old browsers) rely on the CSRF token alone.
pub fn same_origin(origin: Option<&str>, sec_fetch_site: Option<&str>, host: Option<&str>) -> bool {
    if let Some(site) = sec_fetch_site {
        return matches!(site, "same-origin" | "none");
    }
    match (origin, host) {
        (Some("null"), _) => false,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// A fresh random CSRF token.
pub fn new_csrf_token() -> String {
    let mut bytes = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `Set-Cookie` header values that store a session in the browser. The access cookie lives no
/// longer than its token; the refresh cookie brings a new one.
pub fn session_cookie_headers(pair: &TokenPair, secure: bool) -> Vec<String> {
    let secure = if secure { "; Secure" } else { "" };
    let csrf = &pair.csrf;
    vec![
        format!(
            "{ACCESS_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            pair.access_token, pair.expires_in
        ),
        format!(
            "{REFRESH_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            pair.refresh_token, pair.refresh_expires_in
        ),
        format!(
            "{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={}{secure}",
            pair.refresh_expires_in
        ),
    ]
}

/// `Set-Cookie` header values that end a browser session.
pub fn clear_cookie_headers(secure: bool) -> Vec<String> {
    let secure = if secure { "; Secure" } else { "" };
    [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE]
        .iter()
        .map(|name| format!("{name}=; Path=/; Max-Age=0{secure}"))
        .collect()
}

/// The value of cookie `name` in a `Cookie` request header.
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// The client address for throttling and the audit log: the first `X-Forwarded-For` entry when
/// the server is configured to trust its proxy (and the entry is not empty), else the socket peer.
pub fn client_address(
    forwarded_for: Option<&str>,
    peer: Option<std::net::IpAddr>,
    trust_forwarded_for: bool,
) -> Option<String> {
    let forwarded = forwarded_for
        .filter(|_| trust_forwarded_for)
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    forwarded
        .map(str::to_owned)
        .or_else(|| peer.map(|ip| ip.to_string()))
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod origin_tests {
    use super::same_origin;

    #[test]
    fn changes_from_other_sites_are_recognised() {
        assert!(same_origin(None, Some("same-origin"), Some("a.example")));
        assert!(same_origin(
            Some("https://proxy.example"),
            Some("same-origin"),
            Some("internal:8080")
        ));
        assert!(!same_origin(
            Some("https://a.example"),
            Some("cross-site"),
            Some("a.example")
        ));
        assert!(!same_origin(None, Some("same-site"), Some("a.example")));
        assert!(same_origin(
            Some("https://a.example"),
            None,
            Some("a.example")
        ));
        assert!(!same_origin(
            Some("https://evil.example"),
            None,
            Some("a.example")
        ));
        assert!(!same_origin(Some("null"), None, Some("a.example")));
        assert!(
            same_origin(None, None, Some("a.example")),
            "curl: the CSRF token decides"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            jwt_secret: Secret::new("test-secret-test-secret-test-secret!"),
            access_ttl_s: 60,
            refresh_ttl_s: 3600,
            throttle: ThrottleConfig::default(),
            clock: crate::kernel::clock::system(),
        }
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let peer = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            client_address(Some("203.0.113.9, 10.0.0.1"), peer, true).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            client_address(Some("203.0.113.9"), peer, false).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            client_address(Some(" "), peer, true).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(client_address(None, None, true), None);
    }

    #[test]
    fn access_tokens_round_trip() {
        let id = Uuid::now_v7();
        let token = issue_access(&config(), id, Some(7), Role::Operator).unwrap();
        let claims = decode_access(&config(), &token).unwrap();
        assert_eq!(
            (claims.sub, claims.cid, claims.role),
            (id, Some(7), Role::Operator)
        );
    }

    #[test]
    fn tampered_expired_and_unsigned_tokens_are_refused() {
        let cfg = config();
        let token = issue_access(&cfg, Uuid::now_v7(), Some(7), Role::Operator).unwrap();
        // Tampered payload: switch the role inside the signed token.
        let parts: Vec<&str> = token.split('.').collect();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(engine.decode(parts[1]).unwrap()).unwrap();
        let forged = engine.encode(payload.replace("operator", "company_admin"));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert!(decode_access(&cfg, &tampered).is_err());
        // alg: none with no signature.
        let none_header = engine.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(decode_access(&cfg, &format!("{none_header}.{}.", parts[1])).is_err());
        // Expired.
        let expired_cfg = AuthConfig {
            access_ttl_s: -60,
            ..config()
        };
        let expired =
            issue_access(&expired_cfg, Uuid::now_v7(), None, Role::PlatformAdmin).unwrap();
        assert!(
            matches!(decode_access(&cfg, &expired), Err(CoreError::Unauthorized(m)) if m.contains("expired"))
        );
        // Signed with another key.
        let other = AuthConfig {
            jwt_secret: Secret::new("another-secret-another-secret-!!"),
            ..config()
        };
        assert!(decode_access(&other, &token).is_err());
    }

    #[test]
    fn secrets_and_tokens_never_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
        let input = LoginInput {
            company: "a".into(),
            username: "b".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{input:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let pw = NewPassword::parse("correct horse 9").unwrap();
        let hash = hash_password(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(hash.clone(), "correct horse 9".into()).await);
        assert!(!verify_password(hash, "wrong horse 9".into()).await);
        assert!(!verify_password("garbage".into(), "x".into()).await);
    }
}
