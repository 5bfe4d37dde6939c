//! A generic Modbus meter whose registers come from its configured register map:
//! `{"energy_wh": {"register": 0, "words": 2, "mul": 10}, "power_w": {"register": 13,
//! "signed": true}, …}`. Each value is read with FC 0x03 from `register` (`words` 1 or 2, high
//! word first unless `"low_word_first": true`), and multiplied by `mul` and divided by `div`
//! (integers; default 1) into the canonical unit its name ends with. `energy_wh` is required;
//! `power_w`, `voltage_dv`, `current_ca`, `remaining_fen` are optional.

use super::{registers, ControlOp, Driver, DriverError, MeterValues, ModbusOp, Step};
use crate::framing::Reply;
use serde::Deserialize;

/// The values a map may name, in poll order.
const FIELDS: [&str; 5] = [
    "energy_wh",
    "power_w",
    "voltage_dv",
    "current_ca",
    "remaining_fen",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisterSpec {
    pub register: u16,
    #[serde(default = "one")]
    pub words: u8,
    #[serde(default)]
    pub signed: bool,
    #[serde(default)]
    pub low_word_first: bool,
    #[serde(default = "one_i64")]
    pub mul: i64,
    #[serde(default = "one_i64")]
    pub div: i64,
}

fn one() -> u8 {
    1
}
fn one_i64() -> i64 {
    1
}

pub struct GenericModbus {
    address: u8,
    /// (field, spec) in poll order.
    specs: Vec<(&'static str, RegisterSpec)>,
}

impl GenericModbus {
    pub fn new(address: u8, map: Option<&serde_json::Value>) -> Result<GenericModbus, DriverError> {
        let map = map.and_then(|m| m.as_object()).ok_or_else(|| {
            DriverError::Config("a generic Modbus meter needs a register map".into())
        })?;
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(DriverError::Config(format!("unknown value {unknown:?}")));
        }
        let mut specs = Vec::new();
        for field in FIELDS {
            let Some(raw) = map.get(field) else { continue };
            let spec: RegisterSpec = serde_json::from_value(raw.clone())
                .map_err(|e| DriverError::Config(format!("{field}: {e}")))?;
            if !(1..=2).contains(&spec.words) || spec.div == 0 {
                return Err(DriverError::Config(format!(
                    "{field}: words 1 or 2, div not 0"
                )));
            }
            specs.push((field, spec));
        }
        if specs.first().map(|(f, _)| *f) != Some("energy_wh") {
            return Err(DriverError::Config("the map must name energy_wh".into()));
        }
        Ok(GenericModbus { address, specs })
    }
}

fn scaled(regs: &[u16], spec: &RegisterSpec) -> Result<i64, DriverError> {
    if regs.len() != usize::from(spec.words) {
        return Err(DriverError::BadReply(format!("{} registers", regs.len())));
    }
    let raw = if spec.words == 1 {
        if spec.signed {
            i64::from(regs[0] as i16)
        } else {
            i64::from(regs[0])
        }
    } else {
        let (hi, lo) = if spec.low_word_first {
            (regs[1], regs[0])
        } else {
            (regs[0], regs[1])
        };
        let v = (u32::from(hi) << 16) | u32::from(lo);
        if spec.signed {
            i64::from(v as i32)
        } else {
            i64::from(v)
        }
    };
    raw.checked_mul(spec.mul)
        .map(|v| v / spec.div)
        .ok_or_else(|| DriverError::BadReply("value out of range".into()))
}

impl Driver for GenericModbus {
    fn poll(&self) -> Vec<Step> {
        self.specs
            .iter()
            .map(|(field, spec)| {
                Step::modbus(
                    ModbusOp::ReadHolding {
                        unit: self.address,
                        start: spec.register,
                        count: u16::from(spec.words),
                    },
                    *field != "energy_wh",
                )
            })
            .collect()
    }

    fn parse_poll(&self, replies: &[Option<Reply>]) -> Result<MeterValues, DriverError> {
        let mut values = MeterValues::default();
        for (i, (field, spec)) in self.specs.iter().enumerate() {
            let reply = replies.get(i).and_then(Option::as_ref);
            let value = match (registers(reply), *field) {
                (Ok(regs), _) => scaled(regs, spec)?,
                (Err(e), "energy_wh") => return Err(e),
                (Err(_), _) => continue,
            };
            match *field {
                "energy_wh" => values.energy_wh = value,
                "power_w" => values.power_w = Some(value),
                "voltage_dv" => values.voltage_dv = vec![value],
                "current_ca" => values.current_ca = vec![value],
                _ => values.remaining_fen = Some(value),
            }
        }
        Ok(values)
    }

    fn control(&self, op: ControlOp) -> Result<Vec<Step>, DriverError> {
        Err(DriverError::Unsupported(op))
    }

    fn energy_is_primary(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::rtu;
    use serde_json::json;

    #[test]
    fn maps_are_checked() {
        assert!(GenericModbus::new(1, None).is_err());
        assert!(GenericModbus::new(1, Some(&json!({"power_w": {"register": 1}}))).is_err());
        assert!(
            GenericModbus::new(1, Some(&json!({"energy_wh": {"register": 0, "words": 3}})))
                .is_err()
        );
        assert!(GenericModbus::new(
            1,
            Some(&json!({"energy_wh": {"register": 0}, "colour": {}}))
        )
        .is_err());
    }

    #[test]
    fn values_are_read_and_scaled() {
        let map = json!({
            "energy_wh": {"register": 0, "words": 2, "mul": 10, "low_word_first": true},
            "power_w": {"register": 13, "signed": true}
        });
        let d = GenericModbus::new(4, Some(&map)).unwrap();
        assert_eq!(d.poll().len(), 2);
        let replies = vec![
            Some(Reply::Rtu(rtu::Reply::Registers(vec![0x0002, 0x0001]))), // 0x0001_0002
            Some(Reply::Rtu(rtu::Reply::Registers(vec![0xFFF6]))),         // -10
        ];
        let v = d.parse_poll(&replies).unwrap();
        assert_eq!((v.energy_wh, v.power_w), (655_380, Some(-10)));
        let without_power = vec![replies[0].clone(), None];
        assert_eq!(d.parse_poll(&without_power).unwrap().power_w, None);
        assert!(d.parse_poll(&[None, None]).is_err(), "energy is required");
    }
}
