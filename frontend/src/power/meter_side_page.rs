//! One meter-side meter's page (`/meter-side/:id`, issue 13: Pages): its secure state — key
//! version, purchase and control counters as the platform verified them and as the meter reads
//! them back, money in transit and on the meter, drift, last read-back — and its purchase history
//! with each frame's state (sequence, amount, the meter's acknowledgement, attempts). A failed
//! purchase whose money waits in transit offers the cancel request (an approver decides); company
//! admins may export the meter's key, shown only when asked for with `key=show` (audited).
//! Plain forms and links: they work without JavaScript.

use super::views::{ExportedKeyView, MeterSideDetailView, SecureCommandView};
use super::{
    export_meter_key, get_meter_side_meter, RekeyMeter, RequestPurchaseCancel, TakeBackCredit,
};
use crate::app::use_lang;
use crate::components::{use_kept, Csrf, Layout};
use crate::i18n::{tr, Lang};
use crate::web::query::query_param;
use crate::web::WebError;
use leptos::prelude::*;
use leptos::server_fn::ServerFn as _;
use leptos_router::hooks::use_params_map;

type KeyResource = Resource<Option<Result<ExportedKeyView, WebError>>>;

#[component]
pub fn MeterSideMeterPage() -> impl IntoView {
    let lang = use_lang();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let meter = Resource::new(id, get_meter_side_meter);
    // Made outside the suspense so the page's render passes share one (audited) export.
    let show = query_param("key");
    let key: KeyResource = Resource::new(
        move || (id(), show() == "show"),
        |(id, show)| async move {
            if show {
                Some(export_meter_key(id).await)
            } else {
                None
            }
        },
    );
    view! {
        <Layout page=move |s| view! {
            <p><a href="/meter-side">"← " {tr(lang, "meter_side.title")}</a></p>
            <Suspense fallback=|| ()>
                {move || {
                    let csrf = s.csrf.clone();
                    Suspend::new(async move {
                        match meter.await {
                            Ok(m) => view! { <MeterSideDetail m csrf key/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn MeterSideDetail(m: MeterSideDetailView, csrf: String, key: KeyResource) -> impl IntoView {
    let lang = use_lang();
    let r = m.row.clone();
    let title = format!("{} {}", tr(lang, "meter_side.meter_title"), r.meter_number);
    view! {
        <h1>{title}</h1>
        <dl class="facts" id="secure-state">
            <dt>{tr(lang, "meters.shop")}</dt><dd>{r.shop.clone()}</dd>
            <dt>{tr(lang, "meter_side.key_version")}</dt><dd id="key-version">{r.key_version.clone()}</dd>
            <dt>{tr(lang, "meter_side.purchases")}</dt>
            <dd id="purchase-counts">{format!("{} / {}", r.platform_purchases, r.meter_purchases)}
                {r.out_of_band.then(|| view! { <br/><span class="error-note">{tr(lang, "meter_side.out_of_band")}</span> })}</dd>
            <dt>{tr(lang, "meter_side.controls")}</dt>
            <dd id="control-counts">{format!("{} / {}", m.platform_controls, m.meter_controls)}</dd>
            <dt>{tr(lang, "meter_side.in_transit")}</dt><dd class="money" id="in-transit">{r.in_transit.clone()}</dd>
            <dt>{tr(lang, "meter_side.shadow")}</dt><dd class="money" id="shadow">{r.shadow.clone()}</dd>
            <dt>{tr(lang, "meter_side.remaining")}</dt><dd class="money" id="remaining">{r.remaining.clone()}</dd>
            <dt>{tr(lang, "meter_side.drift")}</dt><dd class="money">{r.drift.clone()}</dd>
            <dt>{tr(lang, "meter_side.price")}</dt><dd>{r.price.clone()}</dd>
            <dt>{tr(lang, "meter_side.read_back_at")}</dt><dd>{r.read_back_at.clone()}</dd>
            <dt>{tr(lang, "meter_side.in_flight")}</dt><dd>{r.in_flight}</dd>
        </dl>
        <p><a href=format!("/meters/{}", r.meter_id)>{tr(lang, "meter_side.meter_page")}</a></p>
        {m.can_deduct.then(|| view! { <Deduct meter_id=r.meter_id.clone() csrf=csrf.clone()/> })}
        {m.can_export_key.then(|| view! {
            <Rekey meter_id=r.meter_id.clone() held=r.key_version.clone() rekey_to=m.rekey_to
                newest=m.newest_key_version csrf=csrf.clone()/>
            <KeyExport meter_id=r.meter_id.clone() key/>
        })}
        <h2>{tr(lang, "meter_side.history")}</h2>
        <History rows=m.history meter_id=r.meter_id csrf/>
    }
}

/// Taking credit back off the meter (表内扣回) before a refund at the counter.
#[component]
fn Deduct(meter_id: String, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("deduct-form");
    view! {
        <h2>{tr(lang, "meter_side.deduct")}</h2>
        <p class="muted">{tr(lang, "meter_side.deduct_hint")}</p>
        <form method="post" action=TakeBackCredit::PATH class="inline" id="deduct-form">
            <Csrf token=csrf/>
            <input type="hidden" name="meter" value=meter_id/>
            <label>{tr(lang, "counter.amount")}<input name="amount" inputmode="decimal" required
                value=kept.value_or("amount", "") aria-invalid=kept.invalid("amount")/></label>
            <label>{tr(lang, "counter.reason")}<input name="reason" required maxlength="200"
                value=kept.value_or("reason", "") aria-invalid=kept.invalid("reason")/></label>
            <button type="submit" class="secondary">{tr(lang, "meter_side.deduct")}</button>
        </form>
    }
}

/// The meter's re-key onto the newest master key version (company admins): start it, then —
/// once the field loaded the exported new key — verify it, or abandon it.
#[component]
fn Rekey(
    meter_id: String,
    held: String,
    rekey_to: Option<i32>,
    newest: Option<i32>,
    csrf: String,
) -> impl IntoView {
    let lang = use_lang();
    let behind = newest.is_some_and(|n| held.parse::<i32>().is_ok_and(|h| h < n));
    let form = move |action: &'static str, label: &'static str| {
        view! {
            <form method="post" action=RekeyMeter::PATH class="inline">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="meter" value=meter_id.clone()/>
                <input type="hidden" name="action" value=action/>
                <button type="submit" class="secondary" id=format!("rekey-{action}")>{tr(lang, label)}</button>
            </form>
        }
    };
    match rekey_to {
        Some(to) => view! {
            <h2>{tr(lang, "meter_side.rekey")}</h2>
            <p id="rekey-state">{format!("{} {held} → {to}", tr(lang, "meter_side.rekey_waiting"))}</p>
            <p class="muted">{tr(lang, "meter_side.rekey_steps")}</p>
            <div class="actions">
                {form("verify", "meter_side.rekey_verify")}
                {form("abandon", "meter_side.rekey_abandon")}
            </div>
        }.into_any(),
        None if behind => view! {
            <h2>{tr(lang, "meter_side.rekey")}</h2>
            <p id="rekey-state">{format!("{} {held} / {}", tr(lang, "meter_side.rekey_behind"), newest.unwrap_or_default())}</p>
            {form("start", "meter_side.rekey_start")}
        }.into_any(),
        None => ().into_any(),
    }
}

/// The key export: a link that asks for it (each look is audited), then the key once.
#[component]
fn KeyExport(meter_id: String, key: KeyResource) -> impl IntoView {
    let lang = use_lang();
    let href = format!("/meter-side/{meter_id}?key=show");
    view! {
        <h2>{tr(lang, "meter_side.key_export")}</h2>
        <Suspense fallback=|| ()>
            {move || {
                let href = href.clone();
                Suspend::new(async move {
                    match key.await {
                        Some(Ok(k)) => view! {
                            <dl class="facts" id="meter-key">
                                <dt>{tr(lang, "meter_side.key_version")}</dt><dd>{k.key_version}</dd>
                                <dt>"KM"</dt><dd class="mono" id="meter-key-hex">{k.meter_key_hex}</dd>
                            </dl>
                            <p class="muted">{tr(lang, "meter_side.key_audited")}</p>
                        }.into_any(),
                        Some(Err(e)) => view! {
                            <p class="flash error">{tr(lang, &format!("error.{}", crate::web::query::server_error_code(&e)))}</p>
                        }.into_any(),
                        None => view! {
                            <p class="muted">{tr(lang, "meter_side.key_hint")}</p>
                            <p><a href=href id="key-show">{tr(lang, "meter_side.key_show")}</a></p>
                        }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

fn op_text(lang: Lang, op: &str) -> String {
    tr(lang, &format!("control.op.{op}"))
}

/// The meter's secure commands, newest first.
#[component]
fn History(rows: Vec<SecureCommandView>, meter_id: String, csrf: String) -> impl IntoView {
    let lang = use_lang();
    if rows.is_empty() {
        return view! { <p class="muted">{tr(lang, "meter_side.no_history")}</p> }.into_any();
    }
    view! {
        <div class="table-wrap">
            <table id="secure-history">
                <thead><tr>
                    <th>{tr(lang, "commands.created_at")}</th><th>{tr(lang, "control.op")}</th>
                    <th>{tr(lang, "meter_side.sequence")}</th><th>{tr(lang, "meter_side.amount")}</th>
                    <th>{tr(lang, "common.status")}</th><th>{tr(lang, "meter_side.ack")}</th>
                    <th>{tr(lang, "commands.sends")}</th><th>{tr(lang, "commands.detail")}</th><th></th>
                </tr></thead>
                <tbody>
                    {rows.into_iter().map(|c| {
                        let cancel = c.cancellable.then(|| view! {
                            <form method="post" action=RequestPurchaseCancel::PATH class="inline cancel-purchase">
                                <Csrf token=csrf.clone()/>
                                <input type="hidden" name="meter" value=meter_id.clone()/>
                                <input type="hidden" name="command" value=c.id.clone()/>
                                // One request per purchase: asking again answers with the same one.
                                <input type="hidden" name="key" value=format!("web-purchase-cancel-{}", c.id)/>
                                <input name="reason" required placeholder=tr(lang, "meter_side.cancel_reason")/>
                                <button type="submit" class="secondary">{tr(lang, "meter_side.cancel")}</button>
                            </form>
                        });
                        view! {
                            <tr data-command=c.id.clone() data-state=c.state.clone()>
                                <td>{c.created_at}</td>
                                <td>{op_text(lang, &c.op)}</td>
                                <td class="mono">{c.sequence}</td>
                                <td class="money">{c.amount}</td>
                                <td>{tr(lang, &format!("commands.state.{}", c.state))}</td>
                                <td class="mono">{c.ack_status}</td>
                                <td>{c.attempts}</td>
                                <td>{c.detail}</td>
                                <td>{cancel}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
    .into_any()
}
