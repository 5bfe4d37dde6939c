//! Benchmark: secure frames built and acknowledgements checked per second (issue 13:
//! Benchmarks), on one core, in this process — key derivation per meter included (a meter's keys
//! are derived from the master key each time a frame is built, as the server does). Prints its
//! figures; `cargo bench -p powertab-core --bench secure` (PT_BENCH_FRAMES to change the count).
//! No database: the cost of the 3DES work alone.

use powertab_core::secure::frame::{Ack, AckStatus, MeterKeys, MeterNumber, Order, SecureOp};
use powertab_core::secure::{build, primitives, verify_ack};
use std::time::Instant;

/// An acknowledgement as a meter writes it (the bench's own copy of the layout).
fn ack_bytes(keys: &MeterKeys, ack: &Ack) -> Vec<u8> {
    let mut out = vec![0x50, 0x54, 0x01, ack.op.code() | 0x80];
    out.extend_from_slice(&ack.meter.0);
    out.extend_from_slice(&ack.sequence.to_be_bytes());
    out.push(ack.status.code());
    out.extend_from_slice(&ack.remaining_fen.to_be_bytes());
    out.extend_from_slice(&ack.purchase_count.to_be_bytes());
    let mac = primitives::retail_mac(&keys.mac, &out);
    out.extend_from_slice(&mac);
    out
}

fn main() {
    let frames: u32 = std::env::var("PT_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let master = [0x5A; 16];
    let meters: Vec<MeterNumber> = (0..1_000u32)
        .map(|i| MeterNumber::parse(&format!("2026112{i:05}")).unwrap())
        .collect();
    let orders: Vec<Order> = (0..frames)
        .map(|i| Order {
            op: SecureOp::Purchase,
            meter: meters[(i % 1_000) as usize],
            sequence: i / 1_000 + 1,
            amount: 10_000,
            issued_at: 1_764_028_800 + i,
            nonce: u64::from(i).to_be_bytes(),
        })
        .collect();

    let started = Instant::now();
    let mut built = Vec::with_capacity(orders.len());
    for order in &orders {
        let keys = MeterKeys::derive(&master, &order.meter);
        built.push(build(&keys, order));
    }
    let build_s = started.elapsed().as_secs_f64();
    assert!(built.iter().all(|f| f.len() == 58));

    let acks: Vec<Vec<u8>> = orders
        .iter()
        .map(|order| {
            let keys = MeterKeys::derive(&master, &order.meter);
            let ack = Ack {
                op: order.op,
                meter: order.meter,
                sequence: order.sequence,
                status: AckStatus::Accepted,
                remaining_fen: 10_000,
                purchase_count: order.sequence,
            };
            ack_bytes(&keys, &ack)
        })
        .collect();
    let started = Instant::now();
    let mut accepted = 0u32;
    for (order, ack) in orders.iter().zip(&acks) {
        let keys = MeterKeys::derive(&master, &order.meter);
        if verify_ack(&keys, order, ack).is_ok_and(|a| a.status == AckStatus::Accepted) {
            accepted += 1;
        }
    }
    let check_s = started.elapsed().as_secs_f64();
    assert_eq!(accepted, frames, "every acknowledgement checks out");
    println!(
        "secure frames: {frames} built in {build_s:.3} s = {:.0}/s (keys derived per frame)",
        f64::from(frames) / build_s
    );
    println!(
        "acknowledgements: {frames} checked in {check_s:.3} s = {:.0}/s (keys derived per ack)",
        f64::from(frames) / check_s
    );
}
