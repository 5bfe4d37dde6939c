//! The remote-control pages: the command centre (`/commands`), batch control (`/control`, with
//! a preview step that states how many meters and which shops before anything is sent), a
//! batch's live progress (`/control/batches/:id`), and the power panel on a meter's page. Every
//! change is a plain form (works without JavaScript); with it, progress refreshes in place.

use super::views::{CommandRowView, PreviewView};
use super::{
    get_batch, get_batch_form, get_commands, get_meter_power, preview_batch, CancelCommand,
    RetryCommand, StartBatch,
};
use crate::app::use_lang;
use crate::components::{Csrf, Layout};
use crate::field::pages::fleet::refresh_tick;
use crate::i18n::{tr, Lang};
use crate::web::query::{query_param, query_string};
use leptos::prelude::*;
use leptos::server_fn::ServerFn as _;
use leptos_router::hooks::use_params_map;

/// Seconds between refreshes of a batch's progress and a meter's commands.
const PROGRESS_REFRESH_S: u64 = 3;

fn op_text(lang: Lang, op: &str) -> String {
    tr(lang, &format!("control.op.{op}"))
}

fn state_text(lang: Lang, state: &str) -> String {
    tr(lang, &format!("commands.state.{state}"))
}

/// A table of commands with send-again and cancel forms where the viewer may use them.
#[component]
pub fn CommandTable(rows: Vec<CommandRowView>, csrf: String, id: &'static str) -> impl IntoView {
    let lang = use_lang();
    view! {
        <div class="table-wrap">
            <table id=id>
                <thead><tr>
                    <th>{tr(lang, "commands.created_at")}</th><th>{tr(lang, "meters.number")}</th>
                    <th>{tr(lang, "meters.shop")}</th><th>{tr(lang, "control.op")}</th>
                    <th>{tr(lang, "common.status")}</th><th>{tr(lang, "commands.source")}</th>
                    <th>{tr(lang, "commands.sends")}</th><th>{tr(lang, "commands.detail")}</th><th></th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().map(|c| view! {
                        <tr data-state=c.state.clone() data-op=c.op.clone() class:stuck=c.stuck>
                            <td>{c.created_at.clone()}</td>
                            <td class="mono"><a href=format!("/meters/{}", c.meter_id)>{c.meter_number.clone()}</a></td>
                            <td>{c.shop.clone()}</td>
                            <td>{op_text(lang, &c.op)}</td>
                            <td>{state_text(lang, &c.state)}{c.stuck.then(|| view! { " · " <strong>{tr(lang, "commands.stuck")}</strong> })}</td>
                            <td class="mono">{c.source.clone()}</td>
                            <td>{c.attempts}</td>
                            <td>{c.detail.clone()} " · " {c.updated_at.clone()}</td>
                            <td>
                                {c.can_retry.then(|| view! {
                                    <form method="post" action=RetryCommand::PATH class="inline">
                                        <Csrf token=csrf.clone()/>
                                        <input type="hidden" name="id" value=c.id.clone()/>
                                        <button type="submit" class="secondary">{tr(lang, "commands.retry")}</button>
                                    </form>
                                })}
                                {c.can_cancel.then(|| view! {
                                    <form method="post" action=CancelCommand::PATH class="inline">
                                        <Csrf token=csrf.clone()/>
                                        <input type="hidden" name="id" value=c.id.clone()/>
                                        <button type="submit" class="secondary">{tr(lang, "commands.cancel")}</button>
                                    </form>
                                })}
                            </td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// The command centre: open, failed, stuck or all commands of the company.
#[component]
pub fn CommandsPage() -> impl IntoView {
    let lang = use_lang();
    let view_param = query_param("view");
    let shown = view_param.clone();
    let commands = Resource::new(view_param, get_commands);
    view! {
        <Layout page=move |s| {
            let current = shown();
            let current = if current.is_empty() { "open".to_owned() } else { current };
            let export = format!("/api/v1/commands.xlsx?{}", query_string(&[("view", &current)]));
            view! {
                <h1>{tr(lang, "commands.title")}</h1>
                <nav class="tabs" id="command-views">
                    {["open", "stuck", "failed", "all"].map(|v| view! {
                        <a href=format!("/commands?view={v}") class:current=current == v>{tr(lang, &format!("commands.view.{v}"))}</a>
                    })}
                    " " <a href="/control">{tr(lang, "control.batch_title")}</a>
                </nav>
                <Suspense fallback=|| ()>
                    {move || {
                        let (s, export) = (s.clone(), export.clone());
                        Suspend::new(async move {
                            match commands.await {
                                Ok(v) => view! {
                                    {v.can_export.then(|| view! { <p><a href=export download>{tr(lang, "common.export")}</a></p> })}
                                    {if v.rows.is_empty() {
                                        view! { <p class="muted" id="no-commands">{tr(lang, "commands.none")}</p> }.into_any()
                                    } else {
                                        view! { <CommandTable rows=v.rows csrf=s.csrf.clone() id="commands"/> }.into_any()
                                    }}
                                }.into_any(),
                                Err(_) => view! { <p class="flash error">{tr(lang, "error.validation_failed")}</p> }.into_any(),
                            }
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

/// Batch control: choose an op and a selection; the preview says how many meters and which
/// shops; the confirmation form carries that count, and the start is refused if it changed.
#[component]
pub fn BatchPage() -> impl IntoView {
    let lang = use_lang();
    let form = Resource::new(|| (), |_| get_batch_form());
    // What the selection form asked for (op, building, floor, gateway, text), from the query.
    let asked = {
        let (op, building, floor, gateway, q) = (
            query_param("op"),
            query_param("building"),
            query_param("floor"),
            query_param("gateway"),
            query_param("q"),
        );
        move || (op(), building(), floor(), gateway(), q())
    };
    let preview = Resource::new(
        asked.clone(),
        |(op, building, floor, gateway, q)| async move {
            if op.is_empty() {
                return None;
            }
            Some(preview_batch(op, building, floor, gateway, q).await)
        },
    );
    view! {
        <Layout page=move |s| {
            let asked = asked.clone();
            let chosen = asked.clone();
            view! {
                <h1>{tr(lang, "control.batch_title")}</h1>
                <p><a href="/commands">{tr(lang, "commands.title")}</a></p>
                <Suspense fallback=|| ()>
                    {move || {
                        let (op_now, building_now, floor_now, gateway_now, q_now) = chosen();
                        Suspend::new(async move {
                            let Ok(f) = form.await else { return ().into_any() };
                            let option = |items: &[(String, String)], chosen: &str| items.iter().map(|(id, name)| {
                                view! { <option value=id.clone() selected=chosen == id>{name.clone()}</option> }
                            }).collect_view();
                            view! {
                                <form method="get" action="/control" class="grid no-print" id="batch-select">
                                    <label>{tr(lang, "control.op")}
                                        <select name="op">
                                            {["trip", "close", "release", "keep_power_on", "keep_power_off"].map(|o| view! {
                                                <option value=o selected=op_now == o>{op_text(lang, o)}</option>
                                            })}
                                        </select>
                                    </label>
                                    <label>{tr(lang, "property.building")}
                                        <select name="building"><option value="">{tr(lang, "control.any")}</option>{option(&f.buildings, &building_now)}</select>
                                    </label>
                                    <label>{tr(lang, "property.floor")}
                                        <select name="floor"><option value="">{tr(lang, "control.any")}</option>{option(&f.floors, &floor_now)}</select>
                                    </label>
                                    <label>{tr(lang, "gateways.identity")}
                                        <select name="gateway"><option value="">{tr(lang, "control.any")}</option>{option(&f.gateways, &gateway_now)}</select>
                                    </label>
                                    <label>{tr(lang, "control.q")}<input name="q" value=q_now maxlength="64"/></label>
                                    <button type="submit" class="secondary">{tr(lang, "control.preview")}</button>
                                </form>
                            }.into_any()
                        })
                    }}
                </Suspense>
                <Suspense fallback=|| ()>
                    {move || {
                        let s = s.clone();
                        // The op travels in the preview itself.
                        let (_, building, floor, gateway, q) = asked();
                        Suspend::new(async move {
                            match preview.await {
                                None => ().into_any(),
                                Some(Err(_)) => view! { <p class="flash error" id="batch-preview">{tr(lang, "error.validation_failed")}</p> }.into_any(),
                                Some(Ok(p)) => view! {
                                    <BatchConfirm p csrf=s.csrf.clone() building floor gateway q/>
                                }.into_any(),
                            }
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

/// The preview and, when it holds meters, the confirmation that names the count and the shops.
#[component]
fn BatchConfirm(
    p: PreviewView,
    csrf: String,
    building: String,
    floor: String,
    gateway: String,
    q: String,
) -> impl IntoView {
    let lang = use_lang();
    let more = p.shops_total.saturating_sub(p.shops.len());
    view! {
        <section id="batch-preview" data-meters=p.meters.to_string()>
            <h2>{op_text(lang, &p.op)}</h2>
            <p><strong id="batch-count">{p.meters}</strong> " " {tr(lang, "control.meters_in")} " "
               <strong>{p.shops_total}</strong> " " {tr(lang, "control.shops")}</p>
            {(p.skipped_keep_power > 0).then(|| view! {
                <p class="muted" id="batch-skipped">{p.skipped_keep_power} " " {tr(lang, "control.skipped_keep_power")}</p>
            })}
            <ul class="shops" id="batch-shops">
                {p.shops.iter().map(|s| view! { <li>{s.clone()}</li> }).collect_view()}
                {(more > 0).then(|| view! { <li class="muted">{format!("+{more}")}</li> })}
            </ul>
            {(p.meters > 0).then(|| view! {
                <form method="post" action=StartBatch::PATH class="grid" id="batch-start">
                    <Csrf token=csrf/>
                    <input type="hidden" name="op" value=p.op.clone()/>
                    <input type="hidden" name="building" value=building/>
                    <input type="hidden" name="floor" value=floor/>
                    <input type="hidden" name="gateway" value=gateway/>
                    <input type="hidden" name="q" value=q/>
                    <input type="hidden" name="confirm_meters" value=p.meters.to_string()/>
                    <label class="wide"><input type="checkbox" name="confirm" value="yes" required/>
                        " " {tr(lang, "control.batch_confirm")} " " <strong>{p.meters}</strong> " " {tr(lang, "control.meters_in")} " " <strong>{p.shops_total}</strong> " " {tr(lang, "control.shops")}</label>
                    <button type="submit" class="danger">{tr(lang, "control.send")}</button>
                </form>
            })}
        </section>
    }
}

/// A batch's progress, refreshed every few seconds with JavaScript (reload without).
#[component]
pub fn BatchProgressPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let tick = refresh_tick(PROGRESS_REFRESH_S);
    let batch = Resource::new(
        move || (tick.get(), params.read().get("id").unwrap_or_default()),
        |(_, id)| get_batch(id),
    );
    view! {
        <Layout page=move |s| view! {
            <p><a href="/control">{tr(lang, "control.batch_title")}</a> " · " <a href="/commands">{tr(lang, "commands.title")}</a></p>
            <Transition fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match batch.await {
                            Ok((b, commands)) => view! {
                                <h1>{op_text(lang, &b.op)} " · " {b.created_at.clone()}</h1>
                                <dl class="facts" id="batch-progress" data-finished=b.finished.to_string()>
                                    <dt>{tr(lang, "control.meters")}</dt><dd id="batch-meters">{b.meters}</dd>
                                    {(b.skipped > 0).then(|| view! { <dt>{tr(lang, "control.skipped_keep_power")}</dt><dd>{b.skipped}</dd> })}
                                    {b.states.iter().map(|(state, n)| view! {
                                        <dt>{state_text(lang, state)}</dt><dd data-state=state.clone()>{*n}</dd>
                                    }).collect_view()}
                                    <dt>{tr(lang, "common.status")}</dt>
                                    <dd>{tr(lang, if b.finished { "control.finished" } else { "control.running" })}</dd>
                                </dl>
                                <p><a class="button secondary" href=format!("/control/batches/{}", b.id)>{tr(lang, "common.refresh")}</a></p>
                                <CommandTable rows=commands csrf=s.csrf.clone() id="batch-commands"/>
                            }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Transition>
        }.into_any()/>
    }
}

/// The meter page's power panel data. Made by the page itself ([`meter_power_resource`]), not
/// by the panel: a resource first made inside a resolved `Suspend` is not ready when the page
/// hydrates, and the browser would render its fallback over the server's HTML.
pub type MeterPowerResource = Resource<Result<super::views::MeterPowerView, crate::web::WebError>>;
/// The account page's levels and emergency-credit panel data (made by the page, as above).
pub type AccountPowerResource =
    Resource<Result<super::views::AccountPowerView, crate::web::WebError>>;

/// The meter page's power panel data, refreshed every few seconds in the browser.
pub fn meter_power_resource(id: impl Fn() -> String + Send + Sync + 'static) -> MeterPowerResource {
    let tick = refresh_tick(PROGRESS_REFRESH_S);
    Resource::new(move || (tick.get(), id()), |(_, id)| get_meter_power(id))
}

/// The account page's power panel data.
pub fn account_power_resource(
    id: impl Fn() -> String + Send + Sync + 'static,
) -> AccountPowerResource {
    Resource::new(id, super::get_account_power)
}

/// A meter's power state (keep-power, an operator's override, tripped by the rules) and its
/// last commands, refreshed in place.
#[component]
pub fn MeterPower(power: MeterPowerResource, csrf: String) -> impl IntoView {
    let lang = use_lang();
    view! {
        <Transition fallback=|| ()>
            {move || {
                let csrf = csrf.clone();
                Suspend::new(async move {
                    let Ok(p) = power.await else { return ().into_any() };
                    let yes_no = |b: bool| tr(lang, if b { "common.yes" } else { "common.no" });
                    view! {
                        <h2>{tr(lang, "power.title")}</h2>
                        <dl class="facts" id="meter-power">
                            <dt>{tr(lang, "control.op.keep_power_on")}</dt><dd id="meter-keep-power">{yes_no(p.keep_power)}</dd>
                            <dt>{tr(lang, "power.override")}</dt>
                            <dd id="meter-override">{if p.relay_override.is_empty() { tr(lang, "power.override.none") } else { tr(lang, &format!("power.override.{}", p.relay_override)) }}</dd>
                            <dt>{tr(lang, "power.tripped")}</dt><dd id="meter-tripped">{yes_no(p.tripped)}</dd>
                        </dl>
                        {if p.commands.is_empty() {
                            view! { <p class="muted">{tr(lang, "commands.none")}</p> }.into_any()
                        } else {
                            view! {
                                <h3>{tr(lang, "commands.history")}</h3>
                                <CommandTable rows=p.commands csrf id="meter-commands"/>
                            }.into_any()
                        }}
                    }.into_any()
                })
            }}
        </Transition>
    }
}

/// An account's levels in force (its own where set, else the company's) with the form to set
/// its own, and emergency credit (应急电) with its grant form.
#[component]
pub fn AccountPower(power: AccountPowerResource, csrf: String) -> impl IntoView {
    use super::{GrantEmergency, SaveAccountLevels};
    use crate::components::use_kept;
    let lang = use_lang();
    // Context is read here, not after the await: a resumed future has no owner to ask.
    let kept_levels = use_kept("account-levels");
    let kept_emergency = use_kept("account-emergency");
    view! {
        <Suspense fallback=|| ()>
            {move || {
                let (csrf, kept, kept_credit) = (csrf.clone(), kept_levels.clone(), kept_emergency.clone());
                Suspend::new(async move {
                    let Ok(p) = power.await else { return ().into_any() };
                    let in_force = |own: &str, value: &str| if own.is_empty() {
                        format!("¥{value} ({})", tr(lang, "meters.company_default"))
                    } else {
                        format!("¥{value}")
                    };
                    view! {
                        <h2>{tr(lang, "power.levels")}</h2>
                        <dl class="facts" id="account-levels-in-force">
                            <dt>{tr(lang, "meters.alarm1")}</dt><dd>{in_force(&p.own_alarm1, &p.alarm1)}</dd>
                            <dt>{tr(lang, "meters.alarm2")}</dt><dd>{in_force(&p.own_alarm2, &p.alarm2)}</dd>
                            <dt>{tr(lang, "settings.overdraft")}</dt><dd>{in_force(&p.own_overdraft_limit, &p.overdraft_limit)}</dd>
                            <dt>{tr(lang, "settings.restore")}</dt><dd>{in_force(&p.own_restore_level, &p.restore_level)}</dd>
                            {p.credit.clone().map(|(amount, until, in_force)| view! {
                                <dt>{tr(lang, "power.emergency")}</dt>
                                <dd id="account-emergency-credit">"¥" {amount} " · " {until} " · "
                                    {tr(lang, if in_force { "power.emergency_in_force" } else { "power.emergency_ended" })}</dd>
                            })}
                        </dl>
                        {(p.can_levels && p.open).then(|| view! {
                            <form method="post" action=SaveAccountLevels::PATH class="grid" id="account-levels">
                                <Csrf token=csrf.clone()/>
                                <input type="hidden" name="id" value=p.id.clone()/>
                                <p class="muted wide">{tr(lang, "power.levels_hint")}</p>
                                <label>{tr(lang, "meters.alarm1")}<input name="alarm1" inputmode="decimal" value=kept.value_or("alarm1", &p.own_alarm1) placeholder=p.alarm1.clone() aria-invalid=kept.invalid("alarm1")/></label>
                                <label>{tr(lang, "meters.alarm2")}<input name="alarm2" inputmode="decimal" value=kept.value_or("alarm2", &p.own_alarm2) placeholder=p.alarm2.clone() aria-invalid=kept.invalid("alarm2")/></label>
                                <label>{tr(lang, "settings.overdraft")}<input name="overdraft_limit" inputmode="decimal" value=kept.value_or("overdraft_limit", &p.own_overdraft_limit) placeholder=p.overdraft_limit.clone() aria-invalid=kept.invalid("overdraft_limit")/></label>
                                <label>{tr(lang, "settings.restore")}<input name="restore_level" inputmode="decimal" value=kept.value_or("restore_level", &p.own_restore_level) placeholder=p.restore_level.clone() aria-invalid=kept.invalid("restore_level")/></label>
                                <button type="submit">{tr(lang, "common.save")}</button>
                            </form>
                        })}
                        {(p.can_emergency && p.open).then(|| view! {
                            <form method="post" action=GrantEmergency::PATH class="grid" id="account-emergency">
                                <Csrf token=csrf.clone()/>
                                <input type="hidden" name="id" value=p.id.clone()/>
                                <p class="muted wide">{tr(lang, "power.emergency_hint")}</p>
                                <label>{tr(lang, "power.emergency_amount")}<input name="amount" inputmode="decimal" required value=kept_credit.value_or("amount", "") aria-invalid=kept_credit.invalid("amount")/></label>
                                <label>{tr(lang, "power.emergency_hours")}<input name="hours" inputmode="numeric" required value=kept_credit.value_or("hours", "24") aria-invalid=kept_credit.invalid("hours")/></label>
                                <button type="submit">{tr(lang, "power.emergency_grant")}</button>
                            </form>
                        })}
                    }.into_any()
                })
            }}
        </Suspense>
    }
}

/// The alarm list: open field alarms (stale meters, offline gateways, held readings, relays out
/// of step) with an acknowledge button, or the history with who saw each and when it cleared.
#[component]
pub fn AlarmsPage() -> impl IntoView {
    use super::{get_alarms, AcknowledgeAlarm};
    let lang = use_lang();
    let all = query_param("all");
    let shown = all.clone();
    let alarms = Resource::new(all, get_alarms);
    view! {
        <Layout page=move |s| {
            let history = shown() == "1";
            let export = format!("/api/v1/field-alarms.xlsx{}", if history { "?all=true" } else { "" });
            view! {
                <h1>{tr(lang, "alarms.title")}</h1>
                <nav class="tabs">
                    <a href="/alarms" class:current=!history>{tr(lang, "alarms.open")}</a>
                    " " <a href="/alarms?all=1" class:current=history>{tr(lang, "alarms.history")}</a>
                </nav>
                <Suspense fallback=|| ()>
                    {move || {
                        let (s, export) = (s.clone(), export.clone());
                        Suspend::new(async move {
                            let Ok(v) = alarms.await else {
                                return view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any();
                            };
                            view! {
                                {v.can_export.then(|| view! { <p><a href=export download>{tr(lang, "common.export")}</a></p> })}
                                {if v.rows.is_empty() {
                                    view! { <p class="muted" id="no-alarms">{tr(lang, "alarms.none")}</p> }.into_any()
                                } else {
                                    view! {
                                        <div class="table-wrap">
                                            <table id="alarms">
                                                <thead><tr>
                                                    <th>{tr(lang, "alarms.raised_at")}</th><th>{tr(lang, "alarms.kind")}</th>
                                                    <th>{tr(lang, "alarms.target")}</th><th>{tr(lang, "commands.detail")}</th>
                                                    <th>{tr(lang, "alarms.acknowledged_at")}</th><th>{tr(lang, "alarms.cleared_at")}</th><th></th>
                                                </tr></thead>
                                                <tbody>
                                                    {v.rows.into_iter().map(|a| view! {
                                                        <tr data-kind=a.kind.clone()>
                                                            <td>{a.raised_at.clone()}</td>
                                                            <td>{tr(lang, &format!("alarms.kind.{}", a.kind))}</td>
                                                            <td class="mono">{a.target.clone()}</td>
                                                            <td>{a.detail.clone()}</td>
                                                            <td>{a.acknowledged_at.clone()}</td>
                                                            <td>{a.cleared_at.clone()}</td>
                                                            <td>{(v.can_acknowledge && a.cleared_at.is_empty() && a.acknowledged_at.is_empty()).then(|| view! {
                                                                <form method="post" action=AcknowledgeAlarm::PATH class="inline">
                                                                    <Csrf token=s.csrf.clone()/>
                                                                    <input type="hidden" name="id" value=a.id.clone()/>
                                                                    <button type="submit" class="secondary">{tr(lang, "alarms.acknowledge")}</button>
                                                                </form>
                                                            })}</td>
                                                        </tr>
                                                    }).collect_view()}
                                                </tbody>
                                            </table>
                                        </div>
                                    }.into_any()
                                }}
                            }.into_any()
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

/// The notification log: every message written for tenants, with its channel and state.
#[component]
pub fn MessagesPage() -> impl IntoView {
    let lang = use_lang();
    let messages = Resource::new(|| (), |_| super::get_messages());
    view! {
        <Layout page=move |_| view! {
            <h1>{tr(lang, "messages.title")}</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let Ok((rows, can_export)) = messages.await else {
                        return view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any();
                    };
                    view! {
                        {can_export.then(|| view! { <p><a href="/api/v1/notifications.xlsx" download>{tr(lang, "common.export")}</a></p> })}
                        {if rows.is_empty() {
                            view! { <p class="muted" id="no-messages">{tr(lang, "messages.none")}</p> }.into_any()
                        } else {
                            view! {
                                <div class="table-wrap">
                                    <table id="messages">
                                        <thead><tr>
                                            <th>{tr(lang, "messages.created_at")}</th><th>{tr(lang, "meters.shop")}</th>
                                            <th>{tr(lang, "messages.recipient")}</th><th>{tr(lang, "messages.channel")}</th>
                                            <th>{tr(lang, "common.status")}</th><th>{tr(lang, "messages.body")}</th>
                                        </tr></thead>
                                        <tbody>
                                            {rows.into_iter().map(|m| view! {
                                                <tr data-kind=m.kind.clone() data-state=m.state.clone()>
                                                    <td>{m.created_at.clone()}
                                                        {(m.deliver_after != m.created_at).then(|| view! { <br/><span class="muted">{tr(lang, "messages.not_before")} " " {m.deliver_after.clone()}</span> })}</td>
                                                    <td>{m.shop.clone()}</td>
                                                    <td class="mono">{m.recipient.clone()}</td>
                                                    <td>{m.channel.clone()}</td>
                                                    <td>{tr(lang, &format!("messages.state.{}", m.state))}
                                                        {(!m.sent_at.is_empty()).then(|| view! { <br/><span class="muted">{tr(lang, "messages.sent_at")} " " {m.sent_at.clone()}</span> })}
                                                        {(!m.error.is_empty()).then(|| view! { <br/><span class="muted error-note">{m.error.clone()}</span> })}</td>
                                                    <td>{m.body.clone()}</td>
                                                </tr>
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }.into_any()
                        }}
                    }.into_any()
                })}
            </Suspense>
        }.into_any()/>
    }
}

/// Meter-side meters (本地费控): what the platform verified against what each meter reads back
/// — purchase counts (比对充值次数), the shadow balance, the remaining amount, the drift — with
/// the `.xlsx` reconciliation report.
#[component]
pub fn MeterSidePage() -> impl IntoView {
    let lang = use_lang();
    let rows = Resource::new(|| (), |_| super::get_meter_side());
    view! {
        <Layout page=move |_| view! {
            <h1>{tr(lang, "meter_side.title")}</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let Ok((rows, can_export)) = rows.await else {
                        return view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any();
                    };
                    view! {
                        {can_export.then(|| view! { <p><a href="/api/v1/secure/meters.xlsx" download>{tr(lang, "common.export")}</a></p> })}
                        {if rows.is_empty() {
                            view! { <p class="muted" id="no-meter-side">{tr(lang, "meter_side.none")}</p> }.into_any()
                        } else {
                            view! {
                                <div class="table-wrap">
                                    <table id="meter-side">
                                        <thead><tr>
                                            <th>{tr(lang, "meter_side.meter")}</th><th>{tr(lang, "meters.shop")}</th>
                                            <th>{tr(lang, "meter_side.key_version")}</th>
                                            <th>{tr(lang, "meter_side.purchases")}</th>
                                            <th>{tr(lang, "meter_side.in_transit")}</th><th>{tr(lang, "meter_side.shadow")}</th>
                                            <th>{tr(lang, "meter_side.remaining")}</th><th>{tr(lang, "meter_side.drift")}</th>
                                            <th>{tr(lang, "meter_side.price")}</th><th>{tr(lang, "meter_side.read_back_at")}</th>
                                            <th>{tr(lang, "meter_side.in_flight")}</th>
                                        </tr></thead>
                                        <tbody>
                                            {rows.into_iter().map(|m| view! {
                                                <tr data-meter=m.meter_id.clone() class:warn=m.out_of_band>
                                                    <td class="mono"><a href=format!("/meter-side/{}", m.meter_id)>{m.meter_number.clone()}</a></td>
                                                    <td>{m.shop.clone()}</td>
                                                    <td>{m.key_version.clone()}</td>
                                                    <td class="purchases">{format!("{} / {}", m.platform_purchases, m.meter_purchases)}
                                                        {m.out_of_band.then(|| view! { <br/><span class="error-note">{tr(lang, "meter_side.out_of_band")}</span> })}</td>
                                                    <td class="money">{m.in_transit.clone()}</td>
                                                    <td class="money">{m.shadow.clone()}</td>
                                                    <td class="money">{m.remaining.clone()}</td>
                                                    <td class="money drift">{m.drift.clone()}</td>
                                                    <td>{m.price.clone()}</td>
                                                    <td>{m.read_back_at.clone()}</td>
                                                    <td>{m.in_flight}</td>
                                                </tr>
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }.into_any()
                        }}
                    }.into_any()
                })}
            </Suspense>
        }.into_any()/>
    }
}
