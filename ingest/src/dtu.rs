//! DTU dial-in (DESIGN.md: Ingest): one TCP port, one socket per RS485 bus. The first bytes a
//! DTU sends must start with a gateway's registration bytes, within [`REGISTRATION_TIMEOUT`];
//! a DTU with several serial ports registers each port's socket with the registration followed
//! by the port number in ASCII (`PT-0001` + `2`; no number means port 1). Core keeps every
//! registration from being a prefix of another (`core::registration`); here a packet that starts
//! with two registrations (entered before that rule) is refused, never guessed, and a suspended
//! gateway's DTU is refused, never bound elsewhere. Refusals are counted
//! (`ingest_registrations_refused_total{reason}`) and listed in
//! `control.unclaimed_registrations`. A new socket for the same gateway and port replaces the
//! old one. Each accepted socket is polled by a [`crate::bus`] session.

use crate::bus;
use crate::commands::{self, Dispatch};
use crate::writer::Writer;
use powertab_core::kernel::names::SchemaName;
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use uuid::Uuid;

/// The registration must arrive this soon after connecting.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);
/// After the first bytes, wait this long for the rest of a registration split over segments.
const REGISTRATION_SETTLE: Duration = Duration::from_millis(50);
/// Registrations longer than this are not registrations.
const REGISTRATION_MAX: usize = 256;

/// Settings of the DTU side.
#[derive(Debug, Clone)]
pub struct DtuConfig {
    pub poll_interval: Duration,
    /// Connections held at once (registering or registered). The port is open to anyone on the
    /// internet: without a cap a flood of idle sockets would use up file descriptors and memory
    /// and keep real DTUs out. Beyond it a new connection is closed at once and counted.
    pub connections_max: usize,
}

/// Default for [`DtuConfig::connections_max`]: a large fleet's buses, with room to spare.
pub const CONNECTIONS_MAX_DEFAULT: usize = 20_000;

impl Default for DtuConfig {
    fn default() -> Self {
        DtuConfig {
            poll_interval: Duration::from_secs(30),
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// Sessions by (gateway, port): a newer connection aborts the older.
type Sessions = Arc<Mutex<HashMap<(Uuid, i32), tokio::task::AbortHandle>>>;

/// Accepts DTU connections on `listener` until the task is dropped, with its own command
/// listener (tests and single-transport use).
pub async fn serve(listener: TcpListener, pool: PgPool, writer: Writer, config: DtuConfig) {
    let dispatch = Dispatch::default();
    let listening = tokio::spawn(commands::listen(pool.clone(), dispatch.clone()));
    // The command listener lives as long as this server.
    let _stop_listening = AbortOnDrop(listening);
    serve_with(listener, pool, writer, config, dispatch).await;
}

/// Accepts DTU connections on `listener` until the task is dropped; commands arrive through
/// `dispatch` (shared with the other transports).
pub async fn serve_with(
    listener: TcpListener,
    pool: PgPool,
    writer: Writer,
    config: DtuConfig,
    dispatch: Dispatch,
) {
    let sessions: Sessions = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(config.connections_max));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a DTU connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("ingest_dtu_connections_refused_total").increment(1);
            tracing::warn!(%peer, limit = config.connections_max, "too many DTU connections; closing a new one");
            drop(stream);
            continue;
        };
        let (pool, writer, config, sessions, dispatch) = (
            pool.clone(),
            writer.clone(),
            config.clone(),
            sessions.clone(),
            dispatch.clone(),
        );
        tokio::spawn(async move {
            // Held for the connection's life.
            let _slot = slot;
            if let Err(e) = accept(stream, peer, pool, writer, config, sessions, dispatch).await {
                tracing::info!(%peer, error = %e, "DTU connection ended");
            }
        });
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who a registration belongs to.
#[derive(Debug, Clone)]
struct Registered {
    company_id: i64,
    gateway_id: Uuid,
    identity: String,
    /// Bytes of the first packet after the registration (and port number).
    rest: Vec<u8>,
    port: i32,
}

async fn accept(
    mut stream: TcpStream,
    peer: SocketAddr,
    pool: PgPool,
    writer: Writer,
    config: DtuConfig,
    sessions: Sessions,
    dispatch: Dispatch,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let first = read_registration(&mut stream).await?;
    let found = match decide(&first, &candidates(&pool, &first).await?) {
        Ok(found) => found,
        Err((refusal, company_id)) => {
            refuse(&pool, &first, peer, refusal, company_id).await;
            return Ok(());
        }
    };
    let schema = SchemaName::for_company(found.company_id);
    let Some(link) = bus::load_link(&pool, &schema, found.gateway_id, found.port).await? else {
        refuse(
            &pool,
            &first,
            peer,
            Refusal::UnknownPort,
            Some(found.company_id),
        )
        .await;
        return Ok(());
    };
    tracing::info!(%peer, identity = %found.identity, port = found.port, "DTU registered");
    metrics::counter!("ingest_registrations_accepted_total").increment(1);
    let key = (found.gateway_id, found.port);
    let wire = bus::Wire::new(stream, found.rest, link.noise.clone());
    let session = tokio::spawn(bus::run(
        wire,
        peer.to_string(),
        link,
        pool.clone(),
        writer,
        config.poll_interval,
        dispatch,
    ));
    if let Some(old) = sessions.lock().await.insert(key, session.abort_handle()) {
        tracing::info!(identity = %found.identity, port = found.port, "a newer connection replaces the session");
        old.abort();
    }
    let result = session.await;
    let mut map = sessions.lock().await;
    // Only forget the session if it is still ours (not already replaced).
    if map.get(&key).is_some_and(|h| h.is_finished()) {
        map.remove(&key);
    }
    drop(map);
    if !matches!(&result, Err(e) if e.is_cancelled()) {
        bus::mark_offline(&pool, &schema, found.gateway_id, found.port).await;
    }
    Ok(())
}

/// The first packet: whatever arrives first, plus what follows within the settle time.
async fn read_registration(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; REGISTRATION_MAX];
    let n = tokio::time::timeout(REGISTRATION_TIMEOUT, stream.read(&mut buf))
        .await
        .map_err(|_| anyhow::anyhow!("no registration within {REGISTRATION_TIMEOUT:?}"))??;
    anyhow::ensure!(n > 0, "closed before registering");
    let mut got = buf[..n].to_vec();
    while got.len() < REGISTRATION_MAX {
        match tokio::time::timeout(REGISTRATION_SETTLE, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    Ok(got)
}

/// Splits what follows a registration into the port number (ASCII digits; port 1 without) and
/// the remaining bytes.
pub fn port_and_rest(after: &[u8]) -> (i32, &[u8]) {
    let digits = after
        .iter()
        .take(2)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return (1, after);
    }
    let port = std::str::from_utf8(&after[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    (port, &after[digits..])
}

/// Why a dial-in was refused (the `reason` label of `ingest_registrations_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No registration is a prefix of the packet: listed to platform staff only.
    Unknown,
    /// Two registrations are prefixes of the packet (entered before the rule): never guessed.
    Ambiguous,
    /// A registration shorter than the minimum, entered before the rule, with more bytes after
    /// it than port digits: it could be another DTU's registration it happens to begin.
    TooShort,
    /// The gateway is suspended: its company sees the refusal.
    Suspended,
    /// The gateway has no such port.
    UnknownPort,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::Ambiguous => "ambiguous",
            Refusal::TooShort => "too_short",
            Refusal::Suspended => "suspended",
            Refusal::UnknownPort => "unknown_port",
        }
    }
}

/// A directory row whose registration the packet starts with.
#[derive(Debug, Clone)]
struct Candidate {
    registration_hex: String,
    company_id: i64,
    gateway_id: Uuid,
    identity: String,
    enabled: bool,
}

/// Decides who a first packet belongs to, from the DTU registrations it starts with
/// (DESIGN.md: first packet = registration ‖ optional 1–2 port digits ‖ rest). Suspended
/// gateways are candidates too, so their DTUs are refused rather than bound elsewhere.
fn decide(packet: &[u8], candidates: &[Candidate]) -> Result<Registered, (Refusal, Option<i64>)> {
    let [found] = candidates else {
        let refusal = if candidates.is_empty() {
            Refusal::Unknown
        } else {
            Refusal::Ambiguous
        };
        return Err((refusal, None));
    };
    let after = &packet[found.registration_hex.len() / 2..];
    let (port, rest) = port_and_rest(after);
    if found.registration_hex.len() / 2 < powertab_core::field::registration::BYTES_MIN
        && !rest.is_empty()
    {
        return Err((Refusal::TooShort, None));
    }
    if !found.enabled {
        return Err((Refusal::Suspended, Some(found.company_id)));
    }
    Ok(Registered {
        company_id: found.company_id,
        gateway_id: found.gateway_id,
        identity: found.identity.clone(),
        rest: rest.to_vec(),
        port,
    })
}

/// The DTU registrations the packet starts with (at most a few: more than one is refused).
async fn candidates(pool: &PgPool, packet: &[u8]) -> anyhow::Result<Vec<Candidate>> {
    let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
    let rows = sqlx::query(
        "select identity, registration_hex, company_id, gateway_id, status = 'enabled' as enabled
         from control.gateway_directory
         where kind = 'dtu' and registration_hex is not null and starts_with($1, registration_hex)
         limit 3",
    )
    .bind(&hex)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Candidate {
                registration_hex: row.try_get("registration_hex")?,
                company_id: row.try_get("company_id")?,
                gateway_id: row.try_get("gateway_id")?,
                identity: row.try_get("identity")?,
                enabled: row.try_get("enabled")?,
            })
        })
        .collect()
}

/// Counts and lists a refused registration: to platform staff (to claim for a company), and to
/// the company whose gateway it is when `company_id` is given (a suspended gateway, a port it
/// does not have).
async fn refuse(
    pool: &PgPool,
    packet: &[u8],
    peer: SocketAddr,
    refusal: Refusal,
    company_id: Option<i64>,
) {
    metrics::counter!("ingest_registrations_refused_total", "reason" => refusal.label())
        .increment(1);
    let hex: String = packet.iter().take(64).map(|b| format!("{b:02x}")).collect();
    tracing::warn!(%peer, reason = refusal.label(), registration = %hex, "refused a DTU registration");
    let stored = sqlx::query(
        "insert into control.unclaimed_registrations (registration_hex, last_peer, company_id) values ($1, $2, $3)
         on conflict (registration_hex) do update set last_seen_at = now(), last_peer = excluded.last_peer,
             attempts = unclaimed_registrations.attempts + 1, company_id = excluded.company_id",
    )
    .bind(&hex)
    .bind(peer.to_string())
    .bind(company_id)
    .execute(pool)
    .await;
    if let Err(e) = stored {
        tracing::warn!(error = %e, "listing a refused registration failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_follows_the_registration() {
        assert_eq!(port_and_rest(b""), (1, &b""[..]));
        assert_eq!(port_and_rest(b"2"), (2, &b""[..]));
        assert_eq!(port_and_rest(b"12\xfe"), (12, &b"\xfe"[..]));
        assert_eq!(port_and_rest(b"\xfe1"), (1, &b"\xfe1"[..]));
    }

    fn candidate(registration: &[u8], company_id: i64, enabled: bool) -> Candidate {
        Candidate {
            registration_hex: registration.iter().map(|b| format!("{b:02x}")).collect(),
            company_id,
            gateway_id: Uuid::from_u128(company_id as u128),
            identity: format!("gw-{company_id}"),
            enabled,
        }
    }

    #[test]
    fn a_packet_matching_one_enabled_registration_is_bound_with_its_port() {
        let found = decide(
            b"SECB-REG-SECRET-12\xfe",
            &[candidate(b"SECB-REG-SECRET-", 2, true)],
        )
        .unwrap();
        assert_eq!(
            (found.company_id, found.port, found.rest),
            (2, 12, b"\xfe".to_vec())
        );
    }

    #[test]
    fn a_packet_matching_two_registrations_is_refused_never_guessed() {
        let both = [
            candidate(b"SECB-REG-SECRET-", 1, true),
            candidate(b"SECB-REG-SECRET-1", 2, true),
        ];
        assert!(matches!(
            decide(b"SECB-REG-SECRET-1", &both),
            Err((Refusal::Ambiguous, None))
        ));
    }

    #[test]
    fn a_suspended_gateways_dtu_is_refused_and_told_to_its_company_only() {
        let suspended = [candidate(b"SECB-REG-SECRET-1", 2, false)];
        assert!(matches!(
            decide(b"SECB-REG-SECRET-1", &suspended),
            Err((Refusal::Suspended, Some(2)))
        ));
        assert!(matches!(
            decide(b"SECB-REG-SECRET-1", &[]),
            Err((Refusal::Unknown, None))
        ));
    }

    #[test]
    fn a_short_legacy_registration_takes_only_a_packet_that_is_itself_and_port_digits() {
        let short = [candidate(b"S", 1, true)];
        assert_eq!(decide(b"S2", &short).unwrap().port, 2);
        assert!(matches!(
            decide(b"SECB-REG-SECRET-1", &short),
            Err((Refusal::TooShort, None))
        ));
    }
}
