//! The import wizard: choose what to import and upload a file (a plain multipart form, so it
//! works without JavaScript); the server checks every row (a dry run) and shows the report; if
//! there are no errors, one button imports it for real.

use crate::app::use_lang;
use crate::components::{Csrf, Layout};
use crate::i18n::tr;
use crate::import::{get_import, ImportView};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::import::ConfirmImport;
use leptos::server_fn::ServerFn as _;

const KINDS: [&str; 3] = ["shops", "gateways", "meters"];

#[component]
pub fn ImportPage() -> impl IntoView {
    let lang = use_lang();
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "import.title")}</h1>
            <form method="post" action="/web/import" enctype="multipart/form-data" class="stack narrow" id="import-form">
                <Csrf token=s.csrf.clone()/>
                <label>{tr(lang, "import.kind")}
                    <select name="kind">
                        {KINDS.map(|k| view! { <option value=k>{tr(lang, &format!("import.kind.{k}"))}</option> })}
                    </select>
                </label>
                <label>{tr(lang, "import.file")}
                    <input type="file" name="file" accept=".xlsx,.xls,.ods,.csv" required/>
                </label>
                <button type="submit">{tr(lang, "import.check")}</button>
            </form>
            <h2>{tr(lang, "import.templates")}</h2>
            <p class="actions">
                {KINDS.map(|k| view! {
                    <a class="button secondary" href=format!("/api/v1/import/template.xlsx?kind={k}")>{tr(lang, &format!("import.kind.{k}"))}</a>
                })}
            </p>
        }.into_any()/>
    }
}

#[component]
pub fn ImportResultPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let upload = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        get_import,
    );
    view! {
        <Layout page=move |s| view! {
            <Suspense fallback=|| ()>
                {move || {
                    let csrf = s.csrf.clone();
                    Suspend::new(async move {
                        match upload.await {
                            Ok(u) => view! { <ImportReport u csrf/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn ImportReport(u: ImportView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let has_errors = !u.errors.is_empty();
    let ready = !has_errors && !u.confirmed;
    let count_label = if u.confirmed {
        "import.created"
    } else {
        "import.would_create"
    };
    view! {
        <h1>{tr(lang, "import.title")}": " {tr(lang, &format!("import.kind.{}", u.kind))}</h1>
        <dl class="facts" id="import-report">
            <dt>{tr(lang, "import.file")}</dt><dd>{u.filename.clone()}</dd>
            <dt>{tr(lang, "import.rows")}</dt><dd id="import-rows">{u.rows}</dd>
            <dt>{tr(lang, count_label)}</dt><dd id="import-created">{u.created}</dd>
            <dt>{tr(lang, "import.errors")}</dt><dd id="import-error-count">{u.errors.len()}</dd>
        </dl>
        {has_errors.then(|| view! {
            <p class="flash error">{tr(lang, "import.fix_and_retry")}</p>
            <div class="table-wrap">
                <table id="import-errors">
                    <thead><tr>
                        <th>{tr(lang, "import.row")}</th>
                        <th>{tr(lang, "import.column")}</th>
                        <th>{tr(lang, "import.message")}</th>
                    </tr></thead>
                    <tbody>
                        {u.errors.iter().map(|(row, column, message)| view! {
                            <tr><td>{*row}</td><td class="mono">{column.clone()}</td><td>{message.clone()}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        })}
        {ready.then(|| view! {
            <form method="post" action=ConfirmImport::PATH class="inline" id="confirm-form">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="id" value=u.id.clone()/>
                <button type="submit" id="confirm">{tr(lang, "import.confirm")}</button>
            </form>
        })}
        {u.confirmed.then(|| view! { <p class="flash ok" id="import-done">{tr(lang, "import.done")}</p> })}
        <p><a href="/import">{tr(lang, "import.again")}</a></p>
    }
}
