//! Changing one's own password; forced after an initial or reset password.

use crate::app::use_lang;
use crate::components::{Csrf, Layout};
use crate::i18n::tr;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::ChangePassword;
use leptos::server_fn::ServerFn as _;

#[component]
pub fn PasswordPage() -> impl IntoView {
    let lang = use_lang();
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "password.title")}</h1>
            {s.must_change_password.then(|| view! { <p class="flash error">{tr(lang, "password.forced")}</p> })}
            <form method="post" action=ChangePassword::PATH class="stack narrow" id="password-form">
                <Csrf token=s.csrf.clone()/>
                <label>
                    {tr(lang, "password.current")}
                    <input name="current_password" type="password" required autocomplete="current-password"/>
                </label>
                <label>
                    {tr(lang, "password.new")}
                    <input name="new_password" type="password" required minlength="10" autocomplete="new-password"/>
                </label>
                <button type="submit">{tr(lang, "password.submit")}</button>
            </form>
        }.into_any()/>
    }
}
