//! Tariff plans: each plan's versions with their prices and a picture of each day schedule (a
//! 24-hour bar coloured by TOU period), and forms to create a plan or add a future version.
//! Schedules are typed as switch points (`00:00 谷, 08:00 平, 18:00 峰, 22:00 谷`).

use crate::app::use_lang;
use crate::components::{use_kept, Csrf, Layout};
use crate::i18n::tr;
use crate::tariff::{list_plans, PlanView, SeasonView};
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tariff::{AddPlanVersion, CreatePlan};
use leptos::server_fn::ServerFn as _;

const PERIODS: [&str; 5] = ["sharp", "peak", "flat", "valley", "deep_valley"];

#[component]
pub fn TariffsPage() -> impl IntoView {
    let lang = use_lang();
    let plans = Resource::new(|| (), |_| list_plans());
    view! {
        <Layout page=move |s| {
            let (csrf, can_settings) = (s.csrf.clone(), s.can_settings);
            let kept_plan = use_kept("plan-form");
            view! {
            <h1>{tr(lang, "tariffs.title")}</h1>
            <p>
                <a class="button secondary" href="/tariffs/preview">{tr(lang, "preview.title")}</a>
                {s.can_export.then(|| view! { " " <a class="button secondary" href="/api/v1/tariff-plans.xlsx">{tr(lang, "common.export")}</a> })}
            </p>
            <p class="legend">
                {PERIODS.map(|p| view! { <span class=format!("tou-{p} swatch")></span>{tr(lang, &format!("period.{p}"))}" " })}
            </p>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        let plans = plans.await.unwrap_or_default();
                        view! {
                            <div id="plans">
                                {plans.into_iter().map(|p| view! { <PlanCard p csrf=s.csrf.clone() can_change=s.can_settings/> }).collect_view()}
                            </div>
                        }
                    })
                }}
            </Suspense>
            {can_settings.then(|| view! {
                <h2>{tr(lang, "tariffs.new")}</h2>
                <form method="post" action=CreatePlan::PATH class="grid" id="plan-form">
                    <Csrf token=csrf.clone()/>
                    <label>{tr(lang, "property.name")}<input name="name" required value=kept_plan.value_or("name", "") aria-invalid=kept_plan.invalid("name")/></label>
                    <label>{tr(lang, "tariffs.description")}<input name="description" value=kept_plan.value_or("description", "")/></label>
                    <VersionFields form_id="plan-form".to_owned()/>
                    <button type="submit">{tr(lang, "common.create")}</button>
                </form>
            })}
        }.into_any()
        }/>
    }
}

/// Season rows offered by the form (a year rarely has more than three TOU seasons).
const SEASON_ROWS: usize = 4;
const TIER_ROWS: usize = 4;
const FEE_ROWS: usize = 2;

#[component]
fn VersionFields(form_id: String) -> impl IntoView {
    let lang = use_lang();
    // A refused version comes back as typed; row fields are kept as `seasons.1.schedule`.
    let kept = use_kept(&form_id);
    let value = move |key: &str, default: &str| kept.value_or(key, default);
    let kept = use_kept(&form_id);
    let invalid = move |key: &str| kept.invalid(key);
    view! {
        <label>{tr(lang, "tariffs.effective")}<input name="effective" type="date" required value=value("effective", "") aria-invalid=invalid("effective")/></label>
        {PERIODS.map(|p| view! {
            <label>{tr(lang, &format!("period.{p}"))}" (" {tr(lang, "tariffs.yuan_per_kwh")} ")"
                <input name=format!("price_{p}") inputmode="decimal" placeholder="0.8000" value=value(&format!("price_{p}"), "") aria-invalid=invalid(&format!("price_{p}"))/>
            </label>
        })}
        <fieldset class="wide">
            <legend>{tr(lang, "tariffs.seasons")}</legend>
            <p class="muted">{tr(lang, "tariffs.seasons_hint")}</p>
            {(0..SEASON_ROWS).map(|i| {
                let name = move |f: &str| format!("seasons[{i}][{f}]");
                let key = move |f: &str| format!("seasons.{i}.{f}");
                let (from, to) = if i == 0 { ("01-01", "12-31") } else { ("", "") };
                view! {
                    <div class="season-row">
                        <label>{tr(lang, "tariffs.season_from")}<input name=name("from") value=value(&key("from"), from) placeholder="MM-DD" size="5" aria-invalid=invalid(&key("from"))/></label>
                        <label>{tr(lang, "tariffs.season_to")}<input name=name("to") value=value(&key("to"), to) placeholder="MM-DD" size="5" aria-invalid=invalid(&key("to"))/></label>
                        <label class="wide">{tr(lang, "tariffs.schedule")}
                            <textarea name=name("schedule") rows="2" placeholder="00:00 谷, 08:00 平, 10:00 峰, 15:00 平, 18:00 峰, 21:00 平, 23:00 谷" aria-invalid=invalid(&key("schedule"))>{value(&key("schedule"), "")}</textarea>
                        </label>
                        <label class="wide">{tr(lang, "tariffs.holiday_schedule")}
                            <textarea name=name("holiday") rows="2" placeholder="00:00 谷, 08:00 平, 23:00 谷" aria-invalid=invalid(&key("holiday"))>{value(&key("holiday"), "")}</textarea>
                        </label>
                    </div>
                }
            }).collect_view()}
        </fieldset>
        <fieldset class="wide">
            <legend>{tr(lang, "tariffs.tiers")}</legend>
            <label>{tr(lang, "tariffs.tier_basis")}
                <select name="tier_basis" aria-invalid=invalid("tier_basis")>
                    <option value="">{tr(lang, "tariffs.no_tiers")}</option>
                    <option value="monthly" selected=value("tier_basis", "") == "monthly">{tr(lang, "tariffs.monthly")}</option>
                    <option value="annual" selected=value("tier_basis", "") == "annual">{tr(lang, "tariffs.annual")}</option>
                </select>
            </label>
            {(0..TIER_ROWS).map(|i| {
                let name = move |f: &str| format!("tiers[{i}][{f}]");
                let key = move |f: &str| format!("tiers.{i}.{f}");
                view! {
                    <div class="tier-row">
                        <label>{tr(lang, "tariffs.tier_from_kwh")}<input name=name("from_kwh") inputmode="decimal" placeholder=if i == 0 { "0" } else { "" } size="8" value=value(&key("from_kwh"), "") aria-invalid=invalid(&key("from_kwh"))/></label>
                        <label>{tr(lang, "tariffs.tier_kind")}
                            <select name=name("kind")>
                                <option value="add_on">{tr(lang, "tariffs.add_on")}</option>
                                <option value="absolute" selected=value(&key("kind"), "") == "absolute">{tr(lang, "tariffs.absolute")}</option>
                            </select>
                        </label>
                        <label>{tr(lang, "tariffs.yuan_per_kwh")}<input name=name("price") inputmode="decimal" size="8" value=value(&key("price"), "") aria-invalid=invalid(&key("price"))/></label>
                    </div>
                }
            }).collect_view()}
        </fieldset>
        <fieldset class="wide">
            <legend>{tr(lang, "tariffs.fees")}</legend>
            {(0..FEE_ROWS).map(|i| {
                let name = move |f: &str| format!("fees[{i}][{f}]");
                let key = move |f: &str| format!("fees.{i}.{f}");
                view! {
                    <div class="fee-row">
                        <label>{tr(lang, "tariffs.fee_amount")}<input name=name("amount") inputmode="decimal" size="8" value=value(&key("amount"), "") aria-invalid=invalid(&key("amount"))/></label>
                        <label>{tr(lang, "tariffs.fee_per")}
                            <select name=name("per")>
                                <option value="month">{tr(lang, "tariffs.per_month")}</option>
                                <option value="day" selected=value(&key("per"), "") == "day">{tr(lang, "tariffs.per_day")}</option>
                            </select>
                        </label>
                    </div>
                }
            }).collect_view()}
        </fieldset>
    }
}

#[component]
fn DayBar(segments: Vec<(u16, u16, String)>) -> impl IntoView {
    let lang = use_lang();
    view! {
        <div class="daybar">
            {segments.into_iter().map(|(start, end, period)| {
                let width = f64::from(end - start) * 100.0 / 1440.0;
                let title = format!("{:02}:{:02}–{:02}:{:02} {}", start / 60, start % 60, end / 60, end % 60, tr(lang, &format!("period.{period}")));
                view! { <span class=format!("tou-segment tou-{period}") style=format!("width:{width:.3}%") title=title></span> }
            }).collect_view()}
        </div>
    }
}

#[component]
fn SeasonRow(season: SeasonView) -> impl IntoView {
    let lang = use_lang();
    view! {
        <div class="season">
            <small class="muted">{season.range.clone()} " · " {tr(lang, "tariffs.workday")}</small>
            <DayBar segments=season.workday/>
            {season.holiday.map(|h| view! {
                <small class="muted">{tr(lang, "tariffs.holiday")}</small>
                <DayBar segments=h/>
            })}
        </div>
    }
}

#[component]
fn PlanCard(p: PlanView, csrf: String, can_change: bool) -> impl IntoView {
    let lang = use_lang();
    view! {
        <section class="plan card-wide">
            <h2>{p.name.clone()}</h2>
            <p class="muted">{p.description.clone()}</p>
            {p.versions.into_iter().map(|v| view! {
                <div class="version">
                    <strong>{tr(lang, "tariffs.from")} " " {v.effective.clone()}</strong>
                    " · "
                    {v.prices.iter().map(|(period, price)| format!("{} {price}", tr(lang, &format!("period.{period}")))).collect::<Vec<_>>().join(" / ")}
                    {v.seasons.into_iter().map(|season| view! { <SeasonRow season/> }).collect_view()}
                    {(!v.tiers.is_empty()).then(|| view! {
                        <p class="tiers"><small>{tr(lang, "tariffs.tiers")}": "{v.tiers.join(" · ")}</small></p>
                    })}
                    {(!v.fees.is_empty()).then(|| view! {
                        <p class="fees"><small>{tr(lang, "tariffs.fees")}": "
                            {v.fees.iter().map(|(per, yuan)| format!("{yuan} {}", tr(lang, &format!("tariffs.per_{per}")))).collect::<Vec<_>>().join(" · ")}
                        </small></p>
                    })}
                </div>
            }).collect_view()}
            {can_change.then(|| view! {
                // Open when this plan's version form was refused, to show it again.
                <details open=!use_kept(&format!("version-form-{}", p.id)).form.is_empty()>
                    <summary>{tr(lang, "tariffs.add_version")}</summary>
                    <form method="post" action=AddPlanVersion::PATH class="grid" id=format!("version-form-{}", p.id)>
                        <Csrf token=csrf.clone()/>
                        <input type="hidden" name="plan_id" value=p.id.clone()/>
                        <VersionFields form_id=format!("version-form-{}", p.id)/>
                        <button type="submit">{tr(lang, "common.save")}</button>
                    </form>
                </details>
            })}
        </section>
    }
}
