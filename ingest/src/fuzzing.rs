//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), here so that the test suite runs them
//! over the seed corpora (`fuzz/corpus/<target>/`) as ordinary tests, and cargo-fuzz runs them
//! for hours when asked (README: Fuzzing). Each checks the invariants that must hold for any
//! input: no panic, no out-of-range claim, and for the framers that a found reply re-encodes.

use crate::framing::{self, dlt645, rtu, Expect, Reply};
use crate::sim::{SimMeter, SimModel};
use chrono::{DateTime, Utc};
use powertab_core::tariff::profile::ShopType;

/// The framers on arbitrary bytes: the first 4 bytes pick the request in flight and the noise.
pub fn framing(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (params, buf) = data.split_at(4);
    let address = params[0].max(1);
    let count = u16::from(params[1] % 125).max(1);
    let noise_len = usize::from(params[2] % 4);
    let noise = buf.get(..noise_len).map(<[u8]>::to_vec).unwrap_or_default();
    let (_, read) = rtu::read_holding(address, 0x0200, count);
    let (_, write) = rtu::write_multiple(address, 0x0057, &[1, u16::from(params[3])]);
    let dlt_address = [address, params[1], params[2], params[3], 0, 0];
    let (_, dlt) = dlt645::read(dlt_address, u32::from(params[3]));
    for expect in [Expect::Rtu(read), Expect::Rtu(write), Expect::Dlt645(dlt)] {
        match framing::find(buf, &expect, std::slice::from_ref(&noise)) {
            Ok((reply, consumed)) => {
                assert!(consumed <= buf.len() && consumed > 0);
                if let Reply::Rtu(rtu::Reply::Registers(values)) = &reply {
                    assert_eq!(values.len(), usize::from(count));
                }
            }
            Err(discard) => assert!(discard <= buf.len()),
        }
    }
}

/// What follows a registration: the port number and the rest never panic or overrun.
pub fn registration(data: &[u8]) {
    let (port, rest) = crate::dtu::port_and_rest(data);
    assert!((0..=99).contains(&port));
    assert!(rest.len() <= data.len());
}

/// A simulated meter's protocol side answers or ignores any request without panicking, and
/// its answers are well-formed frames.
pub fn meter_side(data: &[u8]) {
    let at = DateTime::<Utc>::from_timestamp(1_764_028_800, 0).expect("a valid time");
    for model in [
        SimModel::Dtsy1352 { address: 1 },
        SimModel::Ddsy1352 { address: 1 },
        SimModel::Dlt645 {
            address: [1, 0, 0, 0, 0, 0],
        },
    ] {
        let mut meter = SimMeter::new(model, ShopType::Retail, 10_000, 1_000);
        if let Some(answer) = meter.answer(data, at) {
            match model {
                SimModel::Dlt645 { .. } => assert_eq!(answer.last(), Some(&0x16)),
                _ => assert_eq!(rtu::crc16(&answer), 0, "a valid CRC"),
            }
        }
    }
}

/// MQTT gateway payloads: any bytes are refused or parsed, never a panic; a parsed message
/// accounts for every reading it holds.
pub fn mqtt_payload(data: &[u8]) {
    use crate::mqtt::payload;
    if let Ok((good, refused)) = payload::parse_readings(data) {
        assert!(good.len() + refused.len() <= payload::READINGS_MAX);
        assert!(good
            .iter()
            .all(|r| r.values.energy_wh >= 0 && (1..=64).contains(&r.bus)));
    }
    let _ = payload::parse_status(data);
    let _ = payload::parse_ack(data);
}
