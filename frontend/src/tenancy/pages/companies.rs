//! Platform pages: the company list with onboarding, and one company with suspension,
//! reactivation, entering it, and creating its admins.

use crate::app::use_lang;
use crate::components::{use_kept, Csrf, Layout};
use crate::i18n::tr;
use crate::tenancy::{get_company, get_company_master_key, list_companies, CompanyRow};
use crate::web::query::query_param;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::{
    CompanyStatus, CreateCompany, CreateCompanyAdmin, EnterCompany, RotateCompanyMasterKey,
};
use leptos::server_fn::ServerFn as _;

fn status_name(lang: crate::i18n::Lang, status: &str) -> String {
    tr(lang, &format!("status.{status}"))
}

#[component]
pub fn CompaniesPage() -> impl IntoView {
    let lang = use_lang();
    let q = query_param("q");
    let status = query_param("status");
    let (q2, status2) = (q.clone(), status.clone());
    let companies = Resource::new(
        move || (q2(), status2()),
        |(q, status)| list_companies(q, status),
    );
    view! {
        <Layout page=move |s| {
            let (q, status) = (q.clone(), status.clone());
            view! {
                <h1>{tr(lang, "companies.title")}</h1>
                <form method="get" class="filters">
                    <input name="q" value=q() placeholder=tr(lang, "common.keyword")/>
                    <select name="status">
                        <option value="">{tr(lang, "common.all")}</option>
                        <option value="active" selected=status() == "active">{tr(lang, "status.active")}</option>
                        <option value="suspended" selected=status() == "suspended">{tr(lang, "status.suspended")}</option>
                    </select>
                    <button type="submit">{tr(lang, "common.search")}</button>
                    <a class="button secondary" href=move || format!("/api/v1/platform/companies.xlsx?q={}&status={}", q(), status())>{tr(lang, "common.export")}</a>
                </form>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        let rows = companies.await.unwrap_or_default();
                        view! { <CompanyTable rows/> }
                    })}
                </Suspense>
                {s.can_write_platform.then(|| view! { <OnboardForm csrf=s.csrf.clone()/> })}
            }.into_any()
        }/>
    }
}

#[component]
fn CompanyTable(rows: Vec<CompanyRow>) -> impl IntoView {
    let lang = use_lang();
    if rows.is_empty() {
        return view! { <p class="muted">{tr(lang, "common.none")}</p> }.into_any();
    }
    view! {
        <div class="table-wrap">
            <table id="companies">
                <thead><tr>
                    <th>"ID"</th>
                    <th>{tr(lang, "companies.slug")}</th>
                    <th>{tr(lang, "companies.name")}</th>
                    <th>{tr(lang, "common.status")}</th>
                    <th>{tr(lang, "companies.max_meters")}</th>
                    <th>{tr(lang, "companies.max_operators")}</th>
                    <th>{tr(lang, "common.created")}</th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().map(|c| view! {
                        <tr>
                            <td>{c.id}</td>
                            <td><a href=format!("/platform/companies/{}", c.id)>{c.slug.clone()}</a></td>
                            <td>{c.name.clone()}</td>
                            <td>{status_name(lang, &c.status)}</td>
                            <td>{c.max_meters}</td>
                            <td>{c.max_operators}</td>
                            <td>{c.created.clone()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

#[component]
fn OnboardForm(csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("onboard-form");
    view! {
        <h2>{tr(lang, "companies.onboard")}</h2>
        <form method="post" action=CreateCompany::PATH class="grid" id="onboard-form">
            <Csrf token=csrf/>
            <label>{tr(lang, "companies.slug")}<input name="slug" value=kept.value_or("slug", "") required pattern="[a-z][a-z0-9-]{1,31}" aria-invalid=kept.invalid("slug")/></label>
            <label>{tr(lang, "companies.name")}<input name="name" value=kept.value_or("name", "") required aria-invalid=kept.invalid("name")/></label>
            <label>{tr(lang, "companies.time_zone")}<input name="time_zone" value=kept.value_or("time_zone", "Asia/Shanghai") aria-invalid=kept.invalid("time_zone")/></label>
            <label>{tr(lang, "companies.max_meters")}<input name="max_meters" type="number" min="0" value=kept.value_or("max_meters", "5000") aria-invalid=kept.invalid("max_meters")/></label>
            <label>{tr(lang, "companies.max_gateways")}<input name="max_gateways" type="number" min="0" value=kept.value_or("max_gateways", "500") aria-invalid=kept.invalid("max_gateways")/></label>
            <label>{tr(lang, "companies.max_operators")}<input name="max_operators" type="number" min="0" value=kept.value_or("max_operators", "50") aria-invalid=kept.invalid("max_operators")/></label>
            <button type="submit">{tr(lang, "common.create")}</button>
        </form>
    }
}

#[component]
pub fn CompanyPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let id = move || {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let company = Resource::new(id, get_company);
    view! {
        <Layout page=move |s| view! {
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match company.await {
                            Ok(c) => view! { <CompanyDetail c s/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn CompanyDetail(c: CompanyRow, s: crate::tenancy::SessionView) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("admin-form");
    let suspended = c.status == "suspended";
    let (action, label) = if suspended {
        ("reactivate", "companies.reactivate")
    } else {
        ("suspend", "companies.suspend")
    };
    view! {
        <h1>{tr(lang, "companies.detail")}": " {c.name.clone()}</h1>
        <dl class="facts">
            <dt>{tr(lang, "companies.slug")}</dt><dd>{c.slug.clone()}</dd>
            <dt>{tr(lang, "common.status")}</dt><dd id="company-status">{status_name(lang, &c.status)}</dd>
            <dt>{tr(lang, "companies.time_zone")}</dt><dd>{c.time_zone.clone()}</dd>
            <dt>{tr(lang, "companies.max_meters")}</dt><dd>{c.max_meters}</dd>
            <dt>{tr(lang, "companies.max_gateways")}</dt><dd>{c.max_gateways}</dd>
            <dt>{tr(lang, "companies.max_operators")}</dt><dd>{c.max_operators}</dd>
        </dl>
        <div class="actions">
            <form method="post" action=EnterCompany::PATH class="inline">
                <Csrf token=s.csrf.clone()/>
                <input type="hidden" name="id" value=c.id/>
                <button type="submit" id="enter">{tr(lang, "companies.enter")}</button>
            </form>
            {s.can_write_platform.then(|| view! {
                <form method="post" action=CompanyStatus::PATH class="inline">
                    <Csrf token=s.csrf.clone()/>
                    <input type="hidden" name="id" value=c.id/>
                    <input type="hidden" name="action" value=action/>
                    <button type="submit" class="secondary" id="toggle-status">{tr(lang, label)}</button>
                </form>
            })}
        </div>
        <MasterKey id=c.id can_rotate=s.can_write_platform csrf=s.csrf.clone()/>
        {s.can_write_platform.then(|| view! {
            <h2>{tr(lang, "companies.new_admin")}</h2>
            <form method="post" action=CreateCompanyAdmin::PATH class="grid" id="admin-form">
                <Csrf token=s.csrf.clone()/>
                <input type="hidden" name="id" value=c.id/>
                <label>{tr(lang, "users.username")}<input name="username" value=kept.value_or("username", "") required aria-invalid=kept.invalid("username")/></label>
                <label>{tr(lang, "users.display_name")}<input name="display_name" value=kept.value_or("display_name", "") aria-invalid=kept.invalid("display_name")/></label>
                <label>{tr(lang, "users.initial_password")}<input name="password" type="password" required minlength="10"/></label>
                <button type="submit">{tr(lang, "common.create")}</button>
            </form>
        })}
    }
}

/// The company's master key for meter-side meters: its newest version and, for platform admins,
/// the rotation (new meters get the new key; existing ones keep theirs until re-keyed).
#[component]
fn MasterKey(id: i64, can_rotate: bool, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let version = Resource::new(move || id, get_company_master_key);
    view! {
        <h2>{tr(lang, "companies.master_key")}</h2>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let shown = match version.await {
                    Ok(Some(v)) => v.to_string(),
                    Ok(None) => tr(lang, "companies.master_key_none"),
                    Err(_) => String::new(),
                };
                view! { <p id="master-key-version">{format!("{}: {shown}", tr(lang, "meter_side.key_version"))}</p> }
            })}
        </Suspense>
        {can_rotate.then(|| view! {
            <form method="post" action=RotateCompanyMasterKey::PATH class="grid" id="master-key-rotate">
                <Csrf token=csrf/>
                <input type="hidden" name="id" value=id/>
                <label class="check"><input type="checkbox" name="confirm" value="yes" required/>
                    {tr(lang, "companies.master_key_confirm")}</label>
                <button type="submit" class="secondary">{tr(lang, "companies.master_key_rotate")}</button>
            </form>
        })}
    }
}
