//! The counter page (售电): one search box finds a shop's account by shop number or name, holder
//! name or phone, or meter number; each account found has its top-up and refund forms; the
//! cashier's shift opens and closes here; and a vacant shop's account is opened here. Plain
//! forms (work with JavaScript off), each with a server-issued idempotency key.

use super::views::{
    yuan, AccountPageView, CounterAccountView, CounterView, OpeningMeterView, OpeningView,
    SettlementView,
};
use crate::app::use_lang;
use crate::billing::get_counter;
use crate::components::{use_kept, Csrf, Layout};
use crate::i18n::{tr, Lang};
use crate::web::query::query_param;
use leptos::prelude::*;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::billing::{
    AccountClose, AccountCollect, AccountLinkTenant, AccountOpen, AccountPayout, AccountReverse,
    AccountWriteOff, BooksClose, CounterRefund, CounterTopUp, DecideApproval, HeldRelease,
    InvoiceRequest, InvoiceSettle, ShiftClose, ShiftOpen,
};
use leptos::server_fn::ServerFn as _;

/// An available balance as people read it: a negative one is arrears (欠费 ¥x), never a bare
/// minus sign.
pub fn balance_text(lang: Lang, fen: i64) -> String {
    if fen < 0 {
        format!(
            "{} ¥{}",
            tr(lang, "counter.arrears"),
            yuan(fen.saturating_neg())
        )
    } else {
        format!("¥{}", yuan(fen))
    }
}

#[component]
pub fn CounterPage() -> impl IntoView {
    let lang = use_lang();
    let (q, receipt, txn) = (query_param("q"), query_param("receipt"), query_param("txn"));
    let open = query_param("open");
    let source = {
        let (q, receipt, txn) = (q.clone(), receipt.clone(), txn.clone());
        move || (q(), receipt(), txn(), open())
    };
    let counter = Resource::new(source, |(q, receipt, txn, open)| {
        get_counter(q, receipt, txn, open)
    });
    view! {
        <Layout page=move |s| {
            let q = q.clone();
            view! {
                <h1>{tr(lang, "counter.title")}</h1>
                <form method="get" class="filters" id="counter-search">
                    <input name="q" value=q() placeholder=tr(lang, "counter.search") autofocus=true/>
                    <button type="submit">{tr(lang, "common.search")}</button>
                </form>
                <Suspense fallback=|| ()>
                    {move || {
                        let s = s.clone();
                        Suspend::new(async move {
                            match counter.await {
                                Ok(c) => view! { <Counter c csrf=s.csrf.clone()/> }.into_any(),
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
fn Counter(c: CounterView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let receipt = c.receipt.clone().map(|no| (no, c.receipt_txn.clone()));
    let accounts = c.accounts.clone();
    let any = !accounts.is_empty();
    view! {
        {receipt.map(|(no, txn)| view! {
            <p class="receipt-line">{tr(lang, "counter.receipt_no")}": " <strong id="receipt-no">{no}</strong>
                {txn.map(|t| view! { " " <a id="print-receipt" href=format!("/receipts/{t}")>{tr(lang, "counter.print")}</a> })}</p>
        })}
        <ShiftPanel shift=c.shift csrf=csrf.clone() can=c.can_top_up || c.can_refund/>
        <div id="accounts" class="cards">
            {accounts.into_iter().map(|a| view! {
                <AccountCard a csrf=csrf.clone() key_base=c.form_key.clone() can_top_up=c.can_top_up can_refund=c.can_refund/>
            }).collect_view()}
        </div>
        {(!any).then(|| view! { <p class="muted">{tr(lang, "counter.none")}</p> })}
        {c.can_open.then(|| view! { <OpenForm shops=c.vacant_shops.clone() opening=c.opening.clone() csrf=csrf.clone() key=format!("{}-open", c.form_key)/> })}
    }
}

#[component]
fn ShiftPanel(shift: Option<(String, i64, i64)>, csrf: String, can: bool) -> impl IntoView {
    let lang = use_lang();
    let kept_open = use_kept("shift-open-form");
    let kept_close = use_kept("shift-close-form");
    view! {
        <section class="shift" id="shift">
            {match shift {
                Some((opened, float_fen, taken_fen)) => view! {
                    <p>{tr(lang, "counter.shift_open_since")}" " {opened} " · "
                        {tr(lang, "counter.float")}" ¥" {yuan(float_fen)} " · "
                        {tr(lang, "counter.cash_taken")}" ¥" <span id="cash-taken">{yuan(taken_fen)}</span></p>
                    {can.then(|| view! {
                        <form method="post" action=ShiftClose::PATH class="inline" id="shift-close-form">
                            <Csrf token=csrf.clone()/>
                            <label>{tr(lang, "counter.counted")}<input name="counted" inputmode="decimal" required value=kept_close.value_or("counted", "") aria-invalid=kept_close.invalid("counted")/></label>
                            <button type="submit" class="secondary">{tr(lang, "counter.close_shift")}</button>
                        </form>
                    })}
                }.into_any(),
                None => view! {
                    <p class="muted">{tr(lang, "counter.no_shift")}</p>
                    {can.then(|| view! {
                        <form method="post" action=ShiftOpen::PATH class="inline" id="shift-open-form">
                            <Csrf token=csrf.clone()/>
                            <label>{tr(lang, "counter.float")}<input name="float" inputmode="decimal" placeholder="0.00" value=kept_open.value_or("float", "") aria-invalid=kept_open.invalid("float")/></label>
                            <button type="submit" class="secondary">{tr(lang, "counter.open_shift")}</button>
                        </form>
                    })}
                }.into_any(),
            }}
        </section>
    }
}

#[component]
fn AccountCard(
    a: CounterAccountView,
    csrf: String,
    key_base: String,
    can_top_up: bool,
    can_refund: bool,
) -> impl IntoView {
    let lang = use_lang();
    let open = a.state == "open";
    // A refused form comes back on its own account's card only.
    let kept_top_up = Some(use_kept("top-up-form"))
        .filter(|k| k.chose("account_id", &a.id))
        .unwrap_or_default();
    let kept_refund = Some(use_kept("refund-form"))
        .filter(|k| k.chose("account_id", &a.id))
        .unwrap_or_default();
    let methods = move |kept: &crate::web::KeptForm| {
        ["cash", "card", "transfer"]
            .map(|m| view! { <option value=m selected=kept.chose("method", m)>{tr(lang, &format!("counter.method.{m}"))}</option> })
    };
    let (top_up_methods, refund_methods) = (methods(&kept_top_up), methods(&kept_refund));
    view! {
        <article class="card account" data-account=a.id.clone()>
            <h2><a href=format!("/accounts/{}", a.id)>{a.shop.clone()}</a></h2>
            <p>{a.holder.clone()} " · " {a.meters.join(", ")}
                {(!open).then(|| view! { " · " <strong>{tr(lang, &format!("counter.state.{}", a.state))}</strong> })}</p>
            <p class="balance">{tr(lang, "counter.available")}": "
                <strong class="available" class:arrears=a.available_fen < 0>{balance_text(lang, a.available_fen)}</strong>
                {(a.deposit_fen > 0).then(|| view! { " · " {tr(lang, "counter.deposit")} " ¥" {yuan(a.deposit_fen)} })}
                <MeterSideBalances a=a.clone()/></p>
            {(open && can_top_up).then(|| view! {
                <form method="post" action=CounterTopUp::PATH class="inline top-up">
                    <Csrf token=csrf.clone()/>
                    <input type="hidden" name="key" value=format!("{key_base}-{}-top-up", a.id)/>
                    <input type="hidden" name="account_id" value=a.id.clone()/>
                    <label>{tr(lang, "counter.amount")}<input name="amount" inputmode="decimal" required value=kept_top_up.value_or("amount", "") aria-invalid=kept_top_up.invalid("amount")/></label>
                    <select name="method" aria-label=tr(lang, "counter.method")>{top_up_methods}</select>
                    {(!a.meter_choices.is_empty()).then(|| view! {
                        <label>{tr(lang, "counter.top_up_meter")}
                            <select name="meter_id" required aria-invalid=kept_top_up.invalid("meter_id")>
                                {a.meter_choices.iter().map(|(id, number)| view! {
                                    <option value=id.clone() selected=kept_top_up.chose("meter_id", id)>{number.clone()}</option>
                                }).collect_view()}
                            </select></label>
                    })}
                    <button type="submit">{tr(lang, "counter.top_up")}</button>
                </form>
            })}
            {(open && can_refund).then(|| view! {
                <form method="post" action=CounterRefund::PATH class="inline refund">
                    <Csrf token=csrf.clone()/>
                    <input type="hidden" name="key" value=format!("{key_base}-{}-refund", a.id)/>
                    <input type="hidden" name="account_id" value=a.id.clone()/>
                    <label>{tr(lang, "counter.amount")}<input name="amount" inputmode="decimal" required value=kept_refund.value_or("amount", "") aria-invalid=kept_refund.invalid("amount")/></label>
                    <select name="method" aria-label=tr(lang, "counter.method")>{refund_methods}</select>
                    <label>{tr(lang, "counter.reason")}<input name="reason" required maxlength="200" value=kept_refund.value_or("reason", "") aria-invalid=kept_refund.invalid("reason")/></label>
                    <button type="submit" class="secondary">{tr(lang, "counter.refund")}</button>
                </form>
            })}
        </article>
    }
}

/// Opening an account (开户): the short form (any vacant shop; one typed reading for a shop with
/// one meter), or — once a shop is chosen with `?open=<shop>` (a plain GET form, so it works
/// without JavaScript) — one row per meter with its latest stored reading and a field for a
/// typed one.
#[component]
fn OpenForm(
    shops: Vec<(String, String)>,
    opening: Option<OpeningView>,
    csrf: String,
    key: String,
) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("open-form");
    let chosen = opening.as_ref().map(|o| o.shop_id.clone());
    let choose = view! {
        <form method="get" action="/counter" class="filters no-print" id="open-choose">
            <label>{tr(lang, "counter.open_shop_meters")}
                <select name="open">
                    {shops.iter().map(|(id, name)| view! { <option value=id.clone() selected=chosen.as_deref() == Some(id.as_str())>{name.clone()}</option> }).collect_view()}
                </select>
            </label>
            <button type="submit" class="secondary">{tr(lang, "counter.choose_shop")}</button>
        </form>
    };
    let shop_field = match &opening {
        Some(o) => view! {
            <input type="hidden" name="shop_id" value=o.shop_id.clone()/>
            <p class="wide"><strong id="opening-shop">{o.shop.clone()}</strong></p>
        }.into_any(),
        None => view! {
            <label>{tr(lang, "counter.shop")}
                <select name="shop_id" required aria-invalid=kept.invalid("shop_id")>
                    {shops.into_iter().map(|(id, name)| view! { <option value=id.clone() selected=kept.chose("shop_id", &id)>{name}</option> }).collect_view()}
                </select>
            </label>
        }.into_any(),
    };
    let readings = match &opening {
        Some(o) => view! { <OpeningRows meters=o.meters.clone()/> }.into_any(),
        None => view! {
            <label>{tr(lang, "counter.reading_kwh")}<input name="reading_kwh" inputmode="decimal" value=kept.value_or("reading_kwh", "") aria-invalid=kept.invalid("reading_kwh")/></label>
        }.into_any(),
    };
    view! {
        <h2>{tr(lang, "counter.open_account")}</h2>
        {choose}
        <form method="post" action=AccountOpen::PATH class="grid" id="open-form">
            <Csrf token=csrf/>
            <input type="hidden" name="key" value=key/>
            {shop_field}
            <label>{tr(lang, "counter.holder_name")}<input name="holder_name" required value=kept.value_or("holder_name", "") aria-invalid=kept.invalid("holder_name")/></label>
            <label>{tr(lang, "users.phone")}<input name="holder_phone" inputmode="tel" value=kept.value_or("holder_phone", "") aria-invalid=kept.invalid("holder_phone")/></label>
            {readings}
            <label>{tr(lang, "counter.deposit")}<input name="deposit" inputmode="decimal" placeholder="0.00" value=kept.value_or("deposit", "") aria-invalid=kept.invalid("deposit")/></label>
            <label>{tr(lang, "counter.opening_credit")}<input name="opening_credit" inputmode="decimal" placeholder="0.00" value=kept.value_or("opening_credit", "") aria-invalid=kept.invalid("opening_credit")/></label>
            <p class="muted wide">{tr(lang, "counter.open_hint")}</p>
            <button type="submit">{tr(lang, "counter.open")}</button>
        </form>
    }
}

/// One row per meter of the shop being opened: the reading billing would count from, and a field
/// for a typed one (needed only when no fresh reading is stored).
#[component]
fn OpeningRows(meters: Vec<OpeningMeterView>) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("open-form");
    view! {
        <div class="table-wrap wide">
            <table id="opening-meters">
                <thead><tr>
                    <th>{tr(lang, "counter.meter")}</th><th>{tr(lang, "counter.latest_reading")}</th><th>{tr(lang, "counter.reading_kwh")}</th>
                </tr></thead>
                <tbody>
                    {meters.into_iter().enumerate().map(|(i, m)| {
                        let field = format!("meters.{i}.reading_kwh");
                        let latest = if m.latest_kwh.is_empty() {
                            tr(lang, "counter.no_reading")
                        } else {
                            format!("{} kWh · {}", m.latest_kwh, m.latest_at)
                        };
                        view! {
                            <tr>
                                <td>{m.number.clone()}<input type="hidden" name=format!("meters[{i}][meter_id]") value=m.meter_id.clone()/></td>
                                <td class:muted=!m.fresh>{latest}{(!m.fresh).then(|| view! { " · " {tr(lang, "counter.type_reading")} })}</td>
                                <td><input name=format!("meters[{i}][reading_kwh]") inputmode="decimal"
                                    aria-label=format!("{} {}", tr(lang, "counter.reading_kwh"), m.number)
                                    placeholder=if m.fresh { tr(lang, "counter.fresh_used") } else { String::new() }
                                    required=!m.fresh
                                    value=kept.value_or(&field, "") aria-invalid=kept.invalid(&field)/>
                                    {(!m.remaining_on_meter.is_empty()).then(|| {
                                        let accept = format!("meters.{i}.accept_remaining");
                                        view! {
                                            <label class="accept-remaining">{format!("{} ¥{}", tr(lang, "counter.remaining_on_meter"), m.remaining_on_meter)}
                                                <input name=format!("meters[{i}][accept_remaining]") inputmode="decimal" required
                                                    placeholder=m.remaining_on_meter.clone()
                                                    value=kept.value_or(&accept, "") aria-invalid=kept.invalid(&accept)/></label>
                                        }
                                    })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// A receipt, laid out for a 58 mm or 80 mm thermal printer or A4 (`?paper=58|80|a4`), printed
/// from the browser.
#[component]
pub fn ReceiptPage() -> impl IntoView {
    let lang = use_lang();
    let params = leptos_router::hooks::use_params_map();
    let paper = query_param("paper");
    let receipt = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        crate::billing::get_receipt,
    );
    view! {
        <Layout page=move |_| {
            let paper = match paper().as_str() {
                "58" => "paper-58",
                "a4" => "paper-a4",
                _ => "paper-80",
            };
            view! {
                <p class="no-print">
                    <a href="?paper=58">"58 mm"</a>" · "<a href="?paper=80">"80 mm"</a>" · "<a href="?paper=a4">"A4"</a>
                </p>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        match receipt.await {
                            Ok(r) => view! {
                                <section class=format!("receipt {paper}") id="receipt">
                                    <h1>{r.company.clone()}</h1>
                                    {r.reprint.then(|| view! { <p class="reprint" id="reprint">{tr(lang, "receipt.reprint")}</p> })}
                                    <p class="receipt-kind">{tr(lang, &format!("receipt.kind.{}", r.kind))}</p>
                                    <dl>
                                        <dt>{tr(lang, "counter.receipt_no")}</dt><dd id="receipt-number">{r.receipt_no.clone()}</dd>
                                        <dt>{tr(lang, "receipt.time")}</dt><dd>{r.at.clone()}</dd>
                                        <dt>{tr(lang, "counter.shop")}</dt><dd>{r.shop.clone()}</dd>
                                        <dt>{tr(lang, "counter.holder_name")}</dt><dd>{r.holder.clone()}</dd>
                                        <dt>{tr(lang, "receipt.meters")}</dt><dd>{r.meters.join(", ")}</dd>
                                        <dt>{tr(lang, "counter.method")}</dt><dd>{tr(lang, &format!("counter.method.{}", r.method))}</dd>
                                        <dt>{tr(lang, "receipt.amount")}</dt><dd class="amount" id="receipt-amount">"¥"{yuan(r.amount_fen)}</dd>
                                        <dt>{tr(lang, "counter.available")}</dt><dd>{balance_text(lang, r.available_fen)}</dd>
                                    </dl>
                                    {(!r.memo.is_empty()).then(|| view! { <p>{r.memo.clone()}</p> })}
                                    <p class="qr-link">{r.qr_link.clone()}</p>
                                </section>
                                <button type="button" class="no-print" onclick="window.print()">{tr(lang, "counter.print")}</button>
                            }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })}
                </Suspense>
            }.into_any()
        }/>
    }
}

/// An account's page: balances, every movement (with a reversal form on counter movements),
/// and the close form — or, once closed, the settlement.
#[component]
pub fn AccountPage() -> impl IntoView {
    let lang = use_lang();
    let params = leptos_router::hooks::use_params_map();
    let page = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        crate::billing::get_account_page,
    );
    let power = crate::power::pages::account_power_resource(move || {
        params.read().get("id").unwrap_or_default()
    });
    view! {
        <Layout page=move |s| view! {
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match page.await {
                            Ok(v) => view! { <AccountDetail v csrf=s.csrf.clone() power/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn AccountDetail(
    v: AccountPageView,
    csrf: String,
    power: crate::power::pages::AccountPowerResource,
) -> impl IntoView {
    let lang = use_lang();
    let a = v.account.clone();
    let kept_close = use_kept("close-form");
    let kept_reverse = use_kept("reverse-form");
    let one_meter = a.meters.len() == 1;
    view! {
        <h1>{a.shop.clone()}</h1>
        <p>{a.holder.clone()} " · " {a.meters.join(", ")} " · " <strong id="account-state">{tr(lang, &format!("counter.state.{}", a.state))}</strong></p>
        <p class="balance">{tr(lang, "counter.available")}": "
            <strong class="available" class:arrears=a.available_fen < 0>{balance_text(lang, a.available_fen)}</strong>
            " · " {tr(lang, "counter.deposit")} " ¥" {yuan(a.deposit_fen)}
            <MeterSideBalances a=a.clone()/></p>
        {v.settlement.clone().map(|st| view! { <SettlementSlip st account=a.clone()/> })}
        <AfterCloseForms v=v.clone() csrf=csrf.clone()/>
        <Invoices v=v.clone() csrf=csrf.clone()/>
        <Tenants v=v.clone() csrf=csrf.clone()/>
        <crate::power::pages::AccountPower power csrf=csrf.clone()/>
        <h2>{tr(lang, "account.movements")}</h2>
        <div class="table-wrap">
            <table id="movements">
                <thead><tr>
                    <th>{tr(lang, "receipt.time")}</th><th>{tr(lang, "account.kind")}</th><th>{tr(lang, "counter.receipt_no")}</th>
                    <th>{tr(lang, "receipt.amount")}</th><th>{tr(lang, "account.balance")}</th><th></th>
                </tr></thead>
                <tbody>
                    {v.movements.iter().map(|m| {
                        let reversible = m.reversible && v.can_reverse;
                        let kept = Some(kept_reverse.clone()).filter(|k| k.chose("txn_id", &m.txn_id)).unwrap_or_default();
                        view! {
                            <tr>
                                <td>{m.at.clone()}</td>
                                <td>{tr(lang, &format!("account.kind.{}", m.kind))}</td>
                                <td>{(!m.receipt_no.is_empty()).then(|| view! { <a href=format!("/receipts/{}", m.txn_id)>{m.receipt_no.clone()}</a> })}</td>
                                <td class="num">{yuan(m.amount_fen)}</td>
                                <td class="num">{yuan(m.balance_fen)}</td>
                                <td>{reversible.then(|| view! {
                                    <form method="post" action=AccountReverse::PATH class="inline reverse">
                                        <Csrf token=csrf.clone()/>
                                        <input type="hidden" name="key" value=format!("{}-{}-reverse", v.form_key, m.txn_id)/>
                                        <input type="hidden" name="account_id" value=a.id.clone()/>
                                        <input type="hidden" name="txn_id" value=m.txn_id.clone()/>
                                        <input name="reason" required maxlength="200" placeholder=tr(lang, "counter.reason") value=kept.value_or("reason", "") aria-invalid=kept.invalid("reason")/>
                                        <button type="submit" class="secondary">{tr(lang, "account.reverse")}</button>
                                    </form>
                                })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        {v.can_close.then(|| view! {
            <h2>{tr(lang, "account.close")}</h2>
            <form method="post" action=AccountClose::PATH class="grid" id="close-form">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="account_id" value=a.id.clone()/>
                {one_meter.then(|| view! {
                    <label>{tr(lang, "account.final_kwh")}<input name="final_kwh" inputmode="decimal" value=kept_close.value_or("final_kwh", "") aria-invalid=kept_close.invalid("final_kwh")/></label>
                })}
                {(!one_meter).then(|| view! { <input type="hidden" name="final_kwh" value=""/> })}
                <p class="muted wide">{tr(lang, "account.close_hint")}</p>
                {a.meter_side.then(|| view! {
                    {(a.state == "closing").then(|| view! { <p class="flash wide" id="meter-side-pending">{tr(lang, "account.meter_side_pending")}</p> })}
                    <label class="wide"><input type="checkbox" name="last_readback" value="1"/>
                        {tr(lang, "account.close_last_readback")}</label>
                })}
                <button type="submit" class="danger">{tr(lang, "account.close")}</button>
            </form>
        })}
    }
}

/// The printable settlement slip (销户结算单) of a closed account.
#[component]
fn SettlementSlip(st: SettlementView, account: CounterAccountView) -> impl IntoView {
    let lang = use_lang();
    let net = st.net_fen;
    view! {
        <section class="settlement slip" id="settlement">
            <h2>{tr(lang, "account.settlement")}</h2>
            <dl>
                <dt>{tr(lang, "account.shop")}</dt><dd>{account.shop.clone()}</dd>
                <dt>{tr(lang, "account.holder")}</dt><dd>{account.holder.clone()}</dd>
                <dt>{tr(lang, "account.closed_at")}</dt><dd>{st.closed_at.clone()}</dd>
                {(!st.receipt_no.is_empty()).then(|| view! { <dt>{tr(lang, "counter.receipt_no")}</dt><dd>{st.receipt_no.clone()}</dd> })}
                {st.final_readings.iter().map(|(meter, kwh, manual)| view! {
                    <dt>{tr(lang, "account.final_reading")} " " {meter.clone()}</dt>
                    <dd>{kwh.clone()} " kWh" {manual.then(|| view! { " (" {tr(lang, "account.typed")} ")" })}</dd>
                }).collect_view()}
                <dt>{tr(lang, "account.deposit_returned")}</dt><dd>"¥" {yuan(st.deposit_returned_fen)}</dd>
                <dt>{tr(lang, "account.rounding")}</dt><dd>"¥" {yuan(st.rounding_fen)}</dd>
                <dt>{if net >= 0 { tr(lang, "account.owed_to_tenant") } else { tr(lang, "account.owed_by_tenant") }}</dt>
                <dd>"¥" <strong id="settlement-net">{yuan(net.saturating_abs())}</strong></dd>
                <dt>{tr(lang, "account.to_pay_out")}</dt><dd id="settlement-payable">"¥" {yuan(st.payable_fen)}</dd>
                <dt>{tr(lang, "account.arrears_left")}</dt><dd id="settlement-arrears">"¥" {yuan(st.arrears_fen)}</dd>
            </dl>
            <p class="signature">{tr(lang, "account.signature")} "：＿＿＿＿＿＿"</p>
            <button type="button" class="no-print" onclick="window.print()">{tr(lang, "counter.print")}</button>
        </section>
    }
}

/// After a close: pay out what the account is owed, collect its arrears, or ask to write them off.
#[component]
fn AfterCloseForms(v: AccountPageView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let id = v.account.id.clone();
    let methods = move |kept: &crate::web::KeptForm| {
        ["cash", "card", "transfer"]
            .map(|m| view! { <option value=m selected=kept.chose("method", m)>{tr(lang, &format!("counter.method.{m}"))}</option> })
    };
    let (kept_payout, kept_collect, kept_write_off) = (
        use_kept("payout-form"),
        use_kept("collect-form"),
        use_kept("write-off-form"),
    );
    let money_form = |action: &'static str,
                      form_id: &'static str,
                      label: &'static str,
                      kept: crate::web::KeptForm| {
        view! {
            <form method="post" action=action class="inline no-print" id=form_id>
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="key" value=format!("{}-{form_id}", v.form_key)/>
                <input type="hidden" name="account_id" value=id.clone()/>
                <input name="amount" inputmode="decimal" required placeholder=tr(lang, "counter.amount") value=kept.value_or("amount", "") aria-invalid=kept.invalid("amount")/>
                <select name="method" aria-label=tr(lang, "counter.method")>{methods(&kept)}</select>
                <button type="submit">{tr(lang, label)}</button>
            </form>
        }
    };
    view! {
        {v.can_payout.then(|| money_form(AccountPayout::PATH, "payout-form", "account.payout", kept_payout))}
        {v.can_collect.then(|| money_form(AccountCollect::PATH, "collect-form", "account.collect", kept_collect))}
        {v.can_write_off.then(|| view! {
            <form method="post" action=AccountWriteOff::PATH class="inline no-print" id="write-off-form">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="key" value=format!("{}-write-off", v.form_key)/>
                <input type="hidden" name="account_id" value=id.clone()/>
                <input name="reason" required maxlength="200" placeholder=tr(lang, "counter.reason") value=kept_write_off.value_or("reason", "") aria-invalid=kept_write_off.invalid("reason")/>
                <button type="submit" class="secondary">{tr(lang, "account.write_off")}</button>
            </form>
        })}
    }
}

/// The account's invoice (发票) requests: a form to record one, and for each waiting one the
/// invoice number it was issued with (or cancel).
#[component]
fn Invoices(v: AccountPageView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("invoice-form");
    let id = v.account.id.clone();
    view! {
        <h2>{tr(lang, "invoice.title")}</h2>
        {(!v.invoices.is_empty()).then(|| view! {
            <div class="table-wrap">
                <table id="invoices">
                    <thead><tr>
                        <th>{tr(lang, "receipt.time")}</th><th>{tr(lang, "invoice.invoice_title")}</th><th>{tr(lang, "invoice.tax_number")}</th>
                        <th>{tr(lang, "receipt.amount")}</th><th>{tr(lang, "invoice.state")}</th><th></th>
                    </tr></thead>
                    <tbody>
                        {v.invoices.iter().map(|i| view! {
                            <tr>
                                <td>{i.requested_at.clone()}</td><td>{i.title.clone()}</td><td>{i.tax_number.clone()}</td>
                                <td class="num">{yuan(i.amount_fen)}</td>
                                <td>{tr(lang, &format!("invoice.state.{}", i.state))} " " {i.invoice_number.clone()}</td>
                                <td>{(v.can_issue && i.state == "requested").then(|| view! {
                                    <form method="post" action=InvoiceSettle::PATH class="inline issue">
                                        <Csrf token=csrf.clone()/>
                                        <input type="hidden" name="account_id" value=id.clone()/>
                                        <input type="hidden" name="id" value=i.id.clone()/>
                                        <input name="invoice_number" maxlength="40" placeholder=tr(lang, "invoice.number")/>
                                        <button type="submit" name="decision" value="issue">{tr(lang, "invoice.issue")}</button>
                                        <button type="submit" name="decision" value="cancel" class="secondary">{tr(lang, "invoice.cancel")}</button>
                                    </form>
                                })}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        })}
        {v.can_invoice.then(|| view! {
            <form method="post" action=InvoiceRequest::PATH class="grid no-print" id="invoice-form">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="key" value=format!("{}-invoice", v.form_key)/>
                <input type="hidden" name="account_id" value=id.clone()/>
                <label>{tr(lang, "invoice.invoice_title")}<input name="title" required maxlength="200" value=kept.value_or("title", "") aria-invalid=kept.invalid("title")/></label>
                <label>{tr(lang, "invoice.tax_number")}<input name="tax_number" maxlength="20" value=kept.value_or("tax_number", "") aria-invalid=kept.invalid("tax_number")/></label>
                <label>{tr(lang, "counter.amount")}<input name="amount" inputmode="decimal" required value=kept.value_or("amount", "") aria-invalid=kept.invalid("amount")/></label>
                <button type="submit">{tr(lang, "invoice.request")}</button>
            </form>
        })}
    }
}

/// The shop-tenant users who see this account on their phones, and the form that links one by
/// the login they use.
#[component]
fn Tenants(v: AccountPageView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("tenant-form");
    view! {
        <h2>{tr(lang, "account.tenants")}</h2>
        {if v.tenants.is_empty() {
            view! { <p class="muted">{tr(lang, "account.no_tenants")}</p> }.into_any()
        } else {
            view! {
                <ul id="tenants">
                    {v.tenants.iter().map(|t| view! {
                        <li>{t.username.clone()} " " {t.display_name.clone()} " · " {tr(lang, "account.linked_at")} " " {t.linked_at.clone()}</li>
                    }).collect_view()}
                </ul>
            }.into_any()
        }}
        {v.can_link.then(|| view! {
            <form method="post" action=AccountLinkTenant::PATH class="grid no-print" id="tenant-form">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="account_id" value=v.account.id.clone()/>
                <label>{tr(lang, "account.tenant_login")}<input name="username" required inputmode="tel" maxlength="64" value=kept.value_or("username", "") aria-invalid=kept.invalid("username")/></label>
                <button type="submit">{tr(lang, "account.link_tenant")}</button>
            </form>
        })}
    }
}

/// The books (交班与日结): the report of a day, per kind and method; its close once every shift
/// holding its money is closed; the cashier shifts; the latest closes.
#[component]
pub fn BooksPage() -> impl IntoView {
    let lang = use_lang();
    let day = query_param("day");
    let books = Resource::new(day, crate::billing::get_books);
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "books.title")}</h1>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match books.await {
                            Ok(v) => view! { <Books v csrf=s.csrf.clone()/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn Books(v: super::views::BooksView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("close-day-form");
    let opt = |f: Option<i64>| f.map(yuan).unwrap_or_default();
    view! {
        <form method="get" class="filters" id="day-pick">
            <label>{tr(lang, "books.day")}<input type="date" name="day" value=v.day.clone()/></label>
            <button type="submit">{tr(lang, "common.search")}</button>
            <a href=format!("/api/v1/day-report.xlsx?day={}", v.day) download>{tr(lang, "common.export")}</a>
        </form>
        <p>{tr(lang, "books.closed_through")} ": " <strong id="closed-through">{if v.closed_through.is_empty() { tr(lang, "books.none").to_string() } else { v.closed_through.clone() }}</strong></p>
        <div class="table-wrap">
            <table id="day-report">
                <thead><tr><th>{tr(lang, "account.kind")}</th><th>{tr(lang, "counter.method")}</th><th>{tr(lang, "books.count")}</th><th>{tr(lang, "receipt.amount")}</th></tr></thead>
                <tbody>
                    {v.lines.iter().map(|l| view! {
                        <tr>
                            <td>{tr(lang, &format!("account.kind.{}", l.kind))}</td>
                            <td>{(!l.method.is_empty()).then(|| tr(lang, &format!("counter.method.{}", l.method)))}</td>
                            <td class="num">{l.count}</td><td class="num">{yuan(l.amount_fen)}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        {v.day_closed.then(|| view! { <p class="flash ok" id="day-closed">{tr(lang, "books.day_closed")}</p> })}
        {(!v.day_closed && !v.blocking.is_empty()).then(|| view! {
            <p class="flash error" id="blocking">{tr(lang, "books.blocking")} " " {v.blocking.join(", ")}</p>
        })}
        {(v.can_close && !v.day_closed).then(|| view! {
            <form method="post" action=BooksClose::PATH class="inline" id="close-day-form">
                <Csrf token=csrf.clone()/>
                <input type="hidden" name="day" value=kept.value_or("day", &v.day)/>
                <button type="submit" class="danger">{tr(lang, "books.close")} " " {v.day.clone()}</button>
            </form>
        })}
        <h2>{tr(lang, "books.shifts")}</h2>
        <div class="table-wrap">
            <table id="shifts">
                <thead><tr>
                    <th>{tr(lang, "books.cashier")}</th><th>{tr(lang, "books.opened")}</th><th>{tr(lang, "books.closed")}</th>
                    <th>{tr(lang, "books.float")}</th><th>{tr(lang, "books.cash_taken")}</th><th>{tr(lang, "books.counted")}</th><th>{tr(lang, "books.difference")}</th>
                </tr></thead>
                <tbody>
                    {v.shifts.iter().map(|s| view! {
                        <tr>
                            <td>{s.username.clone()}</td><td>{s.opened_at.clone()}</td><td>{s.closed_at.clone()}</td>
                            <td class="num">{yuan(s.float_fen)}</td><td class="num">{yuan(s.cash_taken_fen)}</td>
                            <td class="num">{opt(s.counted_cash_fen)}</td><td class="num">{opt(s.difference_fen)}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
        <p><a href="/api/v1/unbilled-energy.xlsx" download id="unbilled">{tr(lang, "books.unbilled")}</a></p>
        <h2>{tr(lang, "books.closes")}</h2>
        <ul id="closes">
            {v.closes.iter().map(|(day, at)| view! { <li><a href=format!("/books?day={day}")>{day.clone()}</a> " · " {at.clone()}</li> }).collect_view()}
        </ul>
    }
}

/// The approvals inbox (审批): reversals, corrections of held readings and write-offs, waiting for
/// an approver other than the one who asked.
#[component]
pub fn ApprovalsPage() -> impl IntoView {
    let lang = use_lang();
    let approvals = Resource::new(|| (), |_| crate::billing::get_approvals());
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "approvals.title")}</h1>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match approvals.await {
                            Ok(v) if v.items.is_empty() => view! { <p class="muted" id="no-approvals">{tr(lang, "approvals.none")}</p> }.into_any(),
                            Ok(v) => view! {
                                <ul class="approvals" id="approvals">
                                    {v.items.iter().map(|a| view! {
                                        <li data-kind=a.kind.clone()>
                                            <a href=a.link.clone()>{a.subject.clone()}</a>
                                            " · " {tr(lang, &format!("approvals.kind.{}", a.kind))}
                                            {a.amount_fen.map(|f| view! { " ¥" {yuan(f)} })}
                                            {a.energy_kwh.clone().map(|k| view! { " " {k} " kWh" })}
                                            " · " {a.reason.clone()} " · " {a.requested_at.clone()}
                                            {(v.can_approve && !a.own).then(|| view! {
                                                <form method="post" action=DecideApproval::PATH class="inline">
                                                    <Csrf token=s.csrf.clone()/>
                                                    <input type="hidden" name="key" value=format!("{}-{}", v.form_key, a.id)/>
                                                    <input type="hidden" name="id" value=a.id.clone()/>
                                                    <input type="hidden" name="kind" value=a.kind.clone()/>
                                                    <button type="submit" name="decision" value="approve">{tr(lang, "approvals.approve")}</button>
                                                    <button type="submit" name="decision" value="reject" class="secondary">{tr(lang, "approvals.reject")}</button>
                                                </form>
                                            })}
                                            {a.own.then(|| view! { " · " <span class="muted">{tr(lang, "approvals.own")}</span> })}
                                        </li>
                                    }).collect_view()}
                                </ul>
                            }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

/// Held readings (待审读数): meters whose rating stopped at a reset, gap, jump or ratio mismatch.
/// Release as read (as the flag table says) or type the interval's energy (a correction, with a
/// reason); above the company's threshold an approver decides.
#[component]
pub fn HeldReadingsPage() -> impl IntoView {
    let lang = use_lang();
    let held = Resource::new(|| (), |_| crate::billing::get_held());
    view! {
        <Layout page=move |s| view! {
            <h1>{tr(lang, "held.title")}</h1>
            <p><a href="/api/v1/held-readings.xlsx" download>{tr(lang, "common.export")}</a></p>
            <Suspense fallback=|| ()>
                {move || {
                    let s = s.clone();
                    Suspend::new(async move {
                        match held.await {
                            Ok(v) if v.items.is_empty() => view! { <p class="muted" id="no-held">{tr(lang, "held.none")}</p> }.into_any(),
                            Ok(v) => view! { <HeldTable v csrf=s.csrf.clone()/> }.into_any(),
                            Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                        }
                    })
                }}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn HeldTable(v: super::views::HeldPageView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let kept = use_kept("release-form");
    view! {
        <p class="muted">{tr(lang, "held.approval_above")} " " {v.approval_above_kwh.clone()} " kWh"</p>
        <div class="table-wrap">
            <table id="held">
                <thead><tr>
                    <th>{tr(lang, "held.meter")}</th><th>{tr(lang, "held.reason")}</th>
                    <th>{tr(lang, "held.previous")}</th><th>{tr(lang, "held.reading")}</th>
                    <th>{tr(lang, "held.as_read")}</th><th></th>
                </tr></thead>
                <tbody>
                    {v.items.iter().map(|h| {
                        let kept = Some(kept.clone()).filter(|k| k.chose("meter_id", &h.meter_id)).unwrap_or_default();
                        view! {
                            <tr data-meter=h.meter_id.clone()>
                                <td>{h.meter.clone()} <br/> <a href=format!("/accounts/{}", h.account_id)>{h.shop.clone()}</a></td>
                                <td>{tr(lang, &format!("held.flag.{}", h.reason))}</td>
                                <td>{h.previous_at.clone()} <br/> {h.previous_kwh.clone()} " kWh"</td>
                                <td>{h.held_reading_at.clone()} <br/> {h.held_kwh.clone()} " kWh"</td>
                                <td class="num">{h.as_read_kwh.clone()}</td>
                                <td>
                                    {h.waiting.then(|| view! { <span class="muted">{tr(lang, "held.waiting")}</span> })}
                                    {(v.can_review && !h.waiting).then(|| view! {
                                        <form method="post" action=HeldRelease::PATH class="inline release">
                                            <Csrf token=csrf.clone()/>
                                            <input type="hidden" name="key" value=format!("{}-{}", v.form_key, h.meter_id)/>
                                            <input type="hidden" name="meter_id" value=h.meter_id.clone()/>
                                            <input name="kwh" inputmode="decimal" placeholder=tr(lang, "held.kwh_hint") aria-label=tr(lang, "held.kwh") value=kept.value_or("kwh", "") aria-invalid=kept.invalid("kwh")/>
                                            <input name="reason" maxlength="200" placeholder=tr(lang, "counter.reason") value=kept.value_or("reason", "") aria-invalid=kept.invalid("reason")/>
                                            <button type="submit">{tr(lang, "held.release")}</button>
                                        </form>
                                    })}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// A meter-side account's credit on its meters (the shadow balance) and in transit to them.
#[component]
fn MeterSideBalances(a: CounterAccountView) -> impl IntoView {
    let lang = use_lang();
    a.meter_side.then(|| {
        view! {
            " · " <span class="on-meter">{format!("{} ¥{}", tr(lang, "counter.on_meter"), yuan(a.on_meter_fen))}</span>
            {(a.in_transit_fen != 0).then(|| view! {
                " · " <span class="in-transit">{format!("{} ¥{}", tr(lang, "counter.in_transit"), yuan(a.in_transit_fen))}</span>
            })}
        }
    })
}
