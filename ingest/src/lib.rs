//! PowerTab's field side (DESIGN.md: Ingest): gateway sessions, framers, meter drivers, the poll
//! scheduler, command delivery and the simulator. It meets the server only in the database.
//!
//! The foundation issue gives this crate its place in the dependency graph
//! (core ← ingest ← server) and the process entry point; the meter-acquisition issue fills it
//! with DTU, Modbus-TCP and MQTT sessions.

pub mod bus;
pub mod driver;
pub mod dtu;
pub mod framing;
pub mod sim;
pub mod store;
pub mod writer;

use sqlx::PgPool;
use std::future::Future;

/// Runs the field side until `shutdown` completes. Today it only checks that the database is
/// reachable and waits: no field connections exist before the meter-acquisition issue.
pub async fn run(pool: PgPool, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    anyhow::ensure!(powertab_core::db::ping(&pool).await, "database unreachable");
    tracing::info!("ingest started (no field connections are implemented yet)");
    shutdown.await;
    Ok(())
}
