//! The meter side of the PowerTab secure command (SECURE-COMMAND.md: Meter rules), as a meter's
//! firmware would do it: its own key, counters, remaining amount and price; it checks each
//! command frame in the spec's order, applies it at most once and answers with an
//! acknowledgement MAC'd with its own key. It shares only the primitives (3DES, Div, padding,
//! MAC) with the platform's frame builder in `powertab_core::secure::frame` — parsing, the
//! checks and the acknowledgement are written here again, so a bug in the builder cannot hide in
//! both. Tested against the published vectors.

use powertab_core::secure::primitives::{self, Block, Key16};

/// Status bytes (SECURE-COMMAND.md: Acknowledgement frame).
pub mod status {
    pub const ACCEPTED: u8 = 0x00;
    pub const BAD_MAC: u8 = 0x01;
    pub const WRONG_METER: u8 = 0x02;
    pub const BAD_SEQUENCE: u8 = 0x03;
    pub const MALFORMED: u8 = 0x04;
    pub const ALREADY_APPLIED: u8 = 0x05;
    pub const NOT_ENOUGH_CREDIT: u8 = 0x06;
}

/// Who holds the relay: the meter's own credit rule, or a platform command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayControl {
    /// Closed while the remaining amount is above zero.
    Own,
    ForcedOpen,
    ForcedClosed,
}

/// A meter-side prepayment meter's secure state.
#[derive(Debug, Clone)]
pub struct SecureMeter {
    number: Block,
    enc_key: Key16,
    mac_key: Key16,
    pub purchase_count: u32,
    pub control_count: u32,
    pub remaining_fen: i64,
    /// The price it counts down at, 0.0001 yuan per kWh.
    pub price_units: u32,
    pub control: RelayControl,
    /// Keep-power holds the relay closed against every trip, its own zero-credit trip included.
    pub keep_power: bool,
    last_accepted: Option<Vec<u8>>,
    /// Frames seen, and the status each got (for tests and the simulator's log).
    pub answered: Vec<u8>,
}

/// The meter number as 16 BCD digits, the way the meter stores it (`None` for anything but 1
/// to 16 digits).
pub fn bcd(number: &str) -> Option<Block> {
    if number.is_empty() || number.len() > 16 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded: Vec<u8> = std::iter::repeat_n(b'0', 16 - number.len())
        .chain(number.bytes())
        .map(|d| d - b'0')
        .collect();
    let mut out = [0u8; 8];
    for (slot, pair) in out.iter_mut().zip(padded.chunks_exact(2)) {
        *slot = (pair[0] << 4) | pair[1];
    }
    Some(out)
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

impl SecureMeter {
    /// A meter loaded with its key KM (as commissioning does), counters at zero.
    pub fn new(number: &str, meter_key: &Key16) -> Option<SecureMeter> {
        Some(SecureMeter {
            number: bcd(number)?,
            enc_key: primitives::diversify(meter_key, &[0, 0, 0, 0, 0, 0, 0, 1]),
            mac_key: primitives::diversify(meter_key, &[0, 0, 0, 0, 0, 0, 0, 2]),
            purchase_count: 0,
            control_count: 0,
            remaining_fen: 0,
            price_units: 0,
            control: RelayControl::Own,
            keep_power: false,
            last_accepted: None,
            answered: Vec::new(),
        })
    }

    /// Loads a new meter key KM in the field (a re-key): counters, credit and price stay.
    pub fn load_key(&mut self, meter_key: &Key16) {
        self.enc_key = primitives::diversify(meter_key, &[0, 0, 0, 0, 0, 0, 0, 1]);
        self.mac_key = primitives::diversify(meter_key, &[0, 0, 0, 0, 0, 0, 0, 2]);
        self.last_accepted = None;
    }

    /// A meter loaded the factory's way: KM = Div(MK, M).
    pub fn with_master_key(number: &str, master_key: &Key16) -> Option<SecureMeter> {
        let km = primitives::diversify(master_key, &bcd(number)?);
        SecureMeter::new(number, &km)
    }

    pub fn relay_closed(&self) -> bool {
        self.keep_power
            || match self.control {
                RelayControl::ForcedOpen => false,
                RelayControl::ForcedClosed => true,
                RelayControl::Own => self.remaining_fen > 0,
            }
    }

    /// Forgets the last accepted frame (a restart): its resend is then judged on its count.
    pub fn forget_last_frame(&mut self) {
        self.last_accepted = None;
    }

    /// Counts down `fen` of use (the meter's own metering at its price).
    pub fn spend(&mut self, fen: i64) {
        self.remaining_fen = self.remaining_fen.saturating_sub(fen);
    }

    /// The 10 registers at 0x0C60: purchase count u32, control counter u32, remaining fen i64,
    /// price units u32, big-endian.
    pub fn counter_registers(&self) -> Vec<u16> {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.purchase_count.to_be_bytes());
        bytes.extend_from_slice(&self.control_count.to_be_bytes());
        bytes.extend_from_slice(&self.remaining_fen.to_be_bytes());
        bytes.extend_from_slice(&self.price_units.to_be_bytes());
        bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect()
    }

    /// Checks and applies one command frame; returns the acknowledgement's 37 bytes.
    pub fn handle(&mut self, frame: &[u8]) -> Vec<u8> {
        let code = frame.get(3).copied().unwrap_or(0);
        let sequence = frame.get(12..16).map(read_u32).unwrap_or(0);
        let verdict = self.check_and_apply(frame);
        self.answered.push(verdict);
        self.ack(code, sequence, verdict)
    }

    fn check_and_apply(&mut self, frame: &[u8]) -> u8 {
        // Magic, version, length.
        if frame.len() < 18 || frame[..3] != [0x50, 0x54, 0x01] || !(1..=8).contains(&frame[3]) {
            return status::MALFORMED;
        }
        let n = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        if n != 32 || frame.len() != 18 + n + 8 {
            return status::MALFORMED;
        }
        if frame[4..12] != self.number {
            return status::WRONG_METER;
        }
        let (signed, mac) = frame.split_at(18 + n);
        if !primitives::constant_time_eq(&primitives::retail_mac(&self.mac_key, signed), mac) {
            return status::BAD_MAC;
        }
        let Some(plain) = primitives::cbc_decrypt(&self.enc_key, &frame[18..18 + n]) else {
            return status::BAD_MAC;
        };
        let Some(plain) = primitives::unpad(&plain).filter(|p| p.len() == 24) else {
            return status::BAD_MAC;
        };
        let sequence = read_u32(&frame[12..16]);
        if read_u32(&plain[8..12]) != sequence {
            return status::BAD_MAC;
        }
        if self.last_accepted.as_deref() == Some(frame) {
            return status::ALREADY_APPLIED;
        }
        let code = frame[3];
        let money = code == 0x01 || code == 0x06;
        let stored = if money {
            self.purchase_count
        } else {
            self.control_count
        };
        if Some(sequence) != stored.checked_add(1) {
            return status::BAD_SEQUENCE;
        }
        let amount = i64::from_be_bytes(plain[..8].try_into().unwrap_or([0; 8]));
        if code == 0x06 && amount > self.remaining_fen {
            return status::NOT_ENOUGH_CREDIT;
        }
        if code == 0x07 && !(1..=100_000).contains(&amount) {
            return status::MALFORMED;
        }
        if money && amount <= 0 {
            return status::MALFORMED;
        }
        self.apply(code, amount, sequence);
        self.last_accepted = Some(frame.to_vec());
        status::ACCEPTED
    }

    fn apply(&mut self, code: u8, amount: i64, sequence: u32) {
        match code {
            0x01 => self.remaining_fen = self.remaining_fen.saturating_add(amount),
            0x06 => self.remaining_fen = self.remaining_fen.saturating_sub(amount),
            0x02 => self.control = RelayControl::ForcedOpen,
            0x03 => self.control = RelayControl::ForcedClosed,
            0x04 => self.keep_power = true,
            0x05 => self.keep_power = false,
            0x07 => self.price_units = u32::try_from(amount).unwrap_or(self.price_units),
            // 0x08 release: back to the meter's own credit rule.
            _ => self.control = RelayControl::Own,
        }
        if code == 0x01 || code == 0x06 {
            self.purchase_count = sequence;
        } else {
            self.control_count = sequence;
        }
    }

    fn ack(&self, code: u8, sequence: u32, verdict: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(37);
        out.extend_from_slice(&[0x50, 0x54, 0x01, code | 0x80]);
        out.extend_from_slice(&self.number);
        out.extend_from_slice(&sequence.to_be_bytes());
        out.push(verdict);
        out.extend_from_slice(&self.remaining_fen.to_be_bytes());
        out.extend_from_slice(&self.purchase_count.to_be_bytes());
        let mac = primitives::retail_mac(&self.mac_key, &out);
        out.extend_from_slice(&mac);
        out
    }
}
