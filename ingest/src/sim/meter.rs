//! A simulated meter: consumption from a shop type's daily shape, a relay that obeys commands
//! (and opens by itself when a meter-side balance runs out), prepaid registers, and the protocol
//! side: it answers the Modbus RTU requests of the Acrel models and the DL/T 645 requests of a
//! generic meter exactly as the drivers expect them. A meter-side meter carries the secure
//! command's meter side ([`super::secure_meter`]) at 0x0C00 / 0x0C40 / 0x0C60 and counts down
//! at the price pushed to it.

use crate::driver::{acrel, MeterValues};
use crate::framing::{dlt645, rtu};
use chrono::{DateTime, Timelike, Utc};
use powertab_core::secure::frame as secure;
use powertab_core::tariff::profile::ShopType;

/// A frame written two bytes per register loses its pad byte: the header says how long it is.
fn unpad_frame(data: &[u8]) -> &[u8] {
    let declared = data
        .get(16..18)
        .map(|n| 18 + usize::from(u16::from_be_bytes([n[0], n[1]])) + 8);
    match declared {
        Some(len) if data.len() == len + 1 && data[len] == 0 => &data[..len],
        _ => data,
    }
}

/// Which protocol and model the meter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimModel {
    Dtsy1352 { address: u8 },
    Ddsy1352 { address: u8 },
    Dlt645 { address: [u8; 6] },
}

/// A meter on a simulated bus.
#[derive(Debug, Clone)]
pub struct SimMeter {
    pub model: SimModel,
    pub shop_type: ShopType,
    pub daily_wh: i64,
    pub energy_wh: i64,
    /// Sub-Wh energy carried between steps, in milli-Wh.
    carry_mwh: i64,
    /// Sharp, peak, flat, valley (the meter's own simple TOU clock).
    pub tou_wh: [i64; 4],
    pub remaining_fen: i64,
    pub purchase_count: i64,
    /// Forced relay state from a command; `None` = the meter's own logic (closed).
    pub forced_closed: Option<bool>,
    /// DL/T 645: a 1B "close allowed" only clears the trip command; the relay stays open until
    /// [`SimMeter::press_button`] (some meters work so).
    pub close_needs_button: bool,
    /// DL/T 645: the trip command is cleared and the relay waits for the button.
    pub close_allowed: bool,
    /// DL/T 645: the time the last broadcast set the clock to (the meter's local time).
    pub clock_set_to: Option<chrono::NaiveDateTime>,
    /// A silent meter never answers (fault injection).
    pub silent: bool,
    /// Meter-side prepayment: the meter's secure side (SECURE-COMMAND.md), which then holds
    /// the remaining amount, the counters and the relay; `None` for a platform-side meter.
    pub secure: Option<super::secure_meter::SecureMeter>,
    /// The acknowledgement of the last frame written at 0x0C00, read from 0x0C40.
    last_secure_ack: Vec<u8>,
    /// Fault injection on the secure registers: the next this many frame writes are lost on
    /// the line (not received, not applied, no reply) …
    pub lose_frames: u32,
    /// … and the next this many acknowledgement reads go unanswered (the frame was applied).
    pub lose_acks: u32,
    /// After applying the next frame the meter restarts ([`SimMeter::reboot`]) and answers none
    /// of the next this many requests (the write's own reply included).
    pub reboot_after_frame: Option<u32>,
    deaf_for: u32,
    /// Sub-fen use carried between steps (Wh × price units, 1 fen = 100,000 of them).
    carry_fen_units: i64,
    last_step: Option<DateTime<Utc>>,
}

impl SimMeter {
    pub fn new(model: SimModel, shop_type: ShopType, daily_wh: i64, energy_wh: i64) -> SimMeter {
        SimMeter {
            model,
            shop_type,
            daily_wh,
            energy_wh,
            carry_mwh: 0,
            tou_wh: [0; 4],
            remaining_fen: 100_000,
            purchase_count: 1,
            forced_closed: None,
            close_needs_button: false,
            close_allowed: false,
            clock_set_to: None,
            silent: false,
            secure: None,
            last_secure_ack: Vec::new(),
            lose_frames: 0,
            lose_acks: 0,
            reboot_after_frame: None,
            deaf_for: 0,
            carry_fen_units: 0,
            last_step: None,
        }
    }

    /// This meter as a meter-side one, loaded with `secure` (its key and counters).
    pub fn with_secure(mut self, secure: super::secure_meter::SecureMeter) -> SimMeter {
        self.secure = Some(secure);
        self
    }

    pub fn relay_closed(&self) -> bool {
        match &self.secure {
            Some(secure) => secure.relay_closed(),
            None => self.forced_closed.unwrap_or(true),
        }
    }

    /// The meter restarts: counters, credit and relay rule survive (non-volatile), the last
    /// acknowledgement and the memory of the last accepted frame do not — a resend of that frame
    /// is then answered `03` (its count is already stored).
    pub fn reboot(&mut self) {
        self.last_secure_ack.clear();
        if let Some(secure) = self.secure.as_mut() {
            secure.forget_last_frame();
        }
    }

    /// The meter answers again after [`SimMeter::reboot_after_frame`] kept it silent.
    pub fn wake(&mut self) {
        self.deaf_for = 0;
    }

    /// The tenant presses the meter's button: a relay whose close was allowed closes.
    pub fn press_button(&mut self) {
        if self.close_allowed {
            self.close_allowed = false;
            self.forced_closed = Some(true);
        }
    }

    /// Runs the meter up to `now`: energy flows only while the relay is closed.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        let Some(last) = self.last_step.replace(now) else {
            return;
        };
        let elapsed_ms = (now - last).num_milliseconds();
        if elapsed_ms <= 0 || !self.relay_closed() {
            return;
        }
        // Steps are short (one poll interval), so the hour the step started in sets the rate.
        let local = last.with_timezone(&chrono_tz::Asia::Shanghai);
        let hour = local.hour() as usize;
        let hour_wh = self.shop_type.hourly_wh(self.daily_wh)[hour];
        // hour_wh per 3,600,000 ms, in milli-Wh.
        let mwh = self.carry_mwh + hour_wh * elapsed_ms / 3600;
        let wh = mwh / 1000;
        self.carry_mwh = mwh % 1000;
        self.energy_wh += wh;
        self.count_down(wh);
        let slot = match hour {
            10..=11 | 18..=20 => 1, // peak
            23 | 0..=6 => 3,        // valley
            _ => 2,                 // flat
        };
        self.tou_wh[slot] += wh;
    }

    /// A meter-side meter counts its remaining amount down at its pushed price.
    fn count_down(&mut self, wh: i64) {
        let Some(secure) = self.secure.as_mut() else {
            return;
        };
        // Price units are 0.0001 yuan per kWh: 1 Wh costs price/100,000 fen.
        let units = wh
            .saturating_mul(i64::from(secure.price_units))
            .saturating_add(self.carry_fen_units);
        secure.spend(units / 100_000);
        self.carry_fen_units = units % 100_000;
    }

    /// The values the meter shows now.
    pub fn values(&self) -> MeterValues {
        let three = matches!(self.model, SimModel::Dtsy1352 { .. });
        let phases = if three { 3 } else { 1 };
        let hour_wh = self.shop_type.hourly_wh(self.daily_wh)[self.last_step.map_or(12, |t| {
            t.with_timezone(&chrono_tz::Asia::Shanghai).hour() as usize
        })];
        let power_w = if self.relay_closed() { hour_wh } else { 0 };
        MeterValues {
            energy_wh: self.energy_wh / 10 * 10, // the registers count 0.01 kWh
            tou_wh: Some([
                Some(self.tou_wh[0] / 10 * 10),
                Some(self.tou_wh[1] / 10 * 10),
                Some(self.tou_wh[2] / 10 * 10),
                Some(self.tou_wh[3] / 10 * 10),
                None,
            ]),
            power_w: Some(power_w),
            voltage_dv: vec![2200; phases],
            current_ca: vec![power_w * 100 / 220 / phases as i64; phases],
            pf_milli: Some(950),
            remaining_fen: Some(
                self.secure
                    .as_ref()
                    .map_or(self.remaining_fen, |s| s.remaining_fen),
            ),
            purchase_count: Some(
                self.secure
                    .as_ref()
                    .map_or(self.purchase_count, |s| i64::from(s.purchase_count)),
            ),
            relay_closed: Some(self.relay_closed()),
            alarms: vec![],
            meter_ratios: Some((1, 1)),
            // What an MQTT gateway reports of a meter-side meter (a bus reads 0x0C60 instead).
            secure: self.secure.as_ref().map(|s| secure::Counters {
                purchase_count: s.purchase_count,
                control_count: s.control_count,
                remaining_fen: s.remaining_fen,
                price_units: s.price_units,
            }),
        }
    }

    /// The meter's answer to `request` (a whole frame addressed to anyone), or `None` when the
    /// request is not for this meter or the meter is silent.
    pub fn answer(&mut self, request: &[u8], now: DateTime<Utc>) -> Option<Vec<u8>> {
        if self.silent {
            return None;
        }
        if self.deaf_for > 0 {
            self.deaf_for -= 1;
            return None;
        }
        self.advance(now);
        match self.model {
            SimModel::Dtsy1352 { address } | SimModel::Ddsy1352 { address } => {
                self.answer_rtu(address, request)
            }
            SimModel::Dlt645 { address } => self.answer_645(address, request),
        }
    }

    fn answer_rtu(&mut self, address: u8, request: &[u8]) -> Option<Vec<u8>> {
        if request.len() < 8 || request[0] != address || rtu::crc16(request) != 0 {
            return None;
        }
        let three = matches!(self.model, SimModel::Dtsy1352 { .. });
        let word = |i: usize| u16::from_be_bytes([request[i], request[i + 1]]);
        let mut reply = vec![address];
        match (request[1], word(2), word(4)) {
            (0x03, acrel::FAST_READ_START, acrel::FAST_READ_COUNT) => {
                let regs = acrel::fast_read_block(
                    three,
                    &self.values(),
                    [0x26, 0x11, 0x25, 3, 0x12, 0, 0],
                );
                reply.extend_from_slice(&[0x03, 96]);
                for r in regs {
                    reply.extend_from_slice(&r.to_be_bytes());
                }
            }
            (0x10, acrel::CONTROL_REGISTER, 2) if request.len() >= 13 => {
                let forced = match (word(7), word(9)) {
                    (1, 1) => Some(false),
                    (1, 0) => Some(true),
                    _ => None,
                };
                self.forced_closed = forced;
                if let Some(secure) = self.secure.as_mut() {
                    use super::secure_meter::RelayControl;
                    secure.control = match forced {
                        Some(false) => RelayControl::ForcedOpen,
                        Some(true) => RelayControl::ForcedClosed,
                        None => RelayControl::Own,
                    };
                }
                reply.extend_from_slice(&request[1..6]);
            }
            (0x10, secure::FRAME_REGISTER, _) if self.secure.is_some() && self.lose_frames > 0 => {
                self.lose_frames -= 1;
                return None;
            }
            (0x03, secure::ACK_REGISTER, secure::ACK_REGISTERS)
                if self.secure.is_some() && self.lose_acks > 0 =>
            {
                self.lose_acks -= 1;
                return None;
            }
            (0x10, secure::FRAME_REGISTER, count) if self.secure.is_some() => {
                let bytes = usize::from(*request.get(6)?);
                let data = request.get(7..7 + bytes)?;
                if usize::from(count) * 2 != bytes {
                    reply.extend_from_slice(&[0x90, 0x03]);
                } else {
                    let frame = unpad_frame(data);
                    let secure = self.secure.as_mut()?;
                    self.last_secure_ack = secure.handle(frame);
                    if let Some(deaf) = self.reboot_after_frame.take() {
                        self.reboot();
                        self.deaf_for = deaf;
                        return None;
                    }
                    reply.extend_from_slice(&request[1..6]);
                }
            }
            (0x03, secure::ACK_REGISTER, secure::ACK_REGISTERS) if self.secure.is_some() => {
                let mut bytes = self.last_secure_ack.clone();
                bytes.resize(usize::from(secure::ACK_REGISTERS) * 2, 0);
                reply.push(0x03);
                reply.push(u8::try_from(bytes.len()).ok()?);
                reply.extend_from_slice(&bytes);
            }
            (0x03, secure::COUNTERS_REGISTER, secure::COUNTERS_REGISTERS)
                if self.secure.is_some() =>
            {
                let regs = self.secure.as_ref()?.counter_registers();
                reply.extend_from_slice(&[0x03, 20]);
                for r in regs {
                    reply.extend_from_slice(&r.to_be_bytes());
                }
            }
            (function, _, _) => reply.extend_from_slice(&[function | 0x80, 0x02]),
        }
        let crc = rtu::crc16(&reply);
        reply.extend_from_slice(&crc.to_le_bytes());
        Some(reply)
    }

    fn answer_645(&mut self, address: [u8; 6], request: &[u8]) -> Option<Vec<u8>> {
        let start = request.iter().position(|&b| b == 0x68)?;
        let f = &request[start..];
        let broadcast = f.get(1..7) == Some(&[0x99; 6][..]);
        if f.len() < 12 || (f[1..7] != address && !broadcast) || f[7] != 0x68 {
            return None;
        }
        let len = usize::from(f[9]);
        let data: Vec<u8> = f
            .get(10..10 + len)?
            .iter()
            .map(|b| b.wrapping_sub(0x33))
            .collect();
        let control = f[8];
        if broadcast {
            // Broadcast time (08H): taken by every meter, answered by none.
            if control == dlt645::BROADCAST_TIME && data.len() == 6 {
                let b = |i: usize| u32::from((data[i] >> 4) * 10 + (data[i] & 0x0F));
                self.clock_set_to = chrono::NaiveDate::from_ymd_opt(2000 + b(5) as i32, b(4), b(3))
                    .and_then(|d| d.and_hms_opt(b(2), b(1), b(0)));
            }
            return None;
        }
        match control {
            dlt645::READ if data.len() >= 4 => {
                let di = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                let v = self.values();
                let value = match di {
                    0x0000_0000 => dlt645::bcd_bytes((v.energy_wh / 10) as u64, 4),
                    0x0201_0100 => dlt645::bcd_bytes(v.voltage_dv[0] as u64, 2),
                    0x0202_0100 => dlt645::bcd_bytes((v.current_ca[0] * 10) as u64, 3),
                    0x0203_0000 => dlt645::bcd_bytes((v.power_w.unwrap_or(0) * 10) as u64, 3),
                    // Status word 3: bit 4 the relay open, bit 6 the trip command.
                    0x0400_0503 => {
                        let relay = if self.relay_closed() { 0x00 } else { 0x10 };
                        let command = if self.relay_closed() || self.close_allowed {
                            0x00
                        } else {
                            0x40
                        };
                        vec![relay | command, 0x00]
                    }
                    // No prepaid registers on this meter: "no such data".
                    _ => return Some(dlt645::frame(address, dlt645::READ | 0xC0, &[0x02])),
                };
                let mut answer = data[..4].to_vec();
                answer.extend(value);
                Some(dlt645::frame(address, dlt645::READ | 0x80, &answer))
            }
            dlt645::REMOTE_CONTROL if data.len() >= 9 => {
                self.close_allowed = false;
                match data[8] {
                    0x1A => self.forced_closed = Some(false),
                    0x1B if self.close_needs_button && !self.relay_closed() => {
                        self.close_allowed = true;
                    }
                    0x1B | 0x3A => self.forced_closed = Some(true),
                    _ => self.forced_closed = None,
                }
                Some(dlt645::frame(address, dlt645::REMOTE_CONTROL | 0x80, &[]))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{self, ControlOp, MeterConfig};
    use crate::framing::find;

    fn poll(driver: &dyn driver::Driver, meter: &mut SimMeter, now: DateTime<Utc>) -> MeterValues {
        let replies: Vec<_> = driver
            .poll()
            .iter()
            .map(|step| {
                meter
                    .answer(&step.request, now)
                    .and_then(|a| find(&a, &step.expect, &[]).ok().map(|(r, _)| r))
            })
            .collect();
        driver.parse_poll(&replies).unwrap()
    }

    fn rtu(mut frame: Vec<u8>) -> Vec<u8> {
        let crc = rtu::crc16(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        frame
    }

    /// Writes `frame` at 0x0C00 and reads the acknowledgement from 0x0C40, as ingest will.
    fn send_secure(meter: &mut SimMeter, frame: &[u8], now: DateTime<Utc>) -> Vec<u8> {
        let mut padded = frame.to_vec();
        if padded.len() % 2 == 1 {
            padded.push(0);
        }
        let regs = u16::try_from(padded.len() / 2).unwrap();
        let mut write = vec![1, 0x10];
        write.extend_from_slice(&secure::FRAME_REGISTER.to_be_bytes());
        write.extend_from_slice(&regs.to_be_bytes());
        write.push(u8::try_from(padded.len()).unwrap());
        write.extend_from_slice(&padded);
        let echo = meter.answer(&rtu(write), now).unwrap();
        assert_eq!(echo[1], 0x10, "the write is acknowledged");
        let mut read = vec![1, 0x03];
        read.extend_from_slice(&secure::ACK_REGISTER.to_be_bytes());
        read.extend_from_slice(&secure::ACK_REGISTERS.to_be_bytes());
        let reply = meter.answer(&rtu(read), now).unwrap();
        assert_eq!(reply[2], 38);
        reply[3..3 + 37].to_vec()
    }

    #[test]
    fn a_meter_side_meter_takes_a_purchase_over_modbus_and_counts_down_at_its_price() {
        use powertab_core::secure::frame::{MeterKeys, MeterNumber, Order, SecureOp};
        use powertab_core::secure::{build, verify_ack, AckStatus};
        let t0 = DateTime::parse_from_rfc3339("2026-11-25T04:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let master = [0x11; 16];
        let number = MeterNumber::parse("202611250001").unwrap();
        let keys = MeterKeys::derive(&master, &number);
        let side =
            super::super::secure_meter::SecureMeter::with_master_key("202611250001", &master)
                .unwrap();
        let mut meter = SimMeter::new(
            SimModel::Dtsy1352 { address: 1 },
            ShopType::Restaurant,
            120_000,
            5_000_000,
        )
        .with_secure(side);
        assert!(
            !meter.relay_closed(),
            "nothing on it: its own rule keeps it open"
        );
        let order = |op, sequence, amount| Order {
            op,
            meter: number,
            sequence,
            amount,
            issued_at: 1_764_028_800,
            nonce: [7; 8],
        };
        let price = order(SecureOp::SetPrice, 1, 10_000); // ¥1.0000 per kWh
        let ack = send_secure(&mut meter, &build(&keys, &price), t0);
        assert_eq!(
            verify_ack(&keys, &price, &ack).unwrap().status,
            AckStatus::Accepted
        );
        let purchase = order(SecureOp::Purchase, 1, 5_000); // ¥50
        let ack = send_secure(&mut meter, &build(&keys, &purchase), t0);
        let ack = verify_ack(&keys, &purchase, &ack).unwrap();
        assert_eq!(
            (ack.status, ack.remaining_fen, ack.purchase_count),
            (AckStatus::Accepted, 5_000, 1)
        );
        assert!(meter.relay_closed());
        // An hour at the busiest time: 12 kWh at ¥1 = ¥12 off the meter.
        meter.advance(t0);
        meter.advance(t0 + chrono::Duration::hours(1));
        let mut read = vec![1, 0x03];
        read.extend_from_slice(&secure::COUNTERS_REGISTER.to_be_bytes());
        read.extend_from_slice(&secure::COUNTERS_REGISTERS.to_be_bytes());
        let reply = meter
            .answer(&rtu(read), t0 + chrono::Duration::hours(1))
            .unwrap();
        let counters = &reply[3..23];
        assert_eq!(&counters[..4], &1u32.to_be_bytes(), "purchase count");
        assert_eq!(&counters[4..8], &1u32.to_be_bytes(), "control counter");
        assert_eq!(&counters[8..16], &3_800i64.to_be_bytes(), "remaining ¥38");
        assert_eq!(&counters[16..20], &10_000u32.to_be_bytes(), "price units");
        assert_eq!(meter.values().remaining_fen, Some(3_800));
        // A platform-side meter has no secure registers.
        let mut plain = SimMeter::new(SimModel::Dtsy1352 { address: 1 }, ShopType::Retail, 1, 1);
        let mut read = vec![1, 0x03];
        read.extend_from_slice(&secure::COUNTERS_REGISTER.to_be_bytes());
        read.extend_from_slice(&secure::COUNTERS_REGISTERS.to_be_bytes());
        let refused = plain.answer(&rtu(read), t0).unwrap();
        assert_eq!(&refused[1..3], &[0x83, 0x02], "illegal data address");
    }

    #[test]
    fn simulated_meters_answer_their_drivers_and_obey_the_relay() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-25T04:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for (model, config) in [
            (SimModel::Dtsy1352 { address: 3 }, ("dtsy1352", "3")),
            (SimModel::Ddsy1352 { address: 4 }, ("ddsy1352", "4")),
            (
                SimModel::Dlt645 {
                    address: dlt645::address_bytes("202611250001").unwrap(),
                },
                ("dlt645", "202611250001"),
            ),
        ] {
            let driver = driver::for_meter(&MeterConfig {
                model: config.0.into(),
                address: config.1.into(),
                register_map: None,
                dlt645_password: None,
                dlt645_operator: None,
            })
            .unwrap();
            let mut meter = SimMeter::new(model, ShopType::Restaurant, 120_000, 5_000_000);
            let first = poll(driver.as_ref(), &mut meter, t0);
            let later = poll(driver.as_ref(), &mut meter, t0 + chrono::Duration::hours(1));
            assert_eq!(first.energy_wh, 5_000_000, "{model:?}");
            // 12:00 local is the restaurant's busiest hour: 100 per mille of 120 kWh.
            assert_eq!(later.energy_wh - first.energy_wh, 12_000, "{model:?}");
            assert_eq!(later.relay_closed, Some(true));
            for step in driver.control(ControlOp::Trip).unwrap() {
                let answer = meter.answer(&step.request, t0).expect("an acknowledgement");
                assert!(find(&answer, &step.expect, &[]).is_ok(), "{model:?}");
            }
            let tripped = poll(driver.as_ref(), &mut meter, t0 + chrono::Duration::hours(2));
            assert_eq!(tripped.relay_closed, Some(false), "{model:?}");
            assert_eq!(
                tripped.energy_wh, later.energy_wh,
                "no energy while tripped"
            );
        }
    }
}
