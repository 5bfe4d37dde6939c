//! The server side of the tenant's pages: SMS codes and sign-in through
//! `core::auth::tenant_code`, the home through `core::selfservice`, orders through
//! `core::payments::orders`. Every id a form or link carries is hostile: it is parsed, and an
//! account the caller may not see answers 404 like one that does not exist.

use super::views::*;
use crate::web::boundary;
use crate::web::server::{
    ctx, encode, finish, parts, read_err, read_session, session, session_for_change, set_cookies,
    ui, UiError,
};
use crate::web::WebError;
use chrono::{DateTime, Utc};
use powertab_core::auth::tenant_code::{self, CodeLogin, CodePurpose, CodeRequest};
use powertab_core::billing::accounts::{self, AccountState};
use powertab_core::kernel::money::AmountFen;
use powertab_core::payments::orders::{self, Provider};
use powertab_core::selfservice::{self, UsageBy};
use powertab_core::tenancy::roles::Role;
use powertab_core::CoreError;
use uuid::Uuid;

/// Message kinds a tenant may turn off; trip notices and trips are always sent.
pub const TENANT_KINDS: [&str; 4] = ["alarm1", "alarm2", "restored", "top_up"];

fn slug_of(text: &str) -> String {
    text.trim().to_ascii_lowercase()
}

/// `/t/{slug}?…` with `pairs`, and the refusal (`error`, `fields`) when there is one. The
/// landing page is signed out, so what was typed travels in its own link.
fn landing_url(slug: &str, pairs: &[(&str, &str)], err: Option<&UiError>) -> String {
    let mut pairs: Vec<(&str, &str)> = pairs.to_vec();
    let fields = err.map(|e| e.fields.join(",")).unwrap_or_default();
    if let Some(err) = err {
        pairs.push(("error", &err.code));
        pairs.push(("fields", &fields));
    }
    let query = crate::web::query::query_string(&pairs);
    let base = format!("/t/{}", encode(slug));
    if query.is_empty() {
        base
    } else {
        format!("{base}?{query}")
    }
}

fn client_ip() -> Result<Option<String>, WebError> {
    let (ctx, parts) = (ctx()?, parts()?);
    Ok(boundary::client_ip(
        &parts.headers,
        &parts.extensions,
        ctx.trust_forwarded_for,
    ))
}

pub async fn get_landing(slug: String) -> Result<LandingView, WebError> {
    let slug = slug_of(&slug);
    let name: Option<String> =
        sqlx::query_scalar("select name from control.company where slug = $1")
            .bind(&slug)
            .fetch_optional(&ctx()?.pool)
            .await
            .map_err(|e| read_err(e.into()))?;
    let signed_in = match session().await? {
        Some((p, _)) => {
            p.role == Role::ShopTenant && p.company.as_ref().is_some_and(|c| c.slug == slug)
        }
        None => false,
    };
    Ok(LandingView {
        slug,
        company_name: name,
        signed_in,
    })
}

pub async fn send_code(
    company: String,
    phone: String,
    purpose: String,
    meter: String,
) -> Result<(), WebError> {
    let slug = slug_of(&company);
    let ctx = ctx()?;
    let purpose_value = if purpose == "reset" {
        CodePurpose::Reset
    } else {
        CodePurpose::Login
    };
    let request = CodeRequest {
        company: slug.clone(),
        phone: phone.trim().to_owned(),
        purpose: purpose_value,
    };
    let reset = if purpose_value == CodePurpose::Reset {
        "1"
    } else {
        ""
    };
    let kept = [
        ("phone", phone.trim()),
        ("meter", meter.as_str()),
        ("reset", reset),
    ];
    let target =
        match tenant_code::send_code(&ctx.pool, &ctx.auth, &request, client_ip()?.as_deref()).await
        {
            Ok(()) => {
                let mut pairs = kept.to_vec();
                pairs.push(("sent", "1"));
                landing_url(&slug, &pairs, None)
            }
            Err(e) => landing_url(&slug, &kept, Some(&UiError::from(e))),
        };
    leptos_axum::redirect(&target);
    Ok(())
}

pub async fn code_login(
    company: String,
    phone: String,
    code: String,
    meter: String,
) -> Result<(), WebError> {
    let slug = slug_of(&company);
    let ctx = ctx()?;
    let input = CodeLogin {
        company: slug.clone(),
        phone: phone.trim().to_owned(),
        code,
        new_password: String::new(),
    };
    let target =
        match tenant_code::login_with_code(&ctx.pool, &ctx.auth, &input, client_ip()?.as_deref())
            .await
        {
            Ok(outcome) => {
                set_cookies(powertab_core::auth::session_cookie_headers(
                    &outcome.tokens,
                    ctx.cookie_secure,
                ));
                let query = crate::web::query::query_string(&[("meter", meter.as_str())]);
                if query.is_empty() {
                    "/my".to_owned()
                } else {
                    format!("/my?{query}")
                }
            }
            Err(e) => landing_url(
                &slug,
                &[
                    ("phone", phone.trim()),
                    ("meter", meter.as_str()),
                    ("sent", "1"),
                ],
                Some(&UiError::from(e)),
            ),
        };
    leptos_axum::redirect(&target);
    Ok(())
}

pub async fn reset_password(
    company: String,
    phone: String,
    code: String,
    new_password: String,
) -> Result<(), WebError> {
    let slug = slug_of(&company);
    let ctx = ctx()?;
    let input = CodeLogin {
        company: slug.clone(),
        phone: phone.trim().to_owned(),
        code,
        new_password,
    };
    let target =
        match tenant_code::reset_password(&ctx.pool, &ctx.auth, &input, client_ip()?.as_deref())
            .await
        {
            Ok(()) => format!("/login?company={}&ok=tenant.password_set", encode(&slug)),
            Err(e) => landing_url(
                &slug,
                &[("phone", phone.trim()), ("sent", "1"), ("reset", "1")],
                Some(&UiError::from(e)),
            ),
        };
    leptos_axum::redirect(&target);
    Ok(())
}

fn age_s(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<i64> {
    at.map(|t| (now - t).num_seconds().max(0))
}

fn shop_label(a: &accounts::ShopAccount) -> String {
    format!("{} {}", a.shop_number, a.shop_name)
        .trim()
        .to_owned()
}

fn bars(slots: Vec<selfservice::UsageSlot>) -> Vec<UsageBar> {
    slots
        .into_iter()
        .map(|s| UsageBar {
            label: short_label(&s.label),
            title: s.label,
            by_period_wh: s.by_period_wh,
            charge_fen: s.charge_fen.fen(),
        })
        .collect()
}

/// The axis label without the year: `2026-12-04` → `12-04`; `2026-12` → `12`.
fn short_label(label: &str) -> String {
    label.get(5..).unwrap_or(label).to_owned()
}

/// The account `/my` shows: the one asked for, else the one whose meter the QR code named, else
/// the first open one, else the newest.
fn choose(list: &[accounts::ShopAccount], asked: Option<Uuid>, meter_number: &str) -> Option<Uuid> {
    if let Some(id) = asked.filter(|id| list.iter().any(|a| a.id == *id)) {
        return Some(id);
    }
    let by_meter = list.iter().find(|a| {
        !meter_number.is_empty()
            && a.state != AccountState::Closed
            && a.meters.iter().any(|m| m.meter_number == meter_number)
    });
    by_meter
        .or_else(|| list.iter().find(|a| a.state == AccountState::Open))
        .or_else(|| list.first())
        .map(|a| a.id)
}

pub async fn get_my_home(account: String, meter: String) -> Result<MyHomeView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let list = accounts::search(&mut tx, &principal, "")
        .await
        .map_err(read_err)?;
    let company_slug = principal
        .company
        .as_ref()
        .map(|c| c.slug.clone())
        .unwrap_or_default();
    let accounts_view: Vec<AccountChoice> = list
        .iter()
        .map(|a| AccountChoice {
            id: a.id.to_string(),
            shop: shop_label(a),
            state: a.state.to_string(),
        })
        .collect();
    let wechat_linked = if powertab_core::notify::oauth::configured(&mut tx)
        .await
        .map_err(read_err)?
    {
        Some(
            powertab_core::notify::oauth::linked(&mut tx, &principal)
                .await
                .map_err(read_err)?,
        )
    } else {
        None
    };
    let in_wechat = parts()?
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.contains("MicroMessenger"));
    let Some(id) = choose(&list, account.parse().ok(), meter.trim()) else {
        return Ok(MyHomeView {
            accounts: accounts_view,
            selected: None,
            company_slug,
            wechat_linked,
            in_wechat,
        });
    };
    let home = selfservice::home(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let days = selfservice::usage(&mut tx, &principal, id, UsageBy::Day, 14)
        .await
        .map_err(read_err)?;
    let months = selfservice::usage(&mut tx, &principal, id, UsageBy::Month, 12)
        .await
        .map_err(read_err)?;
    let now = principal.now();
    let tz = principal.tz();
    let statement = accounts::statement(
        &mut tx,
        &principal,
        id,
        Some(now - chrono::Duration::days(90)),
        None,
    )
    .await
    .map_err(read_err)?;
    let lines = statement
        .lines
        .iter()
        .rev()
        .take(10)
        .map(|l| MyLine {
            at: l
                .posted_at
                .with_timezone(&tz)
                .format("%m-%d %H:%M")
                .to_string(),
            kind: l.kind.to_string(),
            amount_fen: l.amount_fen.fen(),
            balance_fen: l.balance_fen.fen(),
            receipt_txn: l.receipt_no.as_ref().map(|_| l.transaction_id.to_string()),
            receipt_no: l.receipt_no.clone(),
        })
        .collect();
    let orders = orders::of_account(&mut tx, &principal, id, 5)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|o| MyOrderRow {
            id: o.id.to_string(),
            created: o
                .created_at
                .with_timezone(&tz)
                .format("%m-%d %H:%M")
                .to_string(),
            amount_fen: o.amount_fen.fen(),
            state: o.state,
        })
        .collect();
    let in_force = home
        .emergency
        .as_ref()
        .filter(|e| e.ended_at.is_none() && e.expires_at > now)
        .map(|e| {
            (
                e.amount_fen.fen(),
                e.expires_at
                    .with_timezone(&tz)
                    .format("%m-%d %H:%M")
                    .to_string(),
            )
        });
    let a = &home.account;
    let selected = MyAccountView {
        id: a.id.to_string(),
        shop: shop_label(a),
        state: a.state.to_string(),
        meter_side: a.prepayment_mode == "meter",
        available_fen: a.available_fen.fen(),
        deposit_fen: a.deposit_fen.fen(),
        power: home.power.clone(),
        alarm_level: home.alarm_level,
        days_left: home.days_left,
        average_daily_fen: home.average_daily_charge_fen.map(|f| f.fen()),
        meters: home
            .meters
            .iter()
            .map(|m| MyMeterView {
                id: m.meter_id.to_string(),
                number: m.meter_number.clone(),
                energy_wh: m.energy_wh,
                reading_age_s: age_s(m.read_at, now),
                relay_closed: m.relay_closed,
                remaining_fen: m.remaining_fen.map(|f| f.fen()),
                remaining_age_s: age_s(m.remaining_read_at, now),
            })
            .collect(),
        emergency_in_force: in_force,
        may_grant_emergency: home.may_grant_emergency,
        emergency_fen: home.rules.emergency_fen.fen(),
        emergency_hours: home.rules.emergency_hours,
        can_top_up: a.state == AccountState::Open
            && !home.rules.providers.is_empty()
            && principal.role == Role::ShopTenant,
        days: bars(days),
        months: bars(months),
        lines,
        orders,
    };
    Ok(MyHomeView {
        accounts: accounts_view,
        selected: Some(selected),
        company_slug,
        wechat_linked,
        in_wechat,
    })
}

fn account_id(text: &str) -> Result<Uuid, UiError> {
    text.trim()
        .parse()
        .map_err(|_| UiError::from(CoreError::NotFound("account")))
}

pub async fn my_emergency(csrf: String, account_id_text: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id = account_id(&account_id_text)?;
        selfservice::grant_emergency(&mut tx, &principal, id).await?;
        tx.commit().await?;
        Ok(format!("/my?account={id}&ok=tenant.emergency_granted"))
    }
    .await;
    finish(result.map_err(|e: UiError| {
        if e.code == "conflict" {
            ui("emergency_used")
        } else {
            e
        }
    }))
}

pub async fn get_my_top_up(account: String, meter: String) -> Result<TopUpView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = account
        .trim()
        .parse()
        .map_err(|_| read_err(CoreError::NotFound("account")))?;
    // The account and the company's rules only: the top-up page needs no usage or power.
    let a = &accounts::get(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let rules = selfservice::rules(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let meter_side = a.prepayment_mode == "meter";
    let meters: Vec<(String, String)> = if meter_side {
        a.meters
            .iter()
            .map(|m| (m.meter_id.to_string(), m.meter_number.clone()))
            .collect()
    } else {
        vec![]
    };
    // The QR code's meter (by number or id) is the default; else the first.
    let meter = meter.trim();
    let meter_id = a
        .meters
        .iter()
        .find(|m| m.meter_number == meter || m.meter_id.to_string() == meter)
        .or(a.meters.first())
        .filter(|_| meter_side)
        .map(|m| m.meter_id.to_string())
        .unwrap_or_default();
    Ok(TopUpView {
        account_id: a.id.to_string(),
        shop: shop_label(a),
        available_fen: a.available_fen.fen(),
        open: a.state == AccountState::Open,
        presets_fen: rules.presets_fen.iter().map(|p| p.fen()).collect(),
        min_fen: rules.top_up_min_fen.fen(),
        max_fen: rules.top_up_max_fen.fen(),
        payable: !rules.providers.is_empty(),
        meters,
        meter_id,
    })
}

pub async fn my_top_up(
    csrf: String,
    account_id_text: String,
    amount: String,
    meter_id: Option<String>,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id = account_id(&account_id_text)?;
        let amount = AmountFen::parse_yuan(amount.trim())
            .map_err(|_| crate::web::server::field_error("amount"))?;
        let meter = match meter_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<Uuid>()
                    .map_err(|_| crate::web::server::field_error("meter_id"))?,
            ),
        };
        // The one provider there is so far; WeChat Pay and Alipay choose by the browser.
        let (_, pay_url) = orders::start(&mut tx, &principal, id, Provider::Sandbox, amount, meter)
            .await
            .map_err(|e| UiError::from(e).renamed(&[("amount_fen", "amount")]))?;
        tx.commit().await?;
        Ok(pay_url)
    }
    .await;
    finish(result)
}

pub async fn get_my_order(id: String) -> Result<MyOrderView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .trim()
        .parse()
        .map_err(|_| read_err(CoreError::NotFound("payment order")))?;
    let order = orders::get(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let account = accounts::get(&mut tx, &principal, order.account_id)
        .await
        .map_err(read_err)?;
    let now = principal.now();
    let tz = principal.tz();
    let meter_side = account.prepayment_mode == "meter";
    // A meter-side delivery that takes more than two minutes is reported, not waited for.
    let delivery_slow = meter_side
        && order.state == "credited"
        && order
            .paid_at
            .is_some_and(|p| now - p > chrono::Duration::seconds(120));
    let slug = principal
        .company
        .as_ref()
        .map(|c| c.slug.clone())
        .unwrap_or_default();
    Ok(MyOrderView {
        id: order.id.to_string(),
        account_id: order.account_id.to_string(),
        out_trade_no: order.out_trade_no.clone(),
        amount_fen: order.amount_fen.fen(),
        state: order.state.clone(),
        flag: order.flag.clone(),
        meter_side,
        created: order
            .created_at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        paid: order
            .paid_at
            .map(|p| p.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string()),
        settled: order_settled(&order.state, meter_side) || delivery_slow,
        delivery_slow,
        receipt_txn: order.credited_txn.map(|t| t.to_string()),
        pay_url: (order.state == "created" && order.expires_at > now)
            .then(|| orders::pay_url(&slug, &order)),
        available_fen: account.available_fen.fen(),
    })
}

pub async fn get_my_preferences() -> Result<MyPreferencesView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let mine = powertab_core::notify::preferences::mine(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    Ok(MyPreferencesView {
        kinds: TENANT_KINDS
            .iter()
            .map(|k| ((*k).to_owned(), !mine.muted.iter().any(|m| m == k)))
            .collect(),
    })
}

pub async fn save_my_preferences(csrf: String, on: Vec<String>) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let muted: Vec<String> = TENANT_KINDS
            .iter()
            .filter(|k| !on.iter().any(|o| o == *k))
            .map(|k| (*k).to_owned())
            .collect();
        powertab_core::notify::preferences::set_mine(
            &mut tx,
            &principal,
            &powertab_core::notify::preferences::Preferences { muted },
        )
        .await?;
        tx.commit().await?;
        Ok("/my/preferences?ok=tenant.preferences_saved".to_owned())
    }
    .await;
    finish(result)
}
