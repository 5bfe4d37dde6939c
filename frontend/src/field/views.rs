//! View types of the field pages: gateways with their buses, meters with their detail, swaps,
//! removals, the fleet, readings and registrations — what the server functions return and take.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BusView {
    pub id: String,
    pub number: i32,
    pub protocol: String,
    pub baud: i32,
    pub parity: String,
    pub stop_bits: i32,
    pub gap_ms: i32,
    pub timeout_ms: i32,
    pub tcp_port: Option<i32>,
    pub meter_count: i64,
}

impl BusView {
    /// "9600 8N1" as installers say it.
    pub fn serial(&self) -> String {
        format!("{} 8{}{}", self.baud, self.parity, self.stop_bits)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GatewayView {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    /// Whether the DTU has registration bytes; the bytes themselves come only from
    /// [`gateway_registration`] (a credential: settings right, every look audited).
    pub registration_set: bool,
    pub registration_repeats: bool,
    pub heartbeat_hex: String,
    pub host: String,
    /// MQTT gateways: the generation of their broker credential.
    pub credential_generation: Option<i32>,
    pub buses: Vec<BusView>,
}

/// An MQTT gateway's broker login, shown on request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MqttCredentialView {
    /// Where gateways connect, "" when no broker is configured.
    pub broker: String,
    pub username: String,
    pub password: String,
    pub generation: i32,
}

/// A meter as lists show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterRow {
    pub id: String,
    pub meter_number: String,
    pub model: String,
    pub gateway: String,
    pub gateway_id: String,
    pub bus: i32,
    pub address: String,
    pub prepayment_mode: String,
    pub role: String,
    pub status: String,
    /// "Building · shop number", empty when not assigned.
    pub shop: String,
    pub plan: String,
}

/// One page of the meter list and what its filters and bulk form offer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterListView {
    pub items: Vec<MeterRow>,
    pub next_cursor: Option<String>,
    /// (id, name)
    pub buildings: Vec<(String, String)>,
    pub plans: Vec<(String, String)>,
    /// (bus id, "gateway · port n (protocol)") for the add-meter form.
    pub buses: Vec<(String, String)>,
    /// (shop id, "building · number name")
    pub shops: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SwapView {
    pub at: String,
    pub old_meter_id: String,
    pub old_meter_number: String,
    pub new_meter_id: String,
    pub new_meter_number: String,
    /// kWh as typed (up to 3 decimals).
    pub old_final_kwh: String,
    pub new_initial_kwh: String,
    pub reason: String,
}

/// Everything the meter page shows and edits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterDetailView {
    pub row: MeterRow,
    pub bus_id: String,
    pub ct_ratio: i32,
    pub pt_ratio: i32,
    pub shop_id: String,
    pub plan_id: String,
    pub parent_id: String,
    pub parent_number: String,
    /// Yuan, empty = the company default (shown in `default_alarm1` / `default_alarm2`).
    pub alarm1: String,
    pub alarm2: String,
    pub default_alarm1: String,
    pub default_alarm2: String,
    pub install_date: String,
    pub initial_kwh: String,
    pub tou_registers_match: bool,
    pub removed_at: String,
    pub final_kwh: String,
    pub history: Vec<SwapView>,
    pub plans: Vec<(String, String)>,
    pub shops: Vec<(String, String)>,
    /// (meter id, number) of active feeder (`main`) meters.
    pub feeders: Vec<(String, String)>,
}

/// One row of a bus form; an empty `number` is an unused row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BusForm {
    #[serde(default)]
    pub number: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub baud: String,
    #[serde(default)]
    pub parity: String,
    #[serde(default)]
    pub stop_bits: String,
    #[serde(default)]
    pub gap_ms: String,
    #[serde(default)]
    pub timeout_ms: String,
    #[serde(default)]
    pub tcp_port: String,
}

/// The connection fields of the gateway forms (checkboxes are present only when ticked).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GatewayForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub registration: String,
    #[serde(default)]
    pub registration_is_hex: Option<String>,
    #[serde(default)]
    pub registration_repeats: Option<String>,
    #[serde(default)]
    pub heartbeat: String,
    #[serde(default)]
    pub heartbeat_is_hex: Option<String>,
    #[serde(default)]
    pub host: String,
}

/// The add-meter form (energy in kWh, alarm levels in yuan).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MeterForm {
    #[serde(default)]
    pub bus_id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub meter_number: String,
    #[serde(default)]
    pub ct_ratio: String,
    #[serde(default)]
    pub pt_ratio: String,
    #[serde(default)]
    pub prepayment_mode: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub parent_id: String,
    #[serde(default)]
    pub shop_id: String,
    #[serde(default)]
    pub plan_id: String,
    #[serde(default)]
    pub alarm1: String,
    #[serde(default)]
    pub alarm2: String,
    #[serde(default)]
    pub install_date: String,
    #[serde(default)]
    pub initial_kwh: String,
    #[serde(default)]
    pub dlt645_password: String,
    #[serde(default)]
    pub dlt645_operator: String,
    #[serde(default)]
    pub accept_crowded_bus: Option<String>,
    /// The meter's TOU registers split its energy (a checkbox: present when ticked).
    #[serde(default)]
    pub tou_registers_match: Option<String>,
}

/// The swap form: the new meter and the two readings (kWh).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SwapForm {
    pub meter_number: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub address: String,
    pub old_final_kwh: String,
    #[serde(default)]
    pub new_initial_kwh: String,
    #[serde(default)]
    pub reason: String,
}

/// A bus on the fleet page: (port, online, last seen local time).
pub type FleetBus = (i32, bool, String);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FleetGateway {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub online: bool,
    pub buses: Vec<FleetBus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FleetMeter {
    pub id: String,
    pub meter_number: String,
    pub gateway: String,
    pub shop: String,
    /// Seconds since the newest reading; `None` when never read.
    pub age_s: Option<i64>,
    pub stale: bool,
    pub energy_kwh: String,
    pub power_w: String,
    pub remaining_yuan: String,
    pub relay_closed: Option<bool>,
    pub alarms: Vec<String>,
    pub failures: i32,
}

/// Everything the live fleet page shows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FleetView {
    pub gateways: Vec<FleetGateway>,
    /// One page of the matching meters, problems first.
    pub meters: Vec<FleetMeter>,
    pub meters_total: i64,
    pub meters_stale: i64,
    pub meters_matching: i64,
    /// Where this page starts among the matching meters, and its size.
    pub offset: i64,
    pub page_size: i64,
    pub gateways_total: usize,
    pub gateways_offline: usize,
    /// (registration as text or hex, last seen, last source address, attempts)
    pub unclaimed: Vec<(String, String, String, i64)>,
    /// When this was read (local time).
    pub as_of: String,
    /// Open field alarms: (kind, target, raised local time, detail).
    pub alarms: Vec<(String, String, String, String)>,
}

/// The live part of a meter's page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MeterLiveView {
    /// (label key, value) of the newest reading; empty when never read.
    pub latest: Vec<(String, String)>,
    pub read_at: String,
    pub age_s: Option<i64>,
    /// The last 14 local days, one slot each (today last); empty when never read.
    pub daily: Vec<crate::chart::ChartSlot>,
    /// The last 24 local hours, one slot each (this hour last); empty when never read.
    pub hourly: Vec<crate::chart::ChartSlot>,
    /// (time, kWh, W, flag) of the newest readings.
    pub recent: Vec<(String, String, String, String)>,
}

/// A meter's reading history for the readings page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReadingsView {
    pub meter_number: String,
    /// (local time, kWh, W, voltage, remaining yuan, relay key, flag)
    pub rows: Vec<(String, String, String, String, String, String, String)>,
    /// Whether the list was cut at its limit (narrow the range to see the rest).
    pub truncated: bool,
    /// The same filter for the Excel export (`from`, `to` as instants, `flagged`).
    pub export_query: String,
}

/// DTU registrations as platform staff watch them (DESIGN.md: Ingest, DTU dial-in).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct RegistrationsView {
    /// Refused dial-ins: (hex, text when printable, last seen, source, attempts, claimed for).
    pub unclaimed: Vec<(String, String, String, String, i64, Option<i64>)>,
    /// Registrations that break the rule: (company id, identity, problem, overlapping gateways).
    pub problems: Vec<(i64, String, String, String)>,
    /// Refused attempts to enter one: (time, company id, reason, who, from where, hex).
    pub refusals: Vec<(String, i64, String, String, String, String)>,
}
