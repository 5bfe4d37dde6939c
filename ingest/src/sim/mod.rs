//! The field simulator (library + `powertab simulate`): meters with realistic consumption, DTUs
//! that dial in to ingest like real ones (registration, heartbeats, RS485 wire time at the bus's
//! baud rate, meter turnaround) with faults on demand, Modbus-TCP gateways, and MQTT gateways.
//! [`secure_meter`] is the meter side of SECURE-COMMAND.md (meter-side prepayment).

pub mod dtu;
pub mod field;
pub mod meter;
pub mod modbus_gateway;
pub mod mqtt_gateway;
pub mod secure_meter;

pub use dtu::{DtuFaults, SimBus, SimDtu};
pub use meter::{SimMeter, SimModel};
