//! Benchmark: provisioning MQTT gateway logins in a real Mosquitto with the dynamic-security
//! plugin — how long a full sync of a fleet takes (the first start, or after the broker lost
//! its configuration) and how long one suspension takes to reach the broker after that.
//! `PT_BENCH_GATEWAYS` (default 5,000); `cargo bench -p powertab-ingest --bench
//! provision_scale`. Not part of the test suite.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Field;
use powertab_core::auth::Secret;
use powertab_core::field::credentials;
use powertab_ingest::mqtt::client::MqttConfig;
use powertab_ingest::mqtt::provision;
use powertab_testkit::broker::Broker;
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet};
use std::time::{Duration, Instant};
use uuid::Uuid;

const SECRET: &str = "bench-gateway-secret-bench-gateway-secret";

/// Whether `username` gets in with `password`.
async fn logs_in(port: u16, username: &str, password: &str) -> bool {
    let mut options = MqttOptions::new(username, "127.0.0.1", port);
    options.set_credentials(username, password);
    let (_client, mut events) = AsyncClient::new(options, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(_))) | Ok(Err(_)) | Err(_) => return false,
        }
    }
}

async fn wait_for(what: &str, started: Instant, mut done: impl AsyncFnMut() -> bool) -> f64 {
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let gateways: i32 = std::env::var("PT_BENCH_GATEWAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let broker = Broker::with_dynamic_security().await;
    let field = Field::new("bench", "dtu-unused", b"UNUSED", &[]).await;
    let s = field.schema.as_str();
    sqlx::query(&format!(
        "insert into {s}.gateways (id, identity, kind)
         select gen_random_uuid(), 'gw-' || lpad(g::text, 6, '0'), 'mqtt' from generate_series(1, $1) g"
    ))
    .bind(gateways)
    .execute(&field.db.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into control.gateway_directory (identity, company_id, gateway_id, kind, status, mqtt_credential_gen)
         select identity, $1, id, 'mqtt', 'enabled', 1 from {s}.gateways where kind = 'mqtt'"
    ))
    .bind(field.company_id)
    .execute(&field.db.pool)
    .await
    .unwrap();
    let last: (String, Uuid) = sqlx::query_as(&format!(
        "select identity, id from {s}.gateways where kind = 'mqtt' order by identity desc limit 1"
    ))
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    let password = credentials::derive(&Secret::new(SECRET), last.1, &last.0, 1);
    let (username, admin_password) = broker.admin.clone().unwrap();
    let config = MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-bench".into(),
        username,
        password: admin_password,
    };
    let started = Instant::now();
    let ingest = provision::IngestLogin {
        username: "powertab-ingest".into(),
        password: "bench-ingest-password".into(),
    };
    tokio::spawn(provision::run(
        config,
        ingest,
        field.db.pool.clone(),
        Secret::new(SECRET),
    ));
    let full_s = wait_for("the full sync", started, async || {
        logs_in(broker.port, &last.0, &password).await
    })
    .await;

    let started = Instant::now();
    sqlx::query("update control.gateway_directory set status = 'suspended' where identity = $1")
        .bind(&last.0)
        .execute(&field.db.pool)
        .await
        .unwrap();
    let suspend_s = wait_for("the suspension", started, async || {
        !logs_in(broker.port, &last.0, &password).await
    })
    .await;
    println!("provision_scale: {gateways} MQTT gateways");
    println!(
        "  full sync (from start until the last gateway logs in): {full_s:.2} s, {:.0} gateways/s",
        f64::from(gateways) / full_s
    );
    println!(
        "  one suspension reaching the broker: {suspend_s:.2} s (directory checked every {} s)",
        provision::CHECK.as_secs()
    );
}
