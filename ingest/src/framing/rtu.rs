//! Modbus RTU on a DTU socket: requests we send, and a framer that finds the reply to the
//! request in flight in whatever bytes arrive (DESIGN.md: Ingest, Framing). A reply is found by
//! its address, function, length and CRC; bytes that belong to no such frame (line noise, a
//! late reply to an earlier request, another meter's answer) are skipped, never taken for the
//! answer. Heartbeats and repeated registration prefixes are removed by [`super::find`].

/// The Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF); sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// FC 0x03: read `count` holding registers from `start`.
pub fn read_holding(address: u8, start: u16, count: u16) -> (Vec<u8>, Expect) {
    let mut frame = vec![address, 0x03];
    frame.extend_from_slice(&start.to_be_bytes());
    frame.extend_from_slice(&count.to_be_bytes());
    let expect = Expect {
        address,
        function: 0x03,
        registers: count,
        start,
    };
    (with_crc(frame), expect)
}

/// FC 0x10: write `values` to consecutive registers from `start`.
pub fn write_multiple(address: u8, start: u16, values: &[u16]) -> (Vec<u8>, Expect) {
    let count = u16::try_from(values.len()).expect("at most 123 registers per write");
    let mut frame = vec![address, 0x10];
    frame.extend_from_slice(&start.to_be_bytes());
    frame.extend_from_slice(&count.to_be_bytes());
    frame.push(u8::try_from(count * 2).expect("at most 123 registers per write"));
    for v in values {
        frame.extend_from_slice(&v.to_be_bytes());
    }
    let expect = Expect {
        address,
        function: 0x10,
        registers: count,
        start,
    };
    (with_crc(frame), expect)
}

/// What the request in flight makes a valid reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub address: u8,
    pub function: u8,
    pub registers: u16,
    pub start: u16,
}

/// A reply that matched the request in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// FC 0x03: the registers read.
    Registers(Vec<u16>),
    /// FC 0x10: the write was accepted.
    Written,
    /// The meter refused with a Modbus exception code.
    Exception(u8),
}

/// The length of the reply that would start at `buf[0]`, if it looks like one for `expect`.
fn candidate_len(buf: &[u8], expect: &Expect) -> Option<usize> {
    if buf.first() != Some(&expect.address) {
        return None;
    }
    let function = *buf.get(1)?;
    if function == expect.function | 0x80 {
        return Some(5);
    }
    if function != expect.function {
        return None;
    }
    match function {
        0x03 => {
            let byte_count = *buf.get(2)?;
            (usize::from(byte_count) == usize::from(expect.registers) * 2)
                .then_some(3 + usize::from(byte_count) + 2)
        }
        0x10 => Some(8),
        _ => None,
    }
}

fn decode(frame: &[u8], expect: &Expect) -> Option<Reply> {
    if frame[1] & 0x80 != 0 {
        return Some(Reply::Exception(frame[2]));
    }
    match expect.function {
        0x03 => Some(Reply::Registers(
            frame[3..frame.len() - 2]
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect(),
        )),
        // The echo must name the registers we wrote.
        0x10 => (frame[2..4] == expect.start.to_be_bytes()
            && frame[4..6] == expect.registers.to_be_bytes())
        .then_some(Reply::Written),
        _ => None,
    }
}

/// Where the reply to `expect` is in `buf`: `Ok((reply, start, end))`, or `Err(keep_from)` when
/// it is not (yet) complete: bytes before `keep_from` can never start it and may be dropped.
pub fn find_reply(buf: &[u8], expect: &Expect) -> Result<(Reply, usize, usize), usize> {
    let mut keep_from = buf.len();
    for start in 0..buf.len() {
        let rest = &buf[start..];
        // Too short to tell yet: keep it, it may be the start of the reply.
        if rest.len() < 3 && rest[0] == expect.address {
            keep_from = keep_from.min(start);
            continue;
        }
        let Some(len) = candidate_len(rest, expect) else {
            continue;
        };
        if rest.len() < len {
            keep_from = keep_from.min(start);
            continue;
        }
        let frame = &rest[..len];
        let crc = u16::from_le_bytes([frame[len - 2], frame[len - 1]]);
        if crc16(&frame[..len - 2]) != crc {
            continue;
        }
        if let Some(reply) = decode(frame, expect) {
            return Ok((reply, start, start + len));
        }
    }
    Err(keep_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_domain_example() {
        // DOMAIN.md: trip for slave 1 is 01 10 00 57 00 02 04 00 01 00 01 CRC.
        let (frame, _) = write_multiple(1, 0x0057, &[0x0001, 0x0001]);
        assert_eq!(
            &frame[..11],
            &[0x01, 0x10, 0x00, 0x57, 0x00, 0x02, 0x04, 0x00, 0x01, 0x00, 0x01]
        );
        assert_eq!(crc16(&frame), 0, "a frame with its CRC checks to zero");
        // The classic reference: 01 03 00 00 00 0A has CRC C5 CD.
        let (read, _) = read_holding(1, 0, 10);
        assert_eq!(&read[6..], &[0xC5, 0xCD]);
    }

    fn reply_registers(address: u8, values: &[u16]) -> Vec<u8> {
        let mut f = vec![address, 0x03, (values.len() * 2) as u8];
        for v in values {
            f.extend_from_slice(&v.to_be_bytes());
        }
        with_crc(f)
    }

    #[test]
    fn a_reply_is_found_among_stray_bytes() {
        let (_, expect) = read_holding(7, 0x0200, 2);
        let mut buf = vec![0x00, 0x07, 0xFF, 0x13];
        buf.extend(reply_registers(7, &[0x1234, 0xABCD]));
        buf.push(0x55);
        let (reply, start, end) = find_reply(&buf, &expect).unwrap();
        assert_eq!(reply, Reply::Registers(vec![0x1234, 0xABCD]));
        assert_eq!((start, end), (4, 4 + 9));
    }

    #[test]
    fn late_or_foreign_replies_are_not_taken_for_the_answer() {
        let (_, expect) = read_holding(7, 0x0200, 2);
        // Meter 8's reply, and meter 7's reply to an earlier read of 3 registers.
        let mut buf = reply_registers(8, &[1, 2]);
        buf.extend(reply_registers(7, &[1, 2, 3]));
        assert!(find_reply(&buf, &expect).is_err());
        buf.extend(reply_registers(7, &[9, 9]));
        assert_eq!(
            find_reply(&buf, &expect).unwrap().0,
            Reply::Registers(vec![9, 9])
        );
    }

    #[test]
    fn a_corrupt_crc_is_skipped_and_a_partial_reply_is_kept() {
        let (_, expect) = read_holding(3, 0, 1);
        let mut bad = reply_registers(3, &[42]);
        bad[4] ^= 0xFF;
        assert!(find_reply(&bad, &expect).is_err());
        let good = reply_registers(3, &[42]);
        let partial = &good[..4];
        assert_eq!(
            find_reply(partial, &expect),
            Err(0),
            "keep the start of the reply"
        );
        assert_eq!(find_reply(&[0x99, 0x98], &expect), Err(2), "noise can go");
    }

    #[test]
    fn exceptions_and_write_echoes_decode() {
        let (_, expect) = write_multiple(1, 0x0057, &[1, 1]);
        let echo = with_crc(vec![0x01, 0x10, 0x00, 0x57, 0x00, 0x02]);
        assert_eq!(find_reply(&echo, &expect).unwrap().0, Reply::Written);
        let wrong_echo = with_crc(vec![0x01, 0x10, 0x00, 0x58, 0x00, 0x02]);
        assert!(find_reply(&wrong_echo, &expect).is_err());
        let exception = with_crc(vec![0x01, 0x90, 0x02]);
        assert_eq!(
            find_reply(&exception, &expect).unwrap().0,
            Reply::Exception(2)
        );
    }
}
