//! Meter drivers (DESIGN.md: Ingest, Commands): one file per model, each turning a poll or a
//! canonical command into the requests its meter understands and the replies back into
//! [`MeterValues`]. Drivers are pure: sending, timing and retries belong to the bus session.

pub mod acrel;
pub mod dlt645;
pub mod generic;

use crate::framing::{Expect, Reply};

/// One meter reading in canonical units (MQTT-GATEWAY.md names the same fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterValues {
    /// Cumulative active energy register, Wh.
    pub energy_wh: i64,
    /// TOU registers (sharp, peak, flat, valley, deep valley) when the meter has them, Wh.
    pub tou_wh: Option<[Option<i64>; 5]>,
    pub power_w: Option<i64>,
    /// Per phase, 0.1 V.
    pub voltage_dv: Vec<i64>,
    /// Per phase, 0.01 A.
    pub current_ca: Vec<i64>,
    pub pf_milli: Option<i64>,
    /// Prepaid meters: the meter's remaining amount (negative in overdraft), fen.
    pub remaining_fen: Option<i64>,
    pub purchase_count: Option<i64>,
    /// Relay closed (power on), when the meter reports it.
    pub relay_closed: Option<bool>,
    /// Any of `alarm1`, `alarm2`, `arrears`, `over_limit`, `fault`, and the status
    /// [`CLOSE_ALLOWED`].
    pub alarms: Vec<&'static str>,
    /// The meter's own PT and CT ratios, when it reports them (checked against the configured).
    pub meter_ratios: Option<(i64, i64)>,
    /// Meter-side meters: the secure counters (SECURE-COMMAND.md: 0x0C60, MQTT's counter
    /// fields), which the settle worker reconciles.
    pub secure: Option<powertab_core::secure::frame::Counters>,
}

/// A DL/T 645 meter whose relay is open with the trip command cleared ("close allowed", 1B):
/// it closes when the tenant presses its button. A `close` is verified by it, and the intended
/// relay state "closed" agrees with it (`core::commands`, `core::power::relay`).
pub const CLOSE_ALLOWED: &str = powertab_core::commands::CLOSE_ALLOWED;

/// The canonical commands a driver may map (DESIGN.md: Commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    Trip,
    Close,
    Release,
    KeepPowerOn,
    KeepPowerOff,
}

/// One request of a poll or command, with what its reply must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The frame for a serial line (Modbus RTU with CRC, or DL/T 645).
    pub request: Vec<u8>,
    pub expect: Expect,
    /// A meter that does not know this value answers with an error; the poll goes on.
    pub optional: bool,
    /// The same request as a Modbus operation, for Modbus-TCP gateways (none for DL/T 645).
    pub modbus: Option<ModbusOp>,
}

/// A Modbus request independent of its framing (unit id = the meter's bus address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusOp {
    ReadHolding {
        unit: u8,
        start: u16,
        count: u16,
    },
    WriteMultiple {
        unit: u8,
        start: u16,
        values: Vec<u16>,
    },
}

impl Step {
    /// A Modbus step, framed for serial lines and kept as an operation for Modbus-TCP.
    pub fn modbus(op: ModbusOp, optional: bool) -> Step {
        use crate::framing::rtu;
        let (request, expect) = match &op {
            ModbusOp::ReadHolding { unit, start, count } => {
                rtu::read_holding(*unit, *start, *count)
            }
            ModbusOp::WriteMultiple {
                unit,
                start,
                values,
            } => rtu::write_multiple(*unit, *start, values),
        };
        Step {
            request,
            expect: Expect::Rtu(expect),
            optional,
            modbus: Some(op),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("the meter's configuration is unusable: {0}")]
    Config(String),
    #[error("the reply does not fit: {0}")]
    BadReply(String),
    #[error("the meter refused: {0}")]
    Refused(String),
    #[error("this model has no {0:?}")]
    Unsupported(ControlOp),
}

/// A model's protocol mapping.
pub trait Driver: Send + Sync {
    /// The requests of one poll, in order.
    fn poll(&self) -> Vec<Step>;
    /// The values from the poll's replies (`None` where an optional step got no answer).
    fn parse_poll(&self, replies: &[Option<Reply>]) -> Result<MeterValues, DriverError>;
    /// The requests that carry out `op`.
    fn control(&self, op: ControlOp) -> Result<Vec<Step>, DriverError>;
    /// Whether the energy registers are primary values already (DESIGN.md: CT/PT).
    fn energy_is_primary(&self) -> bool;
    /// The request that sets the meter's clock to `local` (the meter's own time), sent without
    /// waiting for an answer (a broadcast); `None` when the driver cannot set the clock.
    fn sync_clock(&self, _local: chrono::NaiveDateTime) -> Option<Step> {
        None
    }
}

/// What a driver needs to know of a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterConfig {
    /// `dtsy1352`, `ddsy1352`, `dlt645` or `modbus_generic`.
    pub model: String,
    pub address: String,
    pub register_map: Option<serde_json::Value>,
    pub dlt645_password: Option<String>,
    pub dlt645_operator: Option<String>,
}

/// The driver for a configured meter.
pub fn for_meter(meter: &MeterConfig) -> Result<Box<dyn Driver>, DriverError> {
    let modbus_address = || {
        meter
            .address
            .parse::<u8>()
            .ok()
            .filter(|a| (1..=247).contains(a))
            .ok_or_else(|| DriverError::Config(format!("Modbus address {:?}", meter.address)))
    };
    use powertab_core::field::MeterModel;
    let model = MeterModel::parse(&meter.model)
        .ok_or_else(|| DriverError::Config(format!("unknown model {}", meter.model)))?;
    match model {
        MeterModel::Dtsy1352 => Ok(Box::new(acrel::Acrel::new(modbus_address()?, true))),
        MeterModel::Ddsy1352 => Ok(Box::new(acrel::Acrel::new(modbus_address()?, false))),
        MeterModel::Dlt645 => Ok(Box::new(dlt645::Dlt645::new(
            &meter.address,
            meter.dlt645_password.as_deref(),
            meter.dlt645_operator.as_deref(),
        )?)),
        MeterModel::ModbusGeneric => Ok(Box::new(generic::GenericModbus::new(
            modbus_address()?,
            meter.register_map.as_ref(),
        )?)),
    }
}

/// The Modbus registers of a reply, or why not.
pub(crate) fn registers(reply: Option<&Reply>) -> Result<&[u16], DriverError> {
    use crate::framing::rtu;
    match reply {
        Some(Reply::Rtu(rtu::Reply::Registers(r))) => Ok(r),
        Some(Reply::Rtu(rtu::Reply::Exception(code))) => {
            Err(DriverError::Refused(format!("Modbus exception {code}")))
        }
        other => Err(DriverError::BadReply(format!("{other:?}"))),
    }
}

/// A high-word-first 32-bit value from two registers.
pub(crate) fn u32_at(regs: &[u16], index: usize) -> u32 {
    (u32::from(regs[index]) << 16) | u32::from(regs[index + 1])
}
