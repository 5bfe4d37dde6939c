//! MQTT gateways against a real Mosquitto started for this test on a free port: readings
//! validated and matched to meters, status as bus sessions, a read-now published as a command
//! and settled by the first acknowledgement.

mod common;

use common::Field;
use powertab_ingest::commands::Dispatch;
use powertab_ingest::mqtt::client::{self, MqttConfig};
use powertab_ingest::writer::Writer;
use powertab_testkit::wait_until;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::process::{Child, Command};
use std::time::Duration;
use uuid::Uuid;

/// A private Mosquitto, killed on drop.
struct Broker {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

async fn broker() -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("pt-mosquitto-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let exe = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let child = Command::new(exe)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("mosquitto (Debian package) is installed");
    let up = wait_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "mosquitto listens");
    Broker {
        child,
        port,
        _dir: dir,
    }
}

async fn mqtt_gateway(field: &Field) -> Vec<Uuid> {
    let s = field.schema.as_str();
    let (gateway, bus) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(&format!("insert into {s}.gateways (id, identity, kind, mqtt_password_hash) values ($1, 'gw-1', 'mqtt', 'x')"))
        .bind(gateway)
        .execute(&field.db.pool)
        .await
        .unwrap();
    sqlx::query("insert into control.gateway_directory (identity, company_id, gateway_id, kind, status) values ('gw-1', $1, $2, 'mqtt', 'enabled')")
        .bind(field.company_id)
        .bind(gateway)
        .execute(&field.db.pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
         values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 10, 400)"
    ))
    .bind(bus)
    .bind(gateway)
    .execute(&field.db.pool)
    .await
    .unwrap();
    let mut meters = vec![];
    for addr in ["17", "18"] {
        let id = Uuid::now_v7();
        sqlx::query(&format!("insert into {s}.meters (id, bus_id, model, address, meter_number) values ($1, $2, 'dtsy1352', $3, $4)"))
            .bind(id)
            .bind(bus)
            .bind(addr)
            .bind(format!("88{addr}"))
            .execute(&field.db.pool)
            .await
            .unwrap();
        meters.push(id);
    }
    meters
}

async fn scalar_i64(field: &Field, sql: &str) -> i64 {
    sqlx::query_scalar(&sql.replace("{s}", field.schema.as_str()))
        .fetch_one(&field.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_mqtt_gateway_publishes_readings_status_and_acks() {
    let broker = broker().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let meters = mqtt_gateway(&field).await;
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let dispatch = Dispatch::default();
    let config = MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-test".into(),
        username: String::new(),
        password: String::new(),
    };
    tokio::spawn(client::serve(
        config,
        field.db.pool.clone(),
        writer,
        dispatch.clone(),
    ));

    // The gateway.
    let mut options = MqttOptions::new("gw-1", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (gw, mut events) = AsyncClient::new(options, 100);
    let (commands_tx, mut commands_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = commands_tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    gw.subscribe("pt/gw-1/down/command", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Until PowerTab has subscribed, status messages go unheard: repeat until one lands.
    let online = wait_until(Duration::from_secs(15), || async {
        gw.publish(
            "pt/gw-1/up/status",
            QoS::AtLeastOnce,
            true,
            br#"{"v":1,"online":true,"firmware":"1.0"}"#.to_vec(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        scalar_i64(&field, "select count(*) from {s}.bus_sessions where online").await == 1
    })
    .await;
    assert!(online, "the gateway's status makes its bus online");

    let ts = chrono::Utc::now().timestamp_millis();
    let message = format!(
        r#"{{"v": 1, "readings": [
            {{"bus": 1, "addr": "17", "ts": {ts}, "energy_wh": {{"total": 1234560}}, "power_w": 5230, "relay": "closed"}},
            {{"bus": 1, "addr": "99", "ts": {ts}, "energy_wh": {{"total": 5}}}},
            {{"bus": 1, "addr": "18", "ts": {ts}}},
            {{"bus": 1, "addr": "18", "ts": {ts}, "energy_wh": {{"total": 777}}}}
        ]}}"#
    );
    gw.publish(
        "pt/gw-1/up/reading",
        QoS::AtLeastOnce,
        false,
        message.into_bytes(),
    )
    .await
    .unwrap();
    gw.publish(
        "pt/gw-1/up/reading",
        QoS::AtLeastOnce,
        false,
        b"not json".to_vec(),
    )
    .await
    .unwrap();
    let stored = wait_until(Duration::from_secs(10), || async {
        scalar_i64(&field, "select count(*) from {s}.readings").await == 2
    })
    .await;
    assert!(stored, "the two valid readings of known meters are stored");
    let latest = scalar_i64(
        &field,
        &format!(
            "select energy_wh from {{s}}.meter_latest where meter_id = '{}'",
            meters[0]
        ),
    )
    .await;
    assert_eq!(latest, 1_234_560);

    // A read-now goes out as a command; the first acknowledgement settles it.
    let command = Uuid::now_v7();
    sqlx::query(&format!(
        "insert into {}.commands (id, meter_id, op, source, expires_at) values ($1, $2, 'read_now', 'test', now() + interval '2 minutes')",
        field.schema.as_str()
    ))
    .bind(command)
    .bind(meters[0])
    .execute(&field.db.pool)
    .await
    .unwrap();
    assert!(
        dispatch.deliver(meters[0], command),
        "the MQTT side has the meter"
    );
    let sent = tokio::time::timeout(Duration::from_secs(10), commands_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(
        (
            sent["op"].as_str(),
            sent["addr"].as_str(),
            sent["bus"].as_i64()
        ),
        (Some("read_now"), Some("17"), Some(1))
    );
    assert_eq!(sent["id"], command.to_string());
    for status in ["done", "failed"] {
        let ack = format!(r#"{{"v":1,"id":"{command}","status":"{status}"}}"#);
        gw.publish("pt/gw-1/up/ack", QoS::AtLeastOnce, false, ack.into_bytes())
            .await
            .unwrap();
    }
    let state = |field: &Field| {
        let sql = format!(
            "select state from {}.commands where id = '{command}'",
            field.schema.as_str()
        );
        let pool = field.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(&sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            state(&field).await == "verified"
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        state(&field).await,
        "verified",
        "the repeated acknowledgement changes nothing"
    );

    gw.publish(
        "pt/gw-1/up/status",
        QoS::AtLeastOnce,
        true,
        br#"{"v":1,"online":false}"#.to_vec(),
    )
    .await
    .unwrap();
    let offline = wait_until(Duration::from_secs(10), || async {
        scalar_i64(
            &field,
            "select count(*) from {s}.bus_sessions where not online",
        )
        .await
            == 1
    })
    .await;
    assert!(offline);
}

#[tokio::test]
async fn commands_queued_while_mqtt_was_away_are_sent_when_it_starts() {
    let broker = broker().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let meters = mqtt_gateway(&field).await;
    let command = Uuid::now_v7();
    sqlx::query(&format!(
        "insert into {}.commands (id, meter_id, op, source, expires_at) values ($1, $2, 'read_now', 'test', now() + interval '2 minutes')",
        field.schema.as_str()
    ))
    .bind(command)
    .bind(meters[1])
    .execute(&field.db.pool)
    .await
    .unwrap();
    // The gateway listens first; PowerTab's MQTT side starts afterwards.
    let mut options = MqttOptions::new("gw-1", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (gw, mut events) = AsyncClient::new(options, 100);
    gw.subscribe("pt/gw-1/down/command", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let config = MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-test-2".into(),
        username: String::new(),
        password: String::new(),
    };
    tokio::spawn(client::serve(
        config,
        field.db.pool.clone(),
        writer,
        Dispatch::default(),
    ));
    let sent = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the queued command is sent")
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(
        (sent["id"].as_str(), sent["addr"].as_str()),
        (Some(command.to_string().as_str()), Some("18"))
    );
}
