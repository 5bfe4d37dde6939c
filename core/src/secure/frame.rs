//! Secure command frames as SECURE-COMMAND.md fixes them, byte for byte: a meter's number as
//! packed BCD, its keys (KM = Div(MK, M), KE and KA from KM), the command frame the platform
//! sends (header, 3DES-CBC ciphertext of amount ‖ sequence ‖ issued-at ‖ nonce, retail MAC) and
//! the acknowledgement it gets back — believed only after its MAC checks out (constant time) and
//! it names the meter, command and sequence that were sent.

use super::primitives::{self, Block, Key16};

pub const MAGIC: [u8; 2] = *b"PT";
pub const VERSION: u8 = 0x01;
/// Ciphertext length in v1: 24 bytes of plaintext, padded.
pub const CIPHER_LEN: usize = 32;
/// Header (18) + ciphertext + MAC (8).
pub const FRAME_LEN: usize = 18 + CIPHER_LEN + 8;
/// Acknowledgement: 29 bytes + MAC.
pub const ACK_LEN: usize = 37;
/// Modbus carriage (SECURE-COMMAND.md: Carriage, Counters read-back): the frame is written with
/// FC 0x10 at [`FRAME_REGISTER`] (two bytes per register, an odd length padded with 0x00), the
/// acknowledgement read with FC 0x03 from [`ACK_REGISTER`] ([`ACK_REGISTERS`] registers: 37
/// bytes + one pad byte), the counters from [`COUNTERS_REGISTER`].
pub const FRAME_REGISTER: u16 = 0x0C00;
pub const ACK_REGISTER: u16 = 0x0C40;
pub const ACK_REGISTERS: u16 = 19;
/// Purchase count u32, control counter u32, remaining fen i64, price units u32.
pub const COUNTERS_REGISTER: u16 = 0x0C60;
pub const COUNTERS_REGISTERS: u16 = 10;
/// The range a set price must lie in, price units (0.0001 yuan per kWh).
pub const PRICE_UNITS_RANGE: std::ops::RangeInclusive<i64> = 1..=100_000;

/// A meter's secure counters as read back (SECURE-COMMAND.md: Counters read-back; 0x0C60 over
/// Modbus, the counter fields of an MQTT reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub purchase_count: u32,
    pub control_count: u32,
    pub remaining_fen: i64,
    pub price_units: u32,
}

impl Counters {
    /// The counters from the registers at [`COUNTERS_REGISTER`]: purchase count u32, control
    /// counter u32, remaining fen i64, price units u32, big-endian. A meter that answers only the
    /// first 8 registers (before the price pair was added) reports price 0.
    pub fn from_registers(regs: &[u16]) -> Option<Counters> {
        if regs.len() < 8 {
            return None;
        }
        let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
        Some(Counters {
            purchase_count: be_u32(&bytes[0..4]),
            control_count: be_u32(&bytes[4..8]),
            remaining_fen: i64::from_be_bytes(bytes[8..16].try_into().ok()?),
            price_units: bytes.get(16..20).map_or(0, be_u32),
        })
    }

    /// The counter a command of `op` counts on.
    pub fn count_for(&self, op: SecureOp) -> u32 {
        if op.uses_purchase_count() {
            self.purchase_count
        } else {
            self.control_count
        }
    }
}

/// The command byte (SECURE-COMMAND.md: Command frame, offset 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecureOp {
    Purchase,
    Trip,
    Close,
    KeepPowerOn,
    KeepPowerOff,
    Deduct,
    SetPrice,
    Release,
}

impl SecureOp {
    pub const ALL: [SecureOp; 8] = [
        SecureOp::Purchase,
        SecureOp::Trip,
        SecureOp::Close,
        SecureOp::KeepPowerOn,
        SecureOp::KeepPowerOff,
        SecureOp::Deduct,
        SecureOp::SetPrice,
        SecureOp::Release,
    ];

    pub fn code(self) -> u8 {
        match self {
            SecureOp::Purchase => 0x01,
            SecureOp::Trip => 0x02,
            SecureOp::Close => 0x03,
            SecureOp::KeepPowerOn => 0x04,
            SecureOp::KeepPowerOff => 0x05,
            SecureOp::Deduct => 0x06,
            SecureOp::SetPrice => 0x07,
            SecureOp::Release => 0x08,
        }
    }

    pub fn from_code(code: u8) -> Option<SecureOp> {
        SecureOp::ALL.into_iter().find(|op| op.code() == code)
    }

    /// Purchase and deduct count on the purchase count; every other command on the control
    /// counter.
    pub fn uses_purchase_count(self) -> bool {
        matches!(self, SecureOp::Purchase | SecureOp::Deduct)
    }

    /// The queue's op this frame carries.
    pub fn op(self) -> crate::commands::Op {
        use crate::commands::Op;
        match self {
            SecureOp::Purchase => Op::Purchase,
            SecureOp::Trip => Op::Trip,
            SecureOp::Close => Op::Close,
            SecureOp::KeepPowerOn => Op::KeepPowerOn,
            SecureOp::KeepPowerOff => Op::KeepPowerOff,
            SecureOp::Deduct => Op::Deduct,
            SecureOp::SetPrice => Op::SetPrice,
            SecureOp::Release => Op::Release,
        }
    }

    /// The frame for a queue op, when it has one.
    pub fn of(op: crate::commands::Op) -> Option<SecureOp> {
        SecureOp::ALL.into_iter().find(|s| s.op() == op)
    }
}

/// Why bytes or a meter number are not what SECURE-COMMAND.md allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureError {
    #[error("a meter number for secure commands is 1 to 16 decimal digits")]
    MeterNumber,
    #[error("a set price is 1 to 100,000 price units (0.0001 yuan per kWh)")]
    Price,
    #[error("purchase and deduct amounts are positive fen")]
    Amount,
}

/// M: the meter number's digits left-padded with zeros to 16, packed BCD (8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeterNumber(pub Block);

impl MeterNumber {
    pub fn parse(number: &str) -> Result<MeterNumber, SecureError> {
        if number.is_empty() || number.len() > 16 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SecureError::MeterNumber);
        }
        let digits = format!("{number:0>16}");
        let mut out = [0u8; 8];
        for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
            out[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
        }
        Ok(MeterNumber(out))
    }
}

/// One meter's working keys. Never logged: `Debug` shows nothing of them.
#[derive(Clone, PartialEq, Eq)]
pub struct MeterKeys {
    /// KE: the plaintext's 3DES-CBC key.
    pub enc: Key16,
    /// KA: the MAC key, both directions.
    pub mac: Key16,
}

impl std::fmt::Debug for MeterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeterKeys(…)")
    }
}

impl MeterKeys {
    /// KM = Div(MK, M): what a company admin exports to commission one meter or gateway.
    pub fn meter_key(master: &Key16, meter: &MeterNumber) -> Key16 {
        primitives::diversify(master, &meter.0)
    }

    /// KE = Div(KM, 0…01), KA = Div(KM, 0…02).
    pub fn from_meter_key(meter_key: &Key16) -> MeterKeys {
        MeterKeys {
            enc: primitives::diversify(meter_key, &[0, 0, 0, 0, 0, 0, 0, 1]),
            mac: primitives::diversify(meter_key, &[0, 0, 0, 0, 0, 0, 0, 2]),
        }
    }

    pub fn derive(master: &Key16, meter: &MeterNumber) -> MeterKeys {
        MeterKeys::from_meter_key(&MeterKeys::meter_key(master, meter))
    }
}

/// What one frame asks: the op, for which meter, under which sequence (stored counter + 1),
/// with which amount (fen for purchase and deduct, price units for set price, 0 otherwise),
/// when it was issued and its random nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub op: SecureOp,
    pub meter: MeterNumber,
    pub sequence: u32,
    pub amount: i64,
    pub issued_at: u32,
    pub nonce: [u8; 8],
}

impl Order {
    /// The order's amount within what its op allows (before anything is built or stored).
    pub fn check(&self) -> Result<(), SecureError> {
        match self.op {
            SecureOp::Purchase | SecureOp::Deduct if self.amount <= 0 => Err(SecureError::Amount),
            SecureOp::SetPrice if !PRICE_UNITS_RANGE.contains(&self.amount) => {
                Err(SecureError::Price)
            }
            SecureOp::Purchase | SecureOp::Deduct | SecureOp::SetPrice => Ok(()),
            _ if self.amount != 0 => Err(SecureError::Amount),
            _ => Ok(()),
        }
    }
}

/// The command frame of `order` under `keys`: always [`FRAME_LEN`] bytes. The caller checks
/// the order first ([`Order::check`]); the builder writes what it is given (the published
/// vectors include a refused set price of 0).
pub fn build(keys: &MeterKeys, order: &Order) -> Vec<u8> {
    let mut plain = Vec::with_capacity(24);
    plain.extend_from_slice(&order.amount.to_be_bytes());
    plain.extend_from_slice(&order.sequence.to_be_bytes());
    plain.extend_from_slice(&order.issued_at.to_be_bytes());
    plain.extend_from_slice(&order.nonce);
    let sealed = primitives::cbc_encrypt(&keys.enc, &primitives::pad(&plain))
        .expect("padded data is whole blocks");
    debug_assert_eq!(sealed.len(), CIPHER_LEN);
    let mut frame = Vec::with_capacity(FRAME_LEN);
    frame.extend_from_slice(&MAGIC);
    frame.push(VERSION);
    frame.push(order.op.code());
    frame.extend_from_slice(&order.meter.0);
    frame.extend_from_slice(&order.sequence.to_be_bytes());
    frame.extend_from_slice(
        &u16::try_from(sealed.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&sealed);
    let mac = primitives::retail_mac(&keys.mac, &frame);
    frame.extend_from_slice(&mac);
    frame
}

/// The meter's verdict (SECURE-COMMAND.md: Acknowledgement frame, offset 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckStatus {
    Accepted,
    BadMac,
    WrongMeter,
    /// The sequence is not stored + 1.
    BadSequence,
    Malformed,
    /// A byte-identical resend of the last accepted frame: nothing applied twice.
    AlreadyApplied,
    /// A deduct above the remaining amount.
    NotEnoughCredit,
}

impl AckStatus {
    pub const ALL: [AckStatus; 7] = [
        AckStatus::Accepted,
        AckStatus::BadMac,
        AckStatus::WrongMeter,
        AckStatus::BadSequence,
        AckStatus::Malformed,
        AckStatus::AlreadyApplied,
        AckStatus::NotEnoughCredit,
    ];

    pub fn code(self) -> u8 {
        match self {
            AckStatus::Accepted => 0x00,
            AckStatus::BadMac => 0x01,
            AckStatus::WrongMeter => 0x02,
            AckStatus::BadSequence => 0x03,
            AckStatus::Malformed => 0x04,
            AckStatus::AlreadyApplied => 0x05,
            AckStatus::NotEnoughCredit => 0x06,
        }
    }

    pub fn from_code(code: u8) -> Option<AckStatus> {
        AckStatus::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// A checked acknowledgement: the meter's state after the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub op: SecureOp,
    pub meter: MeterNumber,
    pub sequence: u32,
    pub status: AckStatus,
    pub remaining_fen: i64,
    pub purchase_count: u32,
}

/// Why an acknowledgement is not believed. Nothing in a refused one is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the acknowledgement is {0} bytes, not 37")]
    Length(usize),
    #[error("the acknowledgement is not a PowerTab secure v1 frame")]
    Header,
    #[error("the acknowledgement's MAC does not check out")]
    Mac,
    #[error("the acknowledgement answers another meter")]
    OtherMeter,
    #[error("the acknowledgement answers another command")]
    OtherCommand,
    #[error("the acknowledgement answers sequence {0}, not the one sent")]
    OtherSequence(u32),
    #[error("the acknowledgement carries unknown status {0:#04x}")]
    Status(u8),
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes.try_into().unwrap_or([0; 4]))
}

/// Checks `bytes` as the acknowledgement of `order` sent with `keys`: the MAC first (nothing
/// else is read before it checks out), then that it answers that meter, command and sequence.
pub fn verify_ack(keys: &MeterKeys, order: &Order, bytes: &[u8]) -> Result<Ack, AckError> {
    if bytes.len() != ACK_LEN {
        return Err(AckError::Length(bytes.len()));
    }
    let (body, mac) = bytes.split_at(ACK_LEN - 8);
    if !primitives::constant_time_eq(&primitives::retail_mac(&keys.mac, body), mac) {
        return Err(AckError::Mac);
    }
    if body[..2] != MAGIC || body[2] != VERSION {
        return Err(AckError::Header);
    }
    if body[3] != order.op.code() | 0x80 {
        return Err(AckError::OtherCommand);
    }
    if body[4..12] != order.meter.0 {
        return Err(AckError::OtherMeter);
    }
    let sequence = be_u32(&body[12..16]);
    if sequence != order.sequence {
        return Err(AckError::OtherSequence(sequence));
    }
    let status = AckStatus::from_code(body[16]).ok_or(AckError::Status(body[16]))?;
    Ok(Ack {
        op: order.op,
        meter: order.meter,
        sequence,
        status,
        remaining_fen: i64::from_be_bytes(body[17..25].try_into().unwrap_or([0; 8])),
        purchase_count: be_u32(&body[25..29]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_numbers_pack_as_the_spec_shows_and_refuse_anything_else() {
        assert_eq!(
            MeterNumber::parse("202611250001").unwrap().0,
            [0x00, 0x00, 0x20, 0x26, 0x11, 0x25, 0x00, 0x01]
        );
        assert_eq!(MeterNumber::parse("9999999999999999").unwrap().0, [0x99; 8]);
        for bad in ["", "12345678901234567", "12a4", "-1", " 1", "١٢"] {
            assert_eq!(
                MeterNumber::parse(bad),
                Err(SecureError::MeterNumber),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn orders_keep_amounts_within_their_op() {
        let order = |op, amount| Order {
            op,
            meter: MeterNumber::parse("1").unwrap(),
            sequence: 1,
            amount,
            issued_at: 0,
            nonce: [0; 8],
        };
        assert!(order(SecureOp::Purchase, 1).check().is_ok());
        assert_eq!(
            order(SecureOp::Purchase, 0).check(),
            Err(SecureError::Amount)
        );
        assert_eq!(
            order(SecureOp::Deduct, -5).check(),
            Err(SecureError::Amount)
        );
        assert_eq!(
            order(SecureOp::SetPrice, 0).check(),
            Err(SecureError::Price)
        );
        assert_eq!(
            order(SecureOp::SetPrice, 100_001).check(),
            Err(SecureError::Price)
        );
        assert!(order(SecureOp::SetPrice, 100_000).check().is_ok());
        assert_eq!(order(SecureOp::Trip, 3).check(), Err(SecureError::Amount));
        assert!(order(SecureOp::Release, 0).check().is_ok());
        for op in SecureOp::ALL {
            assert_eq!(SecureOp::from_code(op.code()), Some(op));
            assert_eq!(SecureOp::of(op.op()), Some(op));
        }
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let keys = MeterKeys::derive(&[1; 16], &MeterNumber::parse("42").unwrap());
        assert_eq!(format!("{keys:?}"), "MeterKeys(…)");
    }
}
