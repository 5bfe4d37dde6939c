//! What the server's benchmarks share (each bench includes it with `mod common;`): settings
//! from the environment, percentiles, the worker principal of the demo company, a simulated DTU
//! of DTSY-1352 meters behind a slow link, and waiting for a command to be verified.

// Each benchmark uses a part of this module; the rest is not dead in the others.
#![allow(dead_code)]

use powertab_core::auth::Principal;
use powertab_core::kernel::clock;
use powertab_ingest::sim::{DtuFaults, SimBus, SimDtu, SimMeter, SimModel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i]
}

pub async fn worker(pool: &sqlx::PgPool) -> Principal {
    let mut conn = pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    Principal::system("bench", clock::system()).in_company(scope)
}

/// A simulated DTU registering as `registration`, its bus of DTSY-1352 meters at 9,600 baud.
pub fn dtu(registration: &str, addresses: std::ops::RangeInclusive<u8>, delay_ms: u64) -> SimDtu {
    let meters = addresses
        .map(|a| {
            SimMeter::new(
                SimModel::Dtsy1352 { address: a },
                powertab_core::tariff::profile::ShopType::Retail,
                30_000,
                1_000_000 + i64::from(a) * 10_000,
            )
        })
        .collect();
    SimDtu {
        registration: registration.as_bytes().to_vec(),
        heartbeat: vec![],
        heartbeat_every: Duration::from_secs(3600),
        bus: Arc::new(tokio::sync::Mutex::new(SimBus::modbus(meters))),
        faults: DtuFaults {
            slow_reply_ms: 2 * delay_ms,
            ..DtuFaults::default()
        },
    }
}

pub async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Milliseconds until `meter`'s newest `op` command created after `since` reads verified.
pub async fn until_verified(
    pool: &sqlx::PgPool,
    meter: Uuid,
    op: &str,
    since: chrono::DateTime<chrono::Utc>,
    started: Instant,
) -> f64 {
    loop {
        let state: Option<String> = sqlx::query_scalar(
            "select state from c_1.commands where meter_id = $1 and op = $2 and created_at >= $3
             order by created_at desc limit 1",
        )
        .bind(meter)
        .bind(op)
        .bind(since)
        .fetch_optional(pool)
        .await
        .unwrap();
        match state.as_deref() {
            Some("verified") => return started.elapsed().as_secs_f64() * 1000.0,
            Some("failed" | "expired" | "cancelled") => panic!("{op} of {meter} ended {state:?}"),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{op} of {meter} never verified"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
