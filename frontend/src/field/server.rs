//! The server side of the field pages: gateway and meter lists and details, and the forms that
//! add, change, swap and remove them. Form text is parsed here (kWh, yuan, ids) and everything
//! else is left to `powertab_core::field` and `field_changes`, which own the rules.

use super::views::{
    BusForm, BusView, GatewayForm, GatewayView, MeterDetailView, MeterForm, MeterListView,
    MeterRow, MqttCredentialView, SwapForm, SwapView,
};
use crate::web::server::ctx;
use crate::web::server::{
    company_tz, field_error, finish, finish_keeping, local_time, non_empty, read_err, read_session,
    session_for_change, ui, UiError,
};
use crate::web::PageView;
use crate::web::WebError;
use powertab_core::auth::Principal;
use powertab_core::db::Tx;
use powertab_core::field::changes::{self, BusesInput, MeterRemoval, MeterSwapInput};
use powertab_core::field::credentials::{self, MqttCredential};
use powertab_core::field::{self, BusInput, GatewayInput, GatewayPatch, Meter, MeterFilter};
use powertab_core::kernel::money::{format_wh_as_kwh, parse_kwh_as_wh, AmountFen};
use std::collections::HashMap;
use uuid::Uuid;

fn gateway_view(g: field::Gateway) -> GatewayView {
    GatewayView {
        id: g.id.to_string(),
        identity: g.identity,
        name: g.name,
        kind: g.kind.to_string(),
        status: g.status.to_string(),
        registration_set: g.registration_set,
        registration_repeats: g.registration_repeats,
        heartbeat_hex: g.heartbeat_hex.unwrap_or_default(),
        host: g.host.unwrap_or_default(),
        credential_generation: g.mqtt_credential_generation,
        buses: g
            .buses
            .into_iter()
            .map(|b| BusView {
                id: b.id.to_string(),
                number: b.number,
                protocol: b.protocol,
                baud: b.baud,
                parity: b.parity,
                stop_bits: b.stop_bits,
                gap_ms: b.gap_ms,
                timeout_ms: b.timeout_ms,
                tcp_port: b.tcp_port,
                meter_count: b.meter_count,
            })
            .collect(),
    }
}

pub async fn list_gateways(
    status: String,
    cursor: String,
) -> Result<PageView<GatewayView>, WebError> {
    let (principal, mut tx) = read_session().await?;
    let filter = field::GatewayFilter {
        status: non_empty(status),
        kind: None,
        cursor: non_empty(cursor),
        limit: Some(50),
    };
    let page = field::gateways_page(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    Ok(PageView {
        items: page.items.into_iter().map(gateway_view).collect(),
        next_cursor: page.next_cursor,
    })
}

pub async fn get_gateway(id: String) -> Result<GatewayView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("gateway")))?;
    let g = field::gateway(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    Ok(gateway_view(g))
}

/// Lookups that turn ids into the names people know.
struct Names {
    shops: HashMap<Uuid, String>,
    plans: HashMap<Uuid, String>,
}

async fn names(tx: &mut Tx, principal: &Principal) -> Result<Names, WebError> {
    let shops = powertab_core::property::shops(tx, principal, &Default::default())
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|s| {
            (
                s.id,
                format!("{} · {} {}", s.building_name, s.number, s.name),
            )
        })
        .collect();
    let plans = powertab_core::tariff::plans::list(tx, principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    Ok(Names { shops, plans })
}

fn sorted(map: &HashMap<Uuid, String>) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = map
        .iter()
        .map(|(id, name)| (id.to_string(), name.clone()))
        .collect();
    items.sort_by(|a, b| a.1.cmp(&b.1));
    items
}

fn meter_row(m: &Meter, names: &Names) -> MeterRow {
    let lookup = |map: &HashMap<Uuid, String>, id: Option<Uuid>| {
        id.and_then(|id| map.get(&id).cloned()).unwrap_or_default()
    };
    MeterRow {
        id: m.id.to_string(),
        meter_number: m.meter_number.clone(),
        model: m.model.to_string(),
        gateway: m.gateway_identity.clone(),
        gateway_id: m.gateway_id.to_string(),
        bus: m.bus_number,
        address: m.address.clone(),
        prepayment_mode: m.prepayment_mode.to_string(),
        role: m.role.to_string(),
        status: m.status.to_string(),
        shop: lookup(&names.shops, m.shop_id),
        plan: lookup(&names.plans, m.tariff_plan_id),
    }
}

pub async fn list_meters(
    q: String,
    model: String,
    mode: String,
    status: String,
    building: String,
    cursor: String,
) -> Result<MeterListView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let filter = MeterFilter {
        q: non_empty(q),
        model: non_empty(model),
        prepayment_mode: non_empty(mode),
        // Active meters unless the page asks for removed ones (or all with `any`).
        status: match status.as_str() {
            "" => Some("active".into()),
            "any" => None,
            other => Some(other.to_owned()),
        },
        building_id: building.parse().ok(),
        cursor: non_empty(cursor),
        limit: Some(100),
        ..Default::default()
    };
    let page = field::meters_page(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    let names = names(&mut tx, &principal).await?;
    let buildings = powertab_core::property::tree(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|b| (b.id.to_string(), b.name))
        .collect();
    let buses = field::list_gateways(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .flat_map(|g| {
            g.buses.into_iter().map(move |b| {
                (
                    b.id.to_string(),
                    format!("{} · {} ({})", g.identity, b.number, b.protocol),
                )
            })
        })
        .collect();
    Ok(MeterListView {
        items: page.items.iter().map(|m| meter_row(m, &names)).collect(),
        next_cursor: page.next_cursor,
        buildings,
        plans: sorted(&names.plans),
        buses,
        shops: sorted(&names.shops),
    })
}

fn yuan(fen: Option<AmountFen>) -> String {
    fen.map(|f| f.to_string()).unwrap_or_default()
}

pub async fn get_meter(id: String) -> Result<MeterDetailView, WebError> {
    let (principal, mut tx) = read_session().await?;
    let not_found = || read_err(powertab_core::CoreError::NotFound("meter"));
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let m = field::meter(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let names = names(&mut tx, &principal).await?;
    let defaults = powertab_core::tenancy::settings::get(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let tz = company_tz(&principal);
    let history = changes::meter_history(&mut tx, &principal, id)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|s| SwapView {
            at: local_time(s.swapped_at, &tz),
            old_meter_id: s.old_meter_id.to_string(),
            old_meter_number: s.old_meter_number,
            new_meter_id: s.new_meter_id.to_string(),
            new_meter_number: s.new_meter_number,
            old_final_kwh: format_wh_as_kwh(s.old_final_energy_wh),
            new_initial_kwh: format_wh_as_kwh(s.new_initial_energy_wh),
            reason: s.reason,
        })
        .collect();
    let feeder_filter = MeterFilter {
        status: Some("active".into()),
        ..Default::default()
    };
    let all = field::meters(&mut tx, &principal, &feeder_filter)
        .await
        .map_err(read_err)?;
    let parent_number = m
        .parent_id
        .and_then(|p| all.iter().find(|f| f.id == p))
        .map(|f| f.meter_number.clone())
        .unwrap_or_default();
    let feeders = all
        .iter()
        .filter(|f| f.role == powertab_core::field::MeterRole::Main && f.id != m.id)
        .map(|f| (f.id.to_string(), f.meter_number.clone()))
        .collect();
    Ok(MeterDetailView {
        row: meter_row(&m, &names),
        bus_id: m.bus_id.to_string(),
        ct_ratio: m.ct_ratio,
        pt_ratio: m.pt_ratio,
        shop_id: m.shop_id.map(|s| s.to_string()).unwrap_or_default(),
        plan_id: m.tariff_plan_id.map(|s| s.to_string()).unwrap_or_default(),
        parent_id: m.parent_id.map(|s| s.to_string()).unwrap_or_default(),
        parent_number,
        alarm1: yuan(m.alarm1_fen),
        alarm2: yuan(m.alarm2_fen),
        default_alarm1: yuan(Some(defaults.alarm1_fen)),
        default_alarm2: yuan(Some(defaults.alarm2_fen)),
        install_date: m.install_date.map(|d| d.to_string()).unwrap_or_default(),
        initial_kwh: format_wh_as_kwh(m.initial_energy_wh),
        tou_registers_match: m.tou_registers_match,
        removed_at: m.removed_at.map(|t| local_time(t, &tz)).unwrap_or_default(),
        final_kwh: m.final_energy_wh.map(format_wh_as_kwh).unwrap_or_default(),
        history,
        plans: sorted(&names.plans),
        shops: sorted(&names.shops),
        feeders,
    })
}

// ---------------------------------------------------------------------------------------------
// Form parsing

fn parse_int(text: &str, field: &str) -> Result<Option<i32>, UiError> {
    match text.trim() {
        "" => Ok(None),
        t => t.parse().map(Some).map_err(|_| field_error(field)),
    }
}

fn parse_id(text: &str, field: &str) -> Result<Option<Uuid>, UiError> {
    match text.trim() {
        "" | "none" => Ok(None),
        t => t.parse().map(Some).map_err(|_| field_error(field)),
    }
}

fn parse_fen(text: &str, field: &str) -> Result<Option<AmountFen>, UiError> {
    match text.trim() {
        "" => Ok(None),
        t => AmountFen::parse_yuan(t)
            .map(Some)
            .map_err(|_| field_error(field)),
    }
}

fn parse_wh(text: &str, field: &str) -> Result<Option<i64>, UiError> {
    match text.trim() {
        "" => Ok(None),
        t => parse_kwh_as_wh(t).map(Some).map_err(|_| field_error(field)),
    }
}

/// The filled-in rows of a bus form (rows without a port number are unused).
fn bus_inputs(rows: &[BusForm]) -> Result<Vec<BusInput>, UiError> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| !r.number.trim().is_empty())
        .map(|(i, r)| {
            let key = |f: &str| format!("buses.{i}.{f}");
            Ok(BusInput {
                number: parse_int(&r.number, &key("number"))?.unwrap_or(0),
                protocol: r.protocol.clone(),
                baud: parse_int(&r.baud, &key("baud"))?,
                parity: non_empty(r.parity.clone()),
                stop_bits: parse_int(&r.stop_bits, &key("stop_bits"))?,
                gap_ms: parse_int(&r.gap_ms, &key("gap_ms"))?,
                timeout_ms: parse_int(&r.timeout_ms, &key("timeout_ms"))?,
                tcp_port: parse_int(&r.tcp_port, &key("tcp_port"))?,
            })
        })
        .collect()
}

fn credential_view(c: MqttCredential, broker: String) -> MqttCredentialView {
    MqttCredentialView {
        broker,
        username: c.username,
        password: c.password,
        generation: c.generation,
    }
}

pub async fn gateway_credential(id: String) -> Result<MqttCredentialView, WebError> {
    let web = ctx()?;
    if credentials::check_secret(web.gateway_secret.as_ref()).is_err() {
        return Err(WebError::new("gateway_secret_missing"));
    }
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("gateway")))?;
    let credential = credentials::show(&mut tx, &principal, web.gateway_secret.as_ref(), id)
        .await
        .map_err(read_err)?;
    // Committed: the look is audited.
    tx.commit().await.map_err(|e| read_err(e.into()))?;
    Ok(credential_view(credential, web.mqtt_broker))
}

pub async fn gateway_registration(id: String) -> Result<String, WebError> {
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("gateway")))?;
    let shown = field::reveal_registration(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    // Committed: the look is audited.
    tx.commit().await.map_err(|e| read_err(e.into()))?;
    Ok(match shown.registration_text {
        Some(text) => format!("{} ({text})", shown.registration_hex),
        None => shown.registration_hex,
    })
}

pub async fn rotate_gateway_credential(csrf: String, id: String) -> Result<(), WebError> {
    let result = async {
        let web = ctx().map_err(|_| ui("internal"))?;
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        credentials::rotate(&mut tx, &principal, web.gateway_secret.as_ref(), id).await?;
        tx.commit().await?;
        Ok(format!(
            "/gateways/{id}?ok=gateways.credential_rotated&credential=show"
        ))
    }
    .await;
    finish(result)
}

// ---------------------------------------------------------------------------------------------
// Gateway changes

pub async fn create_gateway(
    csrf: String,
    identity: String,
    kind: String,
    form: GatewayForm,
    buses: Vec<BusForm>,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "identity": &identity, "kind": &kind, "name": &form.name, "heartbeat": &form.heartbeat, "host": &form.host });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let input = GatewayInput {
            identity,
            name: form.name,
            kind,
            registration: form.registration,
            registration_is_hex: form.registration_is_hex.is_some(),
            registration_repeats: form.registration_repeats.is_some(),
            heartbeat: form.heartbeat,
            heartbeat_is_hex: form.heartbeat_is_hex.is_some(),
            host: form.host,
            buses: bus_inputs(&buses)?,
        };
        let created = field::create_gateway(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        // An MQTT gateway's page opens with its credential, which the installer needs next.
        let show = if created.kind == powertab_core::field::GatewayKind::Mqtt {
            "&credential=show"
        } else {
            ""
        };
        Ok(format!("/gateways/{}?ok=common.saved{show}", created.id))
    }
    .await;
    finish_keeping(result, "gateway-form", &kept)
}

pub async fn update_gateway(csrf: String, id: String, form: GatewayForm) -> Result<(), WebError> {
    let kept = form.clone();
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let before = field::gateway(&mut tx, &principal, id).await?;
        let patch = GatewayPatch {
            name: Some(form.name),
            // The bytes are never put in the form: empty keeps them.
            registration: (before.kind == powertab_core::field::GatewayKind::Dtu
                && !form.registration.trim().is_empty())
            .then_some(form.registration),
            registration_is_hex: form.registration_is_hex.is_some(),
            registration_repeats: Some(form.registration_repeats.is_some()),
            heartbeat: Some(form.heartbeat),
            heartbeat_is_hex: form.heartbeat_is_hex.is_some(),
            host: (before.kind == powertab_core::field::GatewayKind::ModbusTcp)
                .then_some(form.host),
        };
        field::update_gateway(&mut tx, &principal, id, &patch).await?;
        tx.commit().await?;
        Ok(format!("/gateways/{id}?ok=common.saved"))
    }
    .await;
    finish_keeping(result, "gateway-edit", &kept)
}

pub async fn set_buses(csrf: String, id: String, buses: Vec<BusForm>) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let input = BusesInput {
            buses: bus_inputs(&buses)?,
        };
        changes::set_buses(&mut tx, &principal, id, &input).await?;
        tx.commit().await?;
        Ok(format!("/gateways/{id}?ok=common.saved"))
    }
    .await;
    finish(result)
}

pub async fn gateway_status(csrf: String, id: String, action: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let next = match action.as_str() {
            "enable" | "suspend" => {
                field::set_gateway_status(&mut tx, &principal, id, action == "enable").await?;
                format!("/gateways/{id}?ok=common.saved")
            }
            "remove" => {
                changes::remove_gateway(&mut tx, &principal, id).await?;
                "/gateways?ok=gateways.removed".to_owned()
            }
            _ => return Err(field_error("action")),
        };
        tx.commit().await?;
        Ok(next)
    }
    .await;
    finish(result)
}

// ---------------------------------------------------------------------------------------------
// Meter changes

pub async fn create_meter(csrf: String, form: MeterForm) -> Result<(), WebError> {
    let typed = form.clone();
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let input = field::MeterInput {
            bus_id: parse_id(&form.bus_id, "bus_id")?.ok_or_else(|| field_error("bus_id"))?,
            model: form.model,
            address: form.address,
            meter_number: form.meter_number,
            ct_ratio: parse_int(&form.ct_ratio, "ct_ratio")?,
            pt_ratio: parse_int(&form.pt_ratio, "pt_ratio")?,
            prepayment_mode: non_empty(form.prepayment_mode),
            role: non_empty(form.role),
            parent_id: parse_id(&form.parent_id, "parent_id")?,
            shop_id: parse_id(&form.shop_id, "shop_id")?,
            tariff_plan_id: parse_id(&form.plan_id, "tariff_plan_id")?,
            alarm1_fen: parse_fen(&form.alarm1, "alarm1_fen")?,
            alarm2_fen: parse_fen(&form.alarm2, "alarm2_fen")?,
            install_date: match form.install_date.trim() {
                "" => None,
                d => Some(d.parse().map_err(|_| field_error("install_date"))?),
            },
            initial_energy_wh: parse_wh(&form.initial_kwh, "initial_energy_wh")?,
            tou_registers_match: form.tou_registers_match.is_some(),
            dlt645_password: form.dlt645_password,
            dlt645_operator: form.dlt645_operator,
            accept_crowded_bus: form.accept_crowded_bus.is_some(),
        };
        let created = field::create_meter(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok(format!("/meters/{}?ok=common.saved", created.id))
    }
    .await;
    finish_keeping(result, "meter-form", &typed)
}

/// A meter edit: every field of the form is the meter's new value (empty clears).
pub async fn update_meter(csrf: String, id: String, form: MeterForm) -> Result<(), WebError> {
    let kept = form.clone();
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let patch = field::MeterPatch {
            ct_ratio: parse_int(&form.ct_ratio, "ct_ratio")?,
            pt_ratio: parse_int(&form.pt_ratio, "pt_ratio")?,
            prepayment_mode: non_empty(form.prepayment_mode),
            role: non_empty(form.role),
            parent_id: Some(parse_id(&form.parent_id, "parent_id")?),
            shop_id: Some(parse_id(&form.shop_id, "shop_id")?),
            tariff_plan_id: Some(parse_id(&form.plan_id, "tariff_plan_id")?),
            alarm1_fen: Some(parse_fen(&form.alarm1, "alarm1_fen")?),
            alarm2_fen: Some(parse_fen(&form.alarm2, "alarm2_fen")?),
            tou_registers_match: Some(form.tou_registers_match.is_some()),
        };
        field::update_meter(&mut tx, &principal, id, &patch).await?;
        tx.commit().await?;
        Ok(format!("/meters/{id}?ok=common.saved"))
    }
    .await;
    finish_keeping(result, "meter-edit", &kept)
}

pub async fn swap_meter(csrf: String, id: String, form: SwapForm) -> Result<(), WebError> {
    let kept = form.clone();
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let input = MeterSwapInput {
            meter_number: form.meter_number,
            model: non_empty(form.model),
            address: non_empty(form.address),
            old_final_energy_wh: parse_wh(&form.old_final_kwh, "old_final_energy_wh")?
                .ok_or_else(|| field_error("old_final_energy_wh"))?,
            new_initial_energy_wh: parse_wh(&form.new_initial_kwh, "new_initial_energy_wh")?
                .unwrap_or(0),
            swapped_at: None,
            reason: form.reason,
            dlt645_password: String::new(),
            dlt645_operator: String::new(),
        };
        let swapped = changes::swap_meter(&mut tx, &principal, id, &input).await?;
        tx.commit().await?;
        Ok(format!("/meters/{}?ok=meters.swapped", swapped.new.id))
    }
    .await;
    finish_keeping(result, "meter-swap", &kept)
}

pub async fn remove_meter(
    csrf: String,
    id: String,
    final_kwh: String,
    reason: String,
) -> Result<(), WebError> {
    let kept = serde_json::json!({ "final_kwh": &final_kwh, "reason": &reason });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        let input = MeterRemoval {
            final_energy_wh: parse_wh(&final_kwh, "final_energy_wh")?
                .ok_or_else(|| field_error("final_energy_wh"))?,
            removed_at: None,
            reason,
        };
        changes::remove_meter(&mut tx, &principal, id, &input).await?;
        tx.commit().await?;
        Ok(format!("/meters/{id}?ok=common.saved"))
    }
    .await;
    finish_keeping(result, "meter-remove", &kept)
}

pub async fn bulk_meters(
    csrf: String,
    meter_ids: Vec<String>,
    plan_id: String,
    alarm1: String,
    alarm2: String,
    prepayment_mode: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let meter_ids = meter_ids
            .iter()
            .map(|id| id.parse().map_err(|_| field_error("meter_ids")))
            .collect::<Result<Vec<Uuid>, UiError>>()?;
        let patch = field::MeterPatch {
            tariff_plan_id: match plan_id.trim() {
                "" => None,
                other => Some(parse_id(other, "tariff_plan_id")?),
            },
            alarm1_fen: parse_fen(&alarm1, "alarm1_fen")?.map(Some),
            alarm2_fen: parse_fen(&alarm2, "alarm2_fen")?.map(Some),
            prepayment_mode: non_empty(prepayment_mode),
            ..Default::default()
        };
        let change = field::BulkMeterChange { meter_ids, patch };
        let report = field::bulk_update(&mut tx, &principal, &change).await?;
        if !report.committed {
            // Nothing was kept: say which meters and fields stopped it.
            return Err(UiError {
                code: "validation_failed".into(),
                fields: report.errors.iter().map(|(_, f, _)| f.clone()).collect(),
                detail: Some(
                    report
                        .errors
                        .iter()
                        .map(|(id, f, m)| format!("{id} {f}: {m}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            });
        }
        tx.commit().await?;
        Ok(format!("/meters?ok=meters.bulk_done&n={}", report.updated))
    }
    .await;
    finish(result)
}

// ---------------------------------------------------------------------------------------------
// Live state

fn kwh(wh: Option<i64>) -> String {
    wh.map(format_wh_as_kwh).unwrap_or_default()
}

pub async fn get_fleet(
    problems: String,
    q: String,
    offset: String,
) -> Result<super::views::FleetView, WebError> {
    use powertab_core::field::fleet::{self, FleetFilter, FLEET_PAGE_DEFAULT};
    let (principal, mut tx) = read_session().await?;
    let tz = company_tz(&principal);
    let offset = offset.trim().parse::<i64>().unwrap_or(0).max(0);
    let filter = FleetFilter {
        problems: !problems.is_empty(),
        q: non_empty(q),
        limit: Some(FLEET_PAGE_DEFAULT),
        offset: Some(offset),
    };
    let mut f = fleet::fleet(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    let alarms = std::mem::take(&mut f.alarms);
    let unclaimed = fleet::unclaimed(&mut tx, &principal)
        .await
        .map_err(read_err)?
        .into_iter()
        .map(|u| {
            (
                u.registration_text.unwrap_or(u.registration_hex),
                local_time(u.last_seen_at, &tz),
                u.last_peer,
                u.attempts,
            )
        })
        .collect();
    Ok(super::views::FleetView {
        gateways: f
            .gateways
            .into_iter()
            .map(|g| super::views::FleetGateway {
                id: g.id.to_string(),
                identity: g.identity,
                name: g.name,
                online: g.online,
                buses: g
                    .buses
                    .into_iter()
                    .map(|b| {
                        (
                            b.number,
                            b.online,
                            b.last_seen_at
                                .map(|t| local_time(t, &tz))
                                .unwrap_or_default(),
                        )
                    })
                    .collect(),
            })
            .collect(),
        meters: f
            .meters
            .into_iter()
            .map(|m| super::views::FleetMeter {
                id: m.id.to_string(),
                meter_number: m.meter_number,
                gateway: m.gateway_identity,
                shop: m.shop,
                age_s: m.age_s,
                stale: m.stale,
                energy_kwh: kwh(m.energy_wh),
                power_w: m.power_w.map(|p| p.to_string()).unwrap_or_default(),
                remaining_yuan: yuan(m.remaining_fen),
                relay_closed: m.relay_closed,
                alarms: m.alarms,
                failures: m.consecutive_failures,
            })
            .collect(),
        meters_stale: f.meters_stale,
        meters_total: f.meters_total,
        meters_matching: f.meters_matching,
        offset,
        page_size: FLEET_PAGE_DEFAULT,
        gateways_total: f.gateways_total,
        gateways_offline: f.gateways_offline,
        unclaimed,
        as_of: local_time(principal.now(), &tz),
        alarms: alarms
            .into_iter()
            .map(|a| (a.kind, a.target, local_time(a.raised_at, &tz), a.detail))
            .collect(),
    })
}

pub async fn get_meter_live(id: String) -> Result<super::views::MeterLiveView, WebError> {
    use powertab_core::field::fleet::{self, ReadingFilter};
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("meter")))?;
    let tz = company_tz(&principal);
    let recent = fleet::readings(
        &mut tx,
        &principal,
        id,
        &ReadingFilter {
            limit: Some(20),
            ..Default::default()
        },
    )
    .await
    .map_err(read_err)?;
    let daily_rows = fleet::daily_energy(&mut tx, &principal, id, 14)
        .await
        .map_err(read_err)?;
    let mut by_day: std::collections::BTreeMap<chrono::NaiveDate, i64> = Default::default();
    for d in daily_rows {
        *by_day.entry(d.day).or_default() += d.energy_wh;
    }
    let hours = fleet::hourly_energy(&mut tx, &principal, id, 24)
        .await
        .map_err(read_err)?;
    let latest = recent.iter().find(|r| r.flag.is_none()).or(recent.first());
    let list = |v: &Option<Vec<i32>>, unit: &str, scale: i32| {
        v.as_ref()
            .map(|v| {
                v.iter()
                    .map(|x| {
                        format!(
                            "{}.{:0w$}",
                            x / scale,
                            x % scale,
                            w = if scale == 10 { 1 } else { 2 }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
                    + " "
                    + unit
            })
            .unwrap_or_default()
    };
    Ok(super::views::MeterLiveView {
        latest: latest
            .map(|r| {
                vec![
                    (
                        "live.energy".into(),
                        format!("{} kWh", format_wh_as_kwh(r.energy_wh)),
                    ),
                    (
                        "live.power".into(),
                        r.power_w.map(|p| format!("{p} W")).unwrap_or_default(),
                    ),
                    ("live.voltage".into(), list(&r.voltage_dv, "V", 10)),
                    ("live.current".into(), list(&r.current_ca, "A", 100)),
                    ("live.remaining".into(), yuan(r.remaining_fen)),
                    (
                        "live.relay".into(),
                        match r.relay_closed {
                            Some(true) => "live.relay.closed".into(),
                            Some(false) => "live.relay.open".into(),
                            None => String::new(),
                        },
                    ),
                    ("live.alarms".into(), r.alarms.join(", ")),
                ]
            })
            .unwrap_or_default(),
        read_at: latest
            .map(|r| local_time(r.read_at, &tz))
            .unwrap_or_default(),
        age_s: latest.map(|r| (principal.now() - r.read_at).num_seconds().max(0)),
        daily: if latest.is_some() {
            day_slots(&by_day, principal.today())
        } else {
            Vec::new()
        },
        hourly: if latest.is_some() {
            let by_hour = hours.into_iter().map(|h| (h.hour, h.energy_wh)).collect();
            hour_slots(&by_hour, principal.now().with_timezone(&tz))
        } else {
            Vec::new()
        },
        recent: recent
            .into_iter()
            .map(|r| {
                (
                    local_time(r.read_at, &tz),
                    format_wh_as_kwh(r.energy_wh),
                    r.power_w.map(|p| p.to_string()).unwrap_or_default(),
                    r.flag.unwrap_or_default(),
                )
            })
            .collect(),
    })
}

pub async fn read_meter_now(csrf: String, id: String) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        powertab_core::commands::read_now(&mut tx, &principal, id).await?;
        tx.commit().await?;
        Ok(format!("/meters/{id}?ok=live.read_requested"))
    }
    .await;
    finish(result)
}

pub async fn control_meter(
    csrf: String,
    id: String,
    op: String,
    confirm: String,
) -> Result<(), WebError> {
    let keyring = crate::web::server::ctx()?.keyring;
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = id.parse().map_err(|_| ui("not_found"))?;
        // The box the person ticked after reading which shop loses or gets power.
        if confirm != "yes" {
            return Err(field_error("confirm"));
        }
        powertab_core::power::control::operate(&mut tx, &principal, keyring.as_deref(), id, &op)
            .await?;
        tx.commit().await?;
        Ok(format!("/meters/{id}?ok=control.sent"))
    }
    .await;
    finish(result)
}

/// Rows shown on the readings page at most (the Excel export has up to 20,000).
const READINGS_PAGE_MAX: i64 = 1000;

pub async fn list_readings(
    id: String,
    from: String,
    to: String,
    flagged: String,
) -> Result<super::views::ReadingsView, WebError> {
    use powertab_core::field::fleet::{self, ReadingFilter};
    let (principal, mut tx) = read_session().await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| read_err(powertab_core::CoreError::NotFound("meter")))?;
    let tz = principal.tz();
    let local_start = |text: &str, days_after: i64| {
        chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|d| (d + chrono::Duration::days(days_after)).and_hms_opt(0, 0, 0))
            .and_then(|t| t.and_local_timezone(tz).earliest())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let meter = field::meter(&mut tx, &principal, id)
        .await
        .map_err(read_err)?;
    let filter = ReadingFilter {
        from: local_start(&from, 0)
            .or_else(|| Some(chrono::Utc::now() - chrono::Duration::days(7))),
        to: local_start(&to, 1),
        flagged: flagged == "on",
        limit: Some(READINGS_PAGE_MAX + 1),
    };
    let mut readings = fleet::readings(&mut tx, &principal, id, &filter)
        .await
        .map_err(read_err)?;
    let truncated = readings.len() as i64 > READINGS_PAGE_MAX;
    let instant = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let export_query = crate::web::query::query_string(&[
        ("from", &instant(filter.from)),
        ("to", &instant(filter.to)),
        ("flagged", if filter.flagged { "true" } else { "" }),
    ]);
    readings.truncate(READINGS_PAGE_MAX as usize);
    Ok(super::views::ReadingsView {
        meter_number: meter.meter_number,
        rows: readings
            .into_iter()
            .map(|r| {
                (
                    local_time(r.read_at, &tz),
                    format_wh_as_kwh(r.energy_wh),
                    r.power_w.map(|p| p.to_string()).unwrap_or_default(),
                    r.voltage_dv
                        .map(|v| {
                            v.iter()
                                .map(|x| format!("{}.{}", x / 10, x % 10))
                                .collect::<Vec<_>>()
                                .join("/")
                        })
                        .unwrap_or_default(),
                    yuan(r.remaining_fen),
                    match r.relay_closed {
                        Some(true) => "live.relay.closed".into(),
                        Some(false) => "live.relay.open".into(),
                        None => String::new(),
                    },
                    r.flag.unwrap_or_default(),
                )
            })
            .collect(),
        truncated,
        export_query,
    })
}

pub async fn platform_registrations() -> Result<super::views::RegistrationsView, WebError> {
    let (principal, mut tx) = read_session().await?;
    if !principal.role.is_platform() || principal.company.is_some() {
        return Err(read_err(powertab_core::CoreError::NotFound("resource")));
    }
    let tz = &powertab_core::kernel::clock::DEFAULT_TIME_ZONE;
    let unclaimed = powertab_core::field::fleet::unclaimed(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let claimed: Vec<(String, Option<i64>)> =
        sqlx::query_as("select registration_hex, claimed_for from control.unclaimed_registrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| read_err(e.into()))?;
    let problems = powertab_core::field::registration::problems(&mut tx, None)
        .await
        .map_err(read_err)?;
    let refusals = powertab_core::field::registration::refusals(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    Ok(super::views::RegistrationsView {
        unclaimed: unclaimed
            .into_iter()
            .map(|u| {
                let claimed_for = claimed
                    .iter()
                    .find(|(hex, _)| *hex == u.registration_hex)
                    .and_then(|(_, c)| *c);
                (
                    u.registration_hex,
                    u.registration_text.unwrap_or_default(),
                    local_time(u.last_seen_at, tz),
                    u.last_peer,
                    u.attempts,
                    claimed_for,
                )
            })
            .collect(),
        problems: problems
            .into_iter()
            .map(|p| {
                (
                    p.company_id.unwrap_or_default(),
                    p.identity,
                    p.problem,
                    p.overlaps_with.join(", "),
                )
            })
            .collect(),
        refusals: refusals
            .into_iter()
            .map(|r| {
                (
                    local_time(r.at, tz),
                    r.company_id,
                    r.reason,
                    r.actor_name,
                    r.source_ip.unwrap_or_default(),
                    r.registration_hex,
                )
            })
            .collect(),
    })
}

pub async fn claim_registration(
    csrf: String,
    registration_hex: String,
    company_id: String,
) -> Result<(), WebError> {
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let company_id: i64 = company_id
            .trim()
            .parse()
            .map_err(|_| field_error("company_id"))?;
        powertab_core::field::fleet::claim_unclaimed(
            &mut tx,
            &principal,
            registration_hex.trim(),
            company_id,
        )
        .await?;
        tx.commit().await?;
        Ok("/platform/registrations?ok=common.saved".to_owned())
    }
    .await;
    finish(result)
}

pub async fn registration_problems() -> Result<Vec<(String, String)>, WebError> {
    let (principal, mut tx) = read_session().await?;
    principal.require_read_company().map_err(read_err)?;
    let company_id = principal.company().map_err(read_err)?.id;
    let problems = powertab_core::field::registration::problems(&mut tx, Some(company_id))
        .await
        .map_err(read_err)?;
    Ok(problems
        .into_iter()
        .map(|p| (p.identity, p.problem))
        .collect())
}

/// Fixed slots of the last 14 local days ending `today`: a day without daily energy is a gap.
fn day_slots(
    by_day: &std::collections::BTreeMap<chrono::NaiveDate, i64>,
    today: chrono::NaiveDate,
) -> Vec<crate::chart::ChartSlot> {
    (0..14)
        .rev()
        .map(|back| {
            let day = today - chrono::Duration::days(back);
            crate::chart::ChartSlot {
                label: day.format("%m-%d").to_string(),
                title: day.to_string(),
                value_wh: by_day.get(&day).copied(),
            }
        })
        .collect()
}

/// Fixed slots of the last 24 local hours ending with the one `now` is in (keys as
/// `fleet::hourly_energy` writes them, `YYYY-MM-DD HH:00`): an hour without counted energy is a
/// gap.
fn hour_slots(
    by_hour: &std::collections::HashMap<String, i64>,
    now: chrono::DateTime<chrono_tz::Tz>,
) -> Vec<crate::chart::ChartSlot> {
    (0..24)
        .rev()
        .map(|back| {
            let at = now - chrono::Duration::hours(back);
            let key = at.format("%Y-%m-%d %H:00").to_string();
            crate::chart::ChartSlot {
                label: at.format("%H").to_string(),
                value_wh: by_hour.get(&key).copied(),
                title: key,
            }
        })
        .collect()
}
