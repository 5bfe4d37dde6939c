//! DTU dial-in (DESIGN.md: Ingest): one TCP port, one socket per RS485 bus. The first bytes a
//! DTU sends must start with a gateway's registration bytes, within [`REGISTRATION_TIMEOUT`];
//! a DTU with several serial ports registers each port's socket with the registration followed
//! by the port number in ASCII (`PT-0001` + `2`; no number means port 1). Unknown, suspended or
//! portless registrations are refused, counted (`ingest_registrations_refused_total`) and listed
//! in `control.unclaimed_registrations`. A new socket for the same gateway and port replaces the
//! old one. Each accepted socket is polled by a [`crate::bus`] session.

use crate::bus;
use crate::commands::{self, Dispatch};
use crate::writer::Writer;
use powertab_core::names::SchemaName;
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
}

impl Default for DtuConfig {
    fn default() -> Self {
        DtuConfig {
            poll_interval: Duration::from_secs(30),
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
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a DTU connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (pool, writer, config, sessions, dispatch) = (
            pool.clone(),
            writer.clone(),
            config.clone(),
            sessions.clone(),
            dispatch.clone(),
        );
        tokio::spawn(async move {
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
    let Some(found) = lookup(&pool, &first).await? else {
        refuse(&pool, &first, peer, None).await;
        return Ok(());
    };
    let schema = SchemaName::for_company(found.company_id);
    let Some(link) = bus::load_link(&pool, &schema, found.gateway_id, found.port).await? else {
        refuse(&pool, &first, peer, Some(found.company_id)).await;
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

/// The enabled DTU whose registration the packet starts with (the longest match).
async fn lookup(pool: &PgPool, packet: &[u8]) -> anyhow::Result<Option<Registered>> {
    let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
    let row = sqlx::query(
        "select identity, registration_hex, company_id, gateway_id from control.gateway_directory
         where kind = 'dtu' and status = 'enabled' and registration_hex is not null
           and starts_with($1, registration_hex)
         order by length(registration_hex) desc limit 1",
    )
    .bind(&hex)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let registration_hex: String = row.try_get("registration_hex")?;
    let (port, rest) = port_and_rest(&packet[registration_hex.len() / 2..]);
    Ok(Some(Registered {
        company_id: row.try_get("company_id")?,
        gateway_id: row.try_get("gateway_id")?,
        identity: row.try_get("identity")?,
        rest: rest.to_vec(),
        port,
    }))
}

/// Counts and lists a refused registration for admins to claim.
async fn refuse(pool: &PgPool, packet: &[u8], peer: SocketAddr, company_id: Option<i64>) {
    metrics::counter!("ingest_registrations_refused_total").increment(1);
    let hex: String = packet.iter().take(64).map(|b| format!("{b:02x}")).collect();
    tracing::warn!(%peer, registration = %hex, "refused a DTU registration");
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
}
