//! The published secure-command vectors (SECURE-COMMAND.md, `tests/vectors/`, made by an
//! independent implementation): every primitive, every key, every frame and every
//! acknowledgement reproduced byte for byte; then properties: any altered byte of an
//! acknowledgement is refused, and an acknowledgement is believed only for the meter, command and
//! sequence that were sent.

use powertab_core::secure::frame::{MeterKeys, MeterNumber, Order, SecureOp};
use powertab_core::secure::{build, primitives, verify_ack, AckError, AckStatus};
use proptest::prelude::*;
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/secure_command_v1.json")).expect("the vectors")
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len() % 2 == 0, "{text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn key16(text: &str) -> [u8; 16] {
    hex(text).try_into().expect("16 bytes")
}

fn op_named(name: &str) -> SecureOp {
    match name {
        "purchase" => SecureOp::Purchase,
        "trip" => SecureOp::Trip,
        "close" => SecureOp::Close,
        "keep_power_on" => SecureOp::KeepPowerOn,
        "keep_power_off" => SecureOp::KeepPowerOff,
        "deduct" => SecureOp::Deduct,
        "set_price" => SecureOp::SetPrice,
        "release" => SecureOp::Release,
        other => panic!("a command the spec does not name: {other}"),
    }
}

/// A case's order and keys.
fn case(c: &Value) -> (MeterKeys, Order) {
    let meter = MeterNumber::parse(c["meter_number"].as_str().unwrap()).unwrap();
    let keys = MeterKeys::derive(&key16(c["master_key"].as_str().unwrap()), &meter);
    let order = Order {
        op: op_named(c["command"].as_str().unwrap()),
        meter,
        sequence: u32::try_from(c["sequence"].as_u64().unwrap()).unwrap(),
        amount: c["amount_fen"].as_i64().unwrap(),
        issued_at: u32::try_from(c["issued_at"].as_u64().unwrap()).unwrap(),
        nonce: hex(c["nonce"].as_str().unwrap()).try_into().unwrap(),
    };
    (keys, order)
}

#[test]
fn the_primitives_match_the_published_vectors() {
    let v = vectors();
    for p in v["primitives"]["tdes_ede2_ecb"].as_array().unwrap() {
        let block: [u8; 8] = hex(p["plain"].as_str().unwrap()).try_into().unwrap();
        let cipher = primitives::encrypt_block(&key16(p["key"].as_str().unwrap()), &block);
        assert_eq!(cipher.to_vec(), hex(p["cipher"].as_str().unwrap()));
    }
    for p in v["primitives"]["retail_mac_pad2"].as_array().unwrap() {
        let mac = primitives::retail_mac(
            &key16(p["key"].as_str().unwrap()),
            &hex(p["data"].as_str().unwrap()),
        );
        assert_eq!(mac.to_vec(), hex(p["mac"].as_str().unwrap()), "{p}");
    }
}

#[test]
fn every_case_reproduces_its_keys_frame_and_acknowledgement() {
    let v = vectors();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10, "the vectors of 2026-12-01");
    for c in cases {
        let (keys, order) = case(c);
        assert_eq!(
            order.meter.0.to_vec(),
            hex(c["meter_bcd"].as_str().unwrap())
        );
        assert_eq!(
            keys.enc.to_vec(),
            hex(c["enc_key"].as_str().unwrap()),
            "{c}"
        );
        assert_eq!(keys.mac.to_vec(), hex(c["mac_key"].as_str().unwrap()));
        assert_eq!(
            build(&keys, &order),
            hex(c["frame"].as_str().unwrap()),
            "{c}"
        );
        let ack = verify_ack(&keys, &order, &hex(c["ack"]["frame"].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{e}: {c}"));
        assert_eq!(
            u64::from(ack.status.code()),
            c["ack"]["status"].as_u64().unwrap()
        );
        assert_eq!(
            ack.remaining_fen,
            c["ack"]["remaining_fen"].as_i64().unwrap()
        );
        assert_eq!(
            u64::from(ack.purchase_count),
            c["ack"]["purchase_count"].as_u64().unwrap()
        );
    }
    // The statuses the vectors cover.
    let seen: std::collections::BTreeSet<u64> = cases
        .iter()
        .map(|c| c["ack"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 3, 4, 6]);
    assert_eq!(AckStatus::from_code(7), None);
}

#[test]
fn an_acknowledgement_for_another_meter_command_or_sequence_is_not_believed() {
    let v = vectors();
    let first = &v["cases"][0];
    let (keys, order) = case(first);
    let ack = hex(first["ack"]["frame"].as_str().unwrap());
    let other_sequence = Order {
        sequence: order.sequence + 1,
        ..order.clone()
    };
    assert_eq!(
        verify_ack(&keys, &other_sequence, &ack),
        Err(AckError::OtherSequence(1))
    );
    let other_command = Order {
        op: SecureOp::Deduct,
        ..order.clone()
    };
    assert_eq!(
        verify_ack(&keys, &other_command, &ack),
        Err(AckError::OtherCommand)
    );
    // Meter 42's acknowledgement, checked as meter 202611250001's: its MAC is 42's own.
    let (_, other_order) = case(&v["cases"][2]);
    let other_ack = hex(v["cases"][2]["ack"]["frame"].as_str().unwrap());
    assert_eq!(verify_ack(&keys, &order, &other_ack), Err(AckError::Mac));
    let forty_two = MeterKeys::derive(
        &key16(first["master_key"].as_str().unwrap()),
        &other_order.meter,
    );
    assert_eq!(
        verify_ack(&forty_two, &order, &ack),
        Err(AckError::Mac),
        "checked with the wrong meter's key"
    );
    assert_eq!(
        verify_ack(&keys, &order, &ack[..36]),
        Err(AckError::Length(36))
    );
}

proptest! {
    /// Any one byte of any case's acknowledgement changed, and it is refused.
    #[test]
    fn any_altered_byte_of_an_acknowledgement_is_refused(
        which in 0usize..10,
        at in 0usize..37,
        flip in 1u8..=255,
    ) {
        let v = vectors();
        let c = &v["cases"][which];
        let (keys, order) = case(c);
        let mut ack = hex(c["ack"]["frame"].as_str().unwrap());
        ack[at] ^= flip;
        prop_assert!(verify_ack(&keys, &order, &ack).is_err());
    }

    /// Frames differ whenever anything in the order does (the nonce included), and each is
    /// the spec's length.
    #[test]
    fn frames_are_fixed_length_and_bind_every_field(
        sequence in 1u32..u32::MAX,
        amount in 1i64..i64::MAX,
        nonce in any::<[u8; 8]>(),
    ) {
        let meter = MeterNumber::parse("202611250001").unwrap();
        let keys = MeterKeys::derive(&[0x5A; 16], &meter);
        let order = Order { op: SecureOp::Purchase, meter, sequence, amount, issued_at: 1_764_028_800, nonce };
        let frame = build(&keys, &order);
        prop_assert_eq!(frame.len(), powertab_core::secure::frame::FRAME_LEN);
        let mut other_nonce = nonce;
        other_nonce[0] ^= 1;
        let other = build(&keys, &Order { nonce: other_nonce, ..order.clone() });
        prop_assert_ne!(&frame[18..], &other[18..]);
        prop_assert_eq!(&frame[..18], &other[..18]);
    }
}
