//! The field's word lists (DOMAIN.md): meter models and what each speaks, bus protocols,
//! prepayment modes, meter roles, gateway kinds and the statuses of meters and gateways — each
//! written once here.

use crate::vocabulary;

vocabulary! {
    /// A meter model PowerTab has a driver for.
    pub enum MeterModel {
        /// Acrel DTSY-1352, three-phase.
        Dtsy1352 = "dtsy1352",
        /// Acrel DDSY-1352, single-phase.
        Ddsy1352 = "ddsy1352",
        /// Any DL/T 645-2007 meter.
        Dlt645 = "dlt645",
        /// A Modbus meter read through a configured register map.
        ModbusGeneric = "modbus_generic",
    }
}

vocabulary! {
    /// What an RS485 bus speaks.
    pub enum Protocol {
        ModbusRtu = "modbus_rtu",
        Dlt645 = "dlt645",
    }
}

vocabulary! {
    /// Where the money of a meter is kept (DESIGN.md: Money and the ledger).
    pub enum PrepaymentMode {
        /// The platform keeps the balance and trips the meter.
        Platform = "platform",
        /// The meter keeps the balance; purchases are secure frames.
        Meter = "meter",
    }
}

vocabulary! {
    /// What a meter measures.
    pub enum MeterRole {
        /// A shop's own consumption.
        Shop = "shop",
        /// A building's or floor's main supply.
        Main = "main",
        /// Common areas (corridors, lifts) shared out.
        Common = "common",
    }
}

vocabulary! {
    /// How a gateway reaches PowerTab.
    pub enum GatewayKind {
        /// A serial server that dials in over TCP, one socket per bus.
        Dtu = "dtu",
        /// A Modbus-TCP gateway PowerTab dials out to.
        ModbusTcp = "modbus_tcp",
        /// A gateway publishing over MQTT.
        Mqtt = "mqtt",
    }
}

impl MeterModel {
    /// The bus protocol this model speaks.
    pub fn protocol(self) -> Protocol {
        match self {
            MeterModel::Dtsy1352 | MeterModel::Ddsy1352 | MeterModel::ModbusGeneric => {
                Protocol::ModbusRtu
            }
            MeterModel::Dlt645 => Protocol::Dlt645,
        }
    }

    /// Whether the model has a driver with the secure purchase (meter-side prepayment). The
    /// simulator and secure firmware implement SECURE-COMMAND.md for the Acrel models; DL/T 645
    /// and generic Modbus meters do not.
    pub fn supports_meter_side(self) -> bool {
        matches!(self, MeterModel::Dtsy1352 | MeterModel::Ddsy1352)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_know_their_protocol_and_secure_support() {
        assert_eq!(MeterModel::Dlt645.protocol(), Protocol::Dlt645);
        assert_eq!(MeterModel::ModbusGeneric.protocol(), Protocol::ModbusRtu);
        assert!(MeterModel::Dtsy1352.supports_meter_side());
        assert!(!MeterModel::Dlt645.supports_meter_side());
        assert_eq!(
            MeterModel::choices(),
            "dtsy1352, ddsy1352, dlt645 or modbus_generic"
        );
        assert_eq!(
            GatewayKind::parse("modbus_tcp"),
            Some(GatewayKind::ModbusTcp)
        );
    }
}

vocabulary! {
    /// Where a meter is in its life: read and billed, or taken off (its record and history stay).
    pub enum MeterStatus {
        Active = "active",
        Removed = "removed",
    }
}

vocabulary! {
    /// Where a gateway is in its life.
    pub enum GatewayStatus {
        /// Dials in (or is dialled) and is polled.
        Enabled = "enabled",
        /// Kept, but its connections are refused until enabled again.
        Suspended = "suspended",
        /// Retired: its identity is free again; its buses and its meters' history stay.
        Removed = "removed",
    }
}
