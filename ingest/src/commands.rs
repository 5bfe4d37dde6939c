//! Commands reach bus sessions here (DESIGN.md: Commands): a listener on the `pt_commands`
//! NOTIFY channel hands each new command to the session whose bus carries the meter, which runs
//! it before its next scheduled poll ("commands jump the queue"). Sessions also pick up commands
//! queued while they were away when they (re)load their meters.

use powertab_core::names::SchemaName;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

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
