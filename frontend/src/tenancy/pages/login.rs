//! The login page: company slug (remembered from the last login), username, password.

use crate::app::use_lang;
use crate::components::{Flash, LanguageSwitch};
use crate::i18n::tr;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::Login;
use leptos::server_fn::ServerFn as _;

/// The company to prefill: from a company's own login link (`/login?company=slug`, also what
/// shop tenants' QR codes carry), else the one typed at the last login (`pt_company` cookie).
fn remembered_company(from_link: String) -> String {
    #[cfg(feature = "ssr")]
    {
        if !from_link.is_empty() {
            return from_link;
        }
        crate::web::server::request_cookie("pt_company")
            .map(|v| v.replace("%2D", "-"))
            .unwrap_or_default()
    }
    #[cfg(not(feature = "ssr"))]
    {
        from_link
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let lang = use_lang();
    // Read on the server and carried to the browser in the page's data, so hydration matches.
    let from_link = crate::web::query::query_param("company");
    let company = Resource::new(from_link, |link| async move { remembered_company(link) });
    view! {
        <main class="login">
            <div class="card">
                <div class="login-head">
                    <h1>{tr(lang, "app.name")}</h1>
                    <LanguageSwitch/>
                </div>
                <p class="muted">{tr(lang, "app.tagline")}</p>
                <Flash/>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        let company = company.await;
                        view! {
                            <form method="post" action=Login::PATH class="stack" id="login-form">
                                <label>
                                    {tr(lang, "login.company")}
                                    <input name="company" value=company autocomplete="organization"
                                        placeholder=tr(lang, "login.company_hint")/>
                                </label>
                                <label>
                                    {tr(lang, "login.username")}
                                    <input name="username" required autocomplete="username"/>
                                </label>
                                <label>
                                    {tr(lang, "login.password")}
                                    <input name="password" type="password" required autocomplete="current-password"/>
                                </label>
                                <button type="submit">{tr(lang, "login.submit")}</button>
                            </form>
                        }
                    })}
                </Suspense>
            </div>
        </main>
    }
}
