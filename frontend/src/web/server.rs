//! The server side of every server function (built with the `ssr` feature only): the request's
//! session through the one boundary ([`crate::web::boundary`]), CSRF checks, redirects, kept
//! form input and the error a form or a read answers with. Each context's `server` module holds
//! its bodies and calls these. The server mounts the app with a [`WebContext`] in the reactive
//! context.

use crate::web::boundary;
use crate::web::WebError;
use chrono::{DateTime, Utc};
use http::header;
use http::request::Parts;
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use powertab_core::auth::boundary::{Intent, Refused};
use powertab_core::auth::{self, AuthConfig, Principal};
use powertab_core::db::Tx;
use powertab_core::CoreError;
use sqlx::PgPool;
use std::sync::Arc;

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
    /// Key-encryption keys for secrets at rest (vendor accounts' secrets are sealed with them).
    pub keyring: Option<Arc<powertab_core::kernel::secrets::Keyring>>,
}

pub(crate) fn internal(message: impl std::fmt::Display) -> WebError {
    WebError::new(message.to_string())
}

pub(crate) fn ctx() -> Result<WebContext, WebError> {
    use_context::<WebContext>().ok_or_else(|| internal("web context missing"))
}

pub(crate) fn parts() -> Result<Parts, WebError> {
    use_context::<Parts>().ok_or_else(|| internal("request missing"))
}

/// The value of a request cookie.
pub fn request_cookie(name: &str) -> Option<String> {
    let parts = use_context::<Parts>()?;
    let header = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    auth::cookie_value(header, name).map(str::to_owned)
}

pub(crate) fn set_cookies(values: Vec<String>) {
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
pub(crate) async fn open_session(
    csrf: Option<&str>,
    intent: Intent,
) -> Result<(Principal, Tx), Refused> {
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
pub(crate) async fn session() -> Result<Option<(Principal, Tx)>, WebError> {
    match open_session(None, Intent::PasswordChange { changes: false }).await {
        Ok(found) => Ok(Some(found)),
        Err(Refused::SignedOut(_)) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

/// An error a form shows: a code that the page translates, and the fields it concerns.
#[derive(Debug)]
pub(crate) struct UiError {
    pub(crate) code: String,
    pub(crate) fields: Vec<String>,
    /// What exactly is wrong ("port 1 still carries 3 meters"), shown under the error.
    pub(crate) detail: Option<String>,
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

impl UiError {
    /// The refusal with core's field names (`alarm1_fen`) turned into the form's (`alarm1`), so
    /// the form marks the field the person typed in.
    pub(crate) fn renamed(mut self, names: &[(&str, &str)]) -> Self {
        for field in &mut self.fields {
            if let Some((_, form_name)) = names.iter().find(|(core, _)| core == field) {
                *field = (*form_name).to_owned();
            }
        }
        self
    }
}

/// A form field that does not parse.
pub(crate) fn field_error(field: &str) -> UiError {
    UiError {
        code: "validation_failed".into(),
        fields: vec![field.to_owned()],
        detail: None,
    }
}

pub(crate) fn ui(code: &str) -> UiError {
    UiError {
        code: code.to_owned(),
        fields: vec![],
        detail: None,
    }
}

/// A form's failure to open a session, as the form shows it.
pub(crate) fn refused(refusal: Refused) -> UiError {
    match refusal {
        Refused::SignedOut(_) => ui("unauthorized"),
        Refused::CsrfMismatch => ui("csrf_mismatch"),
        Refused::PasswordChangeRequired => ui("password_change_required"),
        Refused::Failed(e) => e.into(),
    }
}

/// A session for a change: logged in, the form's CSRF field carries this session's token, and
/// the user is not one who must first change the initial password.
pub(crate) async fn session_for_change(csrf: &str) -> Result<(Principal, Tx), UiError> {
    open_session(Some(csrf), Intent::Change)
        .await
        .map_err(refused)
}

/// A session for changing one's own password: logged in and the CSRF field matches; the one
/// change a user who must change the initial password may make.
pub(crate) async fn session_for_password_change(csrf: &str) -> Result<(Principal, Tx), UiError> {
    open_session(Some(csrf), Intent::PasswordChange { changes: true })
        .await
        .map_err(refused)
}

/// The path of the page the form was on (from `Referer`), without its query.
pub(crate) fn back_path() -> String {
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
    crate::web::query::percent_encode(text)
}

/// The cookie a refused form's input waits in for the page it goes back to.
const KEPT_FORM_COOKIE: &str = "pt_form";
/// Larger forms are not kept (a cookie is at most 4 KB, and this one rides on every request
/// for its two minutes).
const KEPT_FORM_BYTES_MAX: usize = 3_000;

/// Ends a change like [`finish`], and on a refusal keeps what `form` had in it for the form
/// `form_id` (minus the CSRF token and anything secret: passwords, registration bytes), with the
/// fields the refusal named, so the page shows it again instead of an empty form. Two minutes,
/// HttpOnly, this site only; the next page that shows it clears it ([`take_kept_form`]).
pub(crate) fn finish_keeping<F: serde::Serialize>(
    result: Result<String, UiError>,
    form_id: &str,
    form: &F,
) -> Result<(), WebError> {
    let cookie = match &result {
        // Only a signed-in person's own refused change is kept: a forged or signed-out post
        // must not be able to pre-fill a form the person opens next.
        Err(err) if !NOT_KEPT_CODES.contains(&err.code.as_str()) => {
            kept_cookie_value(form_id, form, &err.fields)
        }
        _ => None,
    };
    set_kept_cookie(cookie);
    finish(result)
}

fn set_kept_cookie(value: Option<String>) {
    let secure = ctx().map(|c| c.cookie_secure).unwrap_or(true);
    let attributes = format!(
        "Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    set_cookies(vec![match value {
        Some(value) => format!("{KEPT_FORM_COOKIE}={value}; Max-Age=120; {attributes}"),
        None => format!("{KEPT_FORM_COOKIE}=; Max-Age=0; {attributes}"),
    }]);
}

/// Refusals whose input is dropped: the post did not come from this person's open session.
const NOT_KEPT_CODES: &[&str] = &["csrf_mismatch", "unauthorized", "password_change_required"];

/// Whether a form field's value may wait in a cookie: never a secret.
fn may_keep(name: &str) -> bool {
    name != "csrf"
        && !["password", "registration", "secret", "key"]
            .iter()
            .any(|secret| name.contains(secret))
}

/// A form's values under the names its fields carry in errors: `seasons.1.schedule` for the
/// repeated row `seasons[1][schedule]`. Only non-empty text is kept, and nothing secret.
fn flatten_into(
    out: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    value: &serde_json::Value,
) {
    let child = |key: &str| {
        if name.is_empty() {
            key.to_owned()
        } else {
            format!("{name}.{key}")
        }
    };
    match value {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                if may_keep(key) {
                    flatten_into(out, &child(key), value);
                }
            }
        }
        serde_json::Value::Array(rows) => {
            for (i, value) in rows.iter().enumerate() {
                flatten_into(out, &child(&i.to_string()), value);
            }
        }
        serde_json::Value::String(text) if !text.is_empty() => {
            out.insert(name.to_owned(), value.clone());
        }
        _ => {}
    }
}

pub(crate) fn kept_cookie_value<F: serde::Serialize>(
    form_id: &str,
    form: &F,
    fields: &[String],
) -> Option<String> {
    let mut values = serde_json::Map::new();
    flatten_into(&mut values, "", &serde_json::to_value(form).ok()?);
    let fields: Vec<&String> = fields.iter().take(20).collect();
    let text = serde_json::json!({ "form": form_id, "values": values, "fields": fields });
    let value = encode(&text.to_string());
    if value.len() <= KEPT_FORM_BYTES_MAX {
        return Some(value);
    }
    // Too much typed to keep: still mark the wrong fields.
    let marks = serde_json::json!({ "form": form_id, "values": {}, "fields": fields });
    Some(encode(&marks.to_string())).filter(|v| v.len() <= KEPT_FORM_BYTES_MAX)
}

/// The refused form this request carries, if any, and clears it: shown once, on the page the
/// refusal went back to (a later visit starts with an empty form).
pub(crate) fn take_kept_form() -> crate::web::KeptForm {
    let Some(value) = request_cookie(KEPT_FORM_COOKIE) else {
        return crate::web::KeptForm::default();
    };
    set_kept_cookie(None);
    crate::web::query::percent_decode(&value)
        .and_then(|text| serde_json::from_str::<crate::web::KeptForm>(&text).ok())
        .unwrap_or_default()
}

/// Ends a change: redirect to `Ok(url)`, or back to the form with the error in the query.
pub(crate) fn finish(result: Result<String, UiError>) -> Result<(), WebError> {
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

/// Money as the forms show it: yuan with two decimals.
pub(crate) fn yuan(fen: powertab_core::kernel::money::AmountFen) -> String {
    fen.to_string()
}

pub(crate) fn local_time(at: DateTime<Utc>, tz: &chrono_tz::Tz) -> String {
    at.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(crate) fn company_tz(principal: &Principal) -> chrono_tz::Tz {
    principal.tz()
}

/// Reads need a session; an anonymous read is a plain error (the page redirects to login). A
/// user who must change the initial password reads nothing but their own session
/// ([`session_view`]).
pub(crate) async fn read_session() -> Result<(Principal, Tx), WebError> {
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
pub(crate) fn read_err(err: CoreError) -> WebError {
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

pub(crate) fn non_empty(text: String) -> Option<String> {
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_forms_never_hold_secrets_and_name_their_fields() {
        let form = serde_json::json!({
            "csrf": "c", "name": "Mall 1", "password": "p", "new_password": "q",
            "registration": "REG-1", "registration_hex": "01", "count": 3,
        });
        let value = kept_cookie_value("f", &form, &["name".to_owned()]).unwrap();
        let kept: crate::web::KeptForm =
            serde_json::from_str(&crate::web::query::percent_decode(&value).unwrap()).unwrap();
        assert_eq!(kept.form, "f");
        let nested =
            serde_json::json!({ "seasons": [{ "from": "01-01", "to": "" }, { "to": "12-31" }] });
        let value = kept_cookie_value("v", &nested, &[]).unwrap();
        let rows: crate::web::KeptForm =
            serde_json::from_str(&crate::web::query::percent_decode(&value).unwrap()).unwrap();
        assert_eq!(rows.value_or("seasons.0.from", ""), "01-01");
        assert_eq!(rows.value_or("seasons.1.to", ""), "12-31");
        assert!(!rows.values.contains_key("seasons.0.to"));
        assert_eq!(kept.values.keys().collect::<Vec<_>>(), vec!["name"]);
        assert_eq!(kept.invalid("name"), Some("true"));
        assert_eq!(kept.for_form("other"), crate::web::KeptForm::default());
    }

    #[test]
    fn a_form_too_large_to_keep_still_marks_its_fields() {
        let form = serde_json::json!({ "note": "x".repeat(5_000) });
        let value = kept_cookie_value("f", &form, &["note".to_owned()]).unwrap();
        let kept: crate::web::KeptForm =
            serde_json::from_str(&crate::web::query::percent_decode(&value).unwrap()).unwrap();
        assert!(kept.values.is_empty());
        assert_eq!(kept.fields, vec!["note".to_owned()]);
    }

    #[test]
    fn core_field_names_become_the_forms() {
        let err = UiError {
            code: "validation_failed".into(),
            fields: vec!["alarm1_fen".into(), "other".into()],
            detail: None,
        };
        assert_eq!(
            err.renamed(&[("alarm1_fen", "alarm1")]).fields,
            ["alarm1", "other"]
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a b&c=d/电"), "a%20b%26c%3Dd%2F%E7%94%B5");
        assert_eq!(encode("plain-text_1.2~"), "plain-text_1.2~");
    }
}
