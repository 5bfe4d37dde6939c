//! The simulated meter's side of the secure command against the published vectors (copied in
//! `core/tests/vectors/`, see its README): fed the vectors' frames in order, it answers exactly
//! the vectors' acknowledgements. Then what an attacker tries — a forged MAC, a replay, a frame
//! for another meter, a stale count, any altered byte — is refused with the spec's status, and
//! the platform's checker reports each one as the meter meant it.

use powertab_core::secure::frame::{MeterKeys, MeterNumber, Order, SecureOp};
use powertab_core::secure::{build, verify_ack, AckStatus};
use powertab_ingest::sim::secure_meter::{status, RelayControl, SecureMeter};
use proptest::prelude::*;
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!(
        "../../core/tests/vectors/secure_command_v1.json"
    ))
    .expect("the vectors")
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

const MASTER: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
];

fn frame_of(c: &Value) -> Vec<u8> {
    hex(c["frame"].as_str().unwrap())
}

fn ack_of(c: &Value) -> Vec<u8> {
    hex(c["ack"]["frame"].as_str().unwrap())
}

#[test]
fn fed_the_vectors_in_order_the_meter_answers_their_acknowledgements() {
    let v = vectors();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases
        .iter()
        .all(|c| c["master_key"] == "0123456789abcdeffedcba9876543210"));
    // Meter 202611250001 from the factory: cases 1, 2, 5, 6, 7, 8, 9 are its life in order.
    let mut meter = SecureMeter::with_master_key("202611250001", &MASTER).unwrap();
    for i in [0, 1, 4, 5, 6, 7, 8] {
        let answer = meter.handle(&frame_of(&cases[i]));
        assert_eq!(answer, ack_of(&cases[i]), "case {}", i + 1);
    }
    assert_eq!(meter.answered, [0, 0, 3, 6, 0, 0, 4]);
    assert_eq!((meter.remaining_fen, meter.purchase_count), (100_000, 3));
    assert_eq!(
        meter.price_units, 8123,
        "the accepted price stays, the refused 0 does not"
    );
    // Meter 42 has a history: control counter 6, ¥25 in debt, 3 purchases.
    let mut meter = SecureMeter::with_master_key("000000000042", &MASTER).unwrap();
    meter.control_count = 6;
    meter.remaining_fen = -2_500;
    meter.purchase_count = 3;
    assert_eq!(
        meter.handle(&frame_of(&cases[2])),
        ack_of(&cases[2]),
        "trip"
    );
    assert!(!meter.relay_closed());
    assert_eq!(
        meter.handle(&frame_of(&cases[9])),
        ack_of(&cases[9]),
        "release"
    );
    assert_eq!(meter.control, RelayControl::Own);
    assert!(
        !meter.relay_closed(),
        "released, but in debt: its own rule keeps it open"
    );
    let mut meter = SecureMeter::with_master_key("9999999999999999", &MASTER).unwrap();
    assert_eq!(
        meter.handle(&frame_of(&cases[3])),
        ack_of(&cases[3]),
        "keep-power on"
    );
    assert!(meter.relay_closed(), "kept on with nothing on it");
}

fn purchase(meter: &str, sequence: u32, amount: i64, nonce: u8) -> (MeterKeys, Order, Vec<u8>) {
    let number = MeterNumber::parse(meter).unwrap();
    let keys = MeterKeys::derive(&MASTER, &number);
    let order = Order {
        op: SecureOp::Purchase,
        meter: number,
        sequence,
        amount,
        issued_at: 1_764_028_800,
        nonce: [nonce; 8],
    };
    let frame = build(&keys, &order);
    (keys, order, frame)
}

#[test]
fn forged_replayed_misdirected_and_stale_frames_are_refused_and_reported_as_such() {
    let mut meter = SecureMeter::with_master_key("202611250001", &MASTER).unwrap();
    let (keys, first, frame) = purchase("202611250001", 1, 10_000, 1);
    let ack = verify_ack(&keys, &first, &meter.handle(&frame)).unwrap();
    assert_eq!(
        (ack.status, ack.remaining_fen, ack.purchase_count),
        (AckStatus::Accepted, 10_000, 1)
    );
    // A byte-identical resend: already applied, nothing twice.
    let again = verify_ack(&keys, &first, &meter.handle(&frame)).unwrap();
    assert_eq!(
        (again.status, again.remaining_fen),
        (AckStatus::AlreadyApplied, 10_000)
    );
    // The same count with a new nonce (a replay dressed up): stale.
    let (_, stale, stale_frame) = purchase("202611250001", 1, 10_000, 2);
    let answer = verify_ack(&keys, &stale, &meter.handle(&stale_frame)).unwrap();
    assert_eq!(
        (answer.status, answer.remaining_fen),
        (AckStatus::BadSequence, 10_000)
    );
    // A forged MAC.
    let (_, second, mut forged) = purchase("202611250001", 2, 99_999_999, 3);
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let answer = verify_ack(&keys, &second, &meter.handle(&forged)).unwrap();
    assert_eq!(answer.status, AckStatus::BadMac);
    // Another meter's frame: refused as such, the answer MAC'd with this meter's own key.
    let (other_keys, other, other_frame) = purchase("202611250002", 2, 5_000, 4);
    let answer = meter.handle(&other_frame);
    assert!(
        verify_ack(&other_keys, &other, &answer).is_err(),
        "not the other meter's MAC"
    );
    assert_eq!(answer[16], status::WRONG_METER);
    // A frame built for this meter under another company's master key.
    let number = MeterNumber::parse("202611250001").unwrap();
    let wrong_keys = MeterKeys::derive(&[0x42; 16], &number);
    let foreign = build(&wrong_keys, &second);
    let answer = verify_ack(&keys, &second, &meter.handle(&foreign)).unwrap();
    assert_eq!(answer.status, AckStatus::BadMac);
    assert_eq!(
        (meter.remaining_fen, meter.purchase_count),
        (10_000, 1),
        "nothing applied"
    );
    assert_eq!(meter.answered, [0, 5, 3, 1, 2, 1]);
}

#[test]
fn counters_read_back_as_the_spec_lays_them_out() {
    let mut meter = SecureMeter::with_master_key("202611250001", &MASTER).unwrap();
    meter.purchase_count = 0x0102_0304;
    meter.control_count = 7;
    meter.remaining_fen = -2;
    meter.price_units = 8123;
    assert_eq!(
        meter.counter_registers(),
        [0x0102, 0x0304, 0, 7, 0xffff, 0xffff, 0xffff, 0xfffe, 0, 8123]
    );
}

proptest! {
    /// Any byte of a valid purchase frame changed: the meter refuses it and applies nothing.
    #[test]
    fn any_altered_byte_of_a_frame_is_refused(at in 0usize..58, flip in 1u8..=255) {
        let mut meter = SecureMeter::with_master_key("202611250001", &MASTER).unwrap();
        let (_, _, mut frame) = purchase("202611250001", 1, 10_000, 9);
        frame[at] ^= flip;
        let answer = meter.handle(&frame);
        prop_assert_ne!(answer[16], status::ACCEPTED);
        prop_assert_eq!((meter.remaining_fen, meter.purchase_count), (0, 0));
    }

    /// Frames of any length and content: never a panic, never applied.
    #[test]
    fn garbage_is_refused_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut meter = SecureMeter::with_master_key("202611250001", &MASTER).unwrap();
        let answer = meter.handle(&bytes);
        prop_assert_eq!(answer.len(), 37);
        prop_assert_ne!(answer[16], status::ACCEPTED);
    }
}
