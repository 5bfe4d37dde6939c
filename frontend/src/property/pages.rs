//! Property setup pages: the building/floor/shop tree with shop search and forms to add
//! buildings, floors and shops; the gateway list with buses; the meter list with filters.
//! Every list links its Excel export.

use crate::app::use_lang;
use crate::components::{use_kept, Csrf, Layout};
use crate::i18n::tr;
use crate::property::{get_property, PropertyView};
use crate::web::query::query_param;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::property::{CreateBuilding, CreateFloor, CreateShop};
use leptos::server_fn::ServerFn as _;

#[component]
pub fn PropertyPage() -> impl IntoView {
    let lang = use_lang();
    let (q, building) = (query_param("q"), query_param("building"));
    let source = {
        let (q, building) = (q.clone(), building.clone());
        move || (q(), building())
    };
    let property = Resource::new(source, |(q, building)| get_property(q, building));
    view! {
        <Layout page=move |s| {
            let q = q.clone();
            view! {
                <h1>{tr(lang, "property.title")}</h1>
                <form method="get" class="filters">
                    <input name="q" value=q() placeholder=tr(lang, "property.search")/>
                    <button type="submit">{tr(lang, "common.search")}</button>
                    {s.can_export.then(|| view! { <a class="button secondary" href="/api/v1/shops.xlsx">{tr(lang, "common.export")}</a> })}
                </form>
                <Suspense fallback=|| ()>
                    {move || {
                        let s = s.clone();
                        Suspend::new(async move {
                            match property.await {
                                Ok(p) => view! { <PropertyTree p csrf=s.csrf.clone() can_change=s.can_settings/> }.into_any(),
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
fn PropertyTree(p: PropertyView, csrf: String, can_change: bool) -> impl IntoView {
    let lang = use_lang();
    let kept_floor = use_kept("floor-form");
    let kept_building = use_kept("building-form");
    // A refused add-shop form comes back as typed, its wrong fields marked.
    let kept = use_kept("shop-form");
    let invalid = {
        let kept = kept.clone();
        move |field: &str| kept.invalid(field)
    };
    let floors: Vec<(String, String)> = p
        .buildings
        .iter()
        .flat_map(|b| {
            b.floors
                .iter()
                .map(move |(id, name, _)| (id.clone(), format!("{} {}", b.name, name)))
        })
        .collect();
    let buildings: Vec<(String, String)> = p
        .buildings
        .iter()
        .map(|b| (b.id.clone(), b.name.clone()))
        .collect();
    view! {
        <ul class="tree" id="property-tree">
            {p.buildings.iter().map(|b| view! {
                <li>
                    <a href=format!("/property?building={}", b.id)><strong>{b.name.clone()}</strong></a>
                    " (" {b.shop_count} ")"
                    <ul>
                        {b.floors.iter().map(|(_, name, count)| view! { <li>{name.clone()} " (" {*count} ")"</li> }).collect_view()}
                    </ul>
                </li>
            }).collect_view()}
        </ul>
        <div class="table-wrap">
            <table id="shops">
                <thead><tr>
                    <th>{tr(lang, "property.building")}</th>
                    <th>{tr(lang, "property.floor")}</th>
                    <th>{tr(lang, "property.number")}</th>
                    <th>{tr(lang, "property.name")}</th>
                    <th>{tr(lang, "property.area")}</th>
                    <th>{tr(lang, "property.contact")}</th>
                    <th>{tr(lang, "common.status")}</th>
                </tr></thead>
                <tbody>
                    {p.shops.into_iter().map(|s| view! {
                        <tr>
                            <td>{s.building}</td><td>{s.floor}</td><td>{s.number}</td><td>{s.name}</td>
                            <td>{s.area_m2}</td><td>{s.contact}</td><td>{tr(lang, &format!("shop_status.{}", s.status))}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        {can_change.then(|| view! {
            <h2>{tr(lang, "property.add")}</h2>
            <div class="grid">
                <form method="post" action=CreateBuilding::PATH class="stack" id="building-form">
                    <Csrf token=csrf.clone()/>
                    <label>{tr(lang, "property.building")}<input name="name" value=kept_building.value_or("name", "") required aria-invalid=kept_building.invalid("name")/></label>
                    <label>{tr(lang, "property.address")}<input name="address" value=kept_building.value_or("address", "") aria-invalid=kept_building.invalid("address")/></label>
                    <button type="submit">{tr(lang, "property.add_building")}</button>
                </form>
                <form method="post" action=CreateFloor::PATH class="stack" id="floor-form">
                    <Csrf token=csrf.clone()/>
                    <label>{tr(lang, "property.building")}
                        <select name="building_id" aria-invalid=kept_floor.invalid("building_id")>
                            {buildings.iter().map(|(id, name)| view! { <option value=id.clone() selected=kept_floor.chose("building_id", id)>{name.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>{tr(lang, "property.floor")}<input name="name" value=kept_floor.value_or("name", "") required aria-invalid=kept_floor.invalid("name")/></label>
                    <button type="submit">{tr(lang, "property.add_floor")}</button>
                </form>
                <form method="post" action=CreateShop::PATH class="stack" id="shop-form">
                    <Csrf token=csrf.clone()/>
                    <label>{tr(lang, "property.floor")}
                        <select name="floor_id">
                            {floors.iter().map(|(id, name)| view! { <option value=id.clone() selected=kept.chose("floor_id", id)>{name.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>{tr(lang, "property.number")}<input name="number" required value=kept.value_or("number", "") aria-invalid=invalid("number")/></label>
                    <label>{tr(lang, "property.name")}<input name="name" value=kept.value_or("name", "") aria-invalid=invalid("name")/></label>
                    <label>{tr(lang, "property.area")}<input name="area_m2" inputmode="decimal" value=kept.value_or("area_m2", "") aria-invalid=invalid("area_m2")/></label>
                    <label>{tr(lang, "property.contact")}<input name="contact_name" value=kept.value_or("contact_name", "") aria-invalid=invalid("contact_name")/></label>
                    <label>{tr(lang, "users.phone")}<input name="contact_phone" inputmode="tel" value=kept.value_or("contact_phone", "") aria-invalid=invalid("contact_phone")/></label>
                    <button type="submit">{tr(lang, "property.add_shop")}</button>
                </form>
            </div>
        })}
    }
}
