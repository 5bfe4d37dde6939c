//! Secure frames over Modbus buses (SECURE-COMMAND.md: Carriage, Counters read-back): the bytes a
//! meter-side meter takes at 0x0C00, its acknowledgement at 0x0C40 and its counters at 0x0C60.
//! Ingest carries the frame the server built and stored with the command, byte for byte, and
//! brings back the acknowledgement and the counters; it holds no key and judges neither — the
//! server's settle worker (`core::secure::settle`) does.

use crate::driver::{registers, ModbusOp, Step};
use crate::framing::Reply;
use powertab_core::secure::frame::{
    Counters, ACK_LEN, ACK_REGISTER, ACK_REGISTERS, COUNTERS_REGISTER, COUNTERS_REGISTERS,
    FRAME_LEN, FRAME_REGISTER,
};

/// The write of `frame` to meter `unit` (two bytes per register, an odd length padded with 0x00).
pub fn write_frame(unit: u8, frame: &[u8]) -> Option<Step> {
    // Only v1 frames are carried: a stored frame of another length is not one the server built.
    if frame.len() != FRAME_LEN {
        return None;
    }
    let values = frame
        .chunks(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]))
        .collect();
    Some(Step::modbus(
        ModbusOp::WriteMultiple {
            unit,
            start: FRAME_REGISTER,
            values,
        },
        false,
    ))
}

/// The read of the meter's acknowledgement of the last frame.
pub fn read_ack(unit: u8) -> Step {
    Step::modbus(
        ModbusOp::ReadHolding {
            unit,
            start: ACK_REGISTER,
            count: ACK_REGISTERS,
        },
        false,
    )
}

/// The read of the meter's counters.
pub fn read_counters(unit: u8) -> Step {
    Step::modbus(
        ModbusOp::ReadHolding {
            unit,
            start: COUNTERS_REGISTER,
            count: COUNTERS_REGISTERS,
        },
        false,
    )
}

/// The acknowledgement's 37 bytes from its registers (the pad byte dropped); `None` when the
/// reply is not 19 registers.
pub fn ack_bytes(reply: Option<&Reply>) -> Option<Vec<u8>> {
    let regs = registers(reply).ok()?;
    if regs.len() != usize::from(ACK_REGISTERS) {
        return None;
    }
    let mut bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
    bytes.truncate(ACK_LEN);
    Some(bytes)
}

/// The counters from their registers.
pub fn counters(reply: Option<&Reply>) -> Option<Counters> {
    Counters::from_registers(registers(reply).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::rtu;

    #[test]
    fn a_frame_is_written_two_bytes_a_register_and_other_lengths_are_refused() {
        let frame: Vec<u8> = (0..FRAME_LEN as u8).collect();
        let step = write_frame(7, &frame).unwrap();
        let Some(ModbusOp::WriteMultiple {
            unit,
            start,
            values,
        }) = step.modbus
        else {
            panic!("a write")
        };
        assert_eq!((unit, start, values.len()), (7, 0x0C00, 29));
        assert_eq!(values[0], 0x0001);
        assert_eq!(values[28], 0x3839);
        assert!(write_frame(7, &frame[..57]).is_none());
        assert!(write_frame(7, &[]).is_none());
    }

    #[test]
    fn acknowledgements_and_counters_come_back_from_their_registers() {
        let mut ack: Vec<u8> = (1..=37).collect();
        ack.push(0);
        let regs: Vec<u16> = ack
            .chunks(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        let reply = Reply::Rtu(rtu::Reply::Registers(regs));
        assert_eq!(ack_bytes(Some(&reply)).unwrap(), ack[..37].to_vec());
        let short = Reply::Rtu(rtu::Reply::Registers(vec![0; 18]));
        assert!(ack_bytes(Some(&short)).is_none());
        assert!(ack_bytes(None).is_none());

        let mut bytes = Vec::new();
        bytes.extend_from_slice(&12u32.to_be_bytes());
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&(-150i64).to_be_bytes());
        bytes.extend_from_slice(&8_500u32.to_be_bytes());
        let regs: Vec<u16> = bytes
            .chunks(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        let c = counters(Some(&Reply::Rtu(rtu::Reply::Registers(regs.clone())))).unwrap();
        assert_eq!(
            (
                c.purchase_count,
                c.control_count,
                c.remaining_fen,
                c.price_units
            ),
            (12, 3, -150, 8_500)
        );
        // A meter of the first 8 registers still reads (price 0).
        let old = counters(Some(&Reply::Rtu(rtu::Reply::Registers(regs[..8].to_vec())))).unwrap();
        assert_eq!((old.purchase_count, old.price_units), (12, 0));
        let exception = Reply::Rtu(rtu::Reply::Exception(2));
        assert!(counters(Some(&exception)).is_none());
    }
}
