//! PowerTab's side of MQTT-GATEWAY.md: one client with a persistent session subscribed to
//! `pt/+/up/#` (again after every reconnect), readings validated and matched to meters by (gateway, bus, addr), gateway status
//! (with the last will) as bus sessions, acknowledgements applied once, and commands published
//! to `pt/{gw}/down/command`. Gateways are known from `control.gateway_directory` (kind `mqtt`,
//! enabled) and their company's buses and meters, re-read every [`RELOAD`]; anything outside
//! the topic pattern or from an unknown gateway is ignored and counted.

use super::payload::{self, CommandMessage};
use crate::commands::Dispatch;
use crate::store::NewReading;
use crate::writer::{Message, Writer};
use powertab_core::kernel::names::SchemaName;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How often the gateway list and their meters are re-read.
pub const RELOAD: Duration = Duration::from_secs(30);
/// How long a gateway has to carry out a command.
pub const COMMAND_VALID: Duration = Duration::from_secs(120);

/// Where PowerTab's own MQTT client connects (`[ingest.mqtt]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// A known MQTT gateway.
#[derive(Debug, Clone)]
struct Gateway {
    schema: SchemaName,
    gateway_id: Uuid,
    /// (bus number, address) → meter
    meters: HashMap<(i32, String), Uuid>,
}

/// Gateways by identity, and each meter's (identity, bus, address).
#[derive(Debug, Default)]
struct Known {
    gateways: HashMap<String, Gateway>,
    meters: HashMap<Uuid, (String, i32, String)>,
}

async fn load_known(pool: &PgPool) -> anyhow::Result<Known> {
    let rows = sqlx::query(
        "select identity, company_id, gateway_id from control.gateway_directory where kind = 'mqtt' and status = 'enabled'",
    )
    .fetch_all(pool)
    .await?;
    let mut known = Known::default();
    for r in rows {
        let identity: String = r.try_get("identity")?;
        let schema = SchemaName::for_company(r.try_get("company_id")?);
        let gateway_id: Uuid = r.try_get("gateway_id")?;
        let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
        let meters: Vec<(i32, String, Uuid)> = sqlx::query_as(
            "select b.number, m.address, m.id from buses b join meters m on m.bus_id = b.id
             where b.gateway_id = $1 and b.removed_at is null and m.status = 'active'",
        )
        .bind(gateway_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for (bus, addr, meter) in &meters {
            known
                .meters
                .insert(*meter, (identity.clone(), *bus, addr.clone()));
        }
        known.gateways.insert(
            identity,
            Gateway {
                schema,
                gateway_id,
                meters: meters.into_iter().map(|(b, a, m)| ((b, a), m)).collect(),
            },
        );
    }
    Ok(known)
}

/// `pt/{gw}/up/{kind}` → (gw, kind).
pub fn parse_topic(topic: &str) -> Option<(&str, &str)> {
    let mut parts = topic.split('/');
    let (pt, gw, up, kind) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (pt == "pt" && up == "up" && !gw.is_empty() && parts.next().is_none()).then_some((gw, kind))
}

fn refused(gateway: &str, what: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("ingest_mqtt_refused_total", "gateway" => gateway.to_owned(), "what" => what)
            .increment(n as u64);
    }
}

/// Runs the MQTT side until the task is dropped.
pub async fn serve(config: MqttConfig, pool: PgPool, writer: Writer, dispatch: Dispatch) {
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(
        payload::MESSAGE_BYTES_MAX + 1024,
        payload::MESSAGE_BYTES_MAX + 1024,
    );
    // A persistent session: while ingest is away (a restart, a lost connection) the broker
    // keeps the QoS 1 readings gateways publish and delivers them when we are back, instead of
    // dropping them. One ingest per client id; several share the load through a shared
    // subscription (DESIGN.md: scaling).
    options.set_clean_session(false);
    if !config.username.is_empty() {
        options.set_credentials(config.username.clone(), config.password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 1000);
    let (command_tx, mut command_rx) = crate::commands::channel();
    let mut known = Known::default();
    let mut loaded: Option<Instant> = None;
    loop {
        if loaded.is_none_or(|t| t.elapsed() >= RELOAD) {
            match load_known(&pool).await {
                Ok(k) => {
                    let meters: Vec<Uuid> = k.meters.keys().copied().collect();
                    dispatch.route(&meters, &command_tx);
                    known = k;
                    // Commands queued while nobody listened (a restart, a lost connection).
                    // Bounded: the client's request channel holds 1,000, and the event loop is
                    // not polled while this runs; the rest go at the next reload.
                    for (meter, command) in
                        queued_commands(&pool, &known).await.into_iter().take(500)
                    {
                        send_command(&pool, &client, &known, meter, command).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the MQTT gateways failed"),
            }
            loaded = Some(Instant::now());
        }
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // Subscriptions do not survive a reconnect with a clean session.
                    if let Err(e) = client.subscribe("pt/+/up/#", QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "MQTT subscribe failed");
                    }
                    tracing::info!(host = %config.host, port = config.port, "MQTT connected");
                }
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                {
                    // A broker with dynamic security refuses until provisioning has given our
                    // login its role (which reconnects us anyway); ask again meanwhile.
                    tracing::warn!("the MQTT broker refused our subscription to pt/+/up/#; asking again in 5 s");
                    let client = client.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        let _ = client.subscribe("pt/+/up/#", QoS::AtLeastOnce).await;
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some((wait, meter, command)) =
                        handle(&pool, &writer, &known, &p.topic, &p.payload).await
                    {
                        let again = command_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = again.send((meter, command)).await;
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            },
            Some((meter, command)) = command_rx.recv() => {
                send_command(&pool, &client, &known, meter, command).await;
            }
            _ = tokio::time::sleep(RELOAD) => {}
        }
    }
}

/// Applies one incoming message; a money command to send again as a new message, if any.
async fn handle(
    pool: &PgPool,
    writer: &Writer,
    known: &Known,
    topic: &str,
    bytes: &[u8],
) -> Option<Resend> {
    let Some((identity, kind)) = parse_topic(topic) else {
        refused("", "topic", 1);
        return None;
    };
    let Some(gateway) = known.gateways.get(identity) else {
        refused(identity, "unknown_gateway", 1);
        return None;
    };
    if kind != "status" {
        // Any message says the gateway is there; a clean disconnect sends no last will, so
        // silence is what marks it offline (ingest::alarms).
        heard_from(pool, gateway).await;
    }
    match kind {
        "reading" => match payload::parse_readings(bytes) {
            Err(e) => {
                tracing::info!(gateway = identity, error = %e, "MQTT readings message refused");
                refused(identity, "message", 1);
            }
            Ok((good, bad)) => {
                refused(identity, "reading", bad.len());
                let mut unknown = 0;
                for r in good {
                    let Some(&meter_id) = gateway.meters.get(&(r.bus, r.addr.clone())) else {
                        unknown += 1;
                        continue;
                    };
                    let reading = NewReading {
                        meter_id,
                        read_at: r.ts,
                        values: r.values,
                        raw: Vec::new(),
                        ratio_mismatch: false,
                    };
                    writer
                        .send(Message::Reading(gateway.schema.clone(), reading))
                        .await;
                }
                refused(identity, "unknown_meter", unknown);
            }
        },
        "status" => match payload::parse_status(bytes) {
            Some(status) => set_online(pool, gateway, status.online).await,
            None => refused(identity, "status", 1),
        },
        "ack" => match payload::parse_ack(bytes) {
            Some(ack) => return apply_ack(pool, identity, gateway, &ack).await,
            None => refused(identity, "ack", 1),
        },
        _ => refused(identity, "topic", 1),
    }
    None
}

/// How often a busy gateway's last-seen time is written: every message would be a write.
const SEEN_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Marks `gateway` heard from now (online, last seen), at most every [`SEEN_WRITE_EVERY`].
async fn heard_from(pool: &PgPool, gateway: &Gateway) {
    static WRITTEN: std::sync::OnceLock<std::sync::Mutex<HashMap<Uuid, std::time::Instant>>> =
        std::sync::OnceLock::new();
    let due = {
        let mut written = WRITTEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let due = written
            .get(&gateway.gateway_id)
            .is_none_or(|at| now.duration_since(*at) >= SEEN_WRITE_EVERY);
        if due {
            written.insert(gateway.gateway_id, now);
        }
        due
    };
    if due {
        // Off the message path: readings must not wait for a status write.
        let (pool, gateway) = (pool.clone(), gateway.clone());
        tokio::spawn(async move { set_online(&pool, &gateway, true).await });
    }
}

async fn set_online(pool: &PgPool, gateway: &Gateway, online: bool) {
    let query = sqlx::query(
        "insert into bus_sessions (bus_id, gateway_id, online, peer, connected_at, last_seen_at, updated_at)
         select id, gateway_id, $2, 'mqtt', now(), now(), now() from buses where gateway_id = $1 and removed_at is null
         on conflict (bus_id) do update set online = excluded.online, last_seen_at = now(), updated_at = now(),
             connected_at = case when excluded.online and not bus_sessions.online then now() else bus_sessions.connected_at end",
    )
    .bind(gateway.gateway_id)
    .bind(online);
    crate::store::record(pool, &gateway.schema, query, "an MQTT gateway's status").await;
}

/// The first acknowledgement of a command decides; repeats find it settled and change nothing.
/// `done` verifies what the ack itself proves (DESIGN.md's table: a release, or a relay command
/// whose ack carries the wanted relay state) and acknowledges the rest (a read-now is verified
/// when its reading is stored).
/// A money command to send again as a new message: (when, meter, command).
type Resend = (Duration, Uuid, Uuid);

/// The command a message id names and whether this is the message's first acknowledgement
/// (`None`: no message of this gateway's meters; plain commands are their own message).
async fn command_of_message(
    pool: &PgPool,
    gateway: &Gateway,
    message: Uuid,
    meters: &[Uuid],
    status: &str,
) -> anyhow::Result<Option<(Uuid, bool)>> {
    let mut tx = powertab_core::db::begin_in(pool, &gateway.schema).await?;
    // The first acknowledgement of a message counts; a repeat finds it answered.
    let first: Option<Uuid> = sqlx::query_scalar(
        "update command_messages m set outcome = $3, answered_at = now()
         from commands c where m.id = $1 and c.id = m.command_id and c.meter_id = any($2)
           and m.answered_at is null
         returning m.command_id",
    )
    .bind(message)
    .bind(meters)
    .bind(status)
    .fetch_optional(&mut *tx)
    .await?;
    let found = match first {
        Some(command) => Some((command, true)),
        None => sqlx::query_scalar::<_, Uuid>(
            "select m.command_id from command_messages m join commands c on c.id = m.command_id
             where m.id = $1 and c.meter_id = any($2)",
        )
        .bind(message)
        .bind(meters)
        .fetch_optional(&mut *tx)
        .await?
        .map(|command| (command, false)),
    };
    tx.commit().await?;
    Ok(found.or(Some((message, true))))
}

async fn apply_ack(
    pool: &PgPool,
    identity: &str,
    gateway: &Gateway,
    ack: &payload::Ack,
) -> Option<Resend> {
    use powertab_core::commands::{self as queue, State};
    let message = ack.id.parse::<Uuid>().ok()?;
    // Only commands for this gateway's meters: a gateway cannot settle another's.
    let meters: Vec<Uuid> = gateway.meters.values().copied().collect();
    let id = match command_of_message(pool, gateway, message, &meters, &ack.status).await {
        Ok(Some((command, true))) => command,
        Ok(Some((_, false))) => {
            // MQTT-GATEWAY.md: the first acknowledgement of a message is applied, repeats ignored.
            metrics::counter!("ingest_mqtt_duplicate_acks_total").increment(1);
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "reading an acknowledged message failed");
            return None;
        }
    };
    let op = async {
        let mut tx = powertab_core::db::begin_in(pool, &gateway.schema).await?;
        let op = queue::op_of(&mut tx, id, &meters).await?;
        tx.commit().await?;
        anyhow::Ok(op)
    }
    .await;
    let (op, framed) = match op {
        Ok(Some(found)) => found,
        Ok(None) => {
            refused(identity, "ack_unknown_command", 1);
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading an acknowledged command failed");
            return None;
        }
    };
    let relay_closed = match ack.relay.as_deref() {
        Some("closed") => Some(true),
        Some("open") => Some(false),
        _ => None,
    };
    if let Some(text) = ack.secure_ack.as_deref() {
        store_secure_ack(pool, identity, gateway, id, &meters, text).await;
    }
    // A secure frame's outcome is the meter's, not the gateway's: the server's settle worker
    // judges its acknowledgement and counters. A purchase or deduct is never ended by a
    // message's fate either (MQTT-GATEWAY.md): a message that expired or failed is followed by
    // a new one with the same bytes.
    if op.moves_money() {
        return match ack.status.as_str() {
            "done" => None,
            _ => resend_later(pool, gateway, id, &ack.status).await,
        };
    }
    // A secure control command (a frame on the control counter) is verified by the meter's
    // counters too, never by the gateway's word.
    if ack.status == "done" && (op.is_secure_only() || framed) {
        return None;
    }
    let to = match ack.status.as_str() {
        "done" => op.state_after_done(relay_closed),
        "expired" => State::Expired,
        _ => State::Failed,
    };
    crate::commands::settle_ack(pool, &gateway.schema, id, to, &ack.detail, &meters).await;
    None
}

/// Keeps money command `id` ours (`sent`) for its next message after one ended `status`: in
/// 5 s, doubling with each send to 60 s (a gateway that keeps refusing is not flooded).
async fn resend_later(pool: &PgPool, gateway: &Gateway, id: Uuid, status: &str) -> Option<Resend> {
    let held = async {
        let mut tx = powertab_core::db::begin_in(pool, &gateway.schema).await?;
        let row: Option<(Uuid, i32)> =
            sqlx::query_as("select meter_id, attempts from commands where id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((meter, attempts)) = row else {
            return anyhow::Ok(None);
        };
        let wait_s = (5i64 << attempts.clamp(1, 5).saturating_sub(1)).min(60);
        let now = chrono::Utc::now();
        let at = now + chrono::Duration::seconds(wait_s);
        let held = powertab_core::commands::retry_later(
            &mut tx,
            id,
            crate::commands::holder(),
            at,
            chrono::Duration::from_std(COMMAND_VALID)?,
            &format!(
                "the gateway answered {status}: sent again as a new message at {}",
                at.to_rfc3339()
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(held.then(|| (Duration::from_secs(wait_s.unsigned_abs()), meter, id)))
    }
    .await;
    held.unwrap_or_else(|e| {
        tracing::warn!(command = %id, error = %e, "keeping a money command for its next message failed");
        None
    })
}

/// Keeps a meter's secure acknowledgement (base64 of 37 bytes) with its command for the server
/// to check against the meter's key — ingest holds no key and believes nothing in it. Anything
/// else is refused and counted.
async fn store_secure_ack(
    pool: &PgPool,
    identity: &str,
    gateway: &Gateway,
    id: Uuid,
    meters: &[Uuid],
    text: &str,
) {
    use base64::Engine;
    const ACK_BASE64_MAX: usize = 64;
    let bytes = (text.len() <= ACK_BASE64_MAX)
        .then(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .flatten()
        .filter(|b| b.len() == powertab_core::secure::frame::ACK_LEN);
    let Some(bytes) = bytes else {
        refused(identity, "secure_ack_malformed", 1);
        return;
    };
    let stored = async {
        let mut tx = powertab_core::db::begin_in(pool, &gateway.schema).await?;
        let stored = powertab_core::secure::readback::store_ack(
            &mut tx,
            &gateway.schema,
            id,
            meters,
            &bytes,
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(stored)
    }
    .await;
    if let Err(e) = stored {
        tracing::warn!(%id, error = %e, "keeping a secure acknowledgement failed");
    }
}

/// The unexpired queued commands of the known MQTT meters, oldest first, after putting back
/// those whose lease ran out unanswered.
async fn queued_commands(pool: &PgPool, known: &Known) -> Vec<(Uuid, Uuid)> {
    let mut by_schema: HashMap<String, (SchemaName, Vec<Uuid>)> = HashMap::new();
    for (meter, (identity, _, _)) in &known.meters {
        if let Some(g) = known.gateways.get(identity) {
            by_schema
                .entry(g.schema.as_str().to_owned())
                .or_insert_with(|| (g.schema.clone(), Vec::new()))
                .1
                .push(*meter);
        }
    }
    let mut queued = Vec::new();
    for (schema, meters) in by_schema.into_values() {
        match crate::commands::take_over(pool, &schema, &meters, crate::commands::MQTT_OPS, 500)
            .await
        {
            Ok(rows) => queued.extend(rows),
            Err(e) => tracing::warn!(error = %e, "reading queued MQTT commands failed"),
        }
    }
    queued
}

/// Claims a queued command and publishes it to its gateway. The lease is the message's
/// validity: a gateway ignores it afterwards, so an unanswered command is recovered and sent
/// again (a new message) once the lease ran out.
async fn send_command(
    pool: &PgPool,
    client: &AsyncClient,
    known: &Known,
    meter: Uuid,
    command: Uuid,
) {
    let result = async {
        let Some((identity, bus, addr)) = known.meters.get(&meter).cloned() else {
            return anyhow::Ok(());
        };
        let Some(schema) = known.gateways.get(&identity).map(|g| g.schema.clone()) else {
            return Ok(());
        };
        let now = chrono::Utc::now();
        let valid = chrono::Duration::from_std(COMMAND_VALID)?;
        let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
        let claimed = powertab_core::commands::claim(
            &mut tx,
            command,
            meter,
            crate::commands::MQTT_OPS,
            crate::commands::holder(),
            valid,
            now,
        )
        .await?;
        // A secure command goes with the frame the server stored for it, byte for byte.
        let frame = match &claimed {
            Ok(_) => powertab_core::secure::commands::stored_frame(&mut tx, command).await?,
            Err(_) => None,
        };
        let Ok(claimed) = claimed else {
            tx.commit().await?;
            return Ok(());
        };
        let expires_at = claimed
            .expires_at
            .map_or(claimed.lease_until, |at| at.min(claimed.lease_until));
        // A purchase or deduct goes out as a new message each time (its own id, acknowledged
        // on its own); other commands are their own message.
        let message_id = if claimed.op.moves_money() {
            let id = Uuid::now_v7();
            sqlx::query(
                "insert into command_messages (id, command_id, sent_at, expires_at)
                 values ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(command)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            id
        } else {
            command
        };
        tx.commit().await?;
        let message = CommandMessage {
            v: 1,
            id: message_id.to_string(),
            bus,
            addr,
            op: claimed.op.as_str().to_owned(),
            expires_at: expires_at.timestamp_millis(),
            secure: frame.map(|(bytes, _)| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(bytes)
            }),
        };
        client
            .publish(
                format!("pt/{identity}/down/command"),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&message)?,
            )
            .await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(%command, error = %e, "sending a command over MQTT failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_pattern() {
        assert_eq!(parse_topic("pt/gw-1/up/reading"), Some(("gw-1", "reading")));
        assert_eq!(parse_topic("pt/gw-1/down/command"), None);
        assert_eq!(parse_topic("pt//up/reading"), None);
        assert_eq!(parse_topic("pt/gw-1/up/reading/extra"), None);
        assert_eq!(parse_topic("xx/gw-1/up/reading"), None);
    }
}
