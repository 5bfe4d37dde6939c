//! The document shell, the router and the session every page shares.

use crate::api::WebError;
use crate::api::{get_session, SessionView};
use crate::i18n::{Lang, LANG_COOKIE};
use crate::pages;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{FlatRoutes, Route, Router};
use leptos_router::{path, SsrMode};

/// The session of the browser, loaded once per page load.
pub type SessionResource = Resource<Result<Option<SessionView>, WebError>>;

/// The language of this page: the `pt_lang` cookie on the server, `<html lang>` in the browser
/// (the server wrote it there), so both render the same text.
pub fn current_lang() -> Lang {
    #[cfg(feature = "ssr")]
    {
        let _ = LANG_COOKIE;
        crate::server::request_cookie(LANG_COOKIE)
            .map(|v| Lang::parse(&v))
            .unwrap_or_default()
    }
    #[cfg(not(feature = "ssr"))]
    {
        let _ = LANG_COOKIE;
        document()
            .document_element()
            .and_then(|e| e.get_attribute("lang"))
            .map(|l| Lang::parse(&l))
            .unwrap_or_default()
    }
}

/// The language from context (set by [`App`]).
pub fn use_lang() -> Lang {
    use_context::<Lang>().unwrap_or_default()
}

/// The whole HTML document, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let lang = current_lang();
    #[cfg(feature = "ssr")]
    content_security_policy();
    view! {
        <!DOCTYPE html>
        <html lang=lang.code()>
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="stylesheet" href="/style.css"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The page's Content-Security-Policy: scripts only from this site or carrying this response's
/// nonce (leptos_axum puts it on the hydration and resource scripts it writes inline), wasm
/// compiled by the bundle, no framing. Style attributes stay allowed: the bar charts set heights.
#[cfg(feature = "ssr")]
fn content_security_policy() {
    let Some(nonce) = leptos::nonce::use_nonce() else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    );
    if let (Some(response), Ok(value)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::HeaderValue::from_str(&policy),
    ) {
        response.insert_header(http::header::CONTENT_SECURITY_POLICY, value);
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let lang = current_lang();
    provide_context(lang);
    let session: SessionResource = Resource::new(|| (), |_| get_session());
    provide_context(session);
    view! {
        <Title text=crate::i18n::tr(lang, "app.name")/>
        <Router>
            <FlatRoutes fallback=move || view! { <p class="page">{crate::i18n::tr(lang, "error.page_not_found")}</p> }>
                <Route path=path!("/login") view=pages::login::LoginPage ssr=SsrMode::Async/>
                <Route path=path!("/") view=pages::home::HomePage ssr=SsrMode::Async/>
                <Route path=path!("/password") view=pages::password::PasswordPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/companies") view=pages::companies::CompaniesPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/companies/:id") view=pages::companies::CompanyPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/audit") view=pages::audit::PlatformAuditPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/registrations") view=pages::registrations::RegistrationsPage ssr=SsrMode::Async/>
                <Route path=path!("/users") view=pages::users::UsersPage ssr=SsrMode::Async/>
                <Route path=path!("/users/:id") view=pages::users::UserPage ssr=SsrMode::Async/>
                <Route path=path!("/audit") view=pages::audit::AuditPage ssr=SsrMode::Async/>
                <Route path=path!("/import") view=pages::import::ImportPage ssr=SsrMode::Async/>
                <Route path=path!("/property") view=pages::property::PropertyPage ssr=SsrMode::Async/>
                <Route path=path!("/fleet") view=pages::fleet::FleetPage ssr=SsrMode::Async/>
                <Route path=path!("/gateways") view=pages::field::GatewaysPage ssr=SsrMode::Async/>
                <Route path=path!("/gateways/:id") view=pages::field::GatewayPage ssr=SsrMode::Async/>
                <Route path=path!("/meters") view=pages::field::MetersPage ssr=SsrMode::Async/>
                <Route path=path!("/meters/:id") view=pages::field::MeterPage ssr=SsrMode::Async/>
                <Route path=path!("/meters/:id/readings") view=pages::readings::ReadingsPage ssr=SsrMode::Async/>
                <Route path=path!("/tariffs") view=pages::tariffs::TariffsPage ssr=SsrMode::Async/>
                <Route path=path!("/tariffs/preview") view=pages::preview::PreviewPage ssr=SsrMode::Async/>
                <Route path=path!("/settings") view=pages::settings::SettingsPage ssr=SsrMode::Async/>
                <Route path=path!("/import/:id") view=pages::import::ImportResultPage ssr=SsrMode::Async/>
            </FlatRoutes>
        </Router>
    }
}
