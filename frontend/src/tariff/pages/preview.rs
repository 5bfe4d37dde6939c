//! The tariff preview: "what would shop X pay for this usage profile under plan P versus plan
//! Q". A plain GET form (it changes nothing): a shop (its meter's plan becomes plan A), up to
//! three plans, a shop type's daily shape scaled to a daily kWh or 24 typed hourly values, a start
//! date and a number of days. Rated with the same code that bills meters.

use crate::app::use_lang;
use crate::components::Layout;
use crate::i18n::tr;
use crate::tariff::{tariff_preview, PreviewQuery, PreviewView};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

const SHOP_TYPES: [&str; 4] = ["retail", "restaurant", "office", "supermarket"];

#[component]
pub fn PreviewPage() -> impl IntoView {
    let lang = use_lang();
    let query = use_query_map();
    let current = move || {
        let q = query.read();
        let get = |k: &str| q.get(k).unwrap_or_default();
        PreviewQuery {
            shop: get("shop"),
            plan_a: get("plan_a"),
            plan_b: get("plan_b"),
            plan_c: get("plan_c"),
            profile: get("profile"),
            daily_kwh: get("daily_kwh"),
            hourly_kwh: get("hourly_kwh"),
            start: get("start"),
            days: get("days"),
        }
    };
    let preview = Resource::new(current, tariff_preview);
    view! {
        <Layout page=move |_s| view! {
            <p><a href="/tariffs">{tr(lang, "tariffs.title")}</a></p>
            <h1>{tr(lang, "preview.title")}</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match preview.await {
                        Ok(v) => view! { <PreviewBody v q=current()/> }.into_any(),
                        Err(e) => view! { <p class="flash error" role="alert">{tr(lang, "error.validation_failed")} " " <small>{e.to_string()}</small></p> }.into_any(),
                    }
                })}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn PreviewBody(v: PreviewView, q: PreviewQuery) -> impl IntoView {
    let lang = use_lang();
    let plan_select = |name: &'static str, selected: String| {
        view! {
            <select name=name>
                <option value="">"—"</option>
                {v.plans.iter().map(|(id, plan)| view! { <option value=id.clone() selected=*id == selected>{plan.clone()}</option> }).collect_view()}
            </select>
        }
    };
    let chosen = |i: usize| v.chosen.get(i).cloned().unwrap_or_default();
    let peak = v.hourly_wh.iter().copied().max().unwrap_or(0).max(1);
    view! {
        <form method="get" class="grid" id="preview-form">
            <label>{tr(lang, "meters.shop")}
                <select name="shop">
                    <option value="">"—"</option>
                    {v.shops.iter().map(|(id, label, _)| view! { <option value=id.clone() selected=*id == q.shop>{label.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "preview.plan_a")}{plan_select("plan_a", if q.plan_a.is_empty() { chosen(0) } else { q.plan_a.clone() })}</label>
            <label>{tr(lang, "preview.plan_b")}{plan_select("plan_b", q.plan_b.clone())}</label>
            <label>{tr(lang, "preview.plan_c")}{plan_select("plan_c", q.plan_c.clone())}</label>
            <label>{tr(lang, "preview.profile")}
                <select name="profile">
                    {SHOP_TYPES.map(|t| view! { <option value=t selected=q.profile == t>{tr(lang, &format!("preview.shop_type.{t}"))}</option> })}
                </select>
            </label>
            <label>{tr(lang, "preview.daily_kwh")}<input name="daily_kwh" value=q.daily_kwh.clone() inputmode="decimal" placeholder="100"/></label>
            <label class="wide">{tr(lang, "preview.hourly_kwh")}<input name="hourly_kwh" value=q.hourly_kwh.clone()/></label>
            <label>{tr(lang, "preview.start")}<input name="start" type="date" value=q.start.clone()/></label>
            <label>{tr(lang, "preview.days")}<input name="days" value=q.days.clone() inputmode="numeric" placeholder="30"/></label>
            <button type="submit">{tr(lang, "preview.compare")}</button>
        </form>
        <div class="profile-bars" aria-label=tr(lang, "preview.profile")>
            {v.hourly_wh.iter().enumerate().map(|(hour, wh)| {
                let height = wh * 100 / peak;
                view! { <span style=format!("height:{height}%") title=format!("{hour:02}:00 {} kWh", powertab_core::kernel::money::format_wh_as_kwh(*wh))></span> }
            }).collect_view()}
        </div>
        {(!v.results.is_empty()).then(|| view! {
            <div class="table-wrap">
                <table id="preview-results">
                    <thead><tr>
                        <th>{tr(lang, "meters.plan")}</th><th>{tr(lang, "preview.energy")}</th>
                        <th>{tr(lang, "preview.total")}</th><th>{tr(lang, "preview.difference")}</th>
                        <th>{tr(lang, "preview.by_period")}</th>
                    </tr></thead>
                    <tbody>
                        {v.results.iter().map(|r| view! {
                            <tr>
                                <td>{r.plan.clone()}</td>
                                <td>{r.energy_kwh.clone()}</td>
                                <td class="total">{r.total_yuan.clone()}</td>
                                <td>{r.difference_yuan.clone()}</td>
                                <td><small>{r.by_period.iter().map(|(p, kwh, yuan)| format!("{} {kwh} kWh {yuan}", tr(lang, &format!("period.{p}")))).collect::<Vec<_>>().join(" · ")}</small></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        })}
    }
}
