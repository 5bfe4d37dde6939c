//! Benchmark: readings per second from MQTT gateways to committed rows — gateways publishing
//! through a real Mosquitto, PowerTab's MQTT client validating and matching them, the writer
//! storing them. Prints the figures; `cargo bench -p powertab-ingest --bench mqtt_rate`
//! (`PT_BENCH_GATEWAYS`, `PT_BENCH_ROUNDS` change the load). Not part of the test suite.

#[path = "../tests/common/mod.rs"]
mod common;

use chrono::{Duration as ChronoDuration, DurationRound, Utc};
use common::Field;
use powertab_ingest::commands::Dispatch;
use powertab_ingest::driver::MeterValues;
use powertab_ingest::mqtt::client::{self, MqttConfig};
use powertab_ingest::mqtt::payload::{readings_messages, GatewayReading};
use powertab_ingest::writer::Writer;
use powertab_testkit::broker::Broker;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::{Duration, Instant};

/// Meters per gateway: one message per gateway and round.
const METERS_PER_GATEWAY: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn stored(field: &Field) -> i64 {
    sqlx::query_scalar(&format!(
        "select count(*) from {}.readings",
        field.schema.as_str()
    ))
    .fetch_one(&field.db.pool)
    .await
    .unwrap()
}

#[tokio::main]
async fn main() {
    let gateways = env_usize("PT_BENCH_GATEWAYS", 50);
    let rounds = env_usize("PT_BENCH_ROUNDS", 20);
    let broker = Broker::start().await;
    let field = Field::new("bench", "dtu-unused", b"UNUSED", &[]).await;
    let addresses: Vec<String> = (1..=METERS_PER_GATEWAY).map(|a| a.to_string()).collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    for g in 0..gateways {
        field
            .add_mqtt_gateway(&format!("gw-{g:04}"), &addresses)
            .await;
    }
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let config = MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-bench".into(),
        username: String::new(),
        password: String::new(),
    };
    tokio::spawn(client::serve(
        config,
        field.db.pool.clone(),
        writer,
        Dispatch::default(),
    ));

    let t0 = (Utc::now() - ChronoDuration::hours(2))
        .duration_trunc(ChronoDuration::minutes(1))
        .unwrap();
    let message = |round: usize| -> String {
        let readings: Vec<GatewayReading> = (1..=METERS_PER_GATEWAY)
            .map(|addr| GatewayReading {
                bus: 1,
                addr: addr.to_string(),
                ts: t0 + ChronoDuration::seconds(30 * round as i64),
                values: MeterValues {
                    energy_wh: 1_000_000 + addr as i64 * 10 + round as i64 * 20,
                    tou_wh: Some([Some(0), Some(100), Some(200), Some(300), None]),
                    power_w: Some(2_400),
                    voltage_dv: vec![2200, 2201, 2199],
                    current_ca: vec![500, 510, 490],
                    pf_milli: Some(950),
                    remaining_fen: Some(10_000),
                    purchase_count: Some(3),
                    relay_closed: Some(true),
                    alarms: vec![],
                    meter_ratios: None,
                    secure: None,
                },
            })
            .collect();
        readings_messages(&readings).remove(0)
    };
    let bytes_per_message = message(0).len();

    // The gateways connect; round 0 goes once PowerTab has subscribed (a probe gets through),
    // and the measurement starts when it is stored.
    let mut clients = Vec::new();
    for g in 0..gateways {
        let id = format!("gw-{g:04}");
        let mut options = MqttOptions::new(id.clone(), "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(512 * 1024, 512 * 1024);
        let (client, mut events) = AsyncClient::new(options, 1000);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        clients.push((id, client));
    }
    let warm = (gateways * METERS_PER_GATEWAY) as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let topic = |id: &str| format!("pt/{id}/up/reading");
    let (probe_id, probe) = &clients[0];
    while stored(&field).await == 0 {
        assert!(Instant::now() < deadline, "PowerTab never subscribed");
        probe
            .publish(topic(probe_id), QoS::AtLeastOnce, false, message(0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (id, client) in &clients[1..] {
        client
            .publish(topic(id), QoS::AtLeastOnce, false, message(0))
            .await
            .unwrap();
    }
    while stored(&field).await < warm {
        assert!(Instant::now() < deadline, "the first round was not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Measured: rounds 1..=rounds from every gateway at once.
    let expected = warm + (gateways * METERS_PER_GATEWAY * rounds) as i64;
    let messages: Vec<String> = (1..=rounds).map(message).collect();
    let (cpu_before, started) = (common::cpu_s(), Instant::now());
    let mut publishing = Vec::new();
    for (id, client) in clients.clone() {
        let messages = messages.clone();
        publishing.push(tokio::spawn(async move {
            for m in messages {
                client
                    .publish(format!("pt/{id}/up/reading"), QoS::AtLeastOnce, false, m)
                    .await
                    .unwrap();
            }
        }));
    }
    for p in publishing {
        p.await.unwrap();
    }
    let published_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while stored(&field).await < expected {
        assert!(
            Instant::now() < deadline,
            "stored {} of {expected}",
            stored(&field).await
        );
        // Counting is not free: often enough for a 1 % error, rarely enough not to compete.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total_s = started.elapsed().as_secs_f64();
    let cpu = common::cpu_s() - cpu_before;
    let readings = (gateways * METERS_PER_GATEWAY * rounds) as f64;
    println!(
        "mqtt_rate: {gateways} gateways x {METERS_PER_GATEWAY} meters x {rounds} rounds = {readings} readings, {bytes_per_message} bytes per message"
    );
    println!("  handed to the client library in {published_s:.2} s");
    println!(
        "  committed in {total_s:.2} s: {:.0} readings/s end to end ({:.0} messages/s)",
        readings / total_s,
        readings / METERS_PER_GATEWAY as f64 / total_s
    );
    println!(
        "  CPU of this process (publishers + PowerTab's client + writer): {cpu:.2} s, {:.0} % of one core",
        100.0 * cpu / total_s
    );
}
