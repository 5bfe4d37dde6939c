//! The server side of the counter: form text parsed (yuan, kWh), `powertab_core::billing`
//! called with the form's server-issued idempotency key, the outcome turned into a redirect.

pub mod books;
pub mod review;
pub mod settle;

use super::views::*;
use crate::web::server::{
    encode, field_error, finish_keeping, non_empty, read_err, read_session, session_for_change,
    UiError,
};
use crate::web::WebError;
use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
use powertab_core::kernel::money::{AmountFen, EnergyWh};
use powertab_core::tenancy::roles::{Need, Right};
use uuid::Uuid;

/// The rows of the open-account form for `shop`, when it is one of the vacant shops listed.
async fn opening_view(
    tx: &mut sqlx::PgConnection,
    principal: &powertab_core::auth::Principal,
    shop: Uuid,
    vacant: &[(String, String)],
) -> Result<Option<OpeningView>, WebError> {
    let Some((_, name)) = vacant.iter().find(|(id, _)| *id == shop.to_string()) else {
        return Ok(None);
    };
    let tz = principal.tz();
    let meters = accounts::opening_readings(tx, principal, shop)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|m| OpeningMeterView {
            meter_id: m.meter_id.to_string(),
            number: m.meter_number,
            latest_kwh: m
                .latest
                .map(|(_, wh)| powertab_core::kernel::money::format_wh_as_kwh(wh.wh()))
                .unwrap_or_default(),
            latest_at: m
                .latest
                .map(|(at, _)| at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            fresh: m.fresh,
            remaining_on_meter: m
                .read_back_remaining_fen
                .filter(|fen| m.meter_side && *fen != 0)
                .map(|fen| AmountFen::from_fen(fen).to_string())
                .unwrap_or_default(),
        })
        .collect();
    Ok(Some(OpeningView {
        shop_id: shop.to_string(),
        shop: name.clone(),
        meters,
    }))
}

pub async fn get_receipt(id: String) -> Result<ReceiptView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("receipt")))?;
    let r = accounts::receipt(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    // Every print is recorded; any after the first is marked 补打. A tenant reading their own
    // receipt on the phone prints nothing.
    let reprint = if principal.role == powertab_core::tenancy::roles::Role::ShopTenant {
        false
    } else {
        accounts::record_print(&mut tx, &principal, id)
            .await
            .map_err(read_err)?
            > 0
    };
    tx.commit()
        .await
        .map_err(|e| read_err(powertab_core::CoreError::from(e)))?;
    let slug = principal
        .company
        .as_ref()
        .map(|c| c.slug.clone())
        .unwrap_or_default();
    let first_meter = r
        .account
        .meters
        .first()
        .map(|m| m.meter_number.clone())
        .unwrap_or_default();
    Ok(ReceiptView {
        company: r.company_name,
        receipt_no: r.transaction.receipt_no.clone().unwrap_or_default(),
        at: r
            .transaction
            .posted_at
            .with_timezone(&principal.tz())
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        kind: r.transaction.kind.to_string(),
        method: r.transaction.method.clone().unwrap_or_default(),
        shop: format!("{} {}", r.account.shop_number, r.account.shop_name)
            .trim()
            .to_owned(),
        holder: r.account.holder_name.clone(),
        meters: r
            .account
            .meters
            .iter()
            .map(|m| m.meter_number.clone())
            .collect(),
        amount_fen: r.amount_fen.fen(),
        available_fen: r.account.available_fen.fen(),
        memo: r.transaction.memo.clone(),
        reprint,
        qr_link: format!("/t/{}?meter={}", encode(&slug), encode(&first_meter)),
    })
}

pub async fn get_counter(
    q: String,
    receipt: String,
    txn: String,
    open: String,
) -> Result<CounterView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let found = accounts::search(&mut tx, &principal, &q)
        .await
        .map_err(read_err)?;
    let shift = counter::open_shift_of(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let tz = principal.tz();
    let vacant = powertab_core::property::shops(
        &mut tx,
        &principal,
        &powertab_core::property::ShopFilter {
            status: Some("vacant".into()),
            ..Default::default()
        },
    )
    .await
    .map_err(read_err)?;
    let vacant_names: Vec<(String, String)> = vacant
        .into_iter()
        .map(|s| {
            (
                s.id.to_string(),
                format!("{} · {} {}", s.building_name, s.number, s.name)
                    .trim()
                    .to_owned(),
            )
        })
        .collect();
    Ok(CounterView {
        accounts: found.into_iter().map(|a| card(&a)).collect(),
        shift: shift.map(|s| {
            (
                s.opened_at
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M")
                    .to_string(),
                s.float_fen.fen(),
                s.cash_taken_fen.fen(),
            )
        }),
        vacant_shops: vacant_names.clone(),
        form_key: Uuid::now_v7().to_string(),
        can_top_up: principal.can(Need::Act(Right::TopUp)),
        can_refund: principal.can(Need::Act(Right::Refund)),
        can_open: principal.can(Need::Act(Right::Accounts)),
        receipt: non_empty(receipt)
            .filter(|r| r.len() <= 40 && r.bytes().all(|b| b.is_ascii_alphanumeric())),
        receipt_txn: txn.parse::<Uuid>().ok().map(|t| t.to_string()),
        opening: match open.parse::<Uuid>() {
            // Only a vacant shop the caller sees is opened (the list is already filtered).
            Ok(shop) if principal.can(Need::Act(Right::Accounts)) => {
                opening_view(&mut tx, &principal, shop, &vacant_names).await?
            }
            _ => None,
        },
    })
}

pub(super) fn yuan_field(text: &str, field: &str) -> Result<AmountFen, UiError> {
    AmountFen::parse_yuan(text).map_err(|_| field_error(field))
}

fn optional_yuan(text: &str, field: &str) -> Result<AmountFen, UiError> {
    match text.trim() {
        "" => Ok(AmountFen::ZERO),
        text => yuan_field(text, field),
    }
}

pub(super) fn key_of(key: &str) -> Result<String, UiError> {
    let key = key.trim();
    if key.is_empty() || key.len() > 100 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(field_error("key"));
    }
    Ok(key.to_owned())
}

pub async fn move_money(
    csrf: String,
    key: String,
    account_id: String,
    amount: String,
    method: String,
    reason: Option<String>,
    meter_id: Option<String>,
) -> Result<(), WebError> {
    let form_id = if reason.is_some() {
        "refund-form"
    } else {
        "top-up-form"
    };
    let kept = serde_json::json!({ "account_id": &account_id, "amount": &amount, "method": &method, "reason": &reason, "meter_id": &meter_id });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        let input = CounterInput {
            amount_fen: yuan_field(&amount, "amount")?,
            method: method
                .parse::<CounterMethod>()
                .map_err(|_| field_error("method"))?,
            reason: reason.clone().unwrap_or_default(),
            // A meter-side top-up names the meter it credits (core: the account's only one
            // when none is named).
            meter_id: match meter_id.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => Some(text.parse().map_err(|_| field_error("meter_id"))?),
            },
        };
        let done = match reason {
            Some(_) => counter::refund(&mut tx, &principal, account, &input, &key).await,
            None => counter::top_up(&mut tx, &principal, account, &input, &key).await,
        }
        .map_err(|e| UiError::from(e).renamed(&[("amount_fen", "amount")]))?;
        tx.commit().await?;
        Ok(format!(
            "/counter?q={}&ok=counter.done&receipt={}&txn={}",
            encode(&done.account.shop_number),
            encode(done.transaction.receipt_no.as_deref().unwrap_or_default()),
            done.transaction.id
        ))
    }
    .await;
    finish_keeping(result, form_id, &kept)
}

pub async fn shift_open(csrf: String, float: String) -> Result<(), WebError> {
    let kept = serde_json::json!({ "float": &float });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let float_fen = optional_yuan(&float, "float")?;
        counter::open_shift(&mut tx, &principal, float_fen)
            .await
            .map_err(|e| UiError::from(e).renamed(&[("float_fen", "float")]))?;
        tx.commit().await?;
        Ok("/counter?ok=counter.shift_opened".to_owned())
    }
    .await;
    finish_keeping(result, "shift-open-form", &kept)
}

pub async fn shift_close(csrf: String, counted: String) -> Result<(), WebError> {
    let kept = serde_json::json!({ "counted": &counted });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let counted_fen = yuan_field(&counted, "counted")?;
        counter::close_shift(&mut tx, &principal, counted_fen)
            .await
            .map_err(|e| UiError::from(e).renamed(&[("counted_cash_fen", "counted")]))?;
        tx.commit().await?;
        Ok("/counter?ok=counter.shift_closed".to_owned())
    }
    .await;
    finish_keeping(result, "shift-close-form", &kept)
}

pub async fn account_open(
    csrf: String,
    key: String,
    form: OpenAccountForm,
) -> Result<(), WebError> {
    let kept = form.clone();
    let OpenAccountForm {
        shop_id,
        holder_name,
        holder_phone,
        reading_kwh,
        meters: rows,
        deposit,
        opening_credit,
    } = form;
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let shop: Uuid = shop_id.parse().map_err(|_| field_error("shop_id"))?;
        let opening_meters = if rows.is_empty() {
            short_form_meters(&mut tx, &principal, shop, &reading_kwh).await?
        } else {
            meter_rows(&rows)?
        };
        // The short form's one reading field answers for every meter's reading.
        let renames: Vec<(String, String)> = (0..opening_meters.len())
            .map(|i| {
                let to = if rows.is_empty() {
                    "reading_kwh".to_owned()
                } else {
                    format!("meters.{i}.reading_kwh")
                };
                (format!("meters.{i}.manual_energy_wh"), to)
            })
            .chain((0..opening_meters.len()).map(|i| {
                (
                    format!("meters.{i}.accept_remaining_fen"),
                    format!("meters.{i}.accept_remaining"),
                )
            }))
            .collect();
        let input = OpenAccount {
            shop_id: shop,
            holder_name,
            holder_phone,
            meters: opening_meters,
            deposit_fen: optional_yuan(&deposit, "deposit")?,
            deposit_method: Some(CounterMethod::Cash),
            opening_credit_fen: optional_yuan(&opening_credit, "opening_credit")?,
        };
        let account = accounts::open(&mut tx, &principal, &input, &key)
            .await
            .map_err(|e| {
                let mut pairs: Vec<(&str, &str)> = renames
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                pairs.extend([
                    ("deposit_fen", "deposit"),
                    ("opening_credit_fen", "opening_credit"),
                ]);
                UiError::from(e).renamed(&pairs)
            })?;
        tx.commit().await?;
        Ok(format!(
            "/counter?q={}&ok=counter.opened",
            encode(&account.shop_number)
        ))
    }
    .await;
    finish_keeping(result, "open-form", &kept)
}

/// The short form's meters: every active meter of the shop, the one typed reading for a shop
/// with one meter (with more, each needs a fresh stored reading or the per-meter form).
async fn short_form_meters(
    tx: &mut sqlx::PgConnection,
    principal: &powertab_core::auth::Principal,
    shop: Uuid,
    reading_kwh: &str,
) -> Result<Vec<OpeningMeter>, UiError> {
    let manual = match reading_kwh.trim() {
        "" => None,
        text => Some(EnergyWh::parse_kwh(text).map_err(|_| field_error("reading_kwh"))?),
    };
    let meters = accounts::meters_of_shop(tx, principal, shop).await?;
    if meters.is_empty() {
        return Err(field_error("shop_id"));
    }
    Ok(meters
        .iter()
        .map(|&meter_id| OpeningMeter {
            meter_id,
            manual_energy_wh: manual.filter(|_| meters.len() == 1),
            accept_remaining_fen: None,
        })
        .collect())
}

/// The per-meter form's rows (core checks each meter belongs to the shop).
fn meter_rows(rows: &[OpeningMeterForm]) -> Result<Vec<OpeningMeter>, UiError> {
    if rows.len() > 64 {
        return Err(field_error("shop_id"));
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let meter_id = row
                .meter_id
                .parse()
                .map_err(|_| field_error(&format!("meters.{i}.meter_id")))?;
            let manual_energy_wh = match row.reading_kwh.trim() {
                "" => None,
                text => Some(
                    EnergyWh::parse_kwh(text)
                        .map_err(|_| field_error(&format!("meters.{i}.reading_kwh")))?,
                ),
            };
            // The operator's audited decision about credit already on a meter-side meter.
            let accept_remaining_fen = match row.accept_remaining.trim() {
                "" => None,
                text => Some(
                    AmountFen::parse_yuan(text)
                        .map_err(|_| field_error(&format!("meters.{i}.accept_remaining")))?
                        .fen(),
                ),
            };
            Ok(OpeningMeter {
                meter_id,
                manual_energy_wh,
                accept_remaining_fen,
            })
        })
        .collect()
}

/// Links a shop-tenant user, by the login they use (a phone number), to an account.
pub async fn account_link_tenant(
    csrf: String,
    account_id: String,
    username: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "username": &username });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        accounts::link_username(&mut tx, &principal, account, &username).await?;
        tx.commit().await?;
        Ok(format!("/accounts/{account}?ok=account.tenant_linked"))
    }
    .await;
    finish_keeping(result, "tenant-form", &kept)
}

pub(super) fn card(a: &powertab_core::billing::accounts::ShopAccount) -> CounterAccountView {
    CounterAccountView {
        id: a.id.to_string(),
        shop: format!("{} {}", a.shop_number, a.shop_name)
            .trim()
            .to_owned(),
        holder: format!("{} {}", a.holder_name, a.holder_phone)
            .trim()
            .to_owned(),
        state: a.state.to_string(),
        meters: a.meters.iter().map(|m| m.meter_number.clone()).collect(),
        wallet_fen: a.wallet_fen.fen(),
        deposit_fen: a.deposit_fen.fen(),
        available_fen: a.available_fen.fen(),
        meter_side: a.prepayment_mode == "meter",
        on_meter_fen: a.on_meter_fen.fen(),
        in_transit_fen: a.in_transit_fen.fen(),
        meter_choices: if a.prepayment_mode == "meter" && a.meters.len() > 1 {
            a.meters
                .iter()
                .map(|m| (m.meter_id.to_string(), m.meter_number.clone()))
                .collect()
        } else {
            Vec::new()
        },
    }
}

pub async fn get_account_page(id: String) -> Result<AccountPageView, WebError> {
    use powertab_core::billing::ledger::TxnKind;
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("account")))?;
    let account = accounts::get(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let statement = accounts::statement(&mut tx, &principal, id, None, None)
        .await
        .map_err(read_err)?;
    let reversed: Vec<Uuid> = statement
        .lines
        .iter()
        .filter(|l| l.kind == TxnKind::Reversal)
        .map(|l| l.transaction_id)
        .collect();
    let originals = powertab_core::billing::ledger::post::load_many(&mut tx, &reversed)
        .await
        .map_err(read_err)?
        .into_iter()
        .filter_map(|t| t.reverses)
        .collect::<Vec<_>>();
    let tz = principal.tz();
    let closed = matches!(
        account.state,
        accounts::AccountState::Closed | accounts::AccountState::ClosedInArrears
    );
    let settlement = if closed {
        Some(settle::settlement_view(&mut tx, &principal, id).await?)
    } else {
        None
    };
    let owed = |f: fn(&SettlementView) -> i64| settlement.as_ref().is_some_and(|v| f(v) > 0);
    Ok(AccountPageView {
        account: card(&account),
        movements: statement
            .lines
            .iter()
            .rev()
            .take(100)
            .map(|l| MovementView {
                txn_id: l.transaction_id.to_string(),
                at: l
                    .posted_at
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M")
                    .to_string(),
                kind: l.kind.to_string(),
                receipt_no: l.receipt_no.clone().unwrap_or_default(),
                method: l.method.clone().unwrap_or_default(),
                memo: l.memo.clone(),
                amount_fen: l.amount_fen.fen(),
                balance_fen: l.balance_fen.fen(),
                reversible: matches!(l.kind, TxnKind::TopUp | TxnKind::Refund)
                    && !originals.contains(&l.transaction_id),
            })
            .collect(),
        form_key: Uuid::now_v7().to_string(),
        can_reverse: principal.can(Need::Act(Right::Reversal)),
        can_close: principal.can(Need::Act(Right::Accounts)) && !closed,
        can_payout: principal.can(Need::Act(Right::Payout)) && owed(|v| v.payable_fen),
        can_collect: principal.can(Need::Act(Right::TopUp)) && owed(|v| v.arrears_fen),
        can_write_off: principal.can(Need::Act(Right::Accounts)) && owed(|v| v.arrears_fen),
        settlement,
        invoices: books::invoice_views(&mut tx, &principal, id).await?,
        tenants: accounts::linked_users(&mut tx, &principal, id)
            .await
            .map_err(read_err)?
            .into_iter()
            .map(|u| TenantView {
                username: u.username,
                display_name: u.display_name,
                linked_at: u
                    .linked_at
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M")
                    .to_string(),
            })
            .collect(),
        can_link: principal.can(Need::Act(Right::Accounts)) && !closed,
        can_invoice: principal.can(Need::Act(Right::TopUp)),
        can_issue: principal.can(Need::Act(Right::Accounts)),
    })
}

pub async fn account_reverse(
    csrf: String,
    key: String,
    account_id: String,
    txn_id: String,
    reason: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "txn_id": &txn_id, "reason": &reason });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let key = key_of(&key)?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        let txn: Uuid = txn_id.parse().map_err(|_| field_error("txn_id"))?;
        let outcome =
            powertab_core::billing::reversals::request(&mut tx, &principal, txn, &reason, &key)
                .await?;
        tx.commit().await?;
        let ok = if outcome.transaction.is_some() {
            "account.reversed"
        } else {
            "account.reversal_requested"
        };
        Ok(format!("/accounts/{account}?ok={ok}"))
    }
    .await;
    finish_keeping(result, "reverse-form", &kept)
}

pub async fn account_close(
    csrf: String,
    account_id: String,
    final_kwh: String,
    last_readback: Option<String>,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "final_kwh": &final_kwh });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let account: Uuid = account_id.parse().map_err(|_| field_error("account_id"))?;
        let meters = accounts::get(&mut tx, &principal, account).await?.meters;
        let typed = match final_kwh.trim() {
            "" => None,
            text => Some(EnergyWh::parse_kwh(text).map_err(|_| field_error("final_kwh"))?),
        };
        // One typed final reading is for a one-meter account; with more, each needs a fresh one.
        let final_readings = match (typed, meters.as_slice()) {
            (Some(energy_wh), [only]) => vec![powertab_core::billing::closing::FinalReading {
                meter_id: only.meter_id,
                energy_wh,
            }],
            _ => vec![],
        };
        let settled = powertab_core::billing::closing::close(
            &mut tx,
            &principal,
            account,
            &powertab_core::billing::closing::CloseAccount {
                final_readings,
                close_with_last_readback: last_readback.is_some_and(|v| !v.is_empty()),
            },
        )
        .await
        .map_err(|e| UiError::from(e).renamed(&[("final_readings.0.energy_wh", "final_kwh")]))?;
        tx.commit().await?;
        // A meter-side close waits for the meters' credit to come back (it finishes by itself).
        let done = if settled.pending.is_some() {
            "account.closing"
        } else {
            "account.closed"
        };
        Ok(format!("/accounts/{account}?ok={done}"))
    }
    .await;
    finish_keeping(result, "close-form", &kept)
}
