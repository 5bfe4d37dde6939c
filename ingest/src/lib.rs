//! PowerTab's field side (DESIGN.md: Ingest): gateway sessions, framers, meter drivers, the poll
//! scheduler, command delivery and the simulator. It meets the server only in the database.
//!
//! In place: framers ([`framing`]), meter drivers ([`driver`]), DTU dial-in ([`dtu`]) and
//! Modbus-TCP dial-out ([`modbus_tcp`]) with one poll session per bus ([`bus`]), commands
//! ([`commands`]), MQTT gateways and their broker logins ([`mqtt`]), field [`alarms`], the
//! batched [`writer`] into [`store`], and the simulator ([`sim`]).

pub mod alarms;
pub mod bus;
pub mod commands;
pub mod dial_policy;
pub mod driver;
pub mod dtu;
pub mod framing;
pub mod fuzzing;
pub mod modbus_tcp;
pub mod mqtt;
pub mod secure;
pub mod sim;
pub mod store;
pub mod writer;

use powertab_core::auth::Secret;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of the field side (`[ingest]` in powertab.toml, `POWERTAB_INGEST__*`); a key left
/// out keeps its default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Where DTUs dial in (DESIGN.md: default port 9502).
    pub dtu_listen: SocketAddr,
    /// How often each meter is read.
    pub poll_interval_s: u64,
    /// The MQTT broker MQTT gateways talk to (`mqtt://host:port`; `MQTT_URL` also sets it);
    /// none: no MQTT side.
    #[serde(default)]
    pub mqtt_url: Option<String>,
    /// The broker's address as MQTT gateways reach it (e.g. `mqtt://mqtt.example.com:1883`),
    /// shown on their pages; none: `mqtt_url`.
    #[serde(default)]
    pub mqtt_public_url: Option<String>,
    /// The readings client's login at the broker (empty: anonymous, for a private test broker).
    /// Least privilege: provisioning gives it the role `powertab-platform` (gateways' topics
    /// only), creating it when the broker lacks it.
    #[serde(default)]
    pub mqtt_username: String,
    #[serde(default, skip_serializing)]
    pub mqtt_password: Secret,
    /// The broker's dynamic-security admin, used only to provision gateways' logins. Empty:
    /// `mqtt_username` is used for both (an older, single-login configuration).
    #[serde(default)]
    pub mqtt_admin_username: String,
    #[serde(default, skip_serializing)]
    pub mqtt_admin_password: Secret,
    /// The platform secret MQTT gateways' credentials are derived from (at least 32 bytes;
    /// core::gateway_credential). Without it gateways get no credentials and the broker is not
    /// provisioned. Changing it changes every MQTT gateway's credential.
    #[serde(default, skip_serializing)]
    pub gateway_secret: Option<Secret>,
    /// Internal address ranges (CIDR) that Modbus-TCP gateways may be dialled at anyway;
    /// loopback, private, link-local and the machine's own addresses are refused otherwise
    /// (see [`dial_policy`]). The demo and the tests allow `127.0.0.0/8`.
    #[serde(default)]
    pub dial_allow: Vec<String>,
    /// DTU connections held at once; beyond it new ones are closed (`ingest_dtu_connections_refused_total`).
    #[serde(default = "dtu_connections_max_default")]
    pub dtu_connections_max: usize,
}

fn dtu_connections_max_default() -> usize {
    dtu::CONNECTIONS_MAX_DEFAULT
}

impl IngestConfig {
    /// The broker address to give MQTT gateways, or "" when there is no broker.
    pub fn mqtt_broker_for_gateways(&self) -> String {
        self.mqtt_public_url
            .clone()
            .or_else(|| self.mqtt_url.clone())
            .unwrap_or_default()
    }

    /// The MQTT client settings, when a broker is configured and its URL is well-formed.
    pub fn mqtt(&self) -> Option<mqtt::client::MqttConfig> {
        let url = self.mqtt_url.as_deref()?;
        let rest = url.strip_prefix("mqtt://").unwrap_or(url);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.trim_end_matches('/').parse().ok()?),
            None => (rest, 1883),
        };
        Some(mqtt::client::MqttConfig {
            host: host.to_owned(),
            port,
            // Stable, so the broker keeps the readings gateways send while ingest restarts
            // (a persistent session; see mqtt::client).
            client_id: "powertab-ingest".into(),
            username: self.mqtt_username.clone(),
            password: self.mqtt_password.expose().to_owned(),
        })
    }
}

impl IngestConfig {
    /// The login provisioning uses: the dynamic-security admin, or the readings login when no
    /// admin is configured.
    pub fn mqtt_admin(&self) -> Option<mqtt::client::MqttConfig> {
        let mut config = self.mqtt()?;
        if !self.mqtt_admin_username.is_empty() {
            config.username = self.mqtt_admin_username.clone();
            config.password = self.mqtt_admin_password.expose().to_owned();
        }
        Some(config)
    }

    /// The readings client's login, for provisioning to create.
    pub fn mqtt_ingest_login(&self) -> mqtt::provision::IngestLogin {
        mqtt::provision::IngestLogin {
            username: self.mqtt_username.clone(),
            password: self.mqtt_password.expose().to_owned(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            dtu_listen: "0.0.0.0:9502".parse().expect("a valid address"),
            poll_interval_s: 30,
            mqtt_url: None,
            mqtt_public_url: None,
            mqtt_username: String::new(),
            mqtt_password: Secret::default(),
            mqtt_admin_username: String::new(),
            mqtt_admin_password: Secret::default(),
            gateway_secret: None,
            dial_allow: Vec::new(),
            dtu_connections_max: dtu::CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// The secret to provision MQTT gateways' logins with, or `None` (logged) when the broker
/// cannot be provisioned: no login of PowerTab's own there, or no usable platform secret.
fn provisioning_secret(config: &IngestConfig, mqtt: &mqtt::client::MqttConfig) -> Option<Secret> {
    if mqtt.username.is_empty() {
        tracing::warn!("no MQTT login configured (MQTT_USERNAME); MQTT gateway logins are not provisioned at the broker");
        return None;
    }
    match powertab_core::field::credentials::check_secret(config.gateway_secret.as_ref()) {
        Ok(secret) => Some(secret.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "MQTT gateway logins are not provisioned at the broker");
            None
        }
    }
}

/// Runs the field side until `shutdown` completes: the DTU port and the reading writer.
pub async fn run(
    pool: PgPool,
    config: IngestConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    anyhow::ensure!(powertab_core::db::ping(&pool).await, "database unreachable");
    let listener = tokio::net::TcpListener::bind(config.dtu_listen).await?;
    tracing::info!(address = %listener.local_addr()?, "DTU port listening");
    let partitions_pool = pool.clone();
    let partitions = tokio::spawn(async move {
        // Monthly partitions three months ahead, checked daily.
        loop {
            match store::ensure_partitions(&partitions_pool, 3).await {
                Ok(made) if made > 0 => tracing::info!(made, "readings partitions made"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "making readings partitions failed"),
            }
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        }
    });
    let alarming = tokio::spawn(alarms::run(pool.clone()));
    let (writer, writer_task) = writer::Writer::start(pool.clone());
    let interval = Duration::from_secs(config.poll_interval_s.max(1));
    let dispatch = commands::Dispatch::default();
    let listening = tokio::spawn(commands::listen(pool.clone(), dispatch.clone()));
    let dtu_config = dtu::DtuConfig {
        poll_interval: interval,
        connections_max: config.dtu_connections_max.max(1),
    };
    let serving = tokio::spawn(dtu::serve_with(
        listener,
        pool.clone(),
        writer.clone(),
        dtu_config,
        dispatch.clone(),
    ));
    let policy = dial_policy::DialPolicy::new(&config.dial_allow)
        .map_err(|e| anyhow::anyhow!("ingest.dial_allow: {e}"))?;
    let dialling = tokio::spawn(modbus_tcp::serve(
        pool.clone(),
        writer.clone(),
        interval,
        dispatch.clone(),
        policy,
    ));
    let provisioning = config.mqtt_admin().and_then(|admin| {
        let secret = provisioning_secret(&config, &admin)?;
        if config.mqtt_admin_username.is_empty() {
            tracing::warn!("no MQTT admin login configured (MQTT_ADMIN_USERNAME): the readings client uses the provisioning login; give it its own least-privilege login");
        }
        Some(tokio::spawn(mqtt::provision::run(
            admin,
            config.mqtt_ingest_login(),
            pool.clone(),
            secret,
        )))
    });
    let mqtt = config.mqtt().map(|mqtt| {
        tracing::info!(host = %mqtt.host, port = mqtt.port, "MQTT gateways via this broker");
        tokio::spawn(mqtt::client::serve(mqtt, pool, writer, dispatch))
    });
    shutdown.await;
    serving.abort();
    dialling.abort();
    for task in [mqtt, provisioning].into_iter().flatten() {
        task.abort();
    }
    listening.abort();
    alarming.abort();
    partitions.abort();
    // The writer stores what it holds once the last sender (the sessions) is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer_task).await;
    Ok(())
}
