//! Acrel DTSY-1352 (three-phase) and DDSY-1352 (single-phase) over Modbus RTU (DOMAIN.md): the
//! 48-register fast read at 0x0200 gives everything in one request; remote control writes two
//! registers at 0x0057. The facts marked (verify) in DOMAIN.md live in named constants here.

use super::{registers, u32_at, ControlOp, Driver, DriverError, MeterValues, ModbusOp, Step};
use crate::framing::Reply;

/// The fast-read block: 48 holding registers from 0x0200.
pub const FAST_READ_START: u16 = 0x0200;
pub const FAST_READ_COUNT: u16 = 48;
/// Remote control: two registers at 0x0057 (FC 0x10).
pub const CONTROL_REGISTER: u16 = 0x0057;
/// Meter type codes in register 0x0200.
pub const TYPE_DTSY1352: u16 = 5;
pub const TYPE_DDSY1352: u16 = 7;
/// (verify) DTSY/DDSY-1352 energy registers are primary values (the meter applies its own
/// PT/CT from 0x0213/0x0214); DESIGN.md: CT/PT.
pub const ENERGY_IS_PRIMARY: bool = true;

pub struct Acrel {
    address: u8,
    three_phase: bool,
}

impl Acrel {
    pub fn new(address: u8, three_phase: bool) -> Acrel {
        Acrel {
            address,
            three_phase,
        }
    }
}

/// Index of register `reg` in the fast-read block.
const fn at(reg: u16) -> usize {
    (reg - FAST_READ_START) as usize
}

/// The fast-read registers as canonical values.
pub fn parse_fast_read(regs: &[u16], three_phase: bool) -> Result<MeterValues, DriverError> {
    if regs.len() != usize::from(FAST_READ_COUNT) {
        return Err(DriverError::BadReply(format!("{} registers", regs.len())));
    }
    let phases = if three_phase { 3 } else { 1 };
    let signed = |reg: u16| i64::from(regs[at(reg)] as i16);
    let energy = |reg: u16| i64::from(u32_at(regs, at(reg))) * 10; // 0.01 kWh → Wh
    let status = regs[at(0x0224)];
    let (high, low) = ((status >> 8) as u8, status as u8);
    let mut alarms = Vec::new();
    for (bit, name) in [
        (4, "over_limit"),
        (5, "arrears"),
        (6, "alarm1"),
        (7, "alarm2"),
    ] {
        if low & (1 << bit) != 0 {
            alarms.push(name);
        }
    }
    if high & 1 != 0 {
        alarms.push("fault");
    }
    Ok(MeterValues {
        energy_wh: energy(0x0215),
        // The meter keeps sharp, peak, flat, valley; no deep valley in the fast block.
        tou_wh: Some([
            Some(energy(0x0217)),
            Some(energy(0x0219)),
            Some(energy(0x021B)),
            Some(energy(0x021D)),
            None,
        ]),
        power_w: Some(signed(0x020A)), // 0.001 kW = 1 W
        voltage_dv: (0..phases)
            .map(|p| i64::from(regs[at(0x0201) + p]))
            .collect(),
        current_ca: (0..phases)
            .map(|p| i64::from(regs[at(0x0204) + p]))
            .collect(),
        pf_milli: Some(signed(0x0212)),
        remaining_fen: Some(i64::from(u32_at(regs, at(0x021F)) as i32)),
        purchase_count: Some(i64::from(regs[at(0x0221)])),
        // Bit 5 is L1; a tripped meter opens all phases (verify on three-phase meters).
        relay_closed: Some(high & (1 << 5) != 0),
        alarms,
        meter_ratios: Some((i64::from(regs[at(0x0213)]), i64::from(regs[at(0x0214)]))),
        secure: None,
    })
}

impl Driver for Acrel {
    fn poll(&self) -> Vec<Step> {
        vec![Step::modbus(
            ModbusOp::ReadHolding {
                unit: self.address,
                start: FAST_READ_START,
                count: FAST_READ_COUNT,
            },
            false,
        )]
    }

    fn parse_poll(&self, replies: &[Option<Reply>]) -> Result<MeterValues, DriverError> {
        let regs = registers(replies.first().and_then(Option::as_ref))?;
        let kind = regs.first().copied().unwrap_or(0);
        let expected = if self.three_phase {
            TYPE_DTSY1352
        } else {
            TYPE_DDSY1352
        };
        if kind != expected {
            return Err(DriverError::BadReply(format!(
                "meter type {kind}, configured model has type {expected}"
            )));
        }
        parse_fast_read(regs, self.three_phase)
    }

    fn control(&self, op: ControlOp) -> Result<Vec<Step>, DriverError> {
        let words: [u16; 2] = match op {
            ControlOp::Trip => [0x0001, 0x0001],
            // Keep-power on these meters is a forced close that the platform never trips
            // (DESIGN.md: Commands; no dedicated register is known).
            ControlOp::Close | ControlOp::KeepPowerOn => [0x0001, 0x0000],
            ControlOp::Release | ControlOp::KeepPowerOff => [0x0000, 0x0000],
        };
        Ok(vec![Step::modbus(
            ModbusOp::WriteMultiple {
                unit: self.address,
                start: CONTROL_REGISTER,
                values: words.to_vec(),
            },
            false,
        )])
    }

    fn energy_is_primary(&self) -> bool {
        ENERGY_IS_PRIMARY
    }
}

/// The fast-read block a meter with these values would answer (for the simulator and tests).
pub fn fast_read_block(three_phase: bool, values: &MeterValues, clock: [u8; 7]) -> Vec<u16> {
    let mut regs = vec![0u16; usize::from(FAST_READ_COUNT)];
    regs[0] = if three_phase {
        TYPE_DTSY1352
    } else {
        TYPE_DDSY1352
    };
    for (p, v) in values.voltage_dv.iter().enumerate().take(3) {
        regs[at(0x0201) + p] = *v as u16;
    }
    for (p, c) in values.current_ca.iter().enumerate().take(3) {
        regs[at(0x0204) + p] = *c as u16;
    }
    regs[at(0x020A)] = values.power_w.unwrap_or(0) as i16 as u16;
    regs[at(0x0212)] = values.pf_milli.unwrap_or(1000) as i16 as u16;
    let (pt, ct) = values.meter_ratios.unwrap_or((1, 1));
    regs[at(0x0213)] = pt as u16;
    regs[at(0x0214)] = ct as u16;
    let mut put32 = |reg: u16, v: u32| {
        regs[at(reg)] = (v >> 16) as u16;
        regs[at(reg) + 1] = v as u16;
    };
    put32(0x0215, (values.energy_wh / 10) as u32);
    let tou = values.tou_wh.unwrap_or_default();
    for (i, reg) in [0x0217u16, 0x0219, 0x021B, 0x021D].into_iter().enumerate() {
        put32(reg, (tou[i].unwrap_or(0) / 10) as u32);
    }
    put32(0x021F, values.remaining_fen.unwrap_or(0) as i32 as u32);
    regs[at(0x0221)] = values.purchase_count.unwrap_or(0) as u16;
    let mut high = 0u8;
    if values.relay_closed == Some(true) {
        high |= if three_phase {
            0b1110_0000
        } else {
            0b0010_0000
        };
    }
    if values.alarms.contains(&"fault") {
        high |= 1;
    }
    let mut low = 0b0000_1000u8; // prepay control on
    for (bit, name) in [
        (4, "over_limit"),
        (5, "arrears"),
        (6, "alarm1"),
        (7, "alarm2"),
    ] {
        if values.alarms.contains(&name) {
            low |= 1 << bit;
        }
    }
    regs[at(0x0224)] = (u16::from(high) << 8) | u16::from(low);
    // Clock bytes yy MM dd week hh mm ss at byte 80 of the data (register 0x0228).
    let mut bytes = [0u8; 8];
    bytes[..7].copy_from_slice(&clock);
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        regs[at(0x0228) + i] = u16::from_be_bytes([pair[0], pair[1]]);
    }
    regs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::rtu;

    fn sample() -> MeterValues {
        MeterValues {
            energy_wh: 1_234_560,
            tou_wh: Some([
                Some(10_000),
                Some(600_000),
                Some(400_000),
                Some(224_560),
                None,
            ]),
            power_w: Some(5230),
            voltage_dv: vec![2201, 2198, 2203],
            current_ca: vec![790, 801, 795],
            pf_milli: Some(950),
            remaining_fen: Some(-1_250),
            purchase_count: Some(12),
            relay_closed: Some(true),
            alarms: vec!["arrears", "alarm1"],
            meter_ratios: Some((1, 40)),
            secure: None,
        }
    }

    #[test]
    fn the_fast_read_decodes_every_field() {
        let regs = fast_read_block(true, &sample(), [0x26, 0x11, 0x25, 3, 0x10, 0x30, 0x00]);
        assert_eq!(regs.len(), 48);
        assert_eq!(parse_fast_read(&regs, true).unwrap(), sample());
    }

    #[test]
    fn a_single_phase_meter_reports_one_phase() {
        let mut one = sample();
        one.voltage_dv.truncate(1);
        one.current_ca.truncate(1);
        let regs = fast_read_block(false, &one, [0; 7]);
        let driver = Acrel::new(3, false);
        let mut reply = vec![3u8, 0x03, 96];
        for r in &regs {
            reply.extend_from_slice(&r.to_be_bytes());
        }
        let crc = rtu::crc16(&reply);
        reply.extend_from_slice(&crc.to_le_bytes());
        let step = &driver.poll()[0];
        let (found, _) = crate::framing::find(&reply, &step.expect, &[]).unwrap();
        assert_eq!(driver.parse_poll(&[Some(found.clone())]).unwrap(), one);
        // The three-phase driver refuses a single-phase meter's answer.
        assert!(Acrel::new(3, true).parse_poll(&[Some(found)]).is_err());
    }

    #[test]
    fn control_frames_match_the_domain_table() {
        let d = Acrel::new(1, true);
        let trip = &d.control(ControlOp::Trip).unwrap()[0].request;
        assert_eq!(
            &trip[..11],
            &[0x01, 0x10, 0x00, 0x57, 0x00, 0x02, 0x04, 0x00, 0x01, 0x00, 0x01]
        );
        let close = &d.control(ControlOp::Close).unwrap()[0].request;
        assert_eq!(&close[7..11], &[0x00, 0x01, 0x00, 0x00]);
        let release = &d.control(ControlOp::Release).unwrap()[0].request;
        assert_eq!(&release[7..11], &[0x00, 0x00, 0x00, 0x00]);
    }
}
