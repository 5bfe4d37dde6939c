//! Server functions of the field pages: gateways with their buses, meters with their detail,
//! swaps and removals, and bulk changes. Lists take their filters from the URL; changes are HTML
//! forms whose repeated rows are named `buses[0][number]`, `meter_ids[3]` (nested query syntax,
//! which the server function decoder reads).

use super::views::*;
use crate::web::PageView;
use crate::web::WebError;
use leptos::prelude::*;

#[server(prefix = "/sfn", endpoint = "gateway_list")]
pub async fn list_gateways(
    status: String,
    cursor: String,
) -> Result<PageView<GatewayView>, WebError> {
    super::server::list_gateways(status, cursor).await
}

#[server(prefix = "/sfn", endpoint = "gateway_get")]
pub async fn get_gateway(id: String) -> Result<GatewayView, WebError> {
    super::server::get_gateway(id).await
}

#[server(prefix = "/sfn", endpoint = "meter_list")]
pub async fn list_meters(
    q: String,
    model: String,
    mode: String,
    status: String,
    building: String,
    cursor: String,
) -> Result<MeterListView, WebError> {
    super::server::list_meters(q, model, mode, status, building, cursor).await
}

#[server(prefix = "/sfn", endpoint = "meter_get")]
pub async fn get_meter(id: String) -> Result<MeterDetailView, WebError> {
    super::server::get_meter(id).await
}

#[server(prefix = "/sfn", endpoint = "gateway_create")]
pub async fn create_gateway(
    csrf: String,
    identity: String,
    kind: String,
    #[server(flatten)] form: GatewayForm,
    #[server(default)] buses: Vec<BusForm>,
) -> Result<(), WebError> {
    super::server::create_gateway(csrf, identity, kind, form, buses).await
}

/// An MQTT gateway's credential (audited; needs the settings right).
#[server(prefix = "/sfn", endpoint = "gateway_credential")]
pub async fn gateway_credential(id: String) -> Result<MqttCredentialView, WebError> {
    super::server::gateway_credential(id).await
}

/// A DTU's registration bytes as hex (and text when printable), for someone who may change
/// settings; every look is audited.
#[server(prefix = "/sfn", endpoint = "gateway_registration")]
pub async fn gateway_registration(id: String) -> Result<String, WebError> {
    super::server::gateway_registration(id).await
}

/// Issues an MQTT gateway a new credential and shows it.
#[server(prefix = "/sfn", endpoint = "gateway_credential_rotate")]
pub async fn rotate_gateway_credential(csrf: String, id: String) -> Result<(), WebError> {
    super::server::rotate_gateway_credential(csrf, id).await
}

#[server(prefix = "/sfn", endpoint = "gateway_update")]
pub async fn update_gateway(
    csrf: String,
    id: String,
    #[server(flatten)] form: GatewayForm,
) -> Result<(), WebError> {
    super::server::update_gateway(csrf, id, form).await
}

#[server(prefix = "/sfn", endpoint = "gateway_buses")]
pub async fn set_gateway_buses(
    csrf: String,
    id: String,
    #[server(default)] buses: Vec<BusForm>,
) -> Result<(), WebError> {
    super::server::set_buses(csrf, id, buses).await
}

/// `action`: `enable`, `suspend` or `remove`.
#[server(prefix = "/sfn", endpoint = "gateway_status")]
pub async fn gateway_status(csrf: String, id: String, action: String) -> Result<(), WebError> {
    super::server::gateway_status(csrf, id, action).await
}

#[server(prefix = "/sfn", endpoint = "meter_create")]
pub async fn create_meter(
    csrf: String,
    #[server(flatten)] form: MeterForm,
) -> Result<(), WebError> {
    super::server::create_meter(csrf, form).await
}

#[server(prefix = "/sfn", endpoint = "meter_update")]
pub async fn update_meter(
    csrf: String,
    id: String,
    #[server(flatten)] form: MeterForm,
) -> Result<(), WebError> {
    super::server::update_meter(csrf, id, form).await
}

#[server(prefix = "/sfn", endpoint = "meter_swap")]
pub async fn swap_meter(
    csrf: String,
    id: String,
    #[server(flatten)] form: SwapForm,
) -> Result<(), WebError> {
    super::server::swap_meter(csrf, id, form).await
}

#[server(prefix = "/sfn", endpoint = "meter_remove")]
pub async fn remove_meter(
    csrf: String,
    id: String,
    final_kwh: String,
    #[server(default)] reason: String,
) -> Result<(), WebError> {
    super::server::remove_meter(csrf, id, final_kwh, reason).await
}

/// One change for the ticked meters: a plan (`plan_id`, `none` clears it), alarm levels or a
/// prepayment mode; empty fields are left alone.
#[server(prefix = "/sfn", endpoint = "meter_bulk")]
pub async fn bulk_meters(
    csrf: String,
    #[server(default)] meter_ids: Vec<String>,
    #[server(default)] plan_id: String,
    #[server(default)] alarm1: String,
    #[server(default)] alarm2: String,
    #[server(default)] prepayment_mode: String,
) -> Result<(), WebError> {
    super::server::bulk_meters(csrf, meter_ids, plan_id, alarm1, alarm2, prepayment_mode).await
}

/// The fleet page's data: `problems` non-empty keeps problems only, `q` searches, `offset`
/// pages (all from the page's URL).
#[server(prefix = "/sfn", endpoint = "fleet")]
pub async fn get_fleet(problems: String, q: String, offset: String) -> Result<FleetView, WebError> {
    super::server::get_fleet(problems, q, offset).await
}

#[server(prefix = "/sfn", endpoint = "meter_live")]
pub async fn get_meter_live(id: String) -> Result<MeterLiveView, WebError> {
    super::server::get_meter_live(id).await
}

/// Asks ingest to read the meter now (the live values refresh by themselves).
#[server(prefix = "/sfn", endpoint = "meter_read_now")]
pub async fn read_meter_now(csrf: String, id: String) -> Result<(), WebError> {
    super::server::read_meter_now(csrf, id).await
}

/// Remote control of the meter (trip, close, release, keep-power on or off), once the person
/// ticked the confirmation naming the shop.
#[server(prefix = "/sfn", endpoint = "meter_control")]
pub async fn control_meter(
    csrf: String,
    id: String,
    op: String,
    #[server(default)] confirm: String,
) -> Result<(), WebError> {
    super::server::control_meter(csrf, id, op, confirm).await
}

/// Readings of a meter between local dates `from` and `to` (inclusive; empty = the last 7
/// days), only flagged ones when `flagged` is `on`.
#[server(prefix = "/sfn", endpoint = "meter_readings")]
pub async fn list_readings(
    id: String,
    from: String,
    to: String,
    flagged: String,
) -> Result<ReadingsView, WebError> {
    super::server::list_readings(id, from, to, flagged).await
}

/// The platform's registration page: refused dial-ins, registrations to change, refusals.
#[server(prefix = "/sfn", endpoint = "platform_registrations")]
pub async fn platform_registrations() -> Result<RegistrationsView, WebError> {
    super::server::platform_registrations().await
}

/// Hands a refused registration to a company (platform admins).
#[server(prefix = "/sfn", endpoint = "registration_claim")]
pub async fn claim_registration(
    csrf: String,
    registration_hex: String,
    company_id: String,
) -> Result<(), WebError> {
    super::server::claim_registration(csrf, registration_hex, company_id).await
}

/// The company's gateways whose registration must change: (identity, problem).
#[server(prefix = "/sfn", endpoint = "registration_problems")]
pub async fn registration_problems() -> Result<Vec<(String, String)>, WebError> {
    super::server::registration_problems().await
}
