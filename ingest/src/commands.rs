//! Commands reach bus sessions here (DESIGN.md: Commands): a listener on the `pt_commands`
//! NOTIFY channel hands each new command to the session whose bus carries the meter, which runs
//! it before its next scheduled poll ("commands jump the queue"). Sessions also pick up commands
//! queued while they were away when they (re)load their meters, first putting back in the queue
//! the `sent` ones whose sender's lease ran out (a crashed ingest, a lost bus).
//!
//! The queue itself — claim, settle, expiry, recovery — is `powertab_core::commands`: a
//! transport only claims a command there under this process's [`holder`] name, moves its bytes
//! and reports the outcome.

use powertab_core::commands::Op;
use powertab_core::kernel::names::SchemaName;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The operations DTU and Modbus-TCP buses carry out: read-now, the relay commands (through
/// the meter's driver: Acrel's 0x0057 register, DL/T 645's 0x1C), `sync_clock` (DL/T 645) and
/// the secure frames of meter-side Acrel meters (0x0C00, `crate::secure`). Core refuses the
/// others when they are asked for (`commands::carried`).
pub const BUS_OPS: &[Op] = &[
    Op::ReadNow,
    Op::SyncClock,
    Op::Trip,
    Op::Close,
    Op::Release,
    Op::KeepPowerOn,
    Op::KeepPowerOff,
    Op::Purchase,
    Op::Deduct,
    Op::SetPrice,
];

/// The driver's form of a relay command.
pub fn control_op(op: Op) -> Option<crate::driver::ControlOp> {
    use crate::driver::ControlOp;
    match op {
        Op::Trip => Some(ControlOp::Trip),
        Op::Close => Some(ControlOp::Close),
        Op::Release => Some(ControlOp::Release),
        Op::KeepPowerOn => Some(ControlOp::KeepPowerOn),
        Op::KeepPowerOff => Some(ControlOp::KeepPowerOff),
        _ => None,
    }
}

/// The operations an MQTT gateway takes (MQTT-GATEWAY.md: Commands).
pub const MQTT_OPS: &[Op] = &[
    Op::Trip,
    Op::Close,
    Op::Release,
    Op::KeepPowerOn,
    Op::KeepPowerOff,
    Op::Purchase,
    Op::Deduct,
    Op::SetPrice,
    Op::ReadNow,
    Op::SyncClock,
];

/// How long a bus session answers for a command it claimed: a poll takes seconds, so a
/// `sent` command older than this was lost with its sender and goes back to the queue.
pub const BUS_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// This process's name on the commands it claims (`lease_holder`): host, pid and a random part,
/// so two ingest copies on one host never share one.
pub fn holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ingest".into());
        let random = Uuid::new_v4().simple().to_string();
        format!("{host}:{}:{}", std::process::id(), &random[..8])
    })
}

/// Expires the open commands past their expiry in `schema`; how many.
pub async fn expire(pool: &PgPool, schema: &SchemaName) -> anyhow::Result<u64> {
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    let expired = powertab_core::commands::expire_due(&mut tx, chrono::Utc::now()).await?;
    tx.commit().await?;
    Ok(expired)
}

/// Puts back the lapsed `sent` commands of `meters` and returns their queued ones that `ops`
/// covers, oldest first, as (meter, command); at most `limit`.
pub async fn take_over(
    pool: &PgPool,
    schema: &SchemaName,
    meters: &[Uuid],
    ops: &[Op],
    limit: i64,
) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
    let now = chrono::Utc::now();
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    let recovered = powertab_core::commands::recover(&mut tx, meters, now).await?;
    let queued = powertab_core::commands::queued_for(&mut tx, meters, ops, now, limit).await?;
    tx.commit().await?;
    if recovered > 0 {
        metrics::counter!("ingest_commands_recovered_total").increment(recovered);
        tracing::info!(
            schema = schema.as_str(),
            recovered,
            "commands whose sender stopped answering are queued again"
        );
    }
    Ok(queued)
}

/// Reports outcome `to` of command `id` (logged, not fatal: expiry or recovery settles what a
/// lost write leaves open). A refused transition — a repeated ack, a late answer — is normal.
pub async fn settle(
    pool: &PgPool,
    schema: &SchemaName,
    id: Uuid,
    to: powertab_core::commands::State,
    detail: &str,
    meters: Option<&[Uuid]>,
) {
    record_outcome(pool, schema, id, to, detail, meters, false).await
}

/// Applies a gateway's acknowledgement: only the first one of a command counts.
pub async fn settle_ack(
    pool: &PgPool,
    schema: &SchemaName,
    id: Uuid,
    to: powertab_core::commands::State,
    detail: &str,
    meters: &[Uuid],
) {
    record_outcome(pool, schema, id, to, detail, Some(meters), true).await
}

async fn record_outcome(
    pool: &PgPool,
    schema: &SchemaName,
    id: Uuid,
    to: powertab_core::commands::State,
    detail: &str,
    meters: Option<&[Uuid]>,
    ack: bool,
) {
    let result = async {
        let mut tx = powertab_core::db::begin_in(pool, schema).await?;
        let now = chrono::Utc::now();
        let settled = if ack {
            powertab_core::commands::settle_ack(&mut tx, id, to, detail, meters, now).await?
        } else {
            powertab_core::commands::settle(&mut tx, id, to, detail, meters, now).await?
        };
        tx.commit().await?;
        anyhow::Ok(settled)
    }
    .await;
    match result {
        Ok(powertab_core::commands::Settled::Refused(state)) => {
            tracing::debug!(%id, %state, to = %to, "a command's outcome came after it was settled")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(%id, error = %e, "recording a command's outcome failed"),
    }
}

/// Where a session receives (meter, command) pairs.
pub type CommandSender = mpsc::Sender<(Uuid, Uuid)>;

/// Commands a session's channel holds. Bounded: a session that stopped draining (a stuck bus)
/// must not grow memory; a command that does not fit stays `queued` in the table, and the
/// session takes it when it next reloads its meters.
pub const SESSION_COMMANDS_MAX: usize = 1_024;

/// A session's command channel.
pub fn channel() -> (CommandSender, mpsc::Receiver<(Uuid, Uuid)>) {
    mpsc::channel(SESSION_COMMANDS_MAX)
}

/// Where each meter's commands go: the channel of the session polling its bus.
#[derive(Clone, Default)]
pub struct Dispatch {
    routes: Arc<Mutex<HashMap<Uuid, CommandSender>>>,
}

impl Dispatch {
    /// Routes the commands of `meters` to `to` (replacing older routes of those meters); they
    /// arrive as (meter, command).
    pub fn route(&self, meters: &[Uuid], to: &CommandSender) {
        let mut routes = self.routes.lock().expect("dispatch lock");
        for m in meters {
            routes.insert(*m, to.clone());
        }
    }

    /// Hands command `command` of `meter` to its session; false when no session has the meter.
    pub fn deliver(&self, meter: Uuid, command: Uuid) -> bool {
        let mut routes = self.routes.lock().expect("dispatch lock");
        let Some(to) = routes.get(&meter) else {
            return false;
        };
        match to.try_send((meter, command)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("ingest_commands_deferred_total").increment(1);
                tracing::warn!(%meter, %command, "a session's command queue is full; the command waits for its next reload");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The session ended; forget the route.
                routes.remove(&meter);
                false
            }
        }
    }
}

/// Parses a notification payload `<schema>:<meter id>:<command id>`.
pub fn parse_payload(payload: &str) -> Option<(SchemaName, Uuid, Uuid)> {
    let mut parts = payload.split(':');
    let schema = SchemaName::from_stored(parts.next()?).ok()?;
    let meter = parts.next()?.parse().ok()?;
    let command = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((schema, meter, command))
}

/// Listens for new commands until the task is dropped, reconnecting after errors.
pub async fn listen(pool: PgPool, dispatch: Dispatch) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "command listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(powertab_core::commands::CHANNEL).await {
            tracing::warn!(error = %e, "command listener cannot listen; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(note) => match parse_payload(note.payload()) {
                    Some((_, meter, command)) => {
                        // A meter on no connected bus keeps its command queued: its session
                        // picks it up when the bus comes back (until the command expires).
                        dispatch.deliver(meter, command);
                    }
                    None => {
                        tracing::warn!(payload = note.payload(), "malformed command notification")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "command listener lost its connection");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ops_ingest_takes_are_the_ones_core_lets_be_asked_for() {
        use powertab_core::commands::{carried, Route};
        use powertab_core::field::vocabulary::MeterModel;
        for op in Op::ALL {
            let by_some_bus = MeterModel::ALL
                .iter()
                .any(|model| carried(op, Route::Bus(*model)));
            assert_eq!(BUS_OPS.contains(&op), by_some_bus, "{op} over buses");
            assert_eq!(
                MQTT_OPS.contains(&op),
                carried(op, Route::Mqtt),
                "{op} over MQTT"
            );
        }
    }

    #[test]
    fn payloads_parse_strictly() {
        let (m, c) = (Uuid::now_v7(), Uuid::now_v7());
        let ok = parse_payload(&format!("c_12:{m}:{c}")).unwrap();
        assert_eq!((ok.0.as_str(), ok.1, ok.2), ("c_12", m, c));
        assert!(parse_payload(&format!("public:{m}:{c}")).is_none());
        assert!(parse_payload(&format!("c_12:{m}")).is_none());
        assert!(parse_payload(&format!("c_12:{m}:{c}:x")).is_none());
    }

    #[test]
    fn commands_go_to_the_session_of_the_meter() {
        let dispatch = Dispatch::default();
        let (tx, mut rx) = channel();
        let (meter, other) = (Uuid::now_v7(), Uuid::now_v7());
        dispatch.route(&[meter], &tx);
        let command = Uuid::now_v7();
        assert!(dispatch.deliver(meter, command));
        assert_eq!(rx.try_recv().unwrap(), (meter, command));
        assert!(!dispatch.deliver(other, command));
        drop(rx);
        assert!(
            !dispatch.deliver(meter, command),
            "an ended session is forgotten"
        );
    }

    #[test]
    fn a_full_session_queue_defers_commands_and_keeps_the_route() {
        let dispatch = Dispatch::default();
        let (tx, mut rx) = channel();
        let meter = Uuid::now_v7();
        dispatch.route(&[meter], &tx);
        for _ in 0..SESSION_COMMANDS_MAX {
            assert!(dispatch.deliver(meter, Uuid::now_v7()));
        }
        assert!(
            !dispatch.deliver(meter, Uuid::now_v7()),
            "full: left queued in the table"
        );
        rx.try_recv().unwrap();
        assert!(dispatch.deliver(meter, Uuid::now_v7()), "the route is kept");
    }
}
