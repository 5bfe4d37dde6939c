//! MQTT-GATEWAY.md payloads, version 1: readings (validated one by one), status, commands and
//! acknowledgements. A message that is not JSON, lacks `"v": 1`, holds more than
//! [`READINGS_MAX`] readings or exceeds [`MESSAGE_BYTES_MAX`] is refused whole; otherwise each
//! reading is kept or refused on its own, with the reason, so one bad reading never costs the
//! others.

use crate::driver::MeterValues;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MESSAGE_BYTES_MAX: usize = 256 * 1024;
pub const READINGS_MAX: usize = 500;

/// Why a whole message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message larger than 256 KiB")]
    TooLarge,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no \"v\": 1")]
    Version,
    #[error("no readings array")]
    NoReadings,
    #[error("more than 500 readings")]
    TooManyReadings,
}

/// One valid reading, before it is matched to a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayReading {
    pub bus: i32,
    /// Modbus `"1"`…`"247"` or a 12-digit DL/T 645 address, as the gateway sent it.
    pub addr: String,
    pub ts: DateTime<Utc>,
    pub values: MeterValues,
}

/// A reading refused on its own: its index in the message and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedReading {
    pub index: usize,
    pub reason: String,
}

fn int(v: &Value, key: &str) -> Result<Option<i64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{key} must be an integer")),
    }
}

fn int_list(v: &Value, key: &str) -> Result<Vec<i64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) if (1..=3).contains(&items.len()) => items
            .iter()
            .map(|x| x.as_i64().ok_or_else(|| format!("{key} holds integers")))
            .collect(),
        Some(_) => Err(format!("{key} must be an array of 1 or 3 integers")),
    }
}

const ALARMS: [&str; 5] = ["alarm1", "alarm2", "arrears", "over_limit", "fault"];
const TOU_KEYS: [&str; 5] = ["sharp", "peak", "flat", "valley", "deep_valley"];

fn reading(v: &Value) -> Result<GatewayReading, String> {
    let bus = v
        .get("bus")
        .and_then(Value::as_i64)
        .filter(|b| (1..=64).contains(b))
        .ok_or("bus must be a port number 1 to 64")?;
    let addr = v
        .get("addr")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty() && a.len() <= 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("addr must be the meter's bus address as a string of digits")?
        .to_owned();
    let ts = v
        .get("ts")
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .ok_or("ts must be Unix milliseconds")?;
    let energy = v.get("energy_wh").ok_or("energy_wh.total is required")?;
    let total = energy
        .get("total")
        .and_then(Value::as_i64)
        .filter(|t| *t >= 0)
        .ok_or("energy_wh.total must be a non-negative integer")?;
    let mut tou = [None; 5];
    let mut any_tou = false;
    for (slot, key) in tou.iter_mut().zip(TOU_KEYS) {
        if let Some(x) = energy.get(key) {
            *slot = Some(
                x.as_i64()
                    .filter(|x| *x >= 0)
                    .ok_or(format!("energy_wh.{key} must be a non-negative integer"))?,
            );
            any_tou = true;
        }
    }
    let alarms = match v.get("alarms") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| {
                a.as_str()
                    .and_then(|a| ALARMS.iter().find(|k| **k == a).copied())
                    .ok_or_else(|| format!("unknown alarm {a}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("alarms must be an array".into()),
    };
    let relay_closed = match v.get("relay").and_then(Value::as_str) {
        None => None,
        Some("closed") => Some(true),
        Some("open") => Some(false),
        Some(other) => return Err(format!("relay must be closed or open, not {other}")),
    };
    let remaining_fen = int(v, "remaining_fen")?;
    let purchase_count = int(v, "purchase_count")?;
    let secure = secure_counters(
        purchase_count,
        int(v, "control_count")?,
        remaining_fen,
        int(v, "price_units")?,
    )?;
    Ok(GatewayReading {
        bus: i32::try_from(bus).map_err(|_| "bus out of range")?,
        addr: normal_addr(&addr).ok_or("addr must be 1 to 247 or a 12-digit DL/T 645 address")?,
        ts,
        values: MeterValues {
            energy_wh: total,
            tou_wh: any_tou.then_some(tou),
            power_w: int(v, "power_w")?,
            voltage_dv: int_list(v, "voltage_dv")?,
            current_ca: int_list(v, "current_ca")?,
            pf_milli: int(v, "pf_milli")?,
            remaining_fen,
            purchase_count,
            relay_closed,
            alarms,
            meter_ratios: None,
            secure,
        },
    })
}

/// A meter-side meter's secure counters, when a reading carries all four (MQTT-GATEWAY.md);
/// counts outside u32 refuse the reading.
fn secure_counters(
    purchase_count: Option<i64>,
    control_count: Option<i64>,
    remaining_fen: Option<i64>,
    price_units: Option<i64>,
) -> Result<Option<powertab_core::secure::frame::Counters>, String> {
    let (Some(purchases), Some(controls), Some(remaining_fen), Some(price)) =
        (purchase_count, control_count, remaining_fen, price_units)
    else {
        return Ok(None);
    };
    let u32_of = |name: &str, x: i64| {
        u32::try_from(x).map_err(|_| format!("{name} must be 0 to 4294967295"))
    };
    Ok(Some(powertab_core::secure::frame::Counters {
        purchase_count: u32_of("purchase_count", purchases)?,
        control_count: u32_of("control_count", controls)?,
        remaining_fen,
        price_units: u32_of("price_units", price)?,
    }))
}

/// One reading as a gateway sends it (the inverse of the parser; the simulator and the benchmark
/// speak through it).
pub fn reading_json(reading: &GatewayReading) -> Value {
    let v = &reading.values;
    let mut energy = serde_json::Map::new();
    energy.insert("total".into(), v.energy_wh.into());
    for (key, value) in TOU_KEYS.iter().zip(v.tou_wh.unwrap_or_default()) {
        if let Some(wh) = value {
            energy.insert((*key).into(), wh.into());
        }
    }
    let mut out = serde_json::json!({
        "bus": reading.bus, "addr": reading.addr, "ts": reading.ts.timestamp_millis(),
        "energy_wh": energy, "alarms": v.alarms,
    });
    let fields = [
        ("power_w", v.power_w.map(Value::from)),
        ("pf_milli", v.pf_milli.map(Value::from)),
        ("remaining_fen", v.remaining_fen.map(Value::from)),
        ("purchase_count", v.purchase_count.map(Value::from)),
        (
            "control_count",
            v.secure.map(|c| Value::from(c.control_count)),
        ),
        ("price_units", v.secure.map(|c| Value::from(c.price_units))),
        (
            "relay",
            v.relay_closed
                .map(|c| Value::from(if c { "closed" } else { "open" })),
        ),
        (
            "voltage_dv",
            (!v.voltage_dv.is_empty()).then(|| Value::from(v.voltage_dv.clone())),
        ),
        (
            "current_ca",
            (!v.current_ca.is_empty()).then(|| Value::from(v.current_ca.clone())),
        ),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            out[key] = value;
        }
    }
    out
}

/// Readings messages of at most [`READINGS_MAX`] readings each.
pub fn readings_messages(readings: &[GatewayReading]) -> Vec<String> {
    readings
        .chunks(READINGS_MAX)
        .map(|chunk| {
            let items: Vec<Value> = chunk.iter().map(reading_json).collect();
            serde_json::json!({"v": 1, "readings": items}).to_string()
        })
        .collect()
}

/// A Modbus address without leading zeros, or a 12-digit DL/T 645 address as it is.
fn normal_addr(addr: &str) -> Option<String> {
    if addr.len() == 12 {
        return Some(addr.to_owned());
    }
    addr.parse::<u8>()
        .ok()
        .filter(|a| (1..=247).contains(a))
        .map(|a| a.to_string())
}

/// Parses a readings message: the valid readings and the refused ones, or why the whole message
/// was refused.
pub fn parse_readings(
    bytes: &[u8],
) -> Result<(Vec<GatewayReading>, Vec<RefusedReading>), MessageError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(MessageError::TooLarge);
    }
    let message: Value =
        serde_json::from_slice(bytes).map_err(|e| MessageError::NotJson(e.to_string()))?;
    if message.get("v").and_then(Value::as_i64) != Some(1) {
        return Err(MessageError::Version);
    }
    let readings = message
        .get("readings")
        .and_then(Value::as_array)
        .ok_or(MessageError::NoReadings)?;
    if readings.len() > READINGS_MAX {
        return Err(MessageError::TooManyReadings);
    }
    let mut good = Vec::new();
    let mut refused = Vec::new();
    for (index, r) in readings.iter().enumerate() {
        match reading(r) {
            Ok(g) => good.push(g),
            Err(reason) => refused.push(RefusedReading { index, reason }),
        }
    }
    Ok((good, refused))
}

/// A gateway's status (`pt/{gw}/up/status`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Status {
    pub v: i64,
    pub online: bool,
    #[serde(default)]
    pub firmware: String,
}

pub fn parse_status(bytes: &[u8]) -> Option<Status> {
    serde_json::from_slice::<Status>(bytes)
        .ok()
        .filter(|s| s.v == 1)
}

/// A command for a gateway (`pt/{gw}/down/command`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CommandMessage {
    pub v: i64,
    pub id: String,
    pub bus: i32,
    pub addr: String,
    pub op: String,
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<String>,
}

/// A gateway's acknowledgement (`pt/{gw}/up/ack`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Ack {
    pub v: i64,
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub relay: Option<String>,
    #[serde(default)]
    pub secure_ack: Option<String>,
    #[serde(default)]
    pub detail: String,
}

pub fn parse_ack(bytes: &[u8]) -> Option<Ack> {
    serde_json::from_slice::<Ack>(bytes).ok().filter(|a| {
        a.v == 1 && ["done", "failed", "expired", "rejected"].contains(&a.status.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"v": 1,
 "readings": [
   {"bus": 1, "addr": "17", "ts": 1764028800000,
    "energy_wh": {"total": 1234560, "sharp": 10000, "peak": 600000, "flat": 400000, "valley": 224560},
    "power_w": 5230, "voltage_dv": [2201, 2198, 2203], "current_ca": [790, 801, 795],
    "pf_milli": 950, "remaining_fen": 128870, "purchase_count": 12,
    "relay": "closed", "alarms": []}
 ]}"#;

    #[test]
    fn the_documented_example_parses() {
        let (good, refused) = parse_readings(EXAMPLE.as_bytes()).unwrap();
        assert!(refused.is_empty());
        let r = &good[0];
        assert_eq!(
            (r.bus, r.addr.as_str(), r.ts.timestamp_millis()),
            (1, "17", 1_764_028_800_000)
        );
        assert_eq!(r.values.energy_wh, 1_234_560);
        assert_eq!(
            r.values.tou_wh,
            Some([
                Some(10_000),
                Some(600_000),
                Some(400_000),
                Some(224_560),
                None
            ])
        );
        assert_eq!(
            (r.values.power_w, r.values.relay_closed),
            (Some(5230), Some(true))
        );
        assert_eq!(r.values.voltage_dv, vec![2201, 2198, 2203]);
    }

    #[test]
    fn bad_readings_are_refused_one_by_one() {
        let message = r#"{"v": 1, "readings": [
            {"bus": 1, "addr": "17", "ts": 1764028800000, "energy_wh": {"total": 5}},
            {"bus": 1, "addr": "17", "ts": 1764028800000},
            {"bus": 0, "addr": "17", "ts": 1764028800000, "energy_wh": {"total": 5}},
            {"bus": 1, "addr": 17, "ts": 1764028800000, "energy_wh": {"total": 5}},
            {"bus": 1, "addr": "17", "ts": 1764028800000, "energy_wh": {"total": -1}},
            {"bus": 1, "addr": "17", "ts": 1764028800000, "energy_wh": {"total": 5}, "relay": "ajar"},
            {"bus": 1, "addr": "17", "ts": 1764028800000, "energy_wh": {"total": 5}, "alarms": ["fire"]},
            {"bus": 2, "addr": "202611250001", "ts": 1764028800000, "energy_wh": {"total": 7}}
        ]}"#;
        let (good, refused) = parse_readings(message.as_bytes()).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].addr, "202611250001");
        assert_eq!(
            refused.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn whole_messages_are_refused_for_their_shape() {
        assert!(matches!(
            parse_readings(b"nonsense"),
            Err(MessageError::NotJson(_))
        ));
        assert_eq!(
            parse_readings(br#"{"v": 2, "readings": []}"#),
            Err(MessageError::Version)
        );
        assert_eq!(
            parse_readings(br#"{"v": 1}"#),
            Err(MessageError::NoReadings)
        );
        let many = format!(r#"{{"v": 1, "readings": [{}]}}"#, vec!["{}"; 501].join(","));
        assert_eq!(
            parse_readings(many.as_bytes()),
            Err(MessageError::TooManyReadings)
        );
        assert_eq!(
            parse_readings(&vec![b' '; MESSAGE_BYTES_MAX + 1]),
            Err(MessageError::TooLarge)
        );
    }

    #[test]
    fn status_and_acks() {
        assert_eq!(
            parse_status(br#"{"v":1,"online":false}"#).map(|s| s.online),
            Some(false)
        );
        assert!(parse_status(br#"{"v":2,"online":true}"#).is_none());
        let ack = parse_ack(br#"{"v":1,"id":"6f1c","status":"done","relay":"open"}"#).unwrap();
        assert_eq!(
            (ack.status.as_str(), ack.relay.as_deref()),
            ("done", Some("open"))
        );
        assert!(parse_ack(br#"{"v":1,"id":"6f1c","status":"maybe"}"#).is_none());
    }
}
