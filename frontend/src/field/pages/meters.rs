//! Field pages: the gateway list (with the add-gateway form), a gateway's page (connection
//! settings, bus editor, suspend/enable/remove), the meter list (filters, paging, bulk changes
//! on ticked meters, the add-meter form) and a meter's page (settings, swap, removal, history).

use super::fleet::{age_text, refresh_tick, REFRESH_SECONDS};
use crate::app::use_lang;
use crate::components::{use_kept, Csrf, Layout};
use crate::field::{
    gateway_credential, gateway_registration, get_gateway, get_meter, get_meter_live,
    list_gateways, list_meters, registration_problems, BusView, GatewayView, MeterDetailView,
    MeterListView, MqttCredentialView,
};
use crate::i18n::tr;
use crate::web::query::{query_param, query_string};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::chart::EnergyChart;
use crate::field::{
    BulkMeters, ControlMeter, CreateGateway, CreateMeter, GatewayStatus, ReadMeterNow, RemoveMeter,
    RotateGatewayCredential, SetGatewayBuses, SwapMeter, UpdateGateway, UpdateMeter,
};
use crate::web::WebError;
use leptos::server_fn::ServerFn as _;

/// The meter models, in the order the model list offers them.
fn models() -> Vec<&'static str> {
    powertab_core::field::MeterModel::ALL
        .iter()
        .map(|m| m.as_str())
        .collect()
}
const BAUDS: [i32; 8] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

fn not_found() -> AnyView {
    let lang = use_lang();
    view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any()
}

// ---------------------------------------------------------------------------------------------
// Gateways

#[component]
pub fn GatewaysPage() -> impl IntoView {
    let lang = use_lang();
    let (status, cursor) = (query_param("status"), query_param("cursor"));
    let source = {
        let (status, cursor) = (status.clone(), cursor.clone());
        move || (status(), cursor())
    };
    let gateways = Resource::new(source, |(status, cursor)| list_gateways(status, cursor));
    let problems = Resource::new(|| (), |_| registration_problems());
    view! {
        <Layout page=move |s| {
            let status = status.clone();
            view! {
                <h1>{tr(lang, "gateways.title")}</h1>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        let problems = problems.await.unwrap_or_default();
                        (!problems.is_empty()).then(|| view! {
                            <p class="flash error" id="registration-problems" role="alert">
                                {tr(lang, "gateways.registration_problems")}" "
                                {problems.iter().map(|(identity, problem)| format!("{identity} ({})", tr(lang, &format!("registrations.problem.{problem}")))).collect::<Vec<_>>().join(", ")}
                            </p>
                        })
                    })}
                </Suspense>
                <form method="get" class="filters">
                    <select name="status">
                        <option value="">{tr(lang, "common.all")}</option>
                        {["enabled", "suspended"].map(|v| view! { <option value=v selected=status() == v>{tr(lang, &format!("gateways.status.{v}"))}</option> })}
                    </select>
                    <button type="submit">{tr(lang, "common.search")}</button>
                    {s.can_export.then(|| view! { <a class="button secondary" href="/api/v1/gateways.xlsx">{tr(lang, "common.export")}</a> })}
                </form>
                <Suspense fallback=|| ()>
                    {move || {
                        let status = status.clone();
                        Suspend::new(async move {
                            let Ok(page) = gateways.await else { return not_found() };
                            let next = page.next_cursor.clone().map(|c| format!("/gateways?{}", query_string(&[("status", &status()), ("cursor", &c)])));
                            view! {
                                <div class="table-wrap">
                                    <table id="gateways">
                                        <thead><tr>
                                            <th>{tr(lang, "gateways.identity")}</th>
                                            <th>{tr(lang, "property.name")}</th>
                                            <th>{tr(lang, "gateways.kind")}</th>
                                            <th>{tr(lang, "common.status")}</th>
                                            <th>{tr(lang, "gateways.buses")}</th>
                                        </tr></thead>
                                        <tbody>
                                            {page.items.into_iter().map(|g| view! {
                                                <tr>
                                                    <td class="mono"><a href=format!("/gateways/{}", g.id)>{g.identity.clone()}</a></td>
                                                    <td>{g.name.clone()}</td>
                                                    <td>{tr(lang, &format!("gateways.kind.{}", g.kind))}</td>
                                                    <td>{tr(lang, &format!("gateways.status.{}", g.status))}</td>
                                                    <td>{g.buses.iter().map(|b| format!("{}: {} {} ({})", b.number, b.protocol, b.serial(), b.meter_count)).collect::<Vec<_>>().join("; ")}</td>
                                                </tr>
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                                {next.map(|href| view! { <a class="button secondary" href=href>{tr(lang, "common.next_page")}</a> })}
                            }.into_any()
                        })
                    }}
                </Suspense>
                {s.can_settings.then(|| view! { <NewGatewayForm csrf=s.csrf.clone()/> })}
            }.into_any()
        }/>
    }
}

#[component]
fn NewGatewayForm(csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("gateway-form");
    view! {
        <h2>{tr(lang, "gateways.new")}</h2>
        <form method="post" action=CreateGateway::PATH class="grid" id="gateway-form">
            <Csrf token=csrf/>
            <label>{tr(lang, "gateways.identity")}<input name="identity" value=kept.value_or("identity", "") required maxlength="64" aria-invalid=kept.invalid("identity")/></label>
            <label>{tr(lang, "gateways.kind")}
                <select name="kind" aria-invalid=kept.invalid("kind")>
                    {["dtu", "modbus_tcp", "mqtt"].map(|k| view! { <option value=k selected=kept.chose("kind", k)>{tr(lang, &format!("gateways.kind.{k}"))}</option> })}
                </select>
            </label>
            <ConnectionFields g=None form_id="gateway-form"/>
            <p class="muted">{tr(lang, "gateways.mqtt_hint")}</p>
            <BusRows buses=vec![] spare=2/>
            <button type="submit">{tr(lang, "common.create")}</button>
        </form>
    }
}

/// Name, registration, heartbeat and host, filled from `g` when editing.
#[component]
fn ConnectionFields(g: Option<GatewayView>, form_id: &'static str) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept(form_id);
    let g = g.unwrap_or(GatewayView {
        id: String::new(),
        identity: String::new(),
        name: String::new(),
        kind: String::new(),
        status: String::new(),
        registration_set: false,
        registration_repeats: false,
        heartbeat_hex: String::new(),
        host: String::new(),
        credential_generation: None,
        buses: vec![],
    });
    // Stored bytes are shown as hex, so an edited form says "hex".
    let editing = !g.id.is_empty();
    view! {
        <label>{tr(lang, "property.name")}<input name="name" value=kept.value_or("name", &g.name) aria-invalid=kept.invalid("name")/></label>
        <label>{tr(lang, "gateways.registration")}<input name="registration" class="mono" aria-invalid=kept.invalid("registration")
            placeholder=if editing && g.registration_set { tr(lang, "gateways.registration_unchanged") } else { String::new() }/></label>
        <label class="check"><input type="checkbox" name="registration_is_hex" value="on" checked=editing/>{tr(lang, "gateways.is_hex")}</label>
        <label class="check"><input type="checkbox" name="registration_repeats" value="on" checked=g.registration_repeats/>{tr(lang, "gateways.repeats")}</label>
        <label>{tr(lang, "gateways.heartbeat")}<input name="heartbeat" class="mono" value=kept.value_or("heartbeat", &g.heartbeat_hex) aria-invalid=kept.invalid("heartbeat")/></label>
        <label class="check"><input type="checkbox" name="heartbeat_is_hex" value="on" checked=editing/>{tr(lang, "gateways.is_hex")}</label>
        <label>{tr(lang, "gateways.host")}<input name="host" value=kept.value_or("host", &g.host) aria-invalid=kept.invalid("host")/></label>
    }
}

/// One form row per bus plus `spare` empty rows; a row without a port number is ignored.
#[component]
fn BusRows(buses: Vec<BusView>, spare: usize) -> impl IntoView {
    let lang = use_lang();
    let rows: Vec<Option<BusView>> = buses
        .into_iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, spare))
        .collect();
    view! {
        <div class="table-wrap wide">
            <table class="bus-rows">
                <thead><tr>
                    <th>{tr(lang, "gateways.port")}</th><th>{tr(lang, "gateways.protocol")}</th>
                    <th>{tr(lang, "gateways.baud")}</th><th>{tr(lang, "gateways.parity")}</th>
                    <th>{tr(lang, "gateways.stop_bits")}</th><th>{tr(lang, "gateways.gap_ms")}</th>
                    <th>{tr(lang, "gateways.timeout_ms")}</th><th>{tr(lang, "gateways.tcp_port")}</th>
                    <th>{tr(lang, "gateways.meter_count")}</th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().enumerate().map(|(i, b)| {
                        let name = move |f: &str| format!("buses[{i}][{f}]");
                        let value = |f: fn(&BusView) -> String| b.as_ref().map(f).unwrap_or_default();
                        let protocol = value(|b| b.protocol.clone());
                        let baud = value(|b| b.baud.to_string());
                        let parity = value(|b| b.parity.clone());
                        let stop = value(|b| b.stop_bits.to_string());
                        view! {
                            <tr>
                                <td><input name=name("number") value=value(|b| b.number.to_string()) inputmode="numeric" size="3"/></td>
                                <td><select name=name("protocol")>
                                    {["modbus_rtu", "dlt645"].map(|p| view! { <option value=p selected=protocol == p>{tr(lang, &format!("gateways.protocol.{p}"))}</option> })}
                                </select></td>
                                <td><select name=name("baud")>
                                    <option value="">{tr(lang, "gateways.default")}</option>
                                    {BAUDS.map(|v| view! { <option value=v.to_string() selected=baud == v.to_string()>{v}</option> })}
                                </select></td>
                                <td><select name=name("parity")>
                                    <option value="">{tr(lang, "gateways.default")}</option>
                                    {["N", "E", "O"].map(|v| view! { <option value=v selected=parity == v>{v}</option> })}
                                </select></td>
                                <td><select name=name("stop_bits")>
                                    <option value="">{tr(lang, "gateways.default")}</option>
                                    {["1", "2"].map(|v| view! { <option value=v selected=stop == v>{v}</option> })}
                                </select></td>
                                <td><input name=name("gap_ms") value=value(|b| b.gap_ms.to_string()) inputmode="numeric" size="5"/></td>
                                <td><input name=name("timeout_ms") value=value(|b| b.timeout_ms.to_string()) inputmode="numeric" size="5"/></td>
                                <td><input name=name("tcp_port") value=value(|b| b.tcp_port.map(|p| p.to_string()).unwrap_or_default()) inputmode="numeric" size="5"/></td>
                                <td>{value(|b| b.meter_count.to_string())}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
pub fn GatewayPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let gateway = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        get_gateway,
    );
    // Made here, outside the suspense, so the page's render passes share one look at the
    // credential (each look is audited).
    let show = query_param("credential");
    let credential: CredentialResource = Resource::new(
        move || {
            (
                params.read().get("id").unwrap_or_default(),
                show() == "show",
            )
        },
        |(id, show)| async move {
            if show {
                Some(gateway_credential(id).await)
            } else {
                None
            }
        },
    );
    // The same for the registration bytes (a credential too).
    let show_registration = query_param("registration");
    let registration: RegistrationResource = Resource::new(
        move || {
            (
                params.read().get("id").unwrap_or_default(),
                show_registration() == "show",
            )
        },
        |(id, show)| async move {
            if show {
                Some(gateway_registration(id).await)
            } else {
                None
            }
        },
    );
    view! {
        <Layout page=move |s| view! {
            <p><a href="/gateways">{tr(lang, "gateways.title")}</a></p>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match gateway.await {
                            Ok(g) => view! { <GatewayDetail g csrf=s.csrf.clone() can_change=s.can_settings credential registration/> }.into_any(),
                            Err(_) => not_found(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn GatewayDetail(
    g: GatewayView,
    csrf: String,
    can_change: bool,
    credential: CredentialResource,
    registration: RegistrationResource,
) -> impl IntoView {
    let lang = use_lang();
    let suspended = g.status == "suspended";
    let show_href = format!("/gateways/{}?registration=show", g.id);
    let registration_set = g.registration_set;
    view! {
        <h1 class="mono">{g.identity.clone()}</h1>
        <dl class="facts">
            <dt>{tr(lang, "gateways.kind")}</dt><dd>{tr(lang, &format!("gateways.kind.{}", g.kind))}</dd>
            <dt>{tr(lang, "common.status")}</dt><dd id="gateway-status">{tr(lang, &format!("gateways.status.{}", g.status))}</dd>
            <dt>{tr(lang, "gateways.registration")}</dt>
            <dd class="mono" id="gateway-registration">
                <Suspense fallback=|| ()>
                    {move || {
                        let show_href = show_href.clone();
                        Suspend::new(async move {
                            match registration.await {
                                Some(Ok(bytes)) => view! { <span>{bytes}</span> }.into_any(),
                                _ if registration_set => view! {
                                    <span>"••••••"</span>
                                    {can_change.then(|| view! { " " <a href=show_href.clone() id="show-registration">{tr(lang, "gateways.show_registration")}</a> })}
                                }.into_any(),
                                _ => ().into_any(),
                            }
                        })
                    }}
                </Suspense>
            </dd>
            <dt>{tr(lang, "gateways.heartbeat")}</dt><dd class="mono">{g.heartbeat_hex.clone()}</dd>
        </dl>
        {g.credential_generation.map(|generation| view! {
            <MqttLogin id=g.id.clone() identity=g.identity.clone() generation csrf=csrf.clone() can_change credential/>
        })}
        <h2>{tr(lang, "gateways.buses")}</h2>
        {if can_change {
            view! {
                <form method="post" action=SetGatewayBuses::PATH id="buses-form">
                    <Csrf token=csrf.clone()/>
                    <input type="hidden" name="id" value=g.id.clone()/>
                    <p class="muted">{tr(lang, "gateways.buses_hint")}</p>
                    <BusRows buses=g.buses.clone() spare=2/>
                    <button type="submit">{tr(lang, "common.save")}</button>
                </form>
                <h2>{tr(lang, "gateways.connection")}</h2>
                <form method="post" action=UpdateGateway::PATH class="grid" id="gateway-edit">
                    <Csrf token=csrf.clone()/>
                    <input type="hidden" name="id" value=g.id.clone()/>
                    <ConnectionFields g=Some(g.clone()) form_id="gateway-edit"/>
                    <button type="submit">{tr(lang, "common.save")}</button>
                </form>
                <div class="actions">
                    <form method="post" action=GatewayStatus::PATH class="inline">
                        <Csrf token=csrf.clone()/>
                        <input type="hidden" name="id" value=g.id.clone()/>
                        <input type="hidden" name="action" value=if suspended { "enable" } else { "suspend" }/>
                        <button type="submit" class="secondary">{tr(lang, if suspended { "gateways.enable" } else { "gateways.suspend" })}</button>
                    </form>
                    <form method="post" action=GatewayStatus::PATH class="inline" id="gateway-remove">
                        <Csrf token=csrf.clone()/>
                        <input type="hidden" name="id" value=g.id.clone()/>
                        <input type="hidden" name="action" value="remove"/>
                        <button type="submit" class="danger">{tr(lang, "gateways.remove")}</button>
                    </form>
                </div>
            }.into_any()
        } else {
            view! {
                <ul>{g.buses.into_iter().map(|b| view! { <li>{format!("{}: {} {} ({})", b.number, b.protocol, b.serial(), b.meter_count)}</li> }).collect_view()}</ul>
            }.into_any()
        }}
    }
}

/// The MQTT login of the gateway page: `None` unless the URL asks with `credential=show`.
type RegistrationResource = Resource<Option<Result<String, WebError>>>;
type CredentialResource = Resource<Option<Result<MqttCredentialView, WebError>>>;

/// An MQTT gateway's broker login. The password is fetched (and the look audited) only when the
/// URL asks for it with `credential=show`, so it never sits in a page nobody asked to see.
#[component]
fn MqttLogin(
    id: String,
    identity: String,
    generation: i32,
    csrf: String,
    can_change: bool,
    credential: CredentialResource,
) -> impl IntoView {
    let lang = use_lang();
    let show_href = format!("/gateways/{id}?credential=show");
    view! {
        <h2>{tr(lang, "gateways.mqtt_login")}</h2>
        <dl class="facts" id="mqtt-login">
            <dt>{tr(lang, "gateways.mqtt_username")}</dt><dd class="mono">{identity}</dd>
            <dt>{tr(lang, "gateways.mqtt_generation")}</dt><dd>{generation}</dd>
            <Suspense fallback=|| ()>
                {move || {
                    let show_href = show_href.clone();
                    Suspend::new(async move {
                    match credential.await {
                        Some(Ok(c)) => view! {
                            <dt>{tr(lang, "gateways.mqtt_broker")}</dt><dd class="mono">{c.broker}</dd>
                            <dt>{tr(lang, "gateways.mqtt_password")}</dt><dd class="mono" id="mqtt-password">{c.password}</dd>
                        }.into_any(),
                        Some(Err(e)) => view! {
                            <dt>{tr(lang, "gateways.mqtt_password")}</dt>
                            <dd class="flash error">{tr(lang, &format!("error.{}", crate::web::query::server_error_code(&e)))}</dd>
                        }.into_any(),
                        // Only those who may see it are offered the link.
                        None if can_change => view! {
                            <dt>{tr(lang, "gateways.mqtt_password")}</dt>
                            <dd><a href=show_href id="mqtt-show">{tr(lang, "gateways.mqtt_show")}</a></dd>
                        }.into_any(),
                        None => ().into_any(),
                    }
                })}}
            </Suspense>
        </dl>
        {can_change.then(|| view! {
            <form method="post" action=RotateGatewayCredential::PATH class="inline" id="mqtt-rotate">
                <Csrf token=csrf/>
                <input type="hidden" name="id" value=id/>
                <p class="muted">{tr(lang, "gateways.mqtt_rotate_hint")}</p>
                <button type="submit" class="secondary">{tr(lang, "gateways.mqtt_rotate")}</button>
            </form>
        })}
    }
}

// ---------------------------------------------------------------------------------------------
// Meters

#[component]
pub fn MetersPage() -> impl IntoView {
    let lang = use_lang();
    let params = ["q", "model", "mode", "status", "building", "cursor"].map(query_param);
    let source = {
        let p = params.clone();
        move || p.clone().map(|f| f())
    };
    let meters = Resource::new(source, |[q, model, mode, status, building, cursor]| {
        list_meters(q, model, mode, status, building, cursor)
    });
    view! {
        <Layout page=move |s| {
            let p = params.clone();
            view! {
                <h1>{tr(lang, "meters.title")}</h1>
                <Suspense fallback=|| ()>
                    {move || {
                        let (s, p) = (s.clone(), p.clone());
                        Suspend::new(async move {
                            let Ok(list) = meters.await else { return not_found() };
                            let current = p.map(|f| f());
                            view! { <MeterList list current csrf=s.csrf.clone() can_change=s.can_settings can_export=s.can_export/> }.into_any()
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

#[component]
fn MeterList(
    list: MeterListView,
    current: [String; 6],
    csrf: String,
    can_change: bool,
    can_export: bool,
) -> impl IntoView {
    let lang = use_lang();
    let [q, model, mode, status, building, _] = current.clone();
    let filter = query_string(&[
        ("q", &q),
        ("model", &model),
        ("mode", &mode),
        ("status", &status),
        ("building", &building),
    ]);
    let next = list
        .next_cursor
        .clone()
        .map(|c| format!("/meters?{filter}&cursor={c}"));
    let export = format!(
        "/api/v1/meters.xlsx?{}",
        query_string(&[
            ("q", &q),
            ("model", &model),
            ("prepayment_mode", &mode),
            ("building_id", &building),
        ])
    );
    view! {
        <form method="get" class="filters">
            <input name="q" value=q.clone() placeholder=tr(lang, "meters.search")/>
            <select name="building">
                <option value="">{tr(lang, "property.building")}": "{tr(lang, "common.all")}</option>
                {list.buildings.iter().map(|(id, name)| view! { <option value=id.clone() selected=building == *id>{name.clone()}</option> }).collect_view()}
            </select>
            <select name="model">
                <option value="">{tr(lang, "meters.model")}": "{tr(lang, "common.all")}</option>
                {models().into_iter().map(|m| view! { <option value=m selected=model == m>{tr(lang, &format!("meters.model.{m}"))}</option> }).collect_view()}
            </select>
            <select name="mode">
                <option value="">{tr(lang, "meters.mode")}": "{tr(lang, "common.all")}</option>
                {["platform", "meter"].map(|m| view! { <option value=m selected=mode == m>{tr(lang, &format!("meters.mode.{m}"))}</option> })}
            </select>
            <select name="status">
                {[("", "meters.status.active"), ("removed", "meters.status.removed"), ("any", "common.all")].map(|(v, k)| view! { <option value=v selected=status == v>{tr(lang, k)}</option> })}
            </select>
            <button type="submit">{tr(lang, "common.search")}</button>
            {can_export.then(|| view! { <a class="button secondary" href=export>{tr(lang, "common.export")}</a> })}
        </form>
        <form method="post" action=BulkMeters::PATH id="bulk-form">
            <Csrf token=csrf.clone()/>
            <div class="table-wrap">
                <table id="meters">
                    <thead><tr>
                        {can_change.then(|| view! { <th>{tr(lang, "meters.select")}</th> })}
                        <th>{tr(lang, "meters.number")}</th>
                        <th>{tr(lang, "meters.model")}</th>
                        <th>{tr(lang, "gateways.identity")}</th>
                        <th>{tr(lang, "meters.bus_address")}</th>
                        <th>{tr(lang, "meters.shop")}</th>
                        <th>{tr(lang, "meters.plan")}</th>
                        <th>{tr(lang, "meters.mode")}</th>
                        <th>{tr(lang, "common.status")}</th>
                    </tr></thead>
                    <tbody>
                        {list.items.iter().cloned().enumerate().map(|(i, m)| view! {
                            <tr>
                                {can_change.then(|| view! { <td><input type="checkbox" name=format!("meter_ids[{i}]") value=m.id.clone() aria-label=m.meter_number.clone()/></td> })}
                                <td class="mono"><a href=format!("/meters/{}", m.id)>{m.meter_number.clone()}</a></td>
                                <td>{tr(lang, &format!("meters.model.{}", m.model))}</td>
                                <td class="mono"><a href=format!("/gateways/{}", m.gateway_id)>{m.gateway.clone()}</a></td>
                                <td>{m.bus} " / " {m.address.clone()}</td>
                                <td>{m.shop.clone()}</td>
                                <td>{m.plan.clone()}</td>
                                <td>{tr(lang, &format!("meters.mode.{}", m.prepayment_mode))}</td>
                                <td>{tr(lang, &format!("meters.status.{}", m.status))}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            {next.map(|href| view! { <p><a class="button secondary" href=href>{tr(lang, "common.next_page")}</a></p> })}
            {can_change.then(|| view! {
                <fieldset class="grid">
                    <legend>{tr(lang, "meters.bulk")}</legend>
                    <label>{tr(lang, "meters.plan")}
                        <select name="plan_id">
                            <option value="">{tr(lang, "meters.unchanged")}</option>
                            <option value="none">{tr(lang, "meters.no_plan")}</option>
                            {list.plans.iter().map(|(id, name)| view! { <option value=id.clone()>{name.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>{tr(lang, "meters.alarm1")}<input name="alarm1" inputmode="decimal" placeholder=tr(lang, "meters.unchanged")/></label>
                    <label>{tr(lang, "meters.alarm2")}<input name="alarm2" inputmode="decimal" placeholder=tr(lang, "meters.unchanged")/></label>
                    <label>{tr(lang, "meters.mode")}
                        <select name="prepayment_mode">
                            <option value="">{tr(lang, "meters.unchanged")}</option>
                            {["platform", "meter"].map(|m| view! { <option value=m>{tr(lang, &format!("meters.mode.{m}"))}</option> })}
                        </select>
                    </label>
                    <button type="submit">{tr(lang, "meters.apply_to_ticked")}</button>
                </fieldset>
            })}
        </form>
        {can_change.then(|| view! { <NewMeterForm list csrf/> })}
    }
}

#[component]
fn NewMeterForm(list: MeterListView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    // A refused form comes back as it was typed, its wrong fields marked; core names some
    // fields `meter_address` where the form says `address`.
    let kept = use_kept("meter-form");
    let wrong = kept.fields.clone();
    let invalid = move |field: &str| {
        wrong
            .iter()
            .any(|f| f == field || f.strip_prefix("meter_") == Some(field))
            .then_some("true")
    };
    let value = |field: &str| kept.value_or(field, "");
    let chose = |field: &str, v: &str| kept.chose(field, v);
    view! {
        <h2>{tr(lang, "meters.new")}</h2>
        <form method="post" action=CreateMeter::PATH class="grid" id="meter-form">
            <Csrf token=csrf/>
            <label>{tr(lang, "meters.bus")}
                <select name="bus_id" required aria-invalid=invalid("bus_id")>
                    {list.buses.iter().map(|(id, name)| view! { <option value=id.clone() selected=chose("bus_id", id)>{name.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "meters.model")}
                <select name="model" aria-invalid=invalid("model")>
                    {models().into_iter().map(|m| view! { <option value=m selected=chose("model", m)>{tr(lang, &format!("meters.model.{m}"))}</option> }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "meters.address")}<input name="address" required value=value("address") aria-invalid=invalid("address")/></label>
            <label>{tr(lang, "meters.number")}<input name="meter_number" required inputmode="numeric" maxlength="16" value=value("meter_number") aria-invalid=invalid("meter_number")/></label>
            <label>{tr(lang, "meters.ct_ratio")}<input name="ct_ratio" inputmode="numeric" placeholder="1" value=value("ct_ratio") aria-invalid=invalid("ct_ratio")/></label>
            <label>{tr(lang, "meters.pt_ratio")}<input name="pt_ratio" inputmode="numeric" placeholder="1" value=value("pt_ratio") aria-invalid=invalid("pt_ratio")/></label>
            <label>{tr(lang, "meters.mode")}
                <select name="prepayment_mode" aria-invalid=invalid("prepayment_mode")>
                    {["platform", "meter"].map(|m| view! { <option value=m selected=chose("prepayment_mode", m)>{tr(lang, &format!("meters.mode.{m}"))}</option> })}
                </select>
            </label>
            <label>{tr(lang, "meters.role")}
                <select name="role" aria-invalid=invalid("role")>
                    {["shop", "main", "common"].map(|r| view! { <option value=r selected=chose("role", r)>{tr(lang, &format!("meters.role.{r}"))}</option> })}
                </select>
            </label>
            <label>{tr(lang, "meters.shop")}
                <select name="shop_id" aria-invalid=invalid("shop_id")>
                    <option value="">"—"</option>
                    {list.shops.iter().map(|(id, name)| view! { <option value=id.clone() selected=chose("shop_id", id)>{name.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "meters.plan")}
                <select name="plan_id" aria-invalid=invalid("tariff_plan_id")>
                    <option value="">"—"</option>
                    {list.plans.iter().map(|(id, name)| view! { <option value=id.clone() selected=chose("plan_id", id)>{name.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "meters.initial_kwh")}<input name="initial_kwh" inputmode="decimal" placeholder="0" value=value("initial_kwh") aria-invalid=invalid("initial_energy_wh")/></label>
            <label>{tr(lang, "meters.install_date")}<input name="install_date" type="date" value=value("install_date") aria-invalid=invalid("install_date")/></label>
            <label>{tr(lang, "meters.dlt645_password")}<input name="dlt645_password" class="mono" maxlength="8" aria-invalid=invalid("dlt645_password")/></label>
            <label>{tr(lang, "meters.dlt645_operator")}<input name="dlt645_operator" class="mono" maxlength="8" value=value("dlt645_operator") aria-invalid=invalid("dlt645_operator")/></label>
            <label class="check"><input type="checkbox" name="accept_crowded_bus" value="on"/>{tr(lang, "meters.accept_crowded")}</label>
            <button type="submit">{tr(lang, "common.create")}</button>
        </form>
    }
}

/// A meter's live values, refreshed every [`REFRESH_SECONDS`] in the browser.
type LiveResource = Resource<Result<crate::field::MeterLiveView, crate::web::WebError>>;

#[component]
pub fn MeterPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let meter = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        get_meter,
    );
    let power = crate::power::pages::meter_power_resource(move || {
        params.read().get("id").unwrap_or_default()
    });
    let tick = refresh_tick(REFRESH_SECONDS);
    // Made here, not in `MeterLive`: a resource first made inside a resolved `Suspend` is not
    // ready when the page hydrates (the browser would draw its fallback over the server's HTML).
    let live: LiveResource = Resource::new(
        move || (tick.get(), params.read().get("id").unwrap_or_default()),
        |(_, id)| get_meter_live(id),
    );
    view! {
        <Layout page=move |s| view! {
            <p><a href="/meters">{tr(lang, "meters.title")}</a></p>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match meter.await {
                            Ok(m) => view! { <MeterDetail m csrf=s.csrf.clone() can_change=s.can_settings can_export=s.can_export can_control=s.can_control power live/> }.into_any(),
                            Err(_) => not_found(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn MeterDetail(
    m: MeterDetailView,
    csrf: String,
    can_change: bool,
    can_export: bool,
    can_control: bool,
    power: crate::power::pages::MeterPowerResource,
    live: LiveResource,
) -> impl IntoView {
    let lang = use_lang();
    let row = m.row.clone();
    let active = row.status == "active";
    let default_hint = |value: &str, default: &str| {
        if value.is_empty() {
            format!("{default} ({})", tr(lang, "meters.company_default"))
        } else {
            value.to_owned()
        }
    };
    view! {
        <h1 class="mono">{row.meter_number.clone()}</h1>
        <dl class="facts" id="meter-facts">
            <dt>{tr(lang, "meters.model")}</dt><dd>{tr(lang, &format!("meters.model.{}", row.model))}</dd>
            <dt>{tr(lang, "common.status")}</dt><dd id="meter-status">{tr(lang, &format!("meters.status.{}", row.status))}</dd>
            <dt>{tr(lang, "gateways.identity")}</dt><dd class="mono"><a href=format!("/gateways/{}", row.gateway_id)>{row.gateway.clone()}</a></dd>
            <dt>{tr(lang, "meters.bus_address")}</dt><dd>{row.bus} " / " {row.address.clone()}</dd>
            <dt>{tr(lang, "meters.mode")}</dt><dd>{tr(lang, &format!("meters.mode.{}", row.prepayment_mode))}</dd>
            <dt>{tr(lang, "meters.role")}</dt><dd>{tr(lang, &format!("meters.role.{}", row.role))}</dd>
            <dt>{tr(lang, "meters.parent")}</dt><dd>{m.parent_number.clone()}</dd>
            <dt>{tr(lang, "meters.shop")}</dt><dd>{row.shop.clone()}</dd>
            <dt>{tr(lang, "meters.plan")}</dt><dd>{row.plan.clone()}</dd>
            <dt>{tr(lang, "meters.ct_pt")}</dt><dd>{m.ct_ratio} " / " {m.pt_ratio}</dd>
            <dt>{tr(lang, "meters.alarm1")}</dt><dd>{default_hint(&m.alarm1, &m.default_alarm1)}</dd>
            <dt>{tr(lang, "meters.alarm2")}</dt><dd>{default_hint(&m.alarm2, &m.default_alarm2)}</dd>
            <dt>{tr(lang, "meters.install_date")}</dt><dd>{m.install_date.clone()}</dd>
            <dt>{tr(lang, "meters.initial_kwh")}</dt><dd>{m.initial_kwh.clone()}</dd>
            <dt>{tr(lang, "meters.tou_split")}</dt><dd>{tr(lang, if m.tou_registers_match { "meters.tou_split.registers" } else { "meters.tou_split.plan" })}</dd>
            {(!active).then(|| view! {
                <dt>{tr(lang, "meters.removed_at")}</dt><dd>{m.removed_at.clone()}</dd>
                <dt>{tr(lang, "meters.final_kwh")}</dt><dd id="meter-final">{m.final_kwh.clone()}</dd>
            })}
        </dl>
        {active.then(|| view! {
            <form method="post" action=ReadMeterNow::PATH class="inline" id="read-now">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="id" value=row.id.clone()/>
                <button type="submit" class="secondary">{tr(lang, "live.read_now")}</button>
            </form>
        })}
        {(active && can_control).then(|| view! { <MeterControl id=row.id.clone() shop=row.shop.clone() csrf=csrf.clone()/> })}
        <crate::power::pages::MeterPower power csrf=csrf.clone()/>
        <MeterLive id=row.id.clone() can_export=can_export live/>
        {(!m.history.is_empty()).then(|| view! {
            <h2>{tr(lang, "meters.history")}</h2>
            <div class="table-wrap">
                <table id="swap-history">
                    <thead><tr>
                        <th>{tr(lang, "meters.swapped_at")}</th><th>{tr(lang, "meters.old_meter")}</th>
                        <th>{tr(lang, "meters.final_kwh")}</th><th>{tr(lang, "meters.new_meter")}</th>
                        <th>{tr(lang, "meters.initial_kwh")}</th><th>{tr(lang, "meters.reason")}</th>
                    </tr></thead>
                    <tbody>
                        {m.history.iter().map(|h| view! {
                            <tr>
                                <td>{h.at.clone()}</td>
                                <td class="mono"><a href=format!("/meters/{}", h.old_meter_id)>{h.old_meter_number.clone()}</a></td>
                                <td>{h.old_final_kwh.clone()}</td>
                                <td class="mono"><a href=format!("/meters/{}", h.new_meter_id)>{h.new_meter_number.clone()}</a></td>
                                <td>{h.new_initial_kwh.clone()}</td>
                                <td>{h.reason.clone()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        })}
        {(can_change && active).then(|| view! { <MeterForms m csrf/> })}
    }
}

/// The meter's newest values, daily energy bars and latest readings, refreshed in place.
/// Remote control of one meter: the command and a confirmation that names the shop whose power
/// it switches (a plain form: works without JavaScript).
#[component]
fn MeterControl(id: String, shop: String, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let ops = [
        "trip",
        "close",
        "release",
        "keep_power_on",
        "keep_power_off",
    ];
    let shop = if shop.is_empty() {
        tr(lang, "control.no_shop")
    } else {
        shop
    };
    view! {
        <form method="post" action=ControlMeter::PATH class="grid no-print" id="meter-control">
            <Csrf token=csrf/>
            <input type="hidden" name="id" value=id/>
            <label>{tr(lang, "control.op")}
                <select name="op">
                    {ops.into_iter().map(|op| view! { <option value=op>{tr(lang, &format!("control.op.{op}"))}</option> }).collect_view()}
                </select>
            </label>
            <label class="wide"><input type="checkbox" name="confirm" value="yes" required/>
                " " {tr(lang, "control.confirm")} " " <strong>{shop}</strong></label>
            <button type="submit" class="danger">{tr(lang, "control.send")}</button>
        </form>
    }
}

#[component]
fn MeterLive(id: String, can_export: bool, live: LiveResource) -> impl IntoView {
    let lang = use_lang();
    let export = format!("/api/v1/meters/{id}/readings.xlsx");
    let history = format!("/meters/{id}/readings");
    view! {
        <Transition fallback=|| ()>
            {move || {
                let (export, history) = (export.clone(), history.clone());
                Suspend::new(async move {
                let Ok(v) = live.await else { return ().into_any() };
                view! {
                    <h2>{tr(lang, "live.title")}</h2>
                    {if v.latest.is_empty() {
                        view! { <p class="muted" id="meter-live">{tr(lang, "live.never_read")}</p> }.into_any()
                    } else {
                        view! {
                            <dl class="facts" id="meter-live">
                                <dt>{tr(lang, "live.read_at")}</dt><dd>{v.read_at.clone()} " (" {age_text(v.age_s)} ")"</dd>
                                {v.latest.iter().filter(|(_, value)| !value.is_empty()).map(|(key, value)| {
                                    let shown = if value.starts_with("live.") { tr(lang, value) } else { value.clone() };
                                    view! { <dt>{tr(lang, key)}</dt><dd>{shown}</dd> }
                                }).collect_view()}
                            </dl>
                        }.into_any()
                    }}
                    {(!v.hourly.is_empty()).then(|| view! {
                        <h3>{tr(lang, "live.hourly")}</h3>
                        <EnergyChart id="hourly-bars" slots=v.hourly.clone() label_every=3 no_data=tr(lang, "live.no_data")/>
                    })}
                    {(!v.daily.is_empty()).then(|| view! {
                        <h3>{tr(lang, "live.daily")}</h3>
                        <EnergyChart id="daily-bars" slots=v.daily.clone() label_every=2 no_data=tr(lang, "live.no_data")/>
                    })}
                    {(!v.recent.is_empty()).then(|| view! {
                        <h3>{tr(lang, "live.recent")}</h3>
                        <p>
                            <a class="button secondary" href=history.clone()>{tr(lang, "readings.all")}</a>
                            {can_export.then(|| view! { " " <a class="button secondary" href=export.clone()>{tr(lang, "common.export")}</a> })}
                        </p>
                        <div class="table-wrap">
                            <table id="recent-readings">
                                <thead><tr>
                                    <th>{tr(lang, "live.read_at")}</th><th>{tr(lang, "live.energy")}</th>
                                    <th>{tr(lang, "live.power")}</th><th>{tr(lang, "live.flag")}</th>
                                </tr></thead>
                                <tbody>
                                    {v.recent.iter().map(|(at, kwh, w, flag)| view! {
                                        <tr><td>{at.clone()}</td><td>{kwh.clone()}</td><td>{w.clone()}</td>
                                            <td>{(!flag.is_empty()).then(|| tr(lang, &format!("live.flag.{flag}")))}</td></tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    })}
                }.into_any()
            })
            }}
        </Transition>
    }
}

/// Edit, swap and remove: the changes an active meter offers.
#[component]
fn MeterForms(m: MeterDetailView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept_remove = use_kept("meter-remove");
    let kept_swap = use_kept("meter-swap");
    let kept_edit = use_kept("meter-edit");
    let id = m.row.id.clone();
    // A refused form shows what was typed, the meter's values otherwise.
    let edit = |field: &str, current: &str| kept_edit.value_or(field, current);
    let option = |items: &[(String, String)], selected: &str| {
        items
            .iter()
            .map(|(v, name)| view! { <option value=v.clone() selected=selected == v>{name.clone()}</option> })
            .collect_view()
    };
    view! {
        <h2>{tr(lang, "meters.edit")}</h2>
        <form method="post" action=UpdateMeter::PATH class="grid" id="meter-edit">
            <Csrf token=csrf.clone()/>
            <input type="hidden" name="id" value=id.clone()/>
            <label>{tr(lang, "meters.ct_ratio")}<input name="ct_ratio" value=kept_edit.value_or("ct_ratio", &m.ct_ratio.to_string()) inputmode="numeric" aria-invalid=kept_edit.invalid("ct_ratio")/></label>
            <label>{tr(lang, "meters.pt_ratio")}<input name="pt_ratio" value=kept_edit.value_or("pt_ratio", &m.pt_ratio.to_string()) inputmode="numeric" aria-invalid=kept_edit.invalid("pt_ratio")/></label>
            <label>{tr(lang, "meters.mode")}
                <select name="prepayment_mode" aria-invalid=kept_edit.invalid("prepayment_mode")>
                    {["platform", "meter"].map(|v| view! { <option value=v selected=edit("prepayment_mode", &m.row.prepayment_mode) == v>{tr(lang, &format!("meters.mode.{v}"))}</option> })}
                </select>
            </label>
            <label>{tr(lang, "meters.role")}
                <select name="role" aria-invalid=kept_edit.invalid("role")>
                    {["shop", "main", "common"].map(|v| view! { <option value=v selected=edit("role", &m.row.role) == v>{tr(lang, &format!("meters.role.{v}"))}</option> })}
                </select>
            </label>
            <label>{tr(lang, "meters.parent")}
                <select name="parent_id" aria-invalid=kept_edit.invalid("parent_id")><option value="">"—"</option>{option(&m.feeders, &edit("parent_id", &m.parent_id))}</select>
            </label>
            <label>{tr(lang, "meters.shop")}
                <select name="shop_id" aria-invalid=kept_edit.invalid("shop_id")><option value="">"—"</option>{option(&m.shops, &edit("shop_id", &m.shop_id))}</select>
            </label>
            <label>{tr(lang, "meters.plan")}
                <select name="plan_id" aria-invalid=kept_edit.invalid("plan_id")><option value="">"—"</option>{option(&m.plans, &edit("plan_id", &m.plan_id))}</select>
            </label>
            <label>{tr(lang, "meters.alarm1")}<input name="alarm1" value=kept_edit.value_or("alarm1", &m.alarm1.clone()) inputmode="decimal" placeholder=m.default_alarm1.clone() aria-invalid=kept_edit.invalid("alarm1")/></label>
            <label>{tr(lang, "meters.alarm2")}<input name="alarm2" value=kept_edit.value_or("alarm2", &m.alarm2.clone()) inputmode="decimal" placeholder=m.default_alarm2.clone() aria-invalid=kept_edit.invalid("alarm2")/></label>
            <label class="check"><input type="checkbox" name="tou_registers_match" value="on" checked=m.tou_registers_match/>{tr(lang, "meters.tou_registers_match")}</label>
            <button type="submit">{tr(lang, "common.save")}</button>
        </form>
        <h2>{tr(lang, "meters.swap")}</h2>
        <form method="post" action=SwapMeter::PATH class="grid" id="meter-swap">
            <Csrf token=csrf.clone()/>
            <input type="hidden" name="id" value=id.clone()/>
            <p class="muted wide">{tr(lang, "meters.swap_hint")}</p>
            <label>{tr(lang, "meters.old_final_kwh")}<input name="old_final_kwh" value=kept_swap.value_or("old_final_kwh", "") required inputmode="decimal" aria-invalid=kept_swap.invalid("old_final_kwh")/></label>
            <label>{tr(lang, "meters.new_number")}<input name="meter_number" value=kept_swap.value_or("meter_number", "") required inputmode="numeric" maxlength="16" aria-invalid=kept_swap.invalid("meter_number")/></label>
            <label>{tr(lang, "meters.new_initial_kwh")}<input name="new_initial_kwh" value=kept_swap.value_or("new_initial_kwh", "") inputmode="decimal" placeholder="0" aria-invalid=kept_swap.invalid("new_initial_kwh")/></label>
            <label>{tr(lang, "meters.model")}
                <select name="model" aria-invalid=kept_swap.invalid("model")>
                    {models().into_iter().map(|v| view! { <option value=v selected=kept_swap.value_or("model", &m.row.model) == v>{tr(lang, &format!("meters.model.{v}"))}</option> }).collect_view()}
                </select>
            </label>
            <label>{tr(lang, "meters.address")}<input name="address" value=kept_swap.value_or("address", &m.row.address) aria-invalid=kept_swap.invalid("address")/></label>
            <label>{tr(lang, "meters.reason")}<input name="reason" value=kept_swap.value_or("reason", "") aria-invalid=kept_swap.invalid("reason")/></label>
            <button type="submit">{tr(lang, "meters.swap")}</button>
        </form>
        <h2>{tr(lang, "meters.remove")}</h2>
        <form method="post" action=RemoveMeter::PATH class="grid" id="meter-remove">
            <Csrf token=csrf/>
            <input type="hidden" name="id" value=id/>
            <label>{tr(lang, "meters.final_kwh")}<input name="final_kwh" value=kept_remove.value_or("final_kwh", "") required inputmode="decimal" aria-invalid=kept_remove.invalid("final_kwh")/></label>
            <label>{tr(lang, "meters.reason")}<input name="reason" value=kept_remove.value_or("reason", "") aria-invalid=kept_remove.invalid("reason")/></label>
            <button type="submit" class="danger">{tr(lang, "meters.remove")}</button>
        </form>
    }
}
