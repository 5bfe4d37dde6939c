//! DL/T 645-2007 frames (DOMAIN.md): `FE…` preamble, `68 A0..A5 68 C L DATA CS 16`, the address
//! as 6 BCD bytes low byte first, every DATA byte +0x33 on the wire, CS = sum mod 256 from the
//! first 68 to the end of DATA. Requests are built here; [`find_reply`] finds the meter's answer
//! among stray bytes, checking address, control code, length, checksum and end byte.

/// Control codes of the requests we send.
pub const READ: u8 = 0x11;
pub const REMOTE_CONTROL: u8 = 0x1C;
pub const BROADCAST_TIME: u8 = 0x08;

/// Four wake-up bytes many meters need before a frame.
const PREAMBLE: [u8; 4] = [0xFE; 4];

/// A 12-digit address as its 6 wire bytes (low byte first); `None` unless 12 digits.
pub fn address_bytes(address: &str) -> Option<[u8; 6]> {
    let digits = address.as_bytes();
    if digits.len() != 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, pair) in digits.chunks_exact(2).rev().enumerate() {
        out[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
    }
    Some(out)
}

/// A frame for `address` with `control` and `data` (given plain; +0x33 is applied here).
pub fn frame(address: [u8; 6], control: u8, data: &[u8]) -> Vec<u8> {
    let mut f = PREAMBLE.to_vec();
    let body_start = f.len();
    f.push(0x68);
    f.extend_from_slice(&address);
    f.push(0x68);
    f.push(control);
    f.push(u8::try_from(data.len()).expect("DL/T 645 data is at most 200 bytes"));
    f.extend(data.iter().map(|b| b.wrapping_add(0x33)));
    let cs = checksum(&f[body_start..]);
    f.push(cs);
    f.push(0x16);
    f
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// A read of one data identifier (DI, e.g. `0x0000_0000` total active energy).
pub fn read(address: [u8; 6], di: u32) -> (Vec<u8>, Expect) {
    (
        frame(address, READ, &di.to_le_bytes()),
        Expect {
            address,
            control: READ,
            di: Some(di),
        },
    )
}

/// What makes a valid reply to the request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub address: [u8; 6],
    pub control: u8,
    /// Reads: the DI the reply must echo.
    pub di: Option<u32>,
}

/// A reply that matched the request in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Normal answer; `data` is plain (the +0x33 removed), after the echoed DI for reads.
    Data(Vec<u8>),
    /// Abnormal answer (control | 0xC0) with the meter's error byte.
    Error(u8),
}

/// Where the reply to `expect` is in `buf`: `Ok((reply, start, end))`, or `Err(keep_from)`
/// while incomplete (bytes before `keep_from` can never start it).
pub fn find_reply(buf: &[u8], expect: &Expect) -> Result<(Reply, usize, usize), usize> {
    let mut keep_from = buf.len();
    for start in 0..buf.len() {
        if buf[start] != 0x68 {
            continue;
        }
        let rest = &buf[start..];
        if rest.len() < 10 {
            keep_from = keep_from.min(start);
            continue;
        }
        if rest[7] != 0x68 || rest[1..7] != expect.address {
            continue;
        }
        let control = rest[8];
        let len = 12 + usize::from(rest[9]);
        let normal = control == expect.control | 0x80;
        let abnormal = control == expect.control | 0xC0;
        if !normal && !abnormal {
            continue;
        }
        if rest.len() < len {
            keep_from = keep_from.min(start);
            continue;
        }
        let frame = &rest[..len];
        if frame[len - 1] != 0x16 || checksum(&frame[..len - 2]) != frame[len - 2] {
            continue;
        }
        let data: Vec<u8> = frame[10..len - 2]
            .iter()
            .map(|b| b.wrapping_sub(0x33))
            .collect();
        let reply = if abnormal {
            Reply::Error(data.first().copied().unwrap_or(0))
        } else {
            match expect.di {
                Some(di) if data.len() >= 4 && data[..4] == di.to_le_bytes() => {
                    Reply::Data(data[4..].to_vec())
                }
                Some(_) => continue,
                None => Reply::Data(data),
            }
        };
        return Ok((reply, start, start + len));
    }
    Err(keep_from)
}

/// A little-endian packed-BCD value as an integer; `None` on a non-decimal nibble. A set top
/// bit of the last byte is a sign (remaining amounts below zero).
pub fn bcd_value(bytes: &[u8], signed: bool) -> Option<i64> {
    let mut value: i64 = 0;
    let mut negative = false;
    for (i, &b) in bytes.iter().enumerate().rev() {
        let mut b = b;
        if signed && i == bytes.len() - 1 && b & 0x80 != 0 {
            negative = true;
            b &= 0x7F;
        }
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return None;
        }
        value = value * 100 + i64::from(hi * 10 + lo);
    }
    Some(if negative { -value } else { value })
}

/// `value` as `len` little-endian packed-BCD bytes (for simulators and commands).
pub fn bcd_bytes(mut value: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let pair = (value % 100) as u8;
        out.push(((pair / 10) << 4) | (pair % 10));
        value /= 100;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_bcd_low_byte_first() {
        assert_eq!(
            address_bytes("202611250001"),
            Some([0x01, 0x00, 0x25, 0x11, 0x26, 0x20])
        );
        assert_eq!(address_bytes("12345"), None);
        assert_eq!(address_bytes("20261125000x"), None);
    }

    #[test]
    fn a_read_request_has_the_standard_shape() {
        // Reading total energy (DI 00000000) of meter 000000000001: data 33 33 33 33.
        let (f, _) = read(address_bytes("000000000001").unwrap(), 0);
        assert_eq!(
            f,
            vec![
                0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x01, 0, 0, 0, 0, 0, 0x68, 0x11, 0x04, 0x33, 0x33,
                0x33, 0x33, 0xB2, 0x16
            ]
        );
    }

    /// A meter's normal reply to a read of `di` with `value` bytes.
    fn reply(address: [u8; 6], di: u32, value: &[u8]) -> Vec<u8> {
        let mut data = di.to_le_bytes().to_vec();
        data.extend_from_slice(value);
        frame(address, READ | 0x80, &data)
    }

    #[test]
    fn replies_are_found_and_checked() {
        let addr = address_bytes("202611250001").unwrap();
        let (_, expect) = read(addr, 0x0201_0100);
        let mut buf = vec![0x68, 0x00, 0x16];
        buf.extend(reply(addr, 0x0000_0000, &[0x11, 0x22, 0x33, 0x00])); // another DI: skipped
        buf.extend(reply(addr, 0x0201_0100, &[0x05, 0x22]));
        let (r, _, end) = find_reply(&buf, &expect).unwrap();
        assert_eq!(r, Reply::Data(vec![0x05, 0x22]));
        assert_eq!(end, buf.len());
        assert_eq!(bcd_value(&[0x05, 0x22], false), Some(2205), "220.5 V");

        let mut corrupt = reply(addr, 0x0201_0100, &[0x05, 0x22]);
        let n = corrupt.len();
        corrupt[n - 2] ^= 1;
        assert!(find_reply(&corrupt, &expect).is_err());
        let error = frame(addr, READ | 0xC0, &[0x02]);
        assert_eq!(find_reply(&error, &expect).unwrap().0, Reply::Error(0x02));
    }

    #[test]
    fn bcd_round_trips_and_rejects_hex_nibbles() {
        for v in [0u64, 7, 1234, 12_345_678, 99_999_999] {
            assert_eq!(bcd_value(&bcd_bytes(v, 4), false), Some(v as i64));
        }
        assert_eq!(bcd_value(&[0x1A], false), None);
        assert_eq!(bcd_value(&[0x00, 0x00, 0x00, 0x81], true), Some(-1_000_000));
    }
}
