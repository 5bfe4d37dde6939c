//! A meter's reading history: a date range (local days, the last 7 by default), "flagged only"
//! (resets, gaps, jumps …), up to 1,000 rows on the page and the same filter as Excel.

use crate::app::use_lang;
use crate::components::Layout;
use crate::field::{list_readings, ReadingsView};
use crate::i18n::tr;
use crate::web::query::query_param;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

#[component]
pub fn ReadingsPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let (from, to, flagged) = (
        query_param("from"),
        query_param("to"),
        query_param("flagged"),
    );
    let source = {
        let (from, to, flagged) = (from.clone(), to.clone(), flagged.clone());
        move || (id(), from(), to(), flagged())
    };
    let readings = Resource::new(source, |(id, from, to, flagged)| {
        list_readings(id, from, to, flagged)
    });
    view! {
        <Layout page=move |s| {
            let (from, to, flagged) = (from.clone(), to.clone(), flagged.clone());
            view! {
                <p><a href=format!("/meters/{}", id())>{tr(lang, "meters.title")}</a></p>
                <Suspense fallback=|| ()>
                    {move || {
                        let (from, to, flagged, can_export) = (from(), to(), flagged(), s.can_export);
                        Suspend::new(async move {
                            match readings.await {
                                Ok(v) => view! { <ReadingsBody v id=id() from to flagged can_export/> }.into_any(),
                                Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                            }
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

#[component]
fn ReadingsBody(
    v: ReadingsView,
    id: String,
    from: String,
    to: String,
    flagged: String,
    can_export: bool,
) -> impl IntoView {
    let lang = use_lang();
    let export = format!("/api/v1/meters/{id}/readings.xlsx?{}", v.export_query);
    view! {
        <h1>{tr(lang, "readings.title")} " " <span class="mono">{v.meter_number.clone()}</span></h1>
        <form method="get" class="filters" id="readings-filter">
            <label>{tr(lang, "readings.from")}<input type="date" name="from" value=from/></label>
            <label>{tr(lang, "readings.to")}<input type="date" name="to" value=to/></label>
            <label class="check"><input type="checkbox" name="flagged" value="on" checked=flagged == "on"/>{tr(lang, "readings.flagged_only")}</label>
            <button type="submit">{tr(lang, "common.search")}</button>
            {can_export.then(|| view! { <a class="button secondary" href=export>{tr(lang, "common.export")}</a> })}
        </form>
        {v.truncated.then(|| view! { <p class="muted">{tr(lang, "readings.truncated")}</p> })}
        <div class="table-wrap">
            <table id="readings">
                <thead><tr>
                    <th>{tr(lang, "live.read_at")}</th><th>{tr(lang, "live.energy")}</th><th>{tr(lang, "live.power")}</th>
                    <th>{tr(lang, "live.voltage")}</th><th>{tr(lang, "live.remaining")}</th><th>{tr(lang, "live.relay")}</th>
                    <th>{tr(lang, "live.flag")}</th>
                </tr></thead>
                <tbody>
                    {v.rows.into_iter().map(|(at, kwh, w, volts, remaining, relay, flag)| view! {
                        <tr>
                            <td>{at}</td><td>{kwh}</td><td>{w}</td><td>{volts}</td><td>{remaining}</td>
                            <td>{(!relay.is_empty()).then(|| tr(lang, &relay))}</td>
                            <td>{(!flag.is_empty()).then(|| tr(lang, &format!("live.flag.{flag}")))}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}
