//! Pieces every page uses: the layout with role-based navigation, the language switch and
//! logout, the message line (errors and confirmations from the query string), and the hidden
//! CSRF field of forms.

use crate::app::{use_lang, SessionResource};
use crate::i18n::{tr, tr_known};
use crate::tenancy::SessionView;
use crate::web::KeptForm;
use leptos::prelude::*;
use leptos_router::components::Redirect;
use leptos_router::hooks::{use_location, use_query_map};
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::{Logout, SetLanguage};
use leptos::server_fn::ServerFn as _;

/// The refused form of this page load, provided by [`Layout`].
#[derive(Clone)]
struct KeptContext(KeptForm);

/// What the form `form_id` had in it when the server refused it, with its wrong fields
/// (`value_or`, `chose`, `invalid`); empty for every other form and on a fresh page.
pub fn use_kept(form_id: &str) -> KeptForm {
    use_context::<KeptContext>()
        .map(|kept| kept.0.for_form(form_id))
        .unwrap_or_default()
}

/// The hidden field that proves a form came from our page.
#[component]
pub fn Csrf(token: String) -> impl IntoView {
    view! { <input type="hidden" name="csrf" value=token/> }
}

/// The error or confirmation a redirect put in the query (`?error=code&fields=a,b` or `?ok=key`).
/// Anyone can write such a link, so only translated messages are shown: an unknown code reads as
/// a generic error, field names only when they look like our own (`buses.0.number`), and no
/// free text from the URL ever reaches the page.
#[component]
pub fn Flash() -> impl IntoView {
    let lang = use_lang();
    let query = use_query_map();
    move || {
        let q = query.read();
        if let Some(code) = q.get("error") {
            let message = tr_known(lang, &format!("error.{code}"))
                .unwrap_or_else(|| tr(lang, "error.internal"));
            let fields: Vec<String> = q
                .get("fields")
                .unwrap_or_default()
                .split(',')
                .filter(|f| is_field_name(f))
                .take(20)
                // Readable names in the page's language where we have them.
                .map(|f| field_label(lang, f))
                .collect();
            let names = (!fields.is_empty()).then(|| format!(" ({})", fields.join(", ")));
            Some(
                view! {
                    <p class="flash error" role="alert">{message}{names}</p>
                }
                .into_any(),
            )
        } else {
            q.get("ok")
                .and_then(|key| tr_known(lang, &key))
                .map(|message| view! { <p class="flash ok" role="status">{message}</p> }.into_any())
        }
    }
}

/// A form field's readable name: `field.{name}`, and for a repeated row (`seasons.1.schedule`)
/// the row's field name with the row's number (日时段表 2).
fn field_label(lang: crate::i18n::Lang, name: &str) -> String {
    if let Some(label) = tr_known(lang, &format!("field.{name}")) {
        return label;
    }
    let mut parts = name.split('.');
    if let (Some(group), Some(row), Some(field), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    {
        if let (Ok(row), Some(label)) = (
            row.parse::<u32>(),
            tr_known(lang, &format!("field.{group}.{field}")),
        ) {
            return format!("{label} {}", row.saturating_add(1));
        }
    }
    name.to_owned()
}

/// Whether `name` looks like one of our form fields (`number`, `buses.0.baud`).
fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// A role's display name.
pub fn role_name(role: &str) -> String {
    tr(use_lang(), &format!("role.{role}"))
}

/// The header of logged-in pages: navigation by role, language switch, logout.
#[component]
fn Header(session: SessionView) -> impl IntoView {
    let lang = use_lang();
    let in_company = session.company_slug.is_some();
    let staff = in_company && session.role != "shop_tenant";
    let platform_nav = session.is_platform && !in_company;
    let tenant = in_company && session.role == "shop_tenant";
    // A shop tenant's home is their account (/my), not the staff landing page.
    let home = if tenant { "/my" } else { "/" };
    view! {
        <header class="top">
            <a class="brand" href=home>{tr(lang, "app.name")}</a>
            <nav>
                {(staff && session.field_alarms_open > 0).then(|| view! {
                    <a href="/fleet?problems=1" class="alarm-badge" id="field-alarm-badge">
                        "⚠ " {session.field_alarms_open} " " {tr(lang, "nav.field_alarms")}
                    </a>
                })}
                {(!tenant).then(|| view! { <a href="/">{tr(lang, "nav.home")}</a> })}
                {tenant.then(|| view! {
                    <a href="/my">{tr(lang, "nav.my")}</a>
                    <a href="/my/preferences">{tr(lang, "tenant.preferences")}</a>
                })}
                {platform_nav.then(|| view! {
                    <a href="/platform/companies">{tr(lang, "nav.companies")}</a>
                    <a href="/platform/audit">{tr(lang, "nav.platform_audit")}</a>
                    <a href="/platform/registrations">{tr(lang, "nav.registrations")}</a>
                })}
                {staff.then(|| view! {
                    <a href="/counter">{tr(lang, "nav.counter")}</a>
                    <a href="/approvals">{tr(lang, "nav.approvals")}</a>
                    <a href="/held-readings">{tr(lang, "nav.held")}</a>
                    <a href="/books">{tr(lang, "nav.books")}</a>
                    <a href="/fleet">{tr(lang, "nav.fleet")}</a>
                    <a href="/commands">{tr(lang, "nav.commands")}</a>
                    <a href="/alarms">{tr(lang, "nav.alarms")}</a>
                    <a href="/meter-side">{tr(lang, "nav.meter_side")}</a>
                    <a href="/notifications">{tr(lang, "nav.messages")}</a>
                    <a href="/property">{tr(lang, "nav.property")}</a>
                    <a href="/gateways">{tr(lang, "nav.gateways")}</a>
                    <a href="/meters">{tr(lang, "nav.meters")}</a>
                    <a href="/tariffs">{tr(lang, "nav.tariffs")}</a>
                    <a href="/settings">{tr(lang, "nav.settings")}</a>
                    <a href="/users">{tr(lang, "nav.users")}</a>
                    <a href="/audit">{tr(lang, "nav.audit")}</a>
                })}
                {(staff && session.can_settings).then(|| view! { <a href="/import">{tr(lang, "nav.import")}</a> })}
                <a href="/password">{tr(lang, "nav.password")}</a>
            </nav>
            <div class="who">
                <span class="user">{session.username.clone()}</span>
                <LanguageSwitch/>
                <form method="post" action=Logout::PATH class="inline">
                    <Csrf token=session.csrf.clone()/>
                    <button type="submit" class="link">{tr(lang, "nav.logout")}</button>
                </form>
            </div>
        </header>
    }
}

/// A one-button form that switches the language and comes back to this page.
#[component]
pub fn LanguageSwitch() -> impl IntoView {
    let lang = use_lang();
    let other = if lang.other() == crate::i18n::Lang::En {
        "en"
    } else {
        "zh"
    };
    view! {
        <form method="post" action=SetLanguage::PATH class="inline">
            <input type="hidden" name="lang" value=other/>
            <button type="submit" class="link" id="lang-switch">{tr(lang, "lang.switch")}</button>
        </form>
    }
}

/// The frame of every logged-in page. Sends anonymous visitors to the login page and users with
/// an initial password to the password page; renders `children` with the session otherwise.
#[component]
pub fn Layout<F>(page: F) -> impl IntoView
where
    F: Fn(SessionView) -> AnyView + Clone + Send + Sync + 'static,
{
    let session = expect_context::<SessionResource>();
    let location = use_location();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                let page = page.clone();
                Suspend::new(async move {
                    let path = location.pathname.get_untracked();
                    match session.await {
                        Ok(Some(s)) if s.must_change_password && path != "/password" => {
                            view! { <Redirect path="/password"/> }.into_any()
                        }
                        Ok(Some(s)) => {
                            provide_context(KeptContext(s.kept.clone()));
                            view! {
                            {view! { <Header session=s.clone()/> }.into_any()}
                            <main class="page">
                                <Flash/>
                                {page(s)}
                            </main>
                        }.into_any()
                        }
                        _ => view! { <Redirect path="/login"/> }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}
