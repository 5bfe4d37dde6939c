//! The document shell, the router and the session every page shares.

use crate::i18n::{Lang, LANG_COOKIE};
use crate::tenancy::{get_session, SessionView};
use crate::web::WebError;
use crate::{billing, field, import, power, property, selfservice, tariff, tenancy};
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
        crate::web::server::request_cookie(LANG_COOKIE)
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
                <link rel="manifest" href="/manifest.webmanifest"/>
                <link rel="icon" href="/icon.svg" type="image/svg+xml"/>
                <meta name="theme-color" content="#0b6bcb"/>
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
                <Route path=path!("/login") view=tenancy::pages::login::LoginPage ssr=SsrMode::Async/>
                <Route path=path!("/t/:slug") view=selfservice::pages::TenantLandingPage ssr=SsrMode::Async/>
                <Route path=path!("/my") view=selfservice::pages::MyHomePage ssr=SsrMode::Async/>
                <Route path=path!("/my/top-up") view=selfservice::pages::MyTopUpPage ssr=SsrMode::Async/>
                <Route path=path!("/my/orders/:id") view=selfservice::pages::MyOrderPage ssr=SsrMode::Async/>
                <Route path=path!("/my/preferences") view=selfservice::pages::MyPreferencesPage ssr=SsrMode::Async/>
                <Route path=path!("/") view=tenancy::pages::home::HomePage ssr=SsrMode::Async/>
                <Route path=path!("/password") view=tenancy::pages::password::PasswordPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/companies") view=tenancy::pages::companies::CompaniesPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/companies/:id") view=tenancy::pages::companies::CompanyPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/audit") view=tenancy::pages::audit::PlatformAuditPage ssr=SsrMode::Async/>
                <Route path=path!("/platform/registrations") view=field::pages::registrations::RegistrationsPage ssr=SsrMode::Async/>
                <Route path=path!("/users") view=tenancy::pages::users::UsersPage ssr=SsrMode::Async/>
                <Route path=path!("/users/:id") view=tenancy::pages::users::UserPage ssr=SsrMode::Async/>
                <Route path=path!("/audit") view=tenancy::pages::audit::AuditPage ssr=SsrMode::Async/>
                <Route path=path!("/import") view=import::pages::ImportPage ssr=SsrMode::Async/>
                <Route path=path!("/property") view=property::pages::PropertyPage ssr=SsrMode::Async/>
                <Route path=path!("/counter") view=billing::pages::CounterPage ssr=SsrMode::Async/>
                <Route path=path!("/approvals") view=billing::pages::ApprovalsPage ssr=SsrMode::Async/>
                <Route path=path!("/held-readings") view=billing::pages::HeldReadingsPage ssr=SsrMode::Async/>
                <Route path=path!("/books") view=billing::pages::BooksPage ssr=SsrMode::Async/>
                <Route path=path!("/accounts/:id") view=billing::pages::AccountPage ssr=SsrMode::Async/>
                <Route path=path!("/receipts/:id") view=billing::pages::ReceiptPage ssr=SsrMode::Async/>
                <Route path=path!("/fleet") view=field::pages::fleet::FleetPage ssr=SsrMode::Async/>
                <Route path=path!("/commands") view=power::pages::CommandsPage ssr=SsrMode::Async/>
                <Route path=path!("/alarms") view=power::pages::AlarmsPage ssr=SsrMode::Async/>
                <Route path=path!("/meter-side") view=power::pages::MeterSidePage ssr=SsrMode::Async/>
                <Route path=path!("/meter-side/:id") view=power::meter_side_page::MeterSideMeterPage ssr=SsrMode::Async/>
                <Route path=path!("/notifications") view=power::pages::MessagesPage ssr=SsrMode::Async/>
                <Route path=path!("/settings/notifications") view=power::notify_page::NotifySettingsPage ssr=SsrMode::Async/>
                <Route path=path!("/control") view=power::pages::BatchPage ssr=SsrMode::Async/>
                <Route path=path!("/control/batches/:id") view=power::pages::BatchProgressPage ssr=SsrMode::Async/>
                <Route path=path!("/gateways") view=field::pages::meters::GatewaysPage ssr=SsrMode::Async/>
                <Route path=path!("/gateways/:id") view=field::pages::meters::GatewayPage ssr=SsrMode::Async/>
                <Route path=path!("/meters") view=field::pages::meters::MetersPage ssr=SsrMode::Async/>
                <Route path=path!("/meters/:id") view=field::pages::meters::MeterPage ssr=SsrMode::Async/>
                <Route path=path!("/meters/:id/readings") view=field::pages::readings::ReadingsPage ssr=SsrMode::Async/>
                <Route path=path!("/tariffs") view=tariff::pages::plans::TariffsPage ssr=SsrMode::Async/>
                <Route path=path!("/tariffs/preview") view=tariff::pages::preview::PreviewPage ssr=SsrMode::Async/>
                <Route path=path!("/settings") view=tenancy::pages::settings::SettingsPage ssr=SsrMode::Async/>
                <Route path=path!("/import/:id") view=import::pages::ImportResultPage ssr=SsrMode::Async/>
            </FlatRoutes>
        </Router>
    }
}
