//! Generic DL/T 645-2007 meters over the same DTU sockets (DOMAIN.md): one read per data
//! identifier (total energy, remaining amount, voltage, current, power; the optional ones may
//! be refused by meters that lack them) and remote control 0x1C with the meter's password and
//! operator code.

use super::{ControlOp, Driver, DriverError, MeterValues, Step, CLOSE_ALLOWED};
use crate::framing::dlt645::{self, bcd_value, Expect as Dlt645Expect};
use crate::framing::{Expect, Reply};

/// Data identifiers read by a poll, in order.
pub const DI_ENERGY_TOTAL: u32 = 0x0000_0000;
pub const DI_VOLTAGE_A: u32 = 0x0201_0100;
pub const DI_CURRENT_A: u32 = 0x0202_0100;
pub const DI_POWER_TOTAL: u32 = 0x0203_0000;
pub const DI_REMAINING: u32 = 0x0090_0200;
/// Operating status word 3 (运行状态字3): bit 4 the relay (0 closed, 1 open), bit 6 the relay
/// command (0 close, 1 trip).
pub const DI_STATUS_3: u32 = 0x0400_0503;
const STATUS_3_RELAY_OPEN: u8 = 0x10;
const STATUS_3_COMMAND_TRIP: u8 = 0x40;
const POLL: [(u32, bool); 6] = [
    (DI_ENERGY_TOTAL, false),
    (DI_VOLTAGE_A, true),
    (DI_CURRENT_A, true),
    (DI_POWER_TOTAL, true),
    (DI_REMAINING, true),
    (DI_STATUS_3, true),
];
/// Remote-control commands stay valid this long on the meter (N3..N8 expiry).
pub const CONTROL_VALID_MINUTES: i64 = 10;

pub struct Dlt645 {
    address: [u8; 6],
    /// PA P0 P1 P2 as typed (8 hex digits), sent in that order (verify per vendor).
    password: [u8; 4],
    operator: [u8; 4],
}

fn hex4(text: Option<&str>) -> Result<[u8; 4], DriverError> {
    let text = text.unwrap_or("00000000");
    let bad = || DriverError::Config(format!("8 hex digits expected, got {text:?}"));
    if text.len() != 8 {
        return Err(bad());
    }
    let mut out = [0u8; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl Dlt645 {
    pub fn new(
        address: &str,
        password: Option<&str>,
        operator: Option<&str>,
    ) -> Result<Dlt645, DriverError> {
        Ok(Dlt645 {
            address: dlt645::address_bytes(address)
                .ok_or_else(|| DriverError::Config(format!("address {address:?}")))?,
            password: hex4(password)?,
            operator: hex4(operator)?,
        })
    }
}

/// The plain data of a normal reply, `None` for an absent or refused optional value.
fn data(reply: Option<&Reply>) -> Option<&[u8]> {
    match reply {
        Some(Reply::Dlt645(dlt645::Reply::Data(d))) => Some(d),
        _ => None,
    }
}

fn value(reply: Option<&Reply>, len: usize, signed: bool) -> Option<i64> {
    data(reply)
        .filter(|d| d.len() >= len)
        .and_then(|d| bcd_value(&d[..len], signed))
}

impl Driver for Dlt645 {
    fn poll(&self) -> Vec<Step> {
        POLL.iter()
            .map(|&(di, optional)| {
                let (request, expect) = dlt645::read(self.address, di);
                Step {
                    request,
                    expect: Expect::Dlt645(expect),
                    optional,
                    modbus: None,
                }
            })
            .collect()
    }

    fn parse_poll(&self, replies: &[Option<Reply>]) -> Result<MeterValues, DriverError> {
        let get = |i: usize| replies.get(i).and_then(Option::as_ref);
        // XXXXXX.XX kWh → Wh.
        let energy = value(get(0), 4, false)
            .ok_or_else(|| DriverError::BadReply("no total energy".into()))?;
        let status = data(get(5)).filter(|d| !d.is_empty()).map(|d| d[0]);
        let relay_closed = status.map(|s| s & STATUS_3_RELAY_OPEN == 0);
        // "Close allowed" (1B): the trip command is cleared but the relay waits for the
        // tenant's button — the close is done as far as the platform can do it (DESIGN.md).
        let close_allowed =
            status.is_some_and(|s| s & STATUS_3_RELAY_OPEN != 0 && s & STATUS_3_COMMAND_TRIP == 0);
        Ok(MeterValues {
            energy_wh: energy * 10,
            tou_wh: None,
            // XX.XXXX kW → W (one decimal dropped by integer division).
            power_w: value(get(3), 3, true).map(|p| p / 10),
            voltage_dv: value(get(1), 2, false).into_iter().collect(), // XXX.X V
            // XXX.XXX A → 0.01 A.
            current_ca: value(get(2), 3, true).map(|c| c / 10).into_iter().collect(),
            pf_milli: None,
            remaining_fen: value(get(4), 4, true), // XXXXXX.XX yuan
            purchase_count: None,
            relay_closed,
            alarms: if close_allowed {
                vec![CLOSE_ALLOWED]
            } else {
                vec![]
            },
            meter_ratios: None,
            secure: None,
        })
    }

    fn control(&self, op: ControlOp) -> Result<Vec<Step>, DriverError> {
        let n1 = match op {
            ControlOp::Trip => 0x1A,
            ControlOp::Close => 0x1B,
            ControlOp::KeepPowerOn => 0x3A,
            ControlOp::KeepPowerOff => 0x3B,
            ControlOp::Release => return Err(DriverError::Unsupported(op)),
        };
        let expiry = chrono::Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .naive_local()
            + chrono::Duration::minutes(CONTROL_VALID_MINUTES);
        Ok(vec![self.control_at(n1, expiry)])
    }

    fn energy_is_primary(&self) -> bool {
        // Generic meters report secondary energy unless configured otherwise: the configured
        // CT/PT ratio is applied by billing.
        false
    }

    fn sync_clock(&self, local: chrono::NaiveDateTime) -> Option<Step> {
        // 08H broadcast time: every meter on the line takes it, none answers.
        use chrono::{Datelike, Timelike};
        let bcd = |v: u32| dlt645::bcd_bytes(u64::from(v), 1)[0];
        let data = [
            bcd(local.second()),
            bcd(local.minute()),
            bcd(local.hour()),
            bcd(local.day()),
            bcd(local.month()),
            bcd(u32::try_from(local.year() % 100).unwrap_or(0)),
        ];
        Some(Step {
            request: dlt645::frame(BROADCAST_ADDRESS, dlt645::BROADCAST_TIME, &data),
            expect: Expect::Dlt645(Dlt645Expect {
                address: BROADCAST_ADDRESS,
                control: dlt645::BROADCAST_TIME,
                di: None,
            }),
            optional: true,
            modbus: None,
        })
    }
}

/// The address every DL/T 645 meter takes (broadcasts are not answered).
pub const BROADCAST_ADDRESS: [u8; 6] = [0x99; 6];

impl Dlt645 {
    /// The 0x1C request for control type `n1`, valid until `expiry` (meter local time).
    pub fn control_at(&self, n1: u8, expiry: chrono::NaiveDateTime) -> Step {
        use chrono::{Datelike, Timelike};
        let bcd = |v: u32| dlt645::bcd_bytes(u64::from(v), 1)[0];
        let mut data = Vec::with_capacity(16);
        data.extend_from_slice(&self.password);
        data.extend_from_slice(&self.operator);
        data.push(n1);
        data.push(0x00);
        data.extend_from_slice(&[
            bcd(expiry.second()),
            bcd(expiry.minute()),
            bcd(expiry.hour()),
            bcd(expiry.day()),
            bcd(expiry.month()),
            bcd(u32::try_from(expiry.year() % 100).unwrap_or(0)),
        ]);
        Step {
            request: dlt645::frame(self.address, dlt645::REMOTE_CONTROL, &data),
            expect: Expect::Dlt645(Dlt645Expect {
                address: self.address,
                control: dlt645::REMOTE_CONTROL,
                di: None,
            }),
            optional: false,
            modbus: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::find;

    fn answer(address: [u8; 6], di: u32, value: &[u8]) -> Vec<u8> {
        let mut d = di.to_le_bytes().to_vec();
        d.extend_from_slice(value);
        dlt645::frame(address, dlt645::READ | 0x80, &d)
    }

    #[test]
    fn a_poll_reads_energy_and_optional_values() {
        let driver = Dlt645::new("202611250001", None, None).unwrap();
        let addr = dlt645::address_bytes("202611250001").unwrap();
        let steps = driver.poll();
        assert_eq!(steps.len(), 6);
        assert!(!steps[0].optional && steps[1].optional);
        let answers = [
            answer(addr, DI_ENERGY_TOTAL, &dlt645::bcd_bytes(12_345_678, 4)), // 123456.78 kWh
            answer(addr, DI_VOLTAGE_A, &dlt645::bcd_bytes(2205, 2)),          // 220.5 V
            answer(addr, DI_CURRENT_A, &dlt645::bcd_bytes(5_123, 3)),         // 5.123 A
            answer(addr, DI_POWER_TOTAL, &dlt645::bcd_bytes(11_234, 3)),      // 1.1234 kW
            dlt645::frame(addr, dlt645::READ | 0xC0, &[0x02]),                // no remaining amount
            answer(addr, DI_STATUS_3, &[0x10, 0x00]),                         // relay open
        ];
        let replies: Vec<Option<Reply>> = steps
            .iter()
            .zip(&answers)
            .map(|(s, a)| find(a, &s.expect, &[]).ok().map(|(r, _)| r))
            .collect();
        let v = driver.parse_poll(&replies).unwrap();
        assert_eq!(v.energy_wh, 123_456_780);
        assert_eq!(v.voltage_dv, vec![2205]);
        assert_eq!(v.current_ca, vec![512]);
        assert_eq!(v.power_w, Some(1123));
        assert_eq!(v.remaining_fen, None);
        assert_eq!(v.relay_closed, Some(false));
    }

    #[test]
    fn remote_control_carries_password_operator_and_expiry() {
        let driver = Dlt645::new("000000000007", Some("02123456"), Some("00000001")).unwrap();
        let expiry = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_opt(10, 30, 0)
            .unwrap();
        let step = driver.control_at(0x1A, expiry);
        // Skip the preamble and header (4 + 10 bytes); the data is +0x33 on the wire.
        let plain: Vec<u8> = step.request[14..14 + 16]
            .iter()
            .map(|b| b.wrapping_sub(0x33))
            .collect();
        assert_eq!(
            plain,
            vec![
                0x02, 0x12, 0x34, 0x56, 0x00, 0x00, 0x00, 0x01, 0x1A, 0x00, 0x00, 0x30, 0x10, 0x25,
                0x11, 0x26
            ]
        );
        assert!(driver.control(ControlOp::Release).is_err());
        assert!(Dlt645::new("000000000007", Some("xyz"), None).is_err());
    }
}
