//! Company pages for users: the list with filters, export and creation; one user with rights,
//! building limits, (de)activation and password reset.

use crate::app::use_lang;
use crate::components::{role_name, use_kept, Csrf, Layout};
use crate::i18n::{tr, Lang};
use crate::tenancy::{get_user, list_users, SessionView, UserRow, RIGHTS};
use crate::web::query::query_param;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::tenancy::{CreateUser, ResetUserPassword, UpdateUser, UserStatus};
use leptos::server_fn::ServerFn as _;

const COMPANY_ROLES: [&str; 4] = ["company_admin", "operator", "auditor", "shop_tenant"];

fn rights_text(lang: Lang, rights: &[String]) -> String {
    rights
        .iter()
        .map(|r| tr(lang, &format!("right.{r}")))
        .collect::<Vec<_>>()
        .join("、")
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let lang = use_lang();
    let (q, role, status, cursor) = (
        query_param("q"),
        query_param("role"),
        query_param("status"),
        query_param("cursor"),
    );
    let source = {
        let (q, role, status, cursor) = (q.clone(), role.clone(), status.clone(), cursor.clone());
        move || (q(), role(), status(), cursor())
    };
    let users = Resource::new(source, |(q, role, status, cursor)| {
        list_users(q, role, status, cursor)
    });
    view! {
        <Layout page=move |s| {
            let (q, role, status) = (q.clone(), role.clone(), status.clone());
            let export = format!("/api/v1/users.xlsx?q={}&role={}&status={}", q(), role(), status());
            view! {
                <h1>{tr(lang, "users.title")}</h1>
                <form method="get" class="filters">
                    <input name="q" value=q() placeholder=tr(lang, "common.keyword")/>
                    <select name="role">
                        <option value="">{tr(lang, "common.all")}</option>
                        {COMPANY_ROLES.map(|r| view! { <option value=r selected=role() == r>{role_name(r)}</option> })}
                    </select>
                    <select name="status">
                        <option value="">{tr(lang, "common.all")}</option>
                        <option value="active" selected=status() == "active">{tr(lang, "status.active")}</option>
                        <option value="inactive" selected=status() == "inactive">{tr(lang, "status.inactive")}</option>
                    </select>
                    <button type="submit">{tr(lang, "common.search")}</button>
                    {s.can_export.then(|| view! { <a class="button secondary" href=export.clone()>{tr(lang, "common.export")}</a> })}
                </form>
                <Suspense fallback=|| ()>
                    {move || {
                        let (q, role, status) = (q.clone(), role.clone(), status.clone());
                        Suspend::new(async move {
                            match users.await {
                                Ok(page) => {
                                    let next = page.next_cursor.clone().map(|c| format!("/users?q={}&role={}&status={}&cursor={c}", q(), role(), status()));
                                    view! {
                                        <UserTable rows=page.items/>
                                        {next.map(|href| view! { <a class="button secondary" href=href>{tr(lang, "common.next_page")}</a> })}
                                    }.into_any()
                                }
                                Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                            }
                        })
                    }}
                </Suspense>
                {s.can_administer.then(|| view! { <NewUserForm csrf=s.csrf.clone()/> })}
            }.into_any()
        }/>
    }
}

#[component]
fn UserTable(rows: Vec<UserRow>) -> impl IntoView {
    let lang = use_lang();
    if rows.is_empty() {
        return view! { <p class="muted">{tr(lang, "common.none")}</p> }.into_any();
    }
    view! {
        <div class="table-wrap">
            <table id="users">
                <thead><tr>
                    <th>{tr(lang, "users.username")}</th>
                    <th>{tr(lang, "users.display_name")}</th>
                    <th>{tr(lang, "users.role")}</th>
                    <th>{tr(lang, "common.status")}</th>
                    <th>{tr(lang, "users.rights")}</th>
                    <th>{tr(lang, "common.created")}</th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().map(|u| view! {
                        <tr>
                            <td><a href=format!("/users/{}", u.id)>{u.username.clone()}</a></td>
                            <td>{u.display_name.clone()}</td>
                            <td>{role_name(&u.role)}</td>
                            <td>{tr(lang, &format!("status.{}", u.status))}
                                {u.must_change_password.then(|| view! { " · " {tr(lang, "users.must_change")} })}</td>
                            <td>{rights_text(lang, &u.rights)}</td>
                            <td>{u.created.clone()}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

#[component]
fn RightBoxes(checked: Vec<String>) -> impl IntoView {
    let lang = use_lang();
    view! {
        <fieldset class="rights">
            <legend>{tr(lang, "users.rights")}</legend>
            {RIGHTS.map(|r| {
                let on = checked.iter().any(|c| c == r);
                view! {
                    <label class="check">
                        <input type="checkbox" name=format!("right_{r}") value="on" checked=on/>
                        {tr(lang, &format!("right.{r}"))}
                    </label>
                }
            })}
        </fieldset>
    }
}

#[component]
fn NewUserForm(csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("new-user-form");
    view! {
        <h2>{tr(lang, "users.new")}</h2>
        <form method="post" action=CreateUser::PATH class="grid" id="new-user-form">
            <Csrf token=csrf/>
            <label>{tr(lang, "users.username")}<input name="username" value=kept.value_or("username", "") required aria-invalid=kept.invalid("username")/></label>
            <label>{tr(lang, "users.display_name")}<input name="display_name" value=kept.value_or("display_name", "") aria-invalid=kept.invalid("display_name")/></label>
            <label>{tr(lang, "users.phone")}<input name="phone" value=kept.value_or("phone", "") inputmode="tel" aria-invalid=kept.invalid("phone")/></label>
            <label>{tr(lang, "users.role")}
                <select name="role" aria-invalid=kept.invalid("role")>
                    {COMPANY_ROLES.map(|r| view! { <option value=r selected=if kept.values.contains_key("role") { kept.chose("role", r) } else { r == "operator" }>{role_name(r)}</option> })}
                </select>
            </label>
            <label>{tr(lang, "users.initial_password")}<input name="password" type="password" required minlength="10"/></label>
            <RightBoxes checked=vec![]/>
            <button type="submit">{tr(lang, "common.create")}</button>
        </form>
    }
}

#[component]
pub fn UserPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let user = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        get_user,
    );
    view! {
        <Layout page=move |s| view! {
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match user.await {
                            Ok(u) => view! { <UserDetail u s/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn UserDetail(u: UserRow, s: SessionView) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("edit-user-form");
    let active = u.status == "active";
    let (action, label) = if active {
        ("deactivate", "users.deactivate")
    } else {
        ("reactivate", "users.reactivate")
    };
    let is_tenant = u.role == "shop_tenant";
    let roles: Vec<&str> = COMPANY_ROLES
        .into_iter()
        .filter(|r| (*r == "shop_tenant") == is_tenant)
        .collect();
    view! {
        <h1>{u.username.clone()}</h1>
        <dl class="facts">
            <dt>{tr(lang, "users.role")}</dt><dd id="user-role">{role_name(&u.role)}</dd>
            <dt>{tr(lang, "common.status")}</dt><dd id="user-status">{tr(lang, &format!("status.{}", u.status))}</dd>
            <dt>{tr(lang, "users.rights")}</dt><dd id="user-rights">{rights_text(lang, &u.rights)}</dd>
            <dt>{tr(lang, "common.created")}</dt><dd>{u.created.clone()}</dd>
        </dl>
        {s.can_administer.then(|| view! {
            <h2>{tr(lang, "users.edit")}</h2>
            <form method="post" action=UpdateUser::PATH class="grid" id="edit-user-form">
                <Csrf token=s.csrf.clone()/>
                <input type="hidden" name="id" value=u.id.clone()/>
                <label>{tr(lang, "users.display_name")}<input name="display_name" value=kept.value_or("display_name", &u.display_name) aria-invalid=kept.invalid("display_name")/></label>
                <label>{tr(lang, "users.phone")}<input name="phone" value=kept.value_or("phone", &u.phone) inputmode="tel" aria-invalid=kept.invalid("phone")/></label>
                <label>{tr(lang, "users.role")}
                    <select name="role" aria-invalid=kept.invalid("role")>
                        {roles.into_iter().map(|r| view! { <option value=r selected=if kept.values.contains_key("role") { kept.chose("role", r) } else { r == u.role }>{role_name(r)}</option> }).collect_view()}
                    </select>
                </label>
                <label>{tr(lang, "users.buildings")}<input name="building_ids" value=kept.value_or("building_ids", &u.building_ids.join(", ")) aria-invalid=kept.invalid("building_ids")/></label>
                <RightBoxes checked=u.rights.clone()/>
                <button type="submit">{tr(lang, "common.save")}</button>
            </form>
            <div class="actions">
                <form method="post" action=UserStatus::PATH class="inline">
                    <Csrf token=s.csrf.clone()/>
                    <input type="hidden" name="id" value=u.id.clone()/>
                    <input type="hidden" name="action" value=action/>
                    <button type="submit" class="secondary" id="toggle-user">{tr(lang, label)}</button>
                </form>
            </div>
            <h2>{tr(lang, "users.reset_password")}</h2>
            <form method="post" action=ResetUserPassword::PATH class="grid" id="reset-form">
                <Csrf token=s.csrf.clone()/>
                <input type="hidden" name="id" value=u.id.clone()/>
                <label>{tr(lang, "users.initial_password")}<input name="password" type="password" required minlength="10"/></label>
                <button type="submit" class="secondary">{tr(lang, "users.reset_password")}</button>
            </form>
        })}
    }
}
