//! The audit log pages (company and platform): filters by action, actor and local dates,
//! pagination, and the Excel export of the same filter.

use crate::app::use_lang;
use crate::components::Layout;
use crate::i18n::tr;
use crate::tenancy::{list_audit, AuditRow};
use crate::web::query::query_param;
use leptos::prelude::*;

#[component]
pub fn AuditPage() -> impl IntoView {
    view! { <AuditLog platform=false/> }
}

#[component]
pub fn PlatformAuditPage() -> impl IntoView {
    view! { <AuditLog platform=true/> }
}

#[component]
fn AuditLog(platform: bool) -> impl IntoView {
    let lang = use_lang();
    let (action, actor, from, to, cursor) = (
        query_param("action"),
        query_param("actor"),
        query_param("from"),
        query_param("to"),
        query_param("cursor"),
    );
    let source = {
        let (action, actor, from, to, cursor) = (
            action.clone(),
            actor.clone(),
            from.clone(),
            to.clone(),
            cursor.clone(),
        );
        move || (action(), actor(), from(), to(), cursor())
    };
    let entries = Resource::new(source, move |(action, actor, from, to, cursor)| {
        list_audit(platform, action, actor, from, to, cursor)
    });
    let base = if platform {
        "/platform/audit"
    } else {
        "/audit"
    };
    let export_base = if platform {
        "/api/v1/platform/audit-log.xlsx"
    } else {
        "/api/v1/audit-log.xlsx"
    };
    view! {
        <Layout page=move |s| {
            let (action, actor, from, to) = (action.clone(), actor.clone(), from.clone(), to.clone());
            let filter = format!("action={}&actor={}", action(), actor());
            let export = format!("{export_base}?{filter}&lang={}", if lang == crate::i18n::Lang::En { "en" } else { "zh" });
            let title = if platform { "audit.platform_title" } else { "audit.title" };
            view! {
                <h1>{tr(lang, title)}</h1>
                <form method="get" class="filters">
                    <input name="action" value=action() placeholder=tr(lang, "audit.action")/>
                    <input name="actor" value=actor() placeholder=tr(lang, "audit.actor")/>
                    <label>{tr(lang, "audit.from")}<input name="from" type="date" value=from()/></label>
                    <label>{tr(lang, "audit.to")}<input name="to" type="date" value=to()/></label>
                    <button type="submit">{tr(lang, "common.search")}</button>
                    {s.can_export.then(|| view! { <a class="button secondary" href=export.clone() id="export">{tr(lang, "common.export")}</a> })}
                </form>
                <Suspense fallback=|| ()>
                    {move || {
                        let filter = format!("{}&from={}&to={}", filter, from(), to());
                        Suspend::new(async move {
                            match entries.await {
                                Ok(page) => {
                                    let next = page.next_cursor.clone().map(|c| format!("{base}?{filter}&cursor={c}"));
                                    view! {
                                        <AuditTable rows=page.items/>
                                        {next.map(|href| view! { <a class="button secondary" href=href>{tr(lang, "common.next_page")}</a> })}
                                    }.into_any()
                                }
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
fn AuditTable(rows: Vec<AuditRow>) -> impl IntoView {
    let lang = use_lang();
    if rows.is_empty() {
        return view! { <p class="muted">{tr(lang, "common.none")}</p> }.into_any();
    }
    view! {
        <div class="table-wrap">
            <table id="audit">
                <thead><tr>
                    <th>{tr(lang, "audit.time")}</th>
                    <th>{tr(lang, "audit.actor")}</th>
                    <th>{tr(lang, "audit.source_ip")}</th>
                    <th>{tr(lang, "audit.action")}</th>
                    <th>{tr(lang, "audit.target")}</th>
                    <th>{tr(lang, "audit.change")}</th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().map(|e| view! {
                        <tr>
                            <td class="nowrap">{e.at.clone()}</td>
                            <td>{e.actor.clone()}<br/><small class="muted">{e.role.clone()}</small></td>
                            <td>{e.source_ip.clone()}</td>
                            <td>{e.action.clone()}</td>
                            <td class="mono">{e.target.clone()}</td>
                            <td class="mono change">{e.change.clone()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}
