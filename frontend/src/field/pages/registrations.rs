//! Platform page: DTU registrations. Refused dial-ins that matched no gateway (only platform
//! staff see them; an admin hands one to a company), registrations entered before the prefix
//! rule that must change, and the refused attempts to enter an overlapping one (who, from where,
//! which bytes) — the reports DESIGN.md (Ingest: DTU dial-in) promises platform staff.

use crate::app::use_lang;
use crate::components::{Csrf, Layout};
use crate::field::{platform_registrations, RegistrationsView};
use crate::i18n::tr;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::field::ClaimRegistration;
use leptos::server_fn::ServerFn as _;

#[component]
pub fn RegistrationsPage() -> impl IntoView {
    let lang = use_lang();
    let data = Resource::new(|| (), |_| platform_registrations());
    view! {
        <Layout page=move |s| {
            let csrf = s.csrf.clone();
            let can_claim = s.can_write_platform;
            view! {
                <h1>{tr(lang, "registrations.title")}</h1>
                <Suspense fallback=|| ()>
                    {move || {
                        let csrf = csrf.clone();
                        Suspend::new(async move {
                            let v = data.await.unwrap_or_default();
                            view! { <Tables v csrf can_claim/> }
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

#[component]
fn Tables(v: RegistrationsView, csrf: String, can_claim: bool) -> impl IntoView {
    let lang = use_lang();
    let none = move || view! { <p class="muted">{tr(lang, "common.none")}</p> };
    view! {
        <h2>{tr(lang, "registrations.unclaimed")}</h2>
        <p class="muted">{tr(lang, "registrations.unclaimed_hint")}</p>
        {if v.unclaimed.is_empty() { none().into_any() } else { view! {
            <div class="table-wrap"><table id="unclaimed">
                <thead><tr>
                    <th>{tr(lang, "gateways.registration")}</th>
                    <th>{tr(lang, "registrations.last_seen")}</th>
                    <th>{tr(lang, "registrations.peer")}</th>
                    <th>{tr(lang, "registrations.attempts")}</th>
                    <th>{tr(lang, "registrations.claimed_for")}</th>
                </tr></thead>
                <tbody>{v.unclaimed.into_iter().map(|(hex, text, seen, peer, attempts, claimed)| {
                    let csrf = csrf.clone();
                    let label = if text.is_empty() { hex.clone() } else { format!("{hex} ({text})") };
                    view! { <tr>
                        <td class="mono">{label}</td><td>{seen}</td><td class="mono">{peer}</td><td>{attempts}</td>
                        <td>{claimed.map(|c| c.to_string())}
                            {can_claim.then(|| view! {
                                <form method="post" action=ClaimRegistration::PATH class="inline">
                                    <Csrf token=csrf.clone()/>
                                    <input type="hidden" name="registration_hex" value=hex.clone()/>
                                    <input name="company_id" inputmode="numeric" size="6" placeholder=tr(lang, "registrations.company_id")/>
                                    <button type="submit">{tr(lang, "registrations.claim")}</button>
                                </form>
                            })}
                        </td>
                    </tr> }
                }).collect_view()}</tbody>
            </table></div>
        }.into_any() }}
        <h2>{tr(lang, "registrations.problems")}</h2>
        {if v.problems.is_empty() { none().into_any() } else { view! {
            <div class="table-wrap"><table id="registration-problems">
                <thead><tr>
                    <th>"ID"</th><th>{tr(lang, "gateways.identity")}</th>
                    <th>{tr(lang, "registrations.problem")}</th><th>{tr(lang, "registrations.overlaps")}</th>
                </tr></thead>
                <tbody>{v.problems.into_iter().map(|(company, identity, problem, overlaps)| view! {
                    <tr><td>{company}</td><td class="mono">{identity}</td>
                        <td>{tr(lang, &format!("registrations.problem.{problem}"))}</td><td class="mono">{overlaps}</td></tr>
                }).collect_view()}</tbody>
            </table></div>
        }.into_any() }}
        <h2>{tr(lang, "registrations.refusals")}</h2>
        {if v.refusals.is_empty() { none().into_any() } else { view! {
            <div class="table-wrap"><table id="registration-refusals">
                <thead><tr>
                    <th>{tr(lang, "registrations.at")}</th><th>"ID"</th><th>{tr(lang, "registrations.reason")}</th>
                    <th>{tr(lang, "registrations.actor")}</th><th>{tr(lang, "registrations.peer")}</th>
                    <th>{tr(lang, "gateways.registration")}</th>
                </tr></thead>
                <tbody>{v.refusals.into_iter().map(|(at, company, reason, actor, ip, hex)| view! {
                    <tr><td>{at}</td><td>{company}</td><td>{tr(lang, &format!("registrations.reason.{reason}"))}</td>
                        <td>{actor}</td><td class="mono">{ip}</td><td class="mono">{hex}</td></tr>
                }).collect_view()}</tbody>
            </table></div>
        }.into_any() }}
    }
}
