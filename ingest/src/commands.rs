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
pub type CommandSender = mpsc::UnboundedSender<(Uuid, Uuid)>;

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
        match routes.get(&meter) {
            Some(to) if to.send((meter, command)).is_ok() => true,
            Some(_) => {
                // The session ended; forget the route.
                routes.remove(&meter);
                false
            }
            None => false,
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
        let (tx, mut rx) = mpsc::unbounded_channel();
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
}
