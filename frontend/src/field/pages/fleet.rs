//! The live fleet page: gateways online or offline per bus, every meter with the age of its
//! newest reading (stale ones first), relay, power, remaining amount and alarms, and DTU
//! registrations nobody claimed. With JavaScript it refreshes itself every
//! [`REFRESH_SECONDS`] without reloading; without, the refresh link reloads it.

use crate::app::use_lang;
use crate::components::Layout;
use crate::field::{get_fleet, FleetView};
use crate::i18n::tr;
use crate::web::query::{query_param, query_string};
use leptos::prelude::*;

pub const REFRESH_SECONDS: u64 = 10;

/// A signal that ticks every `seconds` in the browser (never on the server).
pub fn refresh_tick(seconds: u64) -> RwSignal<u32> {
    let tick = RwSignal::new(0u32);
    Effect::new(move |_| {
        let handle = set_interval_with_handle(
            move || tick.update(|t| *t = t.wrapping_add(1)),
            std::time::Duration::from_secs(seconds),
        );
        on_cleanup(move || {
            if let Ok(handle) = handle {
                handle.clear();
            }
        });
    });
    tick
}

/// "12 s", "3 min", "5 h" ago.
pub fn age_text(age_s: Option<i64>) -> String {
    match age_s {
        None => "—".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7200 => format!("{} min", s / 60),
        Some(s) => format!("{} h", s / 3600),
    }
}

#[component]
pub fn FleetPage() -> impl IntoView {
    let lang = use_lang();
    let tick = refresh_tick(REFRESH_SECONDS);
    let (problems, q, offset) = (
        query_param("problems"),
        query_param("q"),
        query_param("offset"),
    );
    let key = (problems.clone(), q.clone());
    let fleet = Resource::new(
        move || (tick.get(), key.0(), key.1(), offset()),
        |(_, problems, q, offset)| get_fleet(problems, q, offset),
    );
    view! {
        <Layout page=move |_s| {
            let (problems, q) = (problems.clone(), q.clone());
            view! {
                <h1>{tr(lang, "fleet.title")}</h1>
                <form method="get" action="/fleet" class="filters" id="fleet-filter">
                    <input name="q" value=q() placeholder=tr(lang, "fleet.search") aria-label=tr(lang, "fleet.search")/>
                    <label class="check"><input type="checkbox" name="problems" value="1" checked=!problems().is_empty()/>{tr(lang, "fleet.problems_only")}</label>
                    <button type="submit" class="secondary">{tr(lang, "common.search")}</button>
                </form>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        match fleet.await {
                            Ok(f) => view! { <FleetBody f/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })}
                </Transition>
            }.into_any()
        }/>
    }
}

fn status_class(problems: i64) -> &'static str {
    if problems > 0 {
        "bad"
    } else {
        "good"
    }
}

#[component]
fn FleetBody(f: FleetView) -> impl IntoView {
    let lang = use_lang();
    // The server orders problems first: stale meters (never read, then the oldest reading).
    let meters = f.meters.clone();
    let (problems, q) = (query_param("problems"), query_param("q"));
    let page_link = move |offset: i64| {
        format!(
            "/fleet?{}",
            query_string(&[
                ("problems", &problems()),
                ("q", &q()),
                ("offset", &offset.to_string())
            ])
        )
    };
    let shown_to = f.offset + f.meters.len() as i64;
    let previous = (f.offset > 0).then(|| page_link((f.offset - f.page_size).max(0)));
    let next = (shown_to < f.meters_matching).then(|| page_link(shown_to));
    view! {
        <p class="summary" id="fleet-summary">
            <span class=status_class(f.gateways_offline as i64)>
                {tr(lang, "fleet.gateways_offline")} ": " {f.gateways_offline} " / " {f.gateways_total}
            </span>
            " · "
            <span class=status_class(f.meters_stale)>
                {tr(lang, "fleet.meters_stale")} ": " {f.meters_stale} " / " {f.meters_total}
            </span>
            " · " <small class="muted">{tr(lang, "fleet.as_of")} " " {f.as_of.clone()} " "</small>
            <a href="/fleet">{tr(lang, "fleet.refresh")}</a>
        </p>
        {(!f.alarms.is_empty()).then(|| view! {
            <h2>{tr(lang, "fleet.alarms")} " (" {f.alarms.len()} ")"</h2>
            <ul class="field-alarms" id="field-alarms">
                {f.alarms.iter().map(|(kind, target, raised, detail)| view! {
                    <li class="bad">{tr(lang, &format!("fleet.alarm.{kind}"))} " " <span class="mono">{target.clone()}</span>
                        " · " {raised.clone()} " · " <small>{detail.clone()}</small></li>
                }).collect_view()}
            </ul>
        })}
        <h2>{tr(lang, "gateways.title")}</h2>
        <ul class="gateway-status">
            {f.gateways.iter().map(|g| view! {
                <li class=if g.online { "online" } else { "offline" }>
                    <a class="mono" href=format!("/gateways/{}", g.id)>{g.identity.clone()}</a> " " {g.name.clone()} ": "
                    {g.buses.iter().map(|(n, online, seen)| format!("{n} {} {seen}", if *online { "●" } else { "○" })).collect::<Vec<_>>().join(" · ")}
                </li>
            }).collect_view()}
        </ul>
        <h2>{tr(lang, "meters.title")}</h2>
        <p class="muted" id="fleet-range">
            {tr(lang, "fleet.showing")} " " {if f.meters.is_empty() { 0 } else { f.offset + 1 }} "–" {shown_to}
            " / " {f.meters_matching}
            {previous.map(|href| view! { " · " <a href=href rel="prev">{tr(lang, "common.previous_page")}</a> })}
            {next.map(|href| view! { " · " <a href=href rel="next" id="fleet-next">{tr(lang, "common.next_page")}</a> })}
        </p>
        <div class="table-wrap">
            <table id="fleet-meters">
                <thead><tr>
                    <th>{tr(lang, "meters.number")}</th><th>{tr(lang, "meters.shop")}</th>
                    <th>{tr(lang, "fleet.age")}</th><th>{tr(lang, "live.energy")}</th><th>{tr(lang, "live.power")}</th>
                    <th>{tr(lang, "live.relay")}</th><th>{tr(lang, "live.remaining")}</th><th>{tr(lang, "live.alarms")}</th>
                </tr></thead>
                <tbody>
                    {meters.into_iter().map(|m| view! {
                        <tr class=if m.stale { "stale" } else { "" }>
                            <td class="mono"><a href=format!("/meters/{}", m.id)>{m.meter_number.clone()}</a></td>
                            <td>{m.shop.clone()}</td>
                            <td class="age">{age_text(m.age_s)}{(m.failures > 0).then(|| format!(" ({}×)", m.failures))}</td>
                            <td>{m.energy_kwh.clone()}</td>
                            <td>{m.power_w.clone()}</td>
                            <td>{m.relay_closed.map(|c| tr(lang, if c { "live.relay.closed" } else { "live.relay.open" })).unwrap_or_default()}</td>
                            <td>{m.remaining_yuan.clone()}</td>
                            <td>{m.alarms.join(", ")}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        {(!f.unclaimed.is_empty()).then(|| view! {
            <h2>{tr(lang, "fleet.unclaimed")}</h2>
            <p class="muted">{tr(lang, "fleet.unclaimed_hint")}</p>
            <div class="table-wrap">
                <table id="unclaimed">
                    <thead><tr>
                        <th>{tr(lang, "gateways.registration")}</th><th>{tr(lang, "fleet.last_seen")}</th>
                        <th>{tr(lang, "fleet.peer")}</th><th>{tr(lang, "fleet.attempts")}</th>
                    </tr></thead>
                    <tbody>
                        {f.unclaimed.iter().map(|(reg, seen, peer, attempts)| view! {
                            <tr><td class="mono">{reg.clone()}</td><td>{seen.clone()}</td><td class="mono">{peer.clone()}</td><td>{*attempts}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        })}
    }
}
