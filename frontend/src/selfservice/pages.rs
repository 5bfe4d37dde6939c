//! The tenant's phone pages. Plain forms and links throughout (they work with JavaScript off and
//! inside WeChat's and Alipay's browsers); one column, large buttons, nothing wider than a
//! 360-px screen.

use super::views::*;
use crate::app::use_lang;
use crate::billing::yuan;
use crate::chart::{StackSlot, StackedEnergyChart};
use crate::components::{Csrf, Flash, LanguageSwitch, Layout};
use crate::field::pages::fleet::age_text;
use crate::i18n::{tr, Lang};
use crate::web::query::{query_param, query_string};
use leptos::prelude::*;
use powertab_core::kernel::money::format_wh_as_kwh;
// Form actions name their server functions: a renamed endpoint cannot leave a form behind.
use crate::selfservice::{
    MyEmergency, MyTopUp, SaveMyPreferences, TenantCodeLogin, TenantResetPassword, TenantSendCode,
};
use leptos::server_fn::ServerFn as _;

/// The TOU periods as the charts stack them (sharp at the bottom), with their CSS classes.
fn periods(lang: Lang) -> Vec<(&'static str, String)> {
    [
        ("p-sharp", "sharp"),
        ("p-peak", "peak"),
        ("p-flat", "flat"),
        ("p-valley", "valley"),
        ("p-deep", "deep_valley"),
    ]
    .into_iter()
    .map(|(class, p)| (class, tr(lang, &format!("period.{p}"))))
    .collect()
}

fn stack(bars: &[UsageBar]) -> Vec<StackSlot> {
    bars.iter()
        .map(|b| StackSlot {
            label: b.label.clone(),
            title: format!("{} ¥{}", b.title, yuan(b.charge_fen)),
            parts_wh: b.by_period_wh.to_vec(),
        })
        .collect()
}

/// `/t/{company}`: the QR code's page. It only pre-fills the company and the meter; the phone
/// proves itself with an SMS code (or its password, on the login page).
#[component]
pub fn TenantLandingPage() -> impl IntoView {
    let lang = use_lang();
    let params = leptos_router::hooks::use_params_map();
    let (meter, phone, sent, reset) = (
        query_param("meter"),
        query_param("phone"),
        query_param("sent"),
        query_param("reset"),
    );
    let landing = Resource::new(
        move || params.read().get("slug").unwrap_or_default(),
        super::get_landing,
    );
    view! {
        <main class="login tenant">
            <div class="card">
                <div class="login-head">
                    <h1>{tr(lang, "app.name")}</h1>
                    <LanguageSwitch/>
                </div>
                <Flash/>
                <Suspense fallback=|| ()>
                    {move || {
                        let (meter, phone, sent, reset) = (meter(), phone(), sent(), reset());
                        Suspend::new(async move {
                            match landing.await {
                                Ok(l) if l.company_name.is_some() => view! {
                                    <LandingForms l meter phone sent=!sent.is_empty() reset=!reset.is_empty()/>
                                }.into_any(),
                                _ => view! { <p class="flash error" id="no-company">{tr(lang, "tenant.no_company")}</p> }.into_any(),
                            }
                        })
                    }}
                </Suspense>
            </div>
        </main>
    }
}

#[component]
fn LandingForms(
    l: LandingView,
    meter: String,
    phone: String,
    sent: bool,
    reset: bool,
) -> impl IntoView {
    let lang = use_lang();
    let company = l.company_name.clone().unwrap_or_default();
    let slug = l.slug.clone();
    let purpose = if reset { "reset" } else { "login" };
    let my = format!("/my?{}", query_string(&[("meter", meter.as_str())]));
    let password_login = format!(
        "/login?company={}",
        crate::web::query::percent_encode(&slug)
    );
    let other_mode = if reset {
        format!("/t/{}?{}", slug, query_string(&[("meter", meter.as_str())]))
    } else {
        format!(
            "/t/{}?{}",
            slug,
            query_string(&[("meter", meter.as_str()), ("reset", "1")])
        )
    };
    view! {
        <p class="company-name" id="company-name">{company}</p>
        {(!meter.is_empty()).then(|| view! { <p class="muted" id="qr-meter">{tr(lang, "tenant.meter")}" "{meter.clone()}</p> })}
        {l.signed_in.then(|| view! { <p><a href=my.clone() class="button" id="go-my">{tr(lang, "tenant.go_home")}</a></p> })}
        <h2>{tr(lang, if reset { "tenant.reset_title" } else { "tenant.login_title" })}</h2>
        <form method="post" action=TenantSendCode::PATH class="stack" id="code-form">
            <input type="hidden" name="company" value=slug.clone()/>
            <input type="hidden" name="purpose" value=purpose/>
            <input type="hidden" name="meter" value=meter.clone()/>
            <label>
                {tr(lang, "tenant.phone")}
                <input name="phone" type="tel" inputmode="numeric" autocomplete="tel" required value=phone.clone()
                    placeholder="13800138000"/>
            </label>
            <button type="submit" class=if sent { "secondary" } else { "" } id="send-code">
                {tr(lang, if sent { "tenant.resend_code" } else { "tenant.send_code" })}
            </button>
        </form>
        {sent.then(|| {
            let hint = view! { <p class="muted" id="code-sent">{tr(lang, "tenant.code_sent")}</p> };
            if reset {
                view! {
                    {hint}
                    <form method="post" action=TenantResetPassword::PATH class="stack" id="reset-form">
                        <input type="hidden" name="company" value=slug.clone()/>
                        <input type="hidden" name="phone" value=phone.clone()/>
                        <label>{tr(lang, "tenant.code")}
                            <input name="code" inputmode="numeric" autocomplete="one-time-code" required maxlength="6"/></label>
                        <label>{tr(lang, "password.new")}
                            <input name="new_password" type="password" autocomplete="new-password" required/></label>
                        <button type="submit" id="reset-submit">{tr(lang, "tenant.set_password")}</button>
                    </form>
                }.into_any()
            } else {
                view! {
                    {hint}
                    <form method="post" action=TenantCodeLogin::PATH class="stack" id="code-login-form">
                        <input type="hidden" name="company" value=slug.clone()/>
                        <input type="hidden" name="phone" value=phone.clone()/>
                        <input type="hidden" name="meter" value=meter.clone()/>
                        <label>{tr(lang, "tenant.code")}
                            <input name="code" inputmode="numeric" autocomplete="one-time-code" required maxlength="6"/></label>
                        <button type="submit" id="code-login">{tr(lang, "tenant.login")}</button>
                    </form>
                }.into_any()
            }
        })}
        <p class="links">
            <a href=password_login id="password-login">{tr(lang, "tenant.password_login")}</a>
            " · "
            <a href=other_mode id="other-mode">{tr(lang, if reset { "tenant.back_to_code" } else { "tenant.forgot_password" })}</a>
        </p>
    }
}

fn power_text(lang: Lang, power: &str) -> String {
    tr(lang, &format!("tenant.power.{power}"))
}

fn days_left_text(lang: Lang, days: Option<i64>) -> String {
    match days {
        None => "—".into(),
        Some(d) => format!("{d} {}", tr(lang, "tenant.days")),
    }
}

/// `/my`: the tenant's account — balance first, then power, days left, meters, usage, money.
#[component]
pub fn MyHomePage() -> impl IntoView {
    let lang = use_lang();
    let (account, meter) = (query_param("account"), query_param("meter"));
    let home = Resource::new(
        move || (account(), meter()),
        |(account, meter)| super::get_my_home(account, meter),
    );
    view! {
        <Layout page=move |s| {
            // The tenant's home; staff have theirs.
            if s.role != "shop_tenant" {
                return view! { <leptos_router::components::Redirect path="/"/> }.into_any();
            }
            let csrf = s.csrf.clone();
            view! {
                <Suspense fallback=|| ()>
                    {move || {
                        let csrf = csrf.clone();
                        Suspend::new(async move {
                            match home.await {
                                Ok(h) => view! { <MyHome h csrf/> }.into_any(),
                                Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                            }
                        })
                    }}
                </Suspense>
            }.into_any()
        }/>
    }
}

/// Inside WeChat, a login not yet linked to the tenant's WeChat is sent once through the
/// official account's silent authorisation (not again after a failure, which comes back with
/// `error`); elsewhere a link offers it.
#[component]
fn WechatLink(linked: Option<bool>, in_wechat: bool) -> impl IntoView {
    let lang = use_lang();
    let failed = !query_param("error")().is_empty();
    (linked == Some(false)).then(|| {
        view! {
            {(in_wechat && !failed).then(|| view! { <meta http-equiv="refresh" content="0;url=/wechat/oauth/start"/> })}
            <p class="links"><a href="/wechat/oauth/start" id="wechat-link">{tr(lang, "tenant.wechat_link")}</a></p>
        }
    })
}

#[component]
fn MyHome(h: MyHomeView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let wechat = view! { <WechatLink linked=h.wechat_linked in_wechat=h.in_wechat/> };
    let switcher = (h.accounts.len() > 1).then(|| {
        let selected = h.selected.as_ref().map(|a| a.id.clone()).unwrap_or_default();
        let links = h
            .accounts
            .iter()
            .map(|a| {
                let current = a.id == selected;
                let closed = a.state == "closed";
                view! {
                    <a href=format!("/my?account={}", a.id) class=if current { "chip current" } else { "chip" }
                        aria-current=current.then_some("page")>
                        {a.shop.clone()}{closed.then(|| format!(" ({})", tr(lang, "tenant.closed")))}
                    </a>
                }
            })
            .collect_view();
        view! { <nav class="switcher" id="account-switcher">{links}</nav> }
    });
    let Some(a) = h.selected else {
        return view! {
            <h1>{tr(lang, "tenant.home_title")}</h1>
            <p class="flash" id="no-account">{tr(lang, "tenant.no_account")}</p>
            {wechat}
        }
        .into_any();
    };
    view! {
        {switcher}
        <MyAccount a csrf/>
        {wechat}
    }
    .into_any()
}

#[component]
fn MyAccount(a: MyAccountView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let closed = a.state == "closed";
    let balance_class = if a.available_fen < 0 || a.alarm_level >= 2 {
        "balance low"
    } else if a.alarm_level == 1 {
        "balance warn"
    } else {
        "balance"
    };
    let top_up = format!("/my/top-up?account={}", a.id);
    let alarm = (a.power == "off").then(|| {
        view! { <p class="flash error" id="power-cut">{tr(lang, "tenant.power_cut")}</p> }.into_any()
    }).or_else(|| (a.alarm_level > 0).then(|| {
        view! { <p class="flash error" id="alarm-level">{tr(lang, &format!("tenant.alarm.{}", a.alarm_level))}</p> }.into_any()
    }));
    let emergency = a.emergency_in_force.clone().map(|(fen, until)| {
        view! { <p class="flash ok" id="emergency-in-force">{tr(lang, "tenant.emergency_in_force")}" ¥"{yuan(fen)}" · "{until}</p> }
    });
    let grant = a.may_grant_emergency.then(|| {
        let (csrf, id) = (csrf.clone(), a.id.clone());
        view! {
            <form method="post" action=MyEmergency::PATH class="stack" id="emergency-form">
                <Csrf token=csrf/>
                <input type="hidden" name="account_id" value=id/>
                <button type="submit" class="secondary" id="emergency-grant">
                    {tr(lang, "tenant.emergency_grant")}" ¥"{yuan(a.emergency_fen)}" / "{a.emergency_hours}" h"
                </button>
            </form>
        }
    });
    let meters = a
        .meters
        .iter()
        .map(|m| {
            let relay = match m.relay_closed {
                Some(true) => tr(lang, "tenant.relay_closed"),
                Some(false) => tr(lang, "tenant.relay_open"),
                None => "—".into(),
            };
            let remaining = a.meter_side.then(|| {
                view! {
                    <dt>{tr(lang, "tenant.meter_remaining")}</dt>
                    <dd class="meter-remaining">
                        {m.remaining_fen.map(|f| format!("¥{}", yuan(f))).unwrap_or_else(|| "—".into())}
                        " · "{age_text(m.remaining_age_s)}
                    </dd>
                }
            });
            view! {
                <section class="meter-card">
                    <h3>{tr(lang, "tenant.meter")}" "{m.number.clone()}</h3>
                    <dl class="facts">
                        <dt>{tr(lang, "tenant.reading")}</dt>
                        <dd>{m.energy_wh.map(|wh| format!("{} kWh", format_wh_as_kwh(wh))).unwrap_or_else(|| "—".into())}
                            " · "{age_text(m.reading_age_s)}</dd>
                        <dt>{tr(lang, "tenant.relay")}</dt><dd class="relay">{relay}</dd>
                        {remaining}
                    </dl>
                </section>
            }
        })
        .collect_view();
    let lines = a
        .lines
        .iter()
        .map(|l| {
            let receipt = l.receipt_txn.clone().map(|t| {
                view! { <a href=format!("/receipts/{t}") class="receipt-link">{l.receipt_no.clone().unwrap_or_default()}</a> }
            });
            view! {
                <tr>
                    <td>{l.at.clone()}</td>
                    <td>{tr(lang, &format!("account.kind.{}", l.kind))}</td>
                    <td class="num">{if l.amount_fen > 0 { "+" } else { "" }}{yuan(l.amount_fen)}</td>
                    <td>{receipt}</td>
                </tr>
            }
        })
        .collect_view();
    let orders = a
        .orders
        .iter()
        .map(|o| {
            view! {
                <li><a href=format!("/my/orders/{}", o.id)>{o.created.clone()}" ¥"{yuan(o.amount_fen)}" · "{tr(lang, &format!("order.state.{}", o.state))}</a></li>
            }
        })
        .collect_view();
    let days = stack(&a.days);
    let months = stack(&a.months);
    view! {
        <h1 id="shop">{a.shop.clone()}{closed.then(|| format!(" ({})", tr(lang, "tenant.closed")))}</h1>
        <section class=balance_class id="balance-card">
            <p class="muted">{tr(lang, "tenant.available")}</p>
            <p class="amount" id="available">{crate::billing::pages::balance_text(lang, a.available_fen)}</p>
            <dl class="facts">
                <dt>{tr(lang, "tenant.power")}</dt><dd id="power-state" data-power=a.power.clone()>{power_text(lang, &a.power)}</dd>
                <dt>{tr(lang, "tenant.days_left")}</dt><dd id="days-left">{days_left_text(lang, a.days_left)}</dd>
                <dt>{tr(lang, "tenant.daily_average")}</dt>
                <dd>{a.average_daily_fen.map(|f| format!("¥{}", yuan(f))).unwrap_or_else(|| "—".into())}</dd>
            </dl>
            {alarm}
            {emergency}
            {(a.can_top_up).then(|| view! { <a href=top_up.clone() class="button big" id="top-up">{tr(lang, "tenant.top_up")}</a> })}
            {(!closed && !a.can_top_up).then(|| view! { <p class="muted" id="no-online">{tr(lang, "tenant.no_online_payment")}</p> })}
            {grant}
        </section>
        {meters}
        <section>
            <h2>{tr(lang, "tenant.usage_days")}</h2>
            <StackedEnergyChart id="usage-days" slots=days label_every=3 parts=periods(lang)/>
            <h2>{tr(lang, "tenant.usage_months")}</h2>
            <StackedEnergyChart id="usage-months" slots=months label_every=2 parts=periods(lang)/>
        </section>
        <section>
            <h2>{tr(lang, "tenant.orders")}</h2>
            <ul class="plain" id="orders">{orders}</ul>
            <h2>{tr(lang, "tenant.movements")}</h2>
            <table class="compact" id="movements"><tbody>{lines}</tbody></table>
        </section>
        <p class="links"><a href="/my/preferences" id="preferences">{tr(lang, "tenant.preferences")}</a></p>
    }
}

/// `/my/top-up?account=…&meter=…`: presets and a custom amount within the company's limits,
/// and for a meter-side account the meter to credit.
#[component]
pub fn MyTopUpPage() -> impl IntoView {
    let lang = use_lang();
    let (account, meter) = (query_param("account"), query_param("meter"));
    let page = Resource::new(
        move || (account(), meter()),
        |(account, meter)| super::get_my_top_up(account, meter),
    );
    view! {
        <Layout page=move |s| {
            let csrf = s.csrf.clone();
            view! {
                <h1>{tr(lang, "tenant.top_up")}</h1>
                <Suspense fallback=|| ()>
                    {move || {
                        let csrf = csrf.clone();
                        Suspend::new(async move {
                            match page.await {
                                Ok(t) => view! { <TopUpForms t csrf/> }.into_any(),
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
fn TopUpForms(t: TopUpView, csrf: String) -> impl IntoView {
    let lang = use_lang();
    let back = view! { <p class="links"><a href=format!("/my?account={}", t.account_id)>{tr(lang, "tenant.back")}</a></p> };
    if !t.open || !t.payable {
        return view! {
            <p class="flash error" id="top-up-unavailable">{tr(lang, if t.open { "tenant.no_online_payment" } else { "tenant.account_not_open" })}</p>
            {back}
        }
        .into_any();
    }
    let meter_field = |chosen: &str| {
        (!t.meters.is_empty()).then(|| {
            let options = t
                .meters
                .iter()
                .map(|(id, number)| view! { <option value=id.clone() selected=id == chosen>{number.clone()}</option> })
                .collect_view();
            view! { <label>{tr(lang, "tenant.meter_to_credit")}<select name="meter_id">{options}</select></label> }
        })
    };
    let presets = t
        .presets_fen
        .iter()
        .map(|fen| {
            view! {
                <form method="post" action=MyTopUp::PATH class="preset">
                    <Csrf token=csrf.clone()/>
                    <input type="hidden" name="account_id" value=t.account_id.clone()/>
                    <input type="hidden" name="amount" value=yuan(*fen)/>
                    {meter_field(&t.meter_id)}
                    <button type="submit" class="big" data-amount=yuan(*fen)>"¥"{yuan(*fen)}</button>
                </form>
            }
        })
        .collect_view();
    let limits = format!(
        "{} ¥{} – ¥{}",
        tr(lang, "tenant.limits"),
        yuan(t.min_fen),
        yuan(t.max_fen)
    );
    view! {
        <p>{t.shop.clone()}" · "{tr(lang, "tenant.available")}" "{crate::billing::pages::balance_text(lang, t.available_fen)}</p>
        <div class="presets" id="presets">{presets}</div>
        <form method="post" action=MyTopUp::PATH class="stack" id="custom-top-up">
            <Csrf token=csrf.clone()/>
            <input type="hidden" name="account_id" value=t.account_id.clone()/>
            <label>{tr(lang, "tenant.custom_amount")}
                <input name="amount" inputmode="decimal" required placeholder="100.00"/></label>
            <p class="muted">{limits}</p>
            {meter_field(&t.meter_id)}
            <button type="submit" id="custom-pay">{tr(lang, "tenant.pay")}</button>
        </form>
        {back}
    }
    .into_any()
}

/// `/my/orders/{id}`: the payment's progress — refreshed every 2 s until it is settled (plain
/// `meta refresh`, so it works without JavaScript and inside in-app browsers).
#[component]
pub fn MyOrderPage() -> impl IntoView {
    let lang = use_lang();
    let params = leptos_router::hooks::use_params_map();
    let order = Resource::new(
        move || params.read().get("id").unwrap_or_default(),
        super::get_my_order,
    );
    view! {
        <Layout page=move |_| view! {
            <h1>{tr(lang, "tenant.order_title")}</h1>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match order.await {
                        Ok(o) => view! { <OrderProgress o/> }.into_any(),
                        Err(_) => view! { <p class="flash error">{tr(lang, "error.not_found")}</p> }.into_any(),
                    }
                })}
            </Suspense>
        }.into_any()/>
    }
}

#[component]
fn OrderProgress(o: MyOrderView) -> impl IntoView {
    let lang = use_lang();
    let mut steps = vec!["created", "credited"];
    if o.meter_side {
        steps.push("delivered");
    }
    let reached = |step: &str| {
        matches!(
            (step, o.state.as_str()),
            ("created", _) | ("credited", "credited" | "delivered") | ("delivered", "delivered")
        )
    };
    let list = steps
        .iter()
        .map(|s| {
            let done = reached(s);
            view! { <li class=if done { "done" } else { "waiting" }>{if done { "✓ " } else { "… " }}{tr(lang, &format!("tenant.step.{s}"))}</li> }
        })
        .collect_view();
    let failed = matches!(
        o.state.as_str(),
        "expired"
            | "cancelled"
            | "amount_mismatch"
            | "refund_pending"
            | "refunded"
            | "refund_failed"
    );
    let message = if o.delivery_slow {
        Some(("flash error", tr(lang, "tenant.delivery_slow")))
    } else if failed {
        Some((
            "flash error",
            tr(lang, &format!("tenant.order_failed.{}", o.state)),
        ))
    } else if o.settled {
        Some(("flash ok", tr(lang, "tenant.order_done")))
    } else {
        None
    };
    view! {
        {(!o.settled).then(|| view! { <meta http-equiv="refresh" content="2"/> })}
        <p class="amount" id="order-amount">"¥"{yuan(o.amount_fen)}</p>
        <p class="muted">{o.out_trade_no.clone()}" · "{o.created.clone()}</p>
        <ol class="steps" id="order-steps" data-state=o.state.clone()>{list}</ol>
        {message.map(|(class, text)| view! { <p class=class id="order-message" role="status">{text}</p> })}
        {o.pay_url.clone().map(|url| view! { <p><a href=url class="button" id="pay-again">{tr(lang, "tenant.pay")}</a></p> })}
        {o.receipt_txn.clone().filter(|_| !failed).map(|t| view! { <p><a href=format!("/receipts/{t}") class="button secondary" id="receipt">{tr(lang, "tenant.receipt")}</a></p> })}
        <p>{tr(lang, "tenant.available")}" "<span id="order-available">{crate::billing::pages::balance_text(lang, o.available_fen)}</span></p>
        <p class="links"><a href=format!("/my?account={}", o.account_id) id="back-home">{tr(lang, "tenant.back")}</a></p>
    }
}

/// `/my/preferences`: which messages the tenant gets (trip notices and trips always come).
#[component]
pub fn MyPreferencesPage() -> impl IntoView {
    let lang = use_lang();
    let prefs = Resource::new(|| (), |_| super::get_my_preferences());
    view! {
        <Layout page=move |s| {
            let csrf = s.csrf.clone();
            view! {
                <h1>{tr(lang, "tenant.preferences")}</h1>
                <Suspense fallback=|| ()>
                    {move || {
                        let csrf = csrf.clone();
                        Suspend::new(async move {
                            match prefs.await {
                                Ok(p) => {
                                    let boxes = p.kinds.iter().enumerate().map(|(i, (kind, on))| view! {
                                        <label class="check">
                                            <input type="checkbox" name=format!("on[{i}]") value=kind.clone() checked=*on/>
                                            {tr(lang, &format!("notify.kind.{kind}"))}
                                        </label>
                                    }).collect_view();
                                    view! {
                                        <form method="post" action=SaveMyPreferences::PATH class="stack" id="preferences-form">
                                            <Csrf token=csrf/>
                                            {boxes}
                                            <p class="muted">{tr(lang, "tenant.always_sent")}</p>
                                            <button type="submit">{tr(lang, "common.save")}</button>
                                        </form>
                                        <p class="links"><a href="/my">{tr(lang, "tenant.back")}</a></p>
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
