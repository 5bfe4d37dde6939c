//! The company settings page: defaults every meter inherits unless it overrides them (alarm
//! levels, overdraft limit, restore level, quiet hours, no trips on holidays, arrears cap) and
//! the holiday calendar with make-up workdays, one year at a time.

use crate::app::use_lang;
use crate::components::{use_kept, Csrf, Layout};
use crate::i18n::tr;
use crate::tenancy::{get_settings, SettingsView};
use crate::web::query::query_param;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::{ClearCalendarDay, SaveSettings, SetCalendarDay};
use leptos::server_fn::ServerFn as _;

#[component]
pub fn SettingsPage() -> impl IntoView {
    let lang = use_lang();
    let year = query_param("year");
    let settings = Resource::new(year, get_settings);
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "settings.title")}</h1>
            <p><a href="/settings/notifications" id="to-notify">{tr(lang, "notify.title")} " →"</a></p>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match settings.await {
                            Ok(v) => view! { <SettingsForms v csrf=s.csrf.clone() can_change=s.can_settings/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn SettingsForms(v: SettingsView, csrf: String, can_change: bool) -> impl IntoView {
    let lang = use_lang();
    let kept_day = use_kept("calendar-form");
    let kept = use_kept("settings-form");
    let disabled = !can_change;
    view! {
        <h2>{tr(lang, "settings.defaults")}</h2>
        <p class="muted">{tr(lang, "settings.defaults_hint")} " (" {v.time_zone.clone()} ")"</p>
        <form method="post" action=SaveSettings::PATH class="grid" id="settings-form">
            <Csrf token=csrf.clone()/>
            <label>{tr(lang, "meters.alarm1")}<input name="alarm1" value=kept.value_or("alarm1", &v.alarm1) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("alarm1")/></label>
            <label>{tr(lang, "meters.alarm2")}<input name="alarm2" value=kept.value_or("alarm2", &v.alarm2) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("alarm2")/></label>
            <label>{tr(lang, "settings.overdraft")}<input name="overdraft_limit" value=kept.value_or("overdraft_limit", &v.overdraft_limit) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("overdraft_limit")/></label>
            <label>{tr(lang, "settings.restore")}<input name="restore_level" value=kept.value_or("restore_level", &v.restore_level) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("restore_level")/></label>
            <label>{tr(lang, "settings.quiet_start")}<input name="quiet_start" value=kept.value_or("quiet_start", &v.quiet_start) placeholder="22:00" disabled=disabled aria-invalid=kept.invalid("quiet_start")/></label>
            <label>{tr(lang, "settings.quiet_end")}<input name="quiet_end" value=kept.value_or("quiet_end", &v.quiet_end) placeholder="07:00" disabled=disabled aria-invalid=kept.invalid("quiet_end")/></label>
            <label>{tr(lang, "settings.trip_notice_min")}<input name="trip_notice_min" value=kept.value_or("trip_notice_min", &v.trip_notice_min) inputmode="numeric" disabled=disabled aria-invalid=kept.invalid("trip_notice_min")/></label>
            <label>{tr(lang, "settings.arrears_cap")}<input name="arrears_cap" value=kept.value_or("arrears_cap", &v.arrears_cap) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("arrears_cap")/></label>
            <label>{tr(lang, "settings.stale_meter_min")}<input name="stale_meter_min" value=kept.value_or("stale_meter_min", &v.stale_meter_min) inputmode="numeric" disabled=disabled aria-invalid=kept.invalid("stale_meter_min")/></label>
            <label>{tr(lang, "settings.offline_gateway_min")}<input name="offline_gateway_min" value=kept.value_or("offline_gateway_min", &v.offline_gateway_min) inputmode="numeric" disabled=disabled aria-invalid=kept.invalid("offline_gateway_min")/></label>
            <label>{tr(lang, "settings.reversal_window_days")}<input name="reversal_window_days" value=kept.value_or("reversal_window_days", &v.reversal_window_days) inputmode="numeric" disabled=disabled aria-invalid=kept.invalid("reversal_window_days")/></label>
            <label>{tr(lang, "settings.reversal_approval_above")}<input name="reversal_approval_above" value=kept.value_or("reversal_approval_above", &v.reversal_approval_above) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("reversal_approval_above")/></label>
            <label>{tr(lang, "settings.correction_approval_above_kwh")}<input name="correction_approval_above_kwh" value=kept.value_or("correction_approval_above_kwh", &v.correction_approval_above_kwh) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("correction_approval_above_kwh")/></label>
            <label>{tr(lang, "settings.tenant_emergency")}<input name="tenant_emergency" value=kept.value_or("tenant_emergency", &v.tenant_emergency) inputmode="decimal" disabled=disabled aria-invalid=kept.invalid("tenant_emergency")/></label>
            <label>{tr(lang, "settings.tenant_emergency_hours")}<input name="tenant_emergency_hours" value=kept.value_or("tenant_emergency_hours", &v.tenant_emergency_hours) inputmode="numeric" disabled=disabled aria-invalid=kept.invalid("tenant_emergency_hours")/></label>
            <label>{tr(lang, "settings.top_up_presets")}<input name="top_up_presets" value=kept.value_or("top_up_presets", &v.top_up_presets) placeholder="50, 100, 200, 500" disabled=disabled aria-invalid=kept.invalid("top_up_presets")/></label>
            <label class="check"><input type="checkbox" name="no_trip_on_holidays" value="on" checked=v.no_trip_on_holidays disabled=disabled/>{tr(lang, "settings.no_trip_on_holidays")}</label>
            {can_change.then(|| view! { <button type="submit">{tr(lang, "common.save")}</button> })}
        </form>
        <h2>{tr(lang, "settings.calendar")} " " {v.year}</h2>
        <p class="muted">{tr(lang, "settings.calendar_hint")}</p>
        <p>
            <a href=format!("/settings?year={}", v.year - 1)>"← " {v.year - 1}</a>
            " · "
            <a href=format!("/settings?year={}", v.year + 1)>{v.year + 1} " →"</a>
        </p>
        <div class="table-wrap">
            <table id="calendar">
                <thead><tr>
                    <th>{tr(lang, "settings.day")}</th><th>{tr(lang, "settings.kind")}</th><th>{tr(lang, "property.name")}</th>
                    {can_change.then(|| view! { <th>{tr(lang, "common.actions")}</th> })}
                </tr></thead>
                <tbody>
                    {v.days.into_iter().map(|(day, kind, name)| {
                        let csrf = csrf.clone();
                        view! {
                            <tr>
                                <td>{day.clone()}</td>
                                <td>{tr(lang, &format!("settings.kind.{kind}"))}</td>
                                <td>{name}</td>
                                {can_change.then(|| view! {
                                    <td>
                                        <form method="post" action=ClearCalendarDay::PATH class="inline">
                                            <Csrf token=csrf/>
                                            <input type="hidden" name="day" value=day/>
                                            <button type="submit" class="link">{tr(lang, "settings.clear_day")}</button>
                                        </form>
                                    </td>
                                })}
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        {can_change.then(|| view! {
            <form method="post" action=SetCalendarDay::PATH class="grid" id="calendar-form">
                <Csrf token=csrf.clone()/>
                <label>{tr(lang, "settings.day")}<input name="day" value=kept_day.value_or("day", "") type="date" required aria-invalid=kept_day.invalid("day")/></label>
                <label>{tr(lang, "settings.kind")}
                    <select name="kind" aria-invalid=kept_day.invalid("kind")>
                        <option value="holiday">{tr(lang, "settings.kind.holiday")}</option>
                        <option value="workday" selected=kept_day.chose("kind", "workday")>{tr(lang, "settings.kind.workday")}</option>
                    </select>
                </label>
                <label>{tr(lang, "property.name")}<input name="name" value=kept_day.value_or("name", "") maxlength="50" aria-invalid=kept_day.invalid("name")/></label>
                <button type="submit">{tr(lang, "property.add")}</button>
            </form>
        })}
    }
}
