//! The server side of sign-in, companies, users, the audit log (and, in [`settings`], the company
//! settings page): form text parsed, core services called, errors turned into what the page shows.

pub mod settings;

use super::views::*;
use crate::i18n::LANG_COOKIE;
use crate::web::boundary;
use crate::web::server::{
    back_path, ctx, encode, finish_keeping, internal, parts, request_cookie, set_cookies,
    take_kept_form,
};
use crate::web::server::{
    company_tz, field_error, finish, local_time, non_empty, read_err, read_session, session,
    session_for_change, session_for_password_change, ui, UiError,
};
use crate::web::PageView;
use crate::web::WebError;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use powertab_core::auth::{self, LoginInput, CSRF_COOKIE, REFRESH_COOKIE};
use powertab_core::kernel::names::SchemaName;
use powertab_core::tenancy::audit::{self, AuditFilter};
use powertab_core::tenancy::companies::{self, NewAdmin, NewCompany};
use powertab_core::tenancy::roles::{Need, Right, Role};
use powertab_core::tenancy::users::{self, NewUser, UserFilter, UserPatch};
use uuid::Uuid;

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
        can_control: principal.can(Need::Act(Right::TripClose))
            || principal.can(Need::Act(Right::KeepPower)),
        field_alarms_open,
        kept: take_kept_form(),
    }))
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

/// Company `id`'s newest master key version for meter-side meters (`None` before first use);
/// platform staff only, as the company itself.
pub async fn get_company_master_key(id: i64) -> Result<Option<i32>, WebError> {
    let (principal, _tx) = read_session().await?;
    let pool = ctx()?.pool;
    // 404 for whoever may not see the company.
    let company = companies::get(&pool, &principal, id)
        .await
        .map_err(read_err)?;
    let schema = powertab_core::kernel::names::SchemaName::for_company(company.id);
    let mut tx = powertab_core::db::begin_in(&pool, &schema)
        .await
        .map_err(read_err)?;
    powertab_core::secure::keys::latest_version(&mut tx)
        .await
        .map_err(read_err)
}

/// Rotates company `id`'s master key (platform admins; `confirm` = the box saying existing
/// meters keep theirs).
pub async fn rotate_company_master_key(
    csrf: String,
    id: i64,
    confirm: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, _tx) = session_for_change(&csrf).await?;
        if confirm != "yes" {
            return Err(crate::web::server::field_error("confirm"));
        }
        let web = ctx().map_err(|_| ui("internal"))?;
        powertab_core::secure::keys::rotate_company_master(
            &web.pool,
            web.keyring.as_deref(),
            &principal,
            id,
        )
        .await?;
        Ok(format!("/platform/companies/{id}?ok=companies.key_rotated"))
    }
    .await;
    finish(result)
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
            } else if outcome.role == Role::ShopTenant {
                "/my".to_owned()
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
    let kept = serde_json::json!({ "slug": &slug, "name": &name, "time_zone": &time_zone, "max_meters": &quotas[0], "max_gateways": &quotas[1], "max_operators": &quotas[2] });
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
    finish_keeping(result, "onboard-form", &kept)
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
    let kept = serde_json::json!({ "username": &username, "display_name": &display_name });
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
    finish_keeping(result, "admin-form", &kept)
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
    let kept = serde_json::json!({ "username": &username, "display_name": &display_name, "phone": &phone, "role": &role });
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
    finish_keeping(result, "new-user-form", &kept)
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
    let kept = serde_json::json!({ "display_name": &display_name, "phone": &phone, "role": &role, "building_ids": &building_ids });
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
    finish_keeping(result, "edit-user-form", &kept)
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
