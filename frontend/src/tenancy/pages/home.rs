//! The landing page after login: who you are, in which company, and where to go.

use crate::app::use_lang;
use crate::components::{role_name, Csrf, Layout};
use crate::i18n::tr;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::LeaveCompany;
use leptos::server_fn::ServerFn as _;

#[component]
pub fn HomePage() -> impl IntoView {
    let lang = use_lang();
    view! {
        <Layout page=move |s| {
            if s.role == "shop_tenant" && s.company_slug.is_some() {
                return view! { <leptos_router::components::Redirect path="/my"/> }.into_any();
            }
            let company = s.company_name.clone().unwrap_or_else(|| tr(lang, "home.platform"));
            let entered = s.is_platform && s.company_slug.is_some();
            view! {
                <h1 id="welcome">{tr(lang, "home.welcome")}", " {s.display_name.clone()} " (" {s.username.clone()} ")"</h1>
                <dl class="facts">
                    <dt>{tr(lang, "home.role")}</dt>
                    <dd id="role">{role_name(&s.role)}</dd>
                    <dt>{tr(lang, "home.company")}</dt>
                    <dd id="company">{company}</dd>
                </dl>
                {entered.then(|| view! {
                    <p class="flash ok">{tr(lang, "home.entered")}</p>
                    <form method="post" action=LeaveCompany::PATH class="inline">
                        <Csrf token=s.csrf.clone()/>
                        <button type="submit" class="secondary" id="leave">{tr(lang, "home.leave")}</button>
                    </form>
                })}
            }.into_any()
        }/>
    }
}
