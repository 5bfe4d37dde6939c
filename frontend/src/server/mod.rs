//! The server side of the server functions (built with the `ssr` feature only): reading the
//! browser session from cookies, CSRF checks, redirects, and the calls into core services.
//! The server mounts the app with a [`WebContext`] in the reactive context.

use crate::api::WebError;
use crate::api::{AuditRow, CompanyRow, PageView, SessionView, UserRow};
use crate::i18n::LANG_COOKIE;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use http::header;
use http::request::Parts;
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use powertab_core::auth::boundary::{Intent, Refused};
use powertab_core::auth::{self, AuthConfig, LoginInput, Principal, CSRF_COOKIE, REFRESH_COOKIE};
use powertab_core::db::Tx;
use powertab_core::kernel::names::SchemaName;
use powertab_core::tenancy::audit::{self, AuditFilter};
use powertab_core::tenancy::companies::{self, NewAdmin, NewCompany};
use powertab_core::tenancy::roles::{Need, Right, Role};
use powertab_core::tenancy::users::{self, NewUser, UserFilter, UserPatch};
use powertab_core::CoreError;
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

pub mod boundary;
pub mod field;
pub mod setup;
mod tariff_form;

/// What server functions need from the server, provided into the reactive context per request.
#[derive(Clone)]
pub struct WebContext {
    pub pool: PgPool,
    pub auth: Arc<AuthConfig>,
    pub cookie_secure: bool,
    pub trust_forwarded_for: bool,
    /// The platform secret MQTT gateways' credentials are derived from.
    pub gateway_secret: Option<powertab_core::auth::Secret>,
    /// The broker address as MQTT gateways reach it, shown with their credential.
    pub mqtt_broker: String,
}

fn internal(message: impl std::fmt::Display) -> WebError {
    WebError::new(message.to_string())
}

pub(crate) fn ctx() -> Result<WebContext, WebError> {
    use_context::<WebContext>().ok_or_else(|| internal("web context missing"))
}

fn parts() -> Result<Parts, WebError> {
    use_context::<Parts>().ok_or_else(|| internal("request missing"))
}

/// The value of a request cookie.
pub fn request_cookie(name: &str) -> Option<String> {
    let parts = use_context::<Parts>()?;
    let header = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    auth::cookie_value(header, name).map(str::to_owned)
}

fn set_cookies(values: Vec<String>) {
    if let Some(response) = use_context::<ResponseOptions>() {
        for value in values {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                response.append_header(header::SET_COOKIE, value);
            }
        }
    }
}

/// Opens the request's session for `intent` through the one boundary
/// ([`boundary`]: the same rules as REST and the import upload).
async fn open_session(csrf: Option<&str>, intent: Intent) -> Result<(Principal, Tx), Refused> {
    let failed = |what: &str| Refused::Failed(CoreError::Internal(what.into()));
    let ctx = ctx().map_err(|_| failed("web context missing"))?;
    let parts = parts().map_err(|_| failed("request missing"))?;
    boundary::open(
        &ctx.pool,
        &ctx.auth,
        ctx.trust_forwarded_for,
        &parts.headers,
        &parts.extensions,
        csrf,
        intent,
    )
    .await
}

/// Who is signed in, whatever they may do (the shell, the password page); `None` when the
/// cookie is absent, expired or no longer valid.
async fn session() -> Result<Option<(Principal, Tx)>, WebError> {
    match open_session(None, Intent::PasswordChange { changes: false }).await {
        Ok(found) => Ok(Some(found)),
        Err(Refused::SignedOut(_)) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

/// An error a form shows: a code that the page translates, and the fields it concerns.
#[derive(Debug)]
struct UiError {
    code: String,
    fields: Vec<String>,
    /// What exactly is wrong ("port 1 still carries 3 meters"), shown under the error.
    detail: Option<String>,
}

impl From<CoreError> for UiError {
    fn from(err: CoreError) -> Self {
        if err.is_internal() {
            tracing::error!(cause = %err, "internal error in a server function");
        }
        let (fields, detail) = match &err {
            CoreError::Validation { fields, .. } => (
                fields.keys().cloned().collect(),
                Some(
                    fields
                        .iter()
                        .map(|(f, m)| format!("{f}: {m}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            ),
            CoreError::Conflict(m) | CoreError::QuotaExceeded(m) => (vec![], Some(m.clone())),
            _ => (vec![], None),
        };
        UiError {
            code: err.code().to_owned(),
            fields,
            detail,
        }
    }
}

impl From<sqlx::Error> for UiError {
    fn from(err: sqlx::Error) -> Self {
        CoreError::from(err).into()
    }
}

/// A form field that does not parse.
fn field_error(field: &str) -> UiError {
    UiError {
        code: "validation_failed".into(),
        fields: vec![field.to_owned()],
        detail: None,
    }
}

fn ui(code: &str) -> UiError {
    UiError {
        code: code.to_owned(),
        fields: vec![],
        detail: None,
    }
}

/// A form's failure to open a session, as the form shows it.
fn refused(refusal: Refused) -> UiError {
    match refusal {
        Refused::SignedOut(_) => ui("unauthorized"),
        Refused::CsrfMismatch => ui("csrf_mismatch"),
        Refused::PasswordChangeRequired => ui("password_change_required"),
        Refused::Failed(e) => e.into(),
    }
}

/// A session for a change: logged in, the form's CSRF field carries this session's token, and
/// the user is not one who must first change the initial password.
async fn session_for_change(csrf: &str) -> Result<(Principal, Tx), UiError> {
    open_session(Some(csrf), Intent::Change)
        .await
        .map_err(refused)
}

/// A session for changing one's own password: logged in and the CSRF field matches; the one
/// change a user who must change the initial password may make.
async fn session_for_password_change(csrf: &str) -> Result<(Principal, Tx), UiError> {
    open_session(Some(csrf), Intent::PasswordChange { changes: true })
        .await
        .map_err(refused)
}

/// The path of the page the form was on (from `Referer`), without its query.
fn back_path() -> String {
    use_context::<Parts>()
        .and_then(|p| {
            p.headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .and_then(|referer| {
            let after_scheme = referer
                .split_once("://")
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or(referer);
            after_scheme.find('/').map(|i| after_scheme[i..].to_owned())
        })
        .map(|path| path.split('?').next().unwrap_or("/").to_owned())
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/".into())
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    crate::pages::percent_encode(text)
}

/// The cookie a refused form's input waits in for the page it goes back to.
const KEPT_FORM_COOKIE: &str = "pt_form";
/// Larger forms are not kept (a cookie is at most 4 KB, and this one rides on every request
/// for its two minutes).
const KEPT_FORM_BYTES_MAX: usize = 3_000;

/// Ends a change like [`finish`], and on a refusal keeps what `form` had in it for the form
/// `form_id` (minus the CSRF token and anything named like a password), so the page shows it
/// again instead of an empty form. Two minutes, HttpOnly, this site only.
fn finish_keeping<F: serde::Serialize>(
    result: Result<String, UiError>,
    form_id: &str,
    form: &F,
) -> Result<(), WebError> {
    let secure = ctx().map(|c| c.cookie_secure).unwrap_or(true);
    let attributes = format!(
        "Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    let cookie = match &result {
        Ok(_) => None,
        Err(_) => kept_cookie_value(form_id, form),
    };
    set_cookies(vec![match cookie {
        Some(value) => format!("{KEPT_FORM_COOKIE}={value}; Max-Age=120; {attributes}"),
        None => format!("{KEPT_FORM_COOKIE}=; Max-Age=0; {attributes}"),
    }]);
    finish(result)
}

fn kept_cookie_value<F: serde::Serialize>(form_id: &str, form: &F) -> Option<String> {
    let serde_json::Value::Object(fields) = serde_json::to_value(form).ok()? else {
        return None;
    };
    let values: serde_json::Map<String, serde_json::Value> = fields
        .into_iter()
        .filter(|(name, _)| name != "csrf" && !name.contains("password"))
        .filter(|(_, value)| value.is_string())
        .collect();
    let text = serde_json::json!({ "form": form_id, "values": values }).to_string();
    let value = encode(&text);
    (value.len() <= KEPT_FORM_BYTES_MAX).then_some(value)
}

/// What the refused form `form_id` had in it, if this request carries it.
pub(crate) fn kept_form(form_id: &str) -> crate::api::KeptForm {
    let kept = request_cookie(KEPT_FORM_COOKIE)
        .and_then(|value| crate::pages::percent_decode(&value))
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .filter(|json| json["form"] == form_id)
        .and_then(|json| {
            json["values"].as_object().map(|values| {
                values
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
        });
    crate::api::KeptForm {
        values: kept.unwrap_or_default(),
    }
}

/// Ends a change: redirect to `Ok(url)`, or back to the form with the error in the query.
fn finish(result: Result<String, UiError>) -> Result<(), WebError> {
    let target = match result {
        Ok(url) => url,
        Err(err) => {
            let mut url = format!("{}?error={}", back_path(), encode(&err.code));
            if !err.fields.is_empty() {
                url.push_str(&format!("&fields={}", encode(&err.fields.join(","))));
            }
            // The detail (an English sentence) stays in the log: the page shows only
            // translated messages, and a link must not be able to put text on it.
            if let Some(detail) = err.detail.filter(|d| !d.is_empty()) {
                tracing::info!(code = %err.code, %detail, "a form was refused");
            }
            url
        }
    };
    leptos_axum::redirect(&target);
    Ok(())
}

fn local_time(at: DateTime<Utc>, tz: &chrono_tz::Tz) -> String {
    at.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string()
}

fn company_tz(principal: &Principal) -> chrono_tz::Tz {
    principal.tz()
}

// ---------------------------------------------------------------------------------------------
// Reads

pub async fn session_view() -> Result<Option<SessionView>, WebError> {
    let Some((principal, mut tx)) = session().await? else {
        return Ok(None);
    };
    let csrf = request_cookie(CSRF_COOKIE).unwrap_or_default();
    // Company staff see open field alarms on every page, not only on the fleet page.
    let field_alarms_open = if principal.company.is_some() && principal.role != Role::ShopTenant {
        powertab_core::field::fleet::open_alarm_count(&mut tx)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "counting field alarms failed");
                0
            })
    } else {
        0
    };
    Ok(Some(SessionView {
        username: principal.username.clone(),
        display_name: principal.display_name.clone(),
        role: principal.role.as_str().to_owned(),
        company_slug: principal.company.as_ref().map(|c| c.slug.clone()),
        company_name: principal.company.as_ref().map(|c| c.name.clone()),
        is_platform: principal.role.is_platform(),
        must_change_password: principal.must_change_password,
        csrf,
        can_administer: principal.can(Need::Administer),
        can_export: principal.can(Need::Act(Right::Export)) || principal.role.is_platform(),
        can_write_platform: principal.role == Role::PlatformAdmin,
        can_settings: principal.can(Need::Act(Right::Settings)),
        field_alarms_open,
    }))
}

/// Reads need a session; an anonymous read is a plain error (the page redirects to login). A
/// user who must change the initial password reads nothing but their own session
/// ([`session_view`]).
async fn read_session() -> Result<(Principal, Tx), WebError> {
    match open_session(None, Intent::Read).await {
        Ok(found) => Ok(found),
        Err(Refused::SignedOut(_)) => Err(internal("unauthorized")),
        Err(Refused::PasswordChangeRequired) => Err(internal("password_change_required")),
        Err(Refused::CsrfMismatch) => Err(internal("csrf_mismatch")),
        Err(Refused::Failed(e)) => Err(read_err(e)),
    }
}

/// A read's failure as a server function answers it: the error code, with the status REST
/// gives the same error (404 for what the caller may not see, 403, 422, …), not a blanket 500.
fn read_err(err: CoreError) -> WebError {
    if err.is_internal() {
        tracing::error!(cause = %err, "internal error in a server function");
    }
    if let (Some(response), Ok(status)) = (
        use_context::<ResponseOptions>(),
        http::StatusCode::from_u16(err.http_status()),
    ) {
        response.set_status(status);
    }
    internal(err.code())
}

fn company_row(c: companies::Company) -> CompanyRow {
    CompanyRow {
        created: local_time(
            c.created_at,
            &powertab_core::kernel::clock::time_zone(&c.time_zone),
        ),
        id: c.id,
        slug: c.slug,
        name: c.name,
        status: c.status.to_string(),
        time_zone: c.time_zone,
        max_meters: c.max_meters,
        max_gateways: c.max_gateways,
        max_operators: c.max_operators,
    }
}

pub async fn list_companies(q: String, status: String) -> Result<Vec<CompanyRow>, WebError> {
    let (principal, _tx) = read_session().await?;
    let filter = companies::CompanyFilter {
        status: Some(status),
        q: Some(q),
    };
    let list = companies::list(&ctx()?.pool, &principal, &filter)
        .await
        .map_err(read_err)?;
    Ok(list.into_iter().map(company_row).collect())
}

pub async fn get_company(id: i64) -> Result<CompanyRow, WebError> {
    let (principal, _tx) = read_session().await?;
    companies::get(&ctx()?.pool, &principal, id)
        .await
        .map(company_row)
        .map_err(read_err)
}

fn user_row(u: users::User, tz: &chrono_tz::Tz) -> UserRow {
    UserRow {
        id: u.id.to_string(),
        username: u.username,
        display_name: u.display_name,
        phone: u.phone,
        role: u.role.as_str().to_owned(),
        status: u.status,
        must_change_password: u.must_change_password,
        rights: u.rights.iter().map(|r| r.as_str().to_owned()).collect(),
        building_ids: u.building_ids.iter().map(Uuid::to_string).collect(),
        created: local_time(u.created_at, tz),
    }
}

fn non_empty(text: String) -> Option<String> {
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

pub async fn list_users(
    q: String,
    role: String,
    status: String,
    cursor: String,
) -> Result<PageView<UserRow>, WebError> {
    let (principal, mut tx) = read_session().await?;
    let filter = UserFilter {
        role: non_empty(role).and_then(|r| r.parse().ok()),
        status: non_empty(status),
        q: non_empty(q),
        cursor: non_empty(cursor),
        limit: Some(50),
    };
    let page = users::list(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    let tz = company_tz(&principal);
    Ok(PageView {
        items: page.items.into_iter().map(|u| user_row(u, &tz)).collect(),
        next_cursor: page.next_cursor,
    })
}

pub async fn get_user(id: String) -> Result<UserRow, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id.parse().map_err(|_| internal("not_found"))?;
    let user = users::get(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    Ok(user_row(user, &company_tz(&principal)))
}

/// A local date (`YYYY-MM-DD`) in `tz` at 00:00, as UTC.
fn local_midnight(date: &str, tz: &chrono_tz::Tz, days_after: i64) -> Option<DateTime<Utc>> {
    let date = NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").ok()?
        + chrono::Duration::days(days_after);
    tz.from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

pub async fn list_audit(
    platform: bool,
    action: String,
    actor: String,
    from: String,
    to: String,
    cursor: String,
) -> Result<PageView<AuditRow>, WebError> {
    let (principal, mut tx) = read_session().await?;
    if platform {
        if !principal.role.is_platform() {
            return Err(internal("not_found"));
        }
        powertab_core::db::set_schema(&mut tx, &SchemaName::control())
            .await
            .map_err(read_err)?;
    } else if !principal.can(Need::ReadCompany) {
        return Err(internal("not_found"));
    }
    let tz = company_tz(&principal);
    let filter = AuditFilter {
        action: non_empty(action),
        actor: non_empty(actor),
        target_id: None,
        from: local_midnight(&from, &tz, 0),
        to: local_midnight(&to, &tz, 1),
        cursor: non_empty(cursor),
        limit: Some(50),
    };
    let page = audit::list(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    let change = |before: &Option<serde_json::Value>, after: &Option<serde_json::Value>| match (
        before, after,
    ) {
        (Some(b), Some(a)) => format!("{b} → {a}"),
        (None, Some(a)) => a.to_string(),
        (Some(b), None) => b.to_string(),
        (None, None) => String::new(),
    };
    Ok(PageView {
        items: page
            .items
            .into_iter()
            .map(|e| AuditRow {
                id: e.id.to_string(),
                at: local_time(e.at, &tz),
                change: change(&e.before, &e.after),
                actor: e.actor_name,
                role: e.actor_role,
                source_ip: e.source_ip.unwrap_or_default(),
                action: e.action,
                target: format!("{} {}", e.target_kind, e.target_id.unwrap_or_default()),
            })
            .collect(),
        next_cursor: page.next_cursor,
    })
}

// ---------------------------------------------------------------------------------------------
// Changes

pub async fn login(company: String, username: String, password: String) -> Result<(), WebError> {
    let ctx = ctx()?;
    let parts = parts()?;
    let ip = boundary::client_ip(&parts.headers, &parts.extensions, ctx.trust_forwarded_for);
    let input = LoginInput {
        company: company.clone(),
        username,
        password,
    };
    // The login page remembers the company for next time.
    let remember = format!(
        "pt_company={}; Path=/; Max-Age=31536000; SameSite=Lax{}",
        encode(company.trim()),
        if ctx.cookie_secure { "; Secure" } else { "" }
    );
    let result = match auth::login(&ctx.pool, &ctx.auth, &input, ip.as_deref()).await {
        Ok(outcome) => {
            let mut cookies = auth::session_cookie_headers(&outcome.tokens, ctx.cookie_secure);
            cookies.push(remember);
            set_cookies(cookies);
            Ok(if outcome.must_change_password {
                "/password".to_owned()
            } else {
                "/".to_owned()
            })
        }
        Err(err) => {
            set_cookies(vec![remember]);
            Err(UiError::from(err))
        }
    };
    finish(result)
}

pub async fn logout(csrf: String) -> Result<(), WebError> {
    // The session ends whatever the form carried: a stale page's logout (its CSRF token from
    // an older session) must not leave a live refresh token behind.
    let _ = csrf;
    let ctx = ctx()?;
    if let Some(refresh) = request_cookie(REFRESH_COOKIE) {
        auth::logout(&ctx.pool, &refresh).await.map_err(internal)?;
    }
    set_cookies(auth::clear_cookie_headers(ctx.cookie_secure));
    finish(Ok("/login".into()))
}

pub fn set_language(lang: String) -> Result<(), WebError> {
    let lang = if lang == "en" { "en" } else { "zh" };
    let secure = if ctx()?.cookie_secure { "; Secure" } else { "" };
    set_cookies(vec![format!(
        "{LANG_COOKIE}={lang}; Path=/; Max-Age=31536000; SameSite=Lax{secure}"
    )]);
    finish(Ok(back_path()))
}

pub async fn change_password(csrf: String, current: String, new: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_password_change(&csrf).await?;
        auth::change_own_password(&mut tx, &principal, &current, &new).await?;
        tx.commit().await?;
        // Changing the password ends every session of the user, this one included.
        let secure = ctx().map_err(|_| ui("internal"))?.cookie_secure;
        set_cookies(auth::clear_cookie_headers(secure));
        Ok("/login?ok=password.changed".to_owned())
    }
    .await;
    finish(result)
}

fn parse_quota(text: &str, field: &str) -> Result<Option<i32>, UiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| field_error(field))
}

pub async fn create_company(
    csrf: String,
    slug: String,
    name: String,
    time_zone: String,
    quotas: [String; 3],
) -> Result<(), WebError> {
    let result = async {
        let (principal, _tx) = session_for_change(&csrf).await?;
        let input = NewCompany {
            slug,
            name,
            time_zone: non_empty(time_zone),
            max_meters: parse_quota(&quotas[0], "max_meters")?,
            max_gateways: parse_quota(&quotas[1], "max_gateways")?,
            max_operators: parse_quota(&quotas[2], "max_operators")?,
            contact_name: None,
            contact_phone: None,
        };
        let company =
            companies::create(&ctx().map_err(|_| ui("internal"))?.pool, &principal, &input).await?;
        Ok(format!(
            "/platform/companies/{}?ok=common.saved",
            company.id
        ))
    }
    .await;
    finish(result)
}

pub async fn company_status(csrf: String, id: i64, action: String) -> Result<(), WebError> {
    let result = async {
        let (principal, _tx) = session_for_change(&csrf).await?;
        let pool = ctx().map_err(|_| ui("internal"))?.pool;
        companies::set_status(&pool, &principal, id, action == "reactivate").await?;
        Ok(format!("/platform/companies/{id}?ok=common.saved"))
    }
    .await;
    finish(result)
}

pub async fn create_company_admin(
    csrf: String,
    id: i64,
    username: String,
    display_name: String,
    password: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, _tx) = session_for_change(&csrf).await?;
        let pool = ctx().map_err(|_| ui("internal"))?.pool;
        companies::create_admin(
            &pool,
            &principal,
            id,
            &NewAdmin {
                username,
                display_name,
                password,
            },
        )
        .await?;
        Ok(format!("/platform/companies/{id}?ok=common.saved"))
    }
    .await;
    finish(result)
}

pub async fn enter_company(csrf: String, id: i64) -> Result<(), WebError> {
    let result = async {
        let (principal, _tx) = session_for_change(&csrf).await?;
        let ctx = ctx().map_err(|_| ui("internal"))?;
        let pair = companies::enter(&ctx.pool, &ctx.auth, &principal, id).await?;
        set_cookies(auth::session_cookie_headers(&pair, ctx.cookie_secure));
        Ok("/".to_owned())
    }
    .await;
    finish(result)
}

pub async fn leave_company(csrf: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let ctx = ctx().map_err(|_| ui("internal"))?;
        let pair = auth::issue_platform(&mut tx, &ctx.auth, &principal).await?;
        tx.commit().await?;
        set_cookies(auth::session_cookie_headers(&pair, ctx.cookie_secure));
        Ok("/platform/companies".to_owned())
    }
    .await;
    finish(result)
}

pub async fn get_property(
    q: String,
    building: String,
) -> Result<crate::api::PropertyView, WebError> {
    use powertab_core::property;
    let (principal, mut tx) = read_session().await?;
    let tree = property::tree(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let filter = property::ShopFilter {
        building_id: building.parse().ok(),
        floor_id: None,
        status: None,
        q: non_empty(q),
    };
    let shops = property::shops(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    Ok(crate::api::PropertyView {
        buildings: tree
            .into_iter()
            .map(|b| crate::api::BuildingView {
                id: b.id.to_string(),
                name: b.name,
                address: b.address,
                shop_count: b.shop_count,
                floors: b
                    .floors
                    .into_iter()
                    .map(|f| (f.id.to_string(), f.name, f.shop_count))
                    .collect(),
            })
            .collect(),
        shops: shops
            .into_iter()
            .map(|s| crate::api::ShopView {
                building: s.building_name,
                floor: s.floor_name,
                number: s.number,
                name: s.name,
                area_m2: s
                    .area_centi_m2
                    .map(|a| format!("{}.{:02}", a / 100, a % 100))
                    .unwrap_or_default(),
                contact: [s.contact_name, s.contact_phone]
                    .join(" ")
                    .trim()
                    .to_owned(),
                status: s.status,
            })
            .collect(),
        kept_shop: kept_form("shop-form"),
    })
}

pub async fn create_building(csrf: String, name: String, address: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        powertab_core::property::create_building(
            &mut tx,
            &principal,
            &powertab_core::property::BuildingInput { name, address },
        )
        .await?;
        tx.commit().await?;
        Ok("/property?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

pub async fn create_floor(csrf: String, building_id: String, name: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = building_id
            .parse()
            .map_err(|_| field_error("building_id"))?;
        let input = powertab_core::property::FloorInput {
            name,
            sort_order: 0,
        };
        powertab_core::property::create_floor(&mut tx, &principal, id, &input).await?;
        tx.commit().await?;
        Ok("/property?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

pub async fn create_shop(
    csrf: String,
    floor_id: String,
    number: String,
    name: String,
    area_m2: String,
    contact_name: String,
    contact_phone: String,
) -> Result<(), WebError> {
    let typed = serde_json::json!({
        "floor_id": floor_id, "number": number, "name": name, "area_m2": area_m2,
        "contact_name": contact_name, "contact_phone": contact_phone,
    });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let floor_id: Uuid = floor_id.parse().map_err(|_| field_error("floor_id"))?;
        let input = powertab_core::property::ShopInput {
            floor_id,
            number,
            name,
            area_m2,
            contact_name,
            contact_phone,
            status: String::new(),
        };
        powertab_core::property::create_shop(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok("/property?ok=common.saved".to_owned())
    }
    .await;
    finish_keeping(result, "shop-form", &typed)
}

fn segments(schedule: &powertab_core::tariff::DaySchedule) -> Vec<(u16, u16, String)> {
    schedule
        .switches
        .iter()
        .enumerate()
        .map(|(i, sw)| {
            let end = schedule
                .switches
                .get(i + 1)
                .map_or(powertab_core::tariff::MINUTES_PER_DAY, |n| n.minute);
            (sw.minute, end, sw.period.as_str().to_owned())
        })
        .collect()
}

pub async fn list_plans() -> Result<Vec<crate::api::PlanView>, WebError> {
    use powertab_core::tariff::{format_price_units, DaySchedule, Period};
    let (principal, mut tx) = read_session().await?;
    let plans = powertab_core::tariff::plans::list(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    Ok(plans
        .into_iter()
        .map(|p| crate::api::PlanView {
            id: p.id.to_string(),
            name: p.name,
            description: p.description,
            versions: p
                .versions
                .iter()
                .rev()
                .map(|v| crate::api::VersionView {
                    effective: v.effective.to_string(),
                    prices: v
                        .prices
                        .iter()
                        .map(|(k, u)| (k.as_str().to_owned(), format_price_units(*u)))
                        .collect(),
                    seasons: if v.seasons.is_empty() {
                        vec![crate::api::SeasonView {
                            range: "01-01 – 12-31".into(),
                            workday: segments(&DaySchedule::all_day(Period::Flat)),
                            holiday: None,
                        }]
                    } else {
                        v.seasons
                            .iter()
                            .map(|season| crate::api::SeasonView {
                                range: format!(
                                    "{:02}-{:02} – {:02}-{:02}",
                                    season.from.0, season.from.1, season.to.0, season.to.1
                                ),
                                workday: segments(&season.workday),
                                holiday: season.holiday.as_ref().map(segments),
                            })
                            .collect()
                    },
                    tiers: tariff_form::describe_tiers(v.tiers.as_ref()),
                    fees: v
                        .fees
                        .iter()
                        .map(|f| {
                            let (per, fen) = match f {
                                powertab_core::tariff::Fee::Day(fen) => ("day", *fen),
                                powertab_core::tariff::Fee::Month(fen) => ("month", *fen),
                            };
                            (
                                per.to_owned(),
                                powertab_core::kernel::money::AmountFen::from_fen(fen).to_string(),
                            )
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect())
}

/// A version from the form, or the fields in error.
fn version_from(
    form: &crate::api::VersionForm,
) -> Result<powertab_core::tariff::TariffVersion, UiError> {
    use powertab_core::tariff::{parse_price_units, Period, TariffVersion};
    let mut fields = Vec::new();
    let effective =
        NaiveDate::parse_from_str(form.effective.trim(), "%Y-%m-%d").unwrap_or_else(|_| {
            fields.push("effective".to_owned());
            NaiveDate::MIN
        });
    let mut prices = std::collections::BTreeMap::new();
    for (period, text, field) in [
        (Period::Sharp, &form.price_sharp, "price_sharp"),
        (Period::Peak, &form.price_peak, "price_peak"),
        (Period::Flat, &form.price_flat, "price_flat"),
        (Period::Valley, &form.price_valley, "price_valley"),
        (
            Period::DeepValley,
            &form.price_deep_valley,
            "price_deep_valley",
        ),
    ] {
        if text.trim().is_empty() {
            continue;
        }
        match parse_price_units(text) {
            Ok(units) => {
                prices.insert(period, units);
            }
            Err(_) => fields.push(field.to_owned()),
        }
    }
    let seasons = tariff_form::seasons(&form.seasons, &mut fields);
    let tiers = tariff_form::tiers(&form.tier_basis, &form.tiers, &mut fields);
    let fees = tariff_form::fees(&form.fees, &mut fields);
    if !fields.is_empty() {
        return Err(UiError {
            code: "validation_failed".into(),
            fields,
            detail: None,
        });
    }
    let version = TariffVersion {
        effective,
        prices,
        seasons,
        tiers,
        fees,
    };
    version.validate().map_err(|f| UiError {
        code: "validation_failed".into(),
        detail: Some(
            f.iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        fields: f.into_keys().collect(),
    })?;
    Ok(version)
}

pub async fn create_plan(
    csrf: String,
    name: String,
    description: String,
    form: crate::api::VersionForm,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let input = powertab_core::tariff::plans::NewPlan {
            name,
            description,
            version: version_from(&form)?,
        };
        powertab_core::tariff::plans::create(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok("/tariffs?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

pub async fn add_plan_version(
    csrf: String,
    plan_id: String,
    form: crate::api::VersionForm,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = plan_id.parse().map_err(|_| ui("not_found"))?;
        powertab_core::tariff::plans::add_version(&mut tx, &principal, id, &version_from(&form)?)
            .await?;
        tx.commit().await?;
        Ok("/tariffs?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

fn import_view(upload: powertab_core::import::Upload) -> crate::api::ImportView {
    crate::api::ImportView {
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

pub async fn get_import(id: String) -> Result<crate::api::ImportView, WebError> {
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

fn parse_rights(names: &[&str]) -> Vec<Right> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

fn parse_role(text: &str) -> Result<Role, UiError> {
    text.parse().map_err(|_| field_error("role"))
}

#[allow(clippy::too_many_arguments)]
pub async fn create_user(
    csrf: String,
    username: String,
    display_name: String,
    phone: String,
    role: String,
    password: String,
    rights: Vec<&'static str>,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let input = NewUser {
            username,
            display_name,
            phone,
            role: parse_role(&role)?,
            password,
            rights: parse_rights(&rights),
            building_ids: vec![],
        };
        let user = users::create(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok(format!("/users/{}?ok=common.saved", user.id))
    }
    .await;
    finish(result)
}

fn parse_building_ids(text: &str) -> Result<Vec<Uuid>, UiError> {
    text.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| field_error("building_ids")))
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub async fn update_user(
    csrf: String,
    id: String,
    display_name: String,
    phone: String,
    role: String,
    building_ids: String,
    rights: Vec<&'static str>,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let patch = UserPatch {
            display_name: Some(display_name),
            phone: Some(phone),
            role: Some(parse_role(&role)?),
            rights: Some(parse_rights(&rights)),
            building_ids: Some(parse_building_ids(&building_ids)?),
        };
        users::update(&mut tx, &principal, id, &patch).await?;
        tx.commit().await?;
        Ok(format!("/users/{id}?ok=common.saved"))
    }
    .await;
    finish(result)
}

pub async fn user_status(csrf: String, id: String, action: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        users::set_active(&mut tx, &principal, id, action == "reactivate").await?;
        tx.commit().await?;
        Ok(format!("/users/{id}?ok=common.saved"))
    }
    .await;
    finish(result)
}

pub async fn reset_user_password(
    csrf: String,
    id: String,
    password: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        users::reset_password(&mut tx, &principal, id, &password).await?;
        tx.commit().await?;
        Ok(format!("/users/{id}?ok=common.saved"))
    }
    .await;
    finish(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a b&c=d/电"), "a%20b%26c%3Dd%2F%E7%94%B5");
        assert_eq!(encode("plain-text_1.2~"), "plain-text_1.2~");
    }

    #[test]
    fn local_dates_become_utc_midnights_of_the_property() {
        let start = local_midnight("2026-11-25", &chrono_tz::Asia::Shanghai, 0).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-11-24T16:00:00+00:00");
        let end = local_midnight("2026-11-25", &chrono_tz::Asia::Shanghai, 1).unwrap();
        assert_eq!(end.to_rfc3339(), "2026-11-25T16:00:00+00:00");
        assert!(local_midnight("25/11/2026", &chrono_tz::Asia::Shanghai, 0).is_none());
    }

    #[test]
    fn building_ids_parse_or_name_the_field() {
        let id = Uuid::now_v7();
        assert_eq!(parse_building_ids(&format!(" {id}, ")).unwrap(), vec![id]);
        assert!(parse_building_ids("").unwrap().is_empty());
        let err = parse_building_ids("not-a-uuid").unwrap_err();
        assert_eq!(err.fields, vec!["building_ids".to_owned()]);
    }
}
