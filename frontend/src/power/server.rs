//! The server side of the remote-control pages: form text is parsed here and everything else is
//! left to `powertab_core::power` (`centre`, `batch`, `control`), which owns the rules.

use super::views::{
    BatchFormView, BatchView, CommandRowView, CommandsView, MeterPowerView, PreviewView,
};
use crate::web::server::{
    field_error, finish, local_time, read_err, read_session, session_for_change, ui, UiError,
};
use crate::web::WebError;
use powertab_core::auth::Principal;
use powertab_core::commands::State;
use powertab_core::power::batch::{self, Selection};
use powertab_core::power::centre::{self, CentreFilter, CentreRow};
use powertab_core::tenancy::roles::{Need, Right};
use powertab_core::CoreError;
use uuid::Uuid;

/// Rows the pages show at most (the Excel export has up to 2,000).
const PAGE_ROWS: i64 = 500;
/// A meter page shows its last commands.
const METER_ROWS: i64 = 20;

fn row_view(principal: &Principal, r: CentreRow) -> CommandRowView {
    let tz = principal.tz();
    let c = r.command;
    let (can_retry, can_cancel) = centre::actions(principal, &c);
    CommandRowView {
        id: c.id.to_string(),
        meter_id: c.meter_id.to_string(),
        meter_number: r.meter_number,
        shop: r.shop,
        op: c.op.as_str().to_owned(),
        state: c.state.as_str().to_owned(),
        source: c.source,
        detail: c.detail,
        attempts: c.attempts,
        created_at: local_time(c.created_at, &tz),
        updated_at: local_time(c.updated_at, &tz),
        stuck: r.stuck,
        can_retry,
        can_cancel,
    }
}

async fn rows(
    principal: &Principal,
    tx: &mut powertab_core::db::Tx,
    filter: &CentreFilter,
) -> Result<Vec<CommandRowView>, WebError> {
    Ok(centre::list(tx, principal, filter)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|r| row_view(principal, r))
        .collect())
}

pub async fn get_commands(view: String) -> Result<CommandsView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let filter = CentreFilter {
        view: Some(view),
        limit: Some(PAGE_ROWS),
        ..Default::default()
    };
    Ok(CommandsView {
        rows: rows(&principal, &mut tx, &filter).await?,
        can_export: principal.can(Need::Act(Right::Export)),
    })
}

/// The page a command form goes back to: the command centre, a meter's page or a batch's —
/// only our own paths, never one a link could point elsewhere.
fn back_to(back: &str) -> String {
    let back = back.trim();
    let ours = ["/commands", "/meters/", "/control/batches/"]
        .iter()
        .any(|p| back.starts_with(p));
    if ours && !back.contains("//") && !back.contains('\\') {
        back.to_owned()
    } else {
        "/commands".to_owned()
    }
}

fn with_ok(path: &str, key: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}ok={key}")
}

pub async fn retry_command(csrf: String, id: String) -> Result<(), WebError> {
    let keyring = crate::web::server::ctx()?.keyring;
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        centre::retry(&mut tx, &principal, keyring.as_deref(), id).await?;
        tx.commit().await?;
        Ok(with_ok(
            &back_to(&crate::web::server::back_path()),
            "commands.retried",
        ))
    }
    .await;
    finish(result)
}

pub async fn cancel_command(csrf: String, id: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        centre::cancel(&mut tx, &principal, id).await?;
        tx.commit().await?;
        Ok(with_ok(
            &back_to(&crate::web::server::back_path()),
            "commands.cancelled",
        ))
    }
    .await;
    finish(result)
}

pub async fn get_batch_form() -> Result<BatchFormView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let tree = powertab_core::property::tree(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let buildings = tree
        .iter()
        .map(|b| (b.id.to_string(), b.name.clone()))
        .collect();
    let floors = tree
        .iter()
        .flat_map(|b| {
            b.floors
                .iter()
                .map(|f| (f.id.to_string(), format!("{} · {}", b.name, f.name)))
        })
        .collect();
    let gateways = powertab_core::field::list_gateways(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|g| (g.id.to_string(), g.identity))
        .collect();
    Ok(BatchFormView {
        buildings,
        floors,
        gateways,
    })
}

/// An id field of the selection: empty means any; anything else must be an id.
fn id_field(name: &str, text: &str) -> Result<Option<Uuid>, UiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| field_error(name))
}

fn selection(building: &str, floor: &str, gateway: &str, q: &str) -> Result<Selection, UiError> {
    Ok(Selection {
        building_id: id_field("building", building)?,
        floor_id: id_field("floor", floor)?,
        gateway_id: id_field("gateway", gateway)?,
        q: Some(q.trim().to_owned()).filter(|q| !q.is_empty()),
    })
}

pub async fn preview_batch(
    op: String,
    building: String,
    floor: String,
    gateway: String,
    q: String,
) -> Result<PreviewView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let selection = selection(&building, &floor, &gateway, &q)
        .map_err(|_| read_err(CoreError::field("selection", "not an id")))?;
    let p = batch::preview(&mut tx, &principal, &op, &selection)
        .await
        .map_err(read_err)?;
    Ok(PreviewView {
        op: p.op.as_str().to_owned(),
        meters: p.meters,
        skipped_keep_power: p.skipped_keep_power,
        shops_total: p.shops_total,
        shops: p.shops,
    })
}

pub async fn start_batch(csrf: String, form: super::views::BatchForm) -> Result<(), WebError> {
    let super::views::BatchForm {
        op,
        building,
        floor,
        gateway,
        q,
        confirm_meters,
        confirm,
    } = form;
    let keyring = crate::web::server::ctx()?.keyring;
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        // The box the person ticked after reading how many meters and which shops.
        if confirm != "yes" {
            return Err(field_error("confirm"));
        }
        let confirmed: usize = confirm_meters
            .trim()
            .parse()
            .map_err(|_| field_error("confirm_meters"))?;
        let selection = selection(&building, &floor, &gateway, &q)?;
        let progress = batch::start(
            &mut tx,
            &principal,
            keyring.as_deref(),
            &op,
            &selection,
            confirmed,
        )
        .await
        .map_err(|e| match e {
            // The selection changed since the preview: show it again, with the new count.
            CoreError::Conflict(_) => ui("batch_changed"),
            e => e.into(),
        })?;
        tx.commit().await?;
        Ok(format!(
            "/control/batches/{}?ok=control.batch_started",
            progress.id
        ))
    }
    .await;
    finish(result)
}

pub async fn get_batch(id: String) -> Result<(BatchView, Vec<CommandRowView>), WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(CoreError::NotFound("batch")))?;
    let p = batch::progress(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let states = State::ALL
        .iter()
        .filter_map(|s| {
            p.states
                .get(s.as_str())
                .map(|n| (s.as_str().to_owned(), *n))
        })
        .collect();
    let view = BatchView {
        id: p.id.to_string(),
        op: p.op.as_str().to_owned(),
        meters: p.meters,
        skipped: p.skipped,
        created_at: local_time(p.created_at, &principal.tz()),
        states,
        finished: p.finished,
    };
    // The batch's unfinished or failed commands first is what a person looks for.
    let filter = CentreFilter {
        view: Some("all".into()),
        batch_id: Some(id),
        limit: Some(PAGE_ROWS),
        ..Default::default()
    };
    let mut commands = rows(&principal, &mut tx, &filter).await?;
    commands.sort_by_key(|c| c.state == "verified");
    Ok((view, commands))
}

pub async fn get_meter_power(id: String) -> Result<MeterPowerView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(CoreError::NotFound("meter")))?;
    let state = powertab_core::power::control::state(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let filter = CentreFilter {
        view: Some("all".into()),
        meter_id: Some(id),
        limit: Some(METER_ROWS),
        ..Default::default()
    };
    Ok(MeterPowerView {
        keep_power: state.keep_power,
        relay_override: state.relay_override.unwrap_or_default(),
        tripped: state.tripped,
        commands: rows(&principal, &mut tx, &filter).await?,
    })
}

pub async fn get_account_power(id: String) -> Result<super::views::AccountPowerView, WebError> {
    use powertab_core::power::{emergency, levels};
    let (principal, mut tx) = read_session().await?;
    let account: Uuid = id
        .parse()
        .map_err(|_| read_err(CoreError::NotFound("account")))?;
    let found = powertab_core::billing::accounts::get(&mut tx, &principal, account)
        .await
        .map_err(read_err)?;
    let l = levels::get(&mut tx, &principal, account)
        .await
        .map_err(read_err)?;
    let credit = emergency::latest(&mut tx, &principal, account)
        .await
        .map_err(read_err)?;
    let now = principal.now();
    let own = |v: Option<powertab_core::kernel::money::AmountFen>| {
        v.map(|f| f.to_string()).unwrap_or_default()
    };
    Ok(super::views::AccountPowerView {
        id: account.to_string(),
        alarm1: l.alarm1_fen.to_string(),
        alarm2: l.alarm2_fen.to_string(),
        overdraft_limit: l.overdraft_limit_fen.to_string(),
        restore_level: l.restore_level_fen.to_string(),
        own_alarm1: own(l.own.alarm1_fen),
        own_alarm2: own(l.own.alarm2_fen),
        own_overdraft_limit: own(l.own.overdraft_limit_fen),
        own_restore_level: own(l.own.restore_level_fen),
        credit: credit.map(|c| {
            (
                c.amount_fen.to_string(),
                local_time(c.expires_at, &principal.tz()),
                c.ended_at.is_none() && c.expires_at > now,
            )
        }),
        can_levels: principal.can(Need::Act(Right::Accounts)),
        can_emergency: principal.can(Need::Act(Right::EmergencyCredit)),
        open: found.state == powertab_core::billing::accounts::AccountState::Open,
    })
}

/// Yuan text as a level: empty follows the default.
fn level(
    text: &str,
    field: &str,
) -> Result<Option<powertab_core::kernel::money::AmountFen>, UiError> {
    match text.trim() {
        "" => Ok(None),
        t => powertab_core::kernel::money::AmountFen::parse_yuan(t)
            .map(Some)
            .map_err(|_| field_error(field)),
    }
}

pub async fn save_account_levels(
    csrf: String,
    id: String,
    [alarm1, alarm2, overdraft_limit, restore_level]: [String; 4],
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let account: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let wanted = powertab_core::power::levels::AccountLevels {
            alarm1_fen: level(&alarm1, "alarm1")?,
            alarm2_fen: level(&alarm2, "alarm2")?,
            overdraft_limit_fen: level(&overdraft_limit, "overdraft_limit")?,
            restore_level_fen: level(&restore_level, "restore_level")?,
        };
        powertab_core::power::levels::set(&mut tx, &principal, account, &wanted)
            .await
            .map_err(|e| {
                UiError::from(e).renamed(&[
                    ("alarm1_fen", "alarm1"),
                    ("alarm2_fen", "alarm2"),
                    ("overdraft_limit_fen", "overdraft_limit"),
                    ("restore_level_fen", "restore_level"),
                ])
            })?;
        tx.commit().await?;
        Ok(format!("/accounts/{account}?ok=common.saved"))
    }
    .await;
    finish(result)
}

pub async fn grant_emergency(
    csrf: String,
    id: String,
    amount: String,
    hours: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let account: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let amount = powertab_core::kernel::money::AmountFen::parse_yuan(amount.trim())
            .map_err(|_| field_error("amount"))?;
        let hours: i64 = hours.trim().parse().map_err(|_| field_error("hours"))?;
        powertab_core::power::emergency::grant(&mut tx, &principal, account, amount, hours)
            .await
            .map_err(|e| match e {
                CoreError::Conflict(_) => ui("emergency_used"),
                e => UiError::from(e).renamed(&[("amount_fen", "amount")]),
            })?;
        tx.commit().await?;
        Ok(format!("/accounts/{account}?ok=power.emergency_granted"))
    }
    .await;
    finish(result)
}

pub async fn get_alarms(all: String) -> Result<super::views::AlarmsView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let tz = principal.tz();
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| local_time(t, &tz)).unwrap_or_default()
    };
    let rows = powertab_core::field::fleet::field_alarms(&mut tx, &principal, all == "1")
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|a| super::views::AlarmRowView {
            id: a.id.to_string(),
            kind: a.kind,
            target: a.target,
            detail: a.detail,
            raised_at: local_time(a.raised_at, &tz),
            cleared_at: time(a.cleared_at),
            acknowledged_at: time(a.acknowledged_at),
        })
        .collect();
    Ok(super::views::AlarmsView {
        rows,
        can_acknowledge: powertab_core::field::fleet::may_acknowledge(&principal),
        can_export: principal.can(Need::Act(Right::Export)),
    })
}

pub async fn acknowledge_alarm(csrf: String, id: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        powertab_core::field::fleet::acknowledge_alarm(&mut tx, &principal, id).await?;
        tx.commit().await?;
        Ok("/alarms?ok=alarms.acknowledged".to_owned())
    }
    .await;
    finish(result)
}

pub async fn get_messages() -> Result<(Vec<super::views::MessageRowView>, bool), WebError> {
    use powertab_core::power::messages::{self, MessageFilter};
    let (principal, mut tx) = read_session().await?;
    let tz = principal.tz();
    let rows = messages::list(&mut tx, &principal, &MessageFilter::default())
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|m| super::views::MessageRowView {
            shop: m.shop,
            kind: m.kind,
            recipient: m.recipient,
            channel: m.channel,
            body: m.body,
            created_at: local_time(m.created_at, &tz),
            deliver_after: local_time(m.deliver_after, &tz),
            state: m.state,
            sent_at: m.sent_at.map(|t| local_time(t, &tz)).unwrap_or_default(),
            error: m.error,
        })
        .collect();
    Ok((rows, principal.can(Need::Act(Right::Export))))
}

pub async fn get_notify_settings() -> Result<super::views::NotifySettingsView, WebError> {
    use powertab_core::notify::{accounts, preferences};
    let (principal, mut tx) = read_session().await?;
    principal.require_read_company().map_err(read_err)?;
    let delivery = accounts::delivery(&mut tx).await.map_err(read_err)?;
    let can_change = principal.can(Need::Act(Right::Settings));
    let tz = principal.tz();
    let accounts = if can_change {
        accounts::list(&mut tx, &principal)
            .await
            .map_err(read_err)?
            .into_iter()
            .map(|a| vendor_view(a, &tz))
            .collect()
    } else {
        Vec::new()
    };
    let muted = preferences::mine(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .muted;
    let mine = super::views::NOTIFY_MUTABLE_KINDS
        .iter()
        .map(|k| (k.to_string(), !muted.iter().any(|m| m == k)))
        .collect();
    let company = principal.company().map_err(read_err)?.id;
    Ok(super::views::NotifySettingsView {
        sms_channel: delivery.sms_channel,
        per_phone_hour: delivery.per_phone_hour,
        escalate_after_min: delivery.escalate_after_min,
        accounts,
        can_change,
        mine,
        wechat_callback_path: format!("/api/v1/hooks/wechat/{company}"),
    })
}

fn vendor_view(
    a: powertab_core::notify::accounts::AccountView,
    tz: &chrono_tz::Tz,
) -> super::views::VendorAccountView {
    let keys = powertab_core::notify::accounts::config_keys(&a.channel);
    super::views::VendorAccountView {
        config: keys
            .iter()
            .map(|k| (k.to_string(), a.config.get(*k).cloned().unwrap_or_default()))
            .collect(),
        templates: super::views::NOTIFY_KINDS
            .iter()
            .map(|k| {
                (
                    k.to_string(),
                    a.templates.get(*k).cloned().unwrap_or_default(),
                )
            })
            .collect(),
        broken: a
            .broken_at
            .map(|t| format!("{} {}", local_time(t, tz), a.broken_reason))
            .unwrap_or_default(),
        channel: a.channel,
        enabled: a.enabled,
        secret_set: a.secret_set,
        callback_token_set: a.callback_token_set,
    }
}

pub async fn save_notify_delivery(
    csrf: String,
    sms_channel: String,
    per_phone_hour: String,
    escalate_after_min: String,
) -> Result<(), WebError> {
    use powertab_core::notify::accounts::{self, Delivery};
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let number =
            |text: &str, field: &str| text.trim().parse::<i32>().map_err(|_| field_error(field));
        let wanted = Delivery {
            sms_channel,
            per_phone_hour: number(&per_phone_hour, "per_phone_hour")?,
            escalate_after_min: number(&escalate_after_min, "escalate_after_min")?,
        };
        accounts::set_delivery(&mut tx, &principal, &wanted).await?;
        tx.commit().await?;
        Ok("/settings/notifications?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

pub async fn save_notify_account(
    csrf: String,
    channel: String,
    form: super::views::NotifyAccountForm,
) -> Result<(), WebError> {
    use powertab_core::notify::accounts::{self, AccountInput};
    let keyring = crate::web::server::ctx()?.keyring;
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let keys = accounts::config_keys(&channel);
        let input = AccountInput {
            enabled: form.enabled.is_some(),
            config: form
                .config()
                .iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(k, v)| (k.to_string(), v.trim().to_owned()))
                .collect(),
            templates: form
                .templates()
                .iter()
                .filter(|(_, v)| !v.trim().is_empty())
                .map(|(k, v)| (k.to_string(), v.trim().to_owned()))
                .collect(),
            secret: Some(form.secret.clone()).filter(|s| !s.is_empty()),
            callback_token: Some(form.callback_token.clone()).filter(|s| !s.is_empty()),
        };
        accounts::put(&mut tx, &principal, keyring.as_deref(), &channel, &input).await?;
        tx.commit().await?;
        Ok("/settings/notifications?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

pub async fn save_notify_preferences(
    csrf: String,
    form: super::views::NotifyPrefsForm,
) -> Result<(), WebError> {
    use powertab_core::notify::preferences::{self, Preferences};
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let wanted = Preferences {
            muted: form.muted(),
        };
        preferences::set_mine(&mut tx, &principal, &wanted).await?;
        tx.commit().await?;
        Ok("/settings/notifications?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

/// The meter-side page's rows (`core::secure::reports`), money formatted from integer fen.
pub async fn get_meter_side() -> Result<(Vec<super::views::MeterSideRowView>, bool), WebError> {
    let (principal, mut tx) = read_session().await?;
    let states = powertab_core::secure::reports::states(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let rows = meter_side_rows(&principal, states);
    Ok((rows, principal.can(Need::Act(Right::Export))))
}

/// The reconciliation report's rows as the pages show them.
fn meter_side_rows(
    principal: &Principal,
    states: Vec<powertab_core::secure::reports::SecureState>,
) -> Vec<super::views::MeterSideRowView> {
    use powertab_core::kernel::money::AmountFen;
    let tz = principal.tz();
    let text = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let yuan = |fen: i64| AmountFen::from_fen(fen).to_string();
    states
        .into_iter()
        .map(|s| super::views::MeterSideRowView {
            meter_id: s.meter_id.to_string(),
            meter_number: s.meter_number,
            shop: s.shop_number.unwrap_or_default(),
            key_version: s.key_version.map(|v| v.to_string()).unwrap_or_default(),
            platform_purchases: text(s.platform_purchase_count),
            meter_purchases: text(s.meter_purchase_count),
            out_of_band: s.out_of_band,
            in_transit: yuan(s.in_transit_fen),
            shadow: yuan(s.on_meter_fen),
            remaining: s.meter_remaining_fen.map(yuan).unwrap_or_default(),
            drift: s.drift_fen.map(yuan).unwrap_or_default(),
            price: s
                .meter_price_units
                .map(powertab_core::tariff::format_price_units)
                .unwrap_or_default(),
            read_back_at: s
                .read_back_at
                .map(|t| local_time(t, &tz))
                .unwrap_or_default(),
            in_flight: s.commands_in_flight,
        })
        .collect()
}

/// One meter-side meter's page (`core::secure::reports`): its row of the reconciliation report,
/// its control counters and its secure commands with each frame's state.
pub async fn get_meter_side_meter(
    id: String,
) -> Result<super::views::MeterSideDetailView, WebError> {
    use powertab_core::kernel::money::AmountFen;
    use powertab_core::secure::reports;
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id.parse().map_err(|_| WebError::new("not_found"))?;
    let tz = principal.tz();
    let history = reports::history(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let state = reports::states(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .find(|s| s.meter_id == id)
        .ok_or_else(|| WebError::new("not_found"))?;
    let text = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let (platform_controls, meter_controls) = (
        text(state.platform_control_count),
        text(state.meter_control_count),
    );
    let in_transit = state.in_transit_fen > 0;
    let rekey_to = state.rekey_to_version;
    let newest_key_version = powertab_core::secure::keys::latest_version(&mut tx)
        .await
        .map_err(read_err)?;
    let history = history
        .into_iter()
        .map(|c| super::views::SecureCommandView {
            id: c.id.to_string(),
            amount: match (c.op.as_str(), c.amount) {
                ("purchase" | "deduct", Some(fen)) => AmountFen::from_fen(fen).to_string(),
                ("set_price", Some(units)) => powertab_core::tariff::format_price_units(units),
                _ => String::new(),
            },
            cancellable: in_transit && c.op == "purchase" && c.state == "failed",
            op: c.op,
            state: c.state,
            sequence: text(c.sequence),
            ack_status: c.ack_status.unwrap_or_default(),
            attempts: c.attempts,
            detail: c.detail,
            created_at: local_time(c.created_at, &tz),
            updated_at: local_time(c.updated_at, &tz),
        })
        .collect();
    let row = meter_side_rows(&principal, vec![state])
        .into_iter()
        .next()
        .ok_or_else(|| WebError::new("not_found"))?;
    Ok(super::views::MeterSideDetailView {
        row,
        platform_controls,
        meter_controls,
        history,
        can_export_key: principal.role == powertab_core::tenancy::roles::Role::CompanyAdmin,
        can_deduct: principal.can(Need::Act(Right::Refund)),
        rekey_to,
        newest_key_version,
    })
}

/// Exports meter `id`'s key for its page (`core::secure::keys::export_meter_key`: company admins
/// only, audited without the key). Asked for by opening the page with `key=show`.
pub async fn export_meter_key(id: String) -> Result<super::views::ExportedKeyView, WebError> {
    let keyring = crate::web::server::ctx()?
        .keyring
        .ok_or_else(|| WebError::new("keyring_missing"))?;
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id.parse().map_err(|_| WebError::new("not_found"))?;
    let (key_version, hex) =
        powertab_core::secure::keys::export_meter_key(&mut tx, &keyring, &principal, id)
            .await
            .map_err(read_err)?;
    tx.commit().await.map_err(|e| read_err(e.into()))?;
    Ok(super::views::ExportedKeyView {
        key_version,
        meter_key_hex: hex.to_string(),
    })
}

/// Starts, verifies or abandons (`action`) the re-key of meter-side meter `meter`
/// (`core::secure::rekey`).
pub async fn rekey_meter(csrf: String, meter: String, action: String) -> Result<(), WebError> {
    use powertab_core::secure::rekey;
    let keyring = crate::web::server::ctx()?.keyring;
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let meter: Uuid = meter.parse().map_err(|_| ui("not_found"))?;
        let keyring = keyring.ok_or_else(|| ui("keyring_missing"))?;
        let ok = match action.as_str() {
            "start" => {
                rekey::start(&mut tx, &keyring, &principal, meter).await?;
                "meter_side.rekey_started"
            }
            "verify" => {
                rekey::verify(&mut tx, &keyring, &principal, meter).await?;
                "meter_side.rekey_verifying"
            }
            "abandon" => {
                rekey::abandon(&mut tx, &principal, meter).await?;
                "meter_side.rekey_abandoned"
            }
            _ => return Err(field_error("action")),
        };
        tx.commit().await?;
        Ok(format!("/meter-side/{meter}?ok={ok}"))
    }
    .await;
    finish(result)
}

/// Takes `amount` yuan back off meter-side meter `meter` (`core::secure::deduct::take_back`).
pub async fn take_back_credit(
    csrf: String,
    meter: String,
    amount: String,
    reason: String,
) -> Result<(), WebError> {
    use powertab_core::kernel::money::AmountFen;
    let keyring = crate::web::server::ctx()?.keyring;
    let kept = serde_json::json!({ "amount": &amount, "reason": &reason });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let meter: Uuid = meter.parse().map_err(|_| ui("not_found"))?;
        let keyring = keyring.ok_or_else(|| ui("keyring_missing"))?;
        let amount = AmountFen::parse_yuan(&amount).map_err(|_| field_error("amount"))?;
        powertab_core::secure::deduct::take_back(
            &mut tx, &keyring, &principal, meter, amount, &reason,
        )
        .await
        .map_err(|e| UiError::from(e).renamed(&[("amount_fen", "amount")]))?;
        tx.commit().await?;
        Ok(format!("/meter-side/{meter}?ok=meter_side.deduct_sent"))
    }
    .await;
    crate::web::server::finish_keeping(result, "deduct-form", &kept)
}

/// Asks for the cancel of failed purchase `command` (`core::secure::cancel::request`; an
/// approver other than the asker decides on the approvals page).
pub async fn request_purchase_cancel(
    csrf: String,
    meter: String,
    command: String,
    reason: String,
    key: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let meter: Uuid = meter.parse().map_err(|_| ui("not_found"))?;
        let command: Uuid = command.parse().map_err(|_| ui("not_found"))?;
        if reason.trim().is_empty() {
            return Err(field_error("reason"));
        }
        powertab_core::secure::cancel::request(&mut tx, &principal, command, &reason, &key).await?;
        tx.commit().await?;
        Ok(format!("/meter-side/{meter}?ok=meter_side.cancel_asked"))
    }
    .await;
    finish(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_go_back_only_to_our_own_pages() {
        assert_eq!(back_to("/meters/abc"), "/meters/abc");
        assert_eq!(back_to("/commands"), "/commands");
        assert_eq!(back_to("/control/batches/1"), "/control/batches/1");
        for hostile in [
            "https://evil.example/commands",
            "//evil.example",
            "/meters//evil",
            "/login",
            "/meters/\\x",
        ] {
            assert_eq!(back_to(hostile), "/commands", "{hostile}");
        }
        assert_eq!(with_ok("/commands", "k"), "/commands?ok=k");
    }
}
