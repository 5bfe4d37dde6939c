//! Framers of our own for DTU sockets (DESIGN.md: Ingest, Framing): the reply to the request in
//! flight is found by protocol rules in whatever bytes arrived, while heartbeats and repeated
//! registration prefixes ("noise") are dropped wherever they appear, even inside a reply.
//! Bytes that can never start the reply are reported as discardable, so buffers stay small.

pub mod dlt645;
pub mod rtu;

/// Bytes from lowercase or uppercase hex (as stored for registrations and heartbeats); a
/// malformed pair is skipped.
pub fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

/// The request in flight, by protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Rtu(rtu::Expect),
    Dlt645(dlt645::Expect),
}

/// A reply that matched the request in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Rtu(rtu::Reply),
    Dlt645(dlt645::Reply),
}

fn find_raw(buf: &[u8], expect: &Expect) -> Result<(Reply, usize, usize), usize> {
    match expect {
        Expect::Rtu(e) => rtu::find_reply(buf, e).map(|(r, s, t)| (Reply::Rtu(r), s, t)),
        Expect::Dlt645(e) => dlt645::find_reply(buf, e).map(|(r, s, t)| (Reply::Dlt645(r), s, t)),
    }
}

/// Where noise patterns occur in `buf` (non-overlapping, left to right): (start, length).
fn noise_spans(buf: &[u8], noise: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    'outer: while i < buf.len() {
        for pattern in noise.iter().filter(|p| !p.is_empty()) {
            if buf[i..].starts_with(pattern) {
                spans.push((i, pattern.len()));
                i += pattern.len();
                continue 'outer;
            }
        }
        i += 1;
    }
    spans
}

/// `buf` without the given spans, and for each kept byte its index in `buf`.
fn without(buf: &[u8], spans: &[(usize, usize)]) -> (Vec<u8>, Vec<usize>) {
    let mut kept = Vec::with_capacity(buf.len());
    let mut index = Vec::with_capacity(buf.len());
    let mut spans = spans.iter().peekable();
    let mut i = 0;
    while i < buf.len() {
        if let Some(&&(start, len)) = spans.peek() {
            if start == i {
                i += len;
                spans.next();
                continue;
            }
        }
        kept.push(buf[i]);
        index.push(i);
        i += 1;
    }
    (kept, index)
}

/// Single noise occurrences tried one by one before all of them together: a one-byte heartbeat
/// can equal a data byte of the reply, so removing every match would damage the reply.
const SINGLE_REMOVALS_MAX: usize = 32;

/// Finds the reply to `expect` in `buf`: `Ok((reply, consumed))` with every byte up to the end
/// of the reply consumed, or `Err(discardable)`: that many leading bytes can be dropped.
/// The raw bytes are tried first, so a reply whose data happens to contain a heartbeat pattern
/// is still found; then without one noise occurrence at a time; then without all of them.
pub fn find(buf: &[u8], expect: &Expect, noise: &[Vec<u8>]) -> Result<(Reply, usize), usize> {
    let raw_keep = match find_raw(buf, expect) {
        Ok((reply, _, end)) => return Ok((reply, end)),
        Err(keep) => keep,
    };
    let spans = noise_spans(buf, noise);
    if spans.is_empty() {
        return Err(raw_keep);
    }
    let mut attempts: Vec<Vec<(usize, usize)>> = spans
        .iter()
        .take(SINGLE_REMOVALS_MAX)
        .map(|s| vec![*s])
        .collect();
    if spans.len() > 1 {
        attempts.push(spans.clone());
    }
    let mut keep_all = buf.len();
    for attempt in &attempts {
        let (clean, index) = without(buf, attempt);
        match find_raw(&clean, expect) {
            Ok((reply, _, end)) => return Ok((reply, index[end - 1] + 1)),
            Err(keep) => {
                if attempt.len() == spans.len() {
                    keep_all = index.get(keep).copied().unwrap_or(buf.len());
                }
            }
        }
    }
    // A noise pattern cut in two at the end of `buf` must be kept whole.
    let longest = noise.iter().map(Vec::len).max().unwrap_or(0);
    Err(raw_keep
        .min(keep_all)
        .min(buf.len().saturating_sub(longest.saturating_sub(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers_reply(address: u8, values: &[u16]) -> Vec<u8> {
        let mut f = vec![address, 0x03, (values.len() * 2) as u8];
        for v in values {
            f.extend_from_slice(&v.to_be_bytes());
        }
        let crc = rtu::crc16(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    #[test]
    fn a_heartbeat_inside_a_reply_is_dropped() {
        let (_, expect) = rtu::read_holding(5, 0x0200, 3);
        let expect = Expect::Rtu(expect);
        let reply = registers_reply(5, &[1, 2, 3]);
        let heartbeat = b"HB".to_vec();
        let mut buf = heartbeat.clone();
        buf.extend_from_slice(&reply[..4]);
        buf.extend_from_slice(&heartbeat);
        buf.extend_from_slice(&reply[4..]);
        let (found, consumed) = find(&buf, &expect, &[heartbeat]).unwrap();
        assert_eq!(found, Reply::Rtu(rtu::Reply::Registers(vec![1, 2, 3])));
        assert_eq!(consumed, buf.len());
    }

    #[test]
    fn a_heartbeat_inside_a_reply_whose_data_holds_the_same_byte() {
        let (_, expect) = rtu::read_holding(5, 0, 2);
        let reply = registers_reply(5, &[0x00FE, 0xFE01]);
        let mut buf = reply[..5].to_vec();
        buf.push(0xFE);
        buf.extend_from_slice(&reply[5..]);
        let (found, consumed) = find(&buf, &Expect::Rtu(expect), &[vec![0xFE]]).unwrap();
        assert_eq!(
            found,
            Reply::Rtu(rtu::Reply::Registers(vec![0x00FE, 0xFE01]))
        );
        assert_eq!(consumed, buf.len());
    }

    #[test]
    fn a_reply_containing_the_heartbeat_bytes_is_taken_whole() {
        let (_, expect) = rtu::read_holding(5, 0, 1);
        // Register value 0xFEFE with a heartbeat of FE: the raw frame is valid as it is.
        let reply = registers_reply(5, &[0xFEFE]);
        let (found, _) = find(&reply, &Expect::Rtu(expect), &[vec![0xFE]]).unwrap();
        assert_eq!(found, Reply::Rtu(rtu::Reply::Registers(vec![0xFEFE])));
    }

    #[test]
    fn a_repeated_registration_prefix_is_dropped_and_noise_discarded() {
        let (_, expect) = rtu::read_holding(9, 0, 1);
        let registration = b"REG-0001".to_vec();
        let mut buf = registration.clone();
        buf.extend(registers_reply(9, &[77]));
        let (found, consumed) = find(
            &buf,
            &Expect::Rtu(expect),
            std::slice::from_ref(&registration),
        )
        .unwrap();
        assert_eq!(found, Reply::Rtu(rtu::Reply::Registers(vec![77])));
        assert_eq!(consumed, buf.len());
        // Only noise: all of it can go, except a possible half pattern at the end.
        let mut noise_only = registration.clone();
        noise_only.extend_from_slice(b"REG");
        assert_eq!(
            find(&noise_only, &Expect::Rtu(expect), &[registration]),
            Err(4)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever arrives, the framer answers without panicking and never claims bytes it
            /// does not have.
            #[test]
            fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300),
                                           address in 1u8..=247, count in 1u16..=60,
                                           noise in proptest::collection::vec(any::<u8>(), 0..4)) {
                let (_, rtu_expect) = rtu::read_holding(address, 0x0200, count);
                let (_, dlt_expect) = dlt645::read([1, 2, 3, 4, 5, 6], 0);
                for expect in [Expect::Rtu(rtu_expect), Expect::Dlt645(dlt_expect)] {
                    match find(&buf, &expect, std::slice::from_ref(&noise)) {
                        Ok((_, consumed)) => prop_assert!(consumed <= buf.len()),
                        Err(discard) => prop_assert!(discard <= buf.len()),
                    }
                }
            }

            /// A valid reply inside noise is found, with its values.
            #[test]
            fn a_reply_is_found_inside_noise(before in proptest::collection::vec(any::<u8>(), 0..40),
                                             after in proptest::collection::vec(any::<u8>(), 0..40),
                                             values in proptest::collection::vec(any::<u16>(), 1..20)) {
                let (_, expect) = rtu::read_holding(7, 0, values.len() as u16);
                let mut buf = before.clone();
                buf.extend(registers_reply(7, &values));
                buf.extend(after);
                // Noise before the reply may itself look like a reply only with a valid CRC for
                // the same request, which random bytes practically never have; accept either.
                match find(&buf, &Expect::Rtu(expect), &[]) {
                    Ok((Reply::Rtu(rtu::Reply::Registers(found)), _)) => {
                        if found != values {
                            prop_assert!(before.len() >= 5, "only noise can shadow the reply");
                        }
                    }
                    other => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}
