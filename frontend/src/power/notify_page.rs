//! The notification settings page (`/settings/notifications`): how messages go (the SMS vendor
//! phones are sent through, the per-phone hourly limit, when operator alerts escalate), the
//! company's vendor accounts — Aliyun SMS, Tencent Cloud SMS, a WeChat official account — with a
//! template per message kind and write-only secrets ("set" is all the page ever says), and the
//! person's own choice of messages. Plain forms: they work without JavaScript.

use super::views::{NotifySettingsView, VendorAccountView};
use super::{get_notify_settings, SaveNotifyAccount, SaveNotifyDelivery, SaveNotifyPreferences};
use crate::app::use_lang;
use crate::components::{Csrf, Layout};
use crate::i18n::tr;
use leptos::prelude::*;
use leptos::server_fn::ServerFn as _;

#[component]
pub fn NotifySettingsPage() -> impl IntoView {
    let lang = use_lang();
    let settings = Resource::new(|| (), |_| get_notify_settings());
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "notify.title")}</h1>
            <p><a href="/settings">"← " {tr(lang, "settings.title")}</a></p>
            <Suspense fallback=|| ()>
                {move || {
                    let csrf = s.csrf.clone();
                    Suspend::new(async move {
                        match settings.await {
                            Ok(v) => view! { <NotifyForms v csrf/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn NotifyForms(v: NotifySettingsView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let disabled = !v.can_change;
    let channels = ["sandbox", "aliyun", "tencent"];
    view! {
        <h2>{tr(lang, "notify.delivery")}</h2>
        <form method="post" action=SaveNotifyDelivery::PATH class="grid" id="notify-delivery">
            <Csrf token=csrf.clone()/>
            <label>{tr(lang, "notify.sms_channel")}
                <select name="sms_channel" disabled=disabled>
                    {channels.iter().map(|c| view! {
                        <option value=*c selected=v.sms_channel == *c>{tr(lang, &format!("notify.channel.{c}"))}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "notify.per_phone_hour")}<input name="per_phone_hour" value=v.per_phone_hour.to_string() inputmode="numeric" disabled=disabled/></label>
            <label>{tr(lang, "notify.escalate_after_min")}<input name="escalate_after_min" value=v.escalate_after_min.to_string() inputmode="numeric" disabled=disabled/></label>
            {v.can_change.then(|| view! { <button type="submit">{tr(lang, "common.save")}</button> })}
        </form>
        <p class="muted">{tr(lang, "notify.delivery_hint")}</p>
        {v.accounts.into_iter().map(|a| view! {
            <VendorForm a csrf=csrf.clone() callback=v.wechat_callback_path.clone()/>
        }).collect_view()}
        <h2>{tr(lang, "notify.mine")}</h2>
        <p class="muted">{tr(lang, "notify.mine_hint")}</p>
        <form method="post" action=SaveNotifyPreferences::PATH class="grid" id="notify-mine">
            <Csrf token=csrf.clone()/>
            {v.mine.into_iter().map(|(kind, wanted)| view! {
                <label class="check"><input type="checkbox" name=format!("w_{kind}") value="on" checked=wanted/>
                    {tr(lang, &format!("notify.kind.{kind}"))}</label>
            }).collect_view()}
            <button type="submit">{tr(lang, "common.save")}</button>
        </form>
    }
}

#[component]
fn VendorForm(a: VendorAccountView, csrf: String, callback: String) -> impl IntoView {
    let lang = use_lang();
    let id = format!("notify-{}", a.channel);
    let secret_state = if a.secret_set {
        "notify.secret_set"
    } else {
        "notify.secret_unset"
    };
    let wechat = a.channel == "wechat";
    view! {
        <h2>{tr(lang, &format!("notify.channel.{}", a.channel))}</h2>
        {(!a.broken.is_empty()).then(|| view! {
            <p class="flash error" data-broken=a.channel.clone()>{tr(lang, "notify.broken")} " " {a.broken.clone()}</p>
        })}
        <form method="post" action=SaveNotifyAccount::PATH class="grid" id=id>
            <Csrf token=csrf/>
            <input type="hidden" name="channel" value=a.channel.clone()/>
            <label class="check"><input type="checkbox" name="enabled" value="on" checked=a.enabled/>{tr(lang, "notify.enabled")}</label>
            {a.config.into_iter().map(|(key, value)| view! {
                <label>{tr(lang, &format!("notify.config.{key}"))}<input name=key value=value maxlength="100"/></label>
            }).collect_view()}
            <label>{tr(lang, &format!("notify.secret.{}", a.channel))} " (" {tr(lang, secret_state)} ")"
                <input type="password" name="secret" value="" autocomplete="new-password" maxlength="200"/></label>
            {wechat.then(|| view! {
                <label>{tr(lang, "notify.callback_token")} " ("
                    {tr(lang, if a.callback_token_set { "notify.secret_set" } else { "notify.secret_unset" })} ")"
                    <input type="password" name="callback_token" value="" autocomplete="new-password" maxlength="200"/></label>
                <p class="muted">{tr(lang, "notify.callback_hint")} " " <code>{callback.clone()}</code></p>
            })}
            <fieldset>
                <legend>{tr(lang, "notify.templates")}</legend>
                {a.templates.into_iter().map(|(kind, template)| view! {
                    <label>{tr(lang, &format!("notify.kind.{kind}"))}<input name=format!("t_{kind}") value=template maxlength="64"/></label>
                }).collect_view()}
            </fieldset>
            <button type="submit">{tr(lang, "common.save")}</button>
        </form>
    }
}
