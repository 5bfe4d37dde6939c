//! MQTT gateways against a real Mosquitto started for this test on a free port: readings
//! validated and matched to meters, status as bus sessions, a read-now published as a command
//! and settled by the first acknowledgement.

mod common;

use common::Field;
use powertab_ingest::commands::Dispatch;
use powertab_ingest::mqtt::client::{self, MqttConfig};
use powertab_ingest::writer::Writer;
use powertab_testkit::broker::Broker;
use powertab_testkit::wait_until;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use uuid::Uuid;

async fn mqtt_gateway(field: &Field) -> Vec<Uuid> {
    field.add_mqtt_gateway("gw-1", &["17", "18"]).await.1
}

/// PowerTab's MQTT login on an open test broker.
fn anonymous(broker: &Broker, client_id: &str) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: client_id.into(),
        username: String::new(),
        password: String::new(),
    }
}

async fn latest_energy_wh(field: &Field, meter: Uuid) -> i64 {
    scalar_i64(
        field,
        &format!("select energy_wh from {{s}}.meter_latest where meter_id = '{meter}'"),
    )
    .await
}

async fn scalar_i64(field: &Field, sql: &str) -> i64 {
    sqlx::query_scalar(&sql.replace("{s}", field.schema.as_str()))
        .fetch_one(&field.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_mqtt_gateway_publishes_readings_status_and_acks() {
    let broker = Broker::start().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let meters = mqtt_gateway(&field).await;
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let dispatch = Dispatch::default();
    let config = anonymous(&broker, "powertab-test");
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
    let latest = latest_energy_wh(&field, meters[0]).await;
    assert_eq!(latest, 1_234_560);

    // A read-now goes out as a command; the first acknowledgement counts, repeats do not.
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
    // The ack alone says the gateway did it, not that the reading is here.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            state(&field).await == "acknowledged"
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        state(&field).await,
        "acknowledged",
        "the repeated (failed) acknowledgement changes nothing"
    );
    // The fresh reading the read-now brought, once stored, verifies it.
    let fresh_ts = chrono::Utc::now().timestamp_millis() + 50;
    let fresh = format!(
        r#"{{"v": 1, "readings": [{{"bus": 1, "addr": "17", "ts": {fresh_ts}, "energy_wh": {{"total": 1234570}}}}]}}"#
    );
    gw.publish(
        "pt/gw-1/up/reading",
        QoS::AtLeastOnce,
        false,
        fresh.into_bytes(),
    )
    .await
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            state(&field).await == "verified"
        })
        .await,
        "verified once its reading is stored"
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
    let broker = Broker::start().await;
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
    let config = anonymous(&broker, "powertab-test-2");
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

#[tokio::test]
async fn readings_sent_while_ingest_was_away_arrive_when_it_is_back() {
    let broker = Broker::start().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let meters = mqtt_gateway(&field).await;
    let config = anonymous(&broker, "powertab-ingest");
    let (writer, _task) = Writer::start(field.db.pool.clone());
    let start = || {
        tokio::spawn(client::serve(
            config.clone(),
            field.db.pool.clone(),
            writer.clone(),
            Dispatch::default(),
        ))
    };
    let mut options = MqttOptions::new("gw-1", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (gw, mut events) = AsyncClient::new(options, 100);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let reading = |total: i64| {
        let ts = chrono::Utc::now().timestamp_millis();
        format!(
            r#"{{"v": 1, "readings": [{{"bus": 1, "addr": "17", "ts": {ts}, "energy_wh": {{"total": {total}}}}}]}}"#
        )
    };
    let count = || async { scalar_i64(&field, "select count(*) from {s}.readings").await };
    // Ingest is up and subscribed once a reading gets through.
    let ingest = start();
    let up = wait_until(Duration::from_secs(15), || async {
        gw.publish("pt/gw-1/up/reading", QoS::AtLeastOnce, false, reading(100))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        count().await > 0
    })
    .await;
    assert!(up);
    // The loop above may have left readings on their way (the writer flushes every 500 ms):
    // wait until the count holds still for longer than a flush.
    let mut before = count().await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = count().await;
        if now == before {
            break;
        }
        before = now;
    }
    // Ingest goes away (its connection drops with the task); the gateway goes on publishing.
    ingest.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for total in [200, 300] {
        gw.publish(
            "pt/gw-1/up/reading",
            QoS::AtLeastOnce,
            false,
            reading(total),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count().await,
        before,
        "nothing is stored while ingest is away"
    );
    let _back = start();
    let caught_up = wait_until(Duration::from_secs(15), || async {
        count().await == before + 2
    })
    .await;
    assert!(caught_up, "the broker kept them for ingest's session");
    let latest = latest_energy_wh(&field, meters[0]).await;
    assert_eq!(latest, 300);
}

/// A gateway that disconnects cleanly sends no last will: any message marks it heard from, and
/// silence beyond the company's `offline_gateway_s` marks it offline and raises the alarm.
#[tokio::test]
async fn a_silent_mqtt_gateway_goes_offline_without_a_last_will() {
    let broker = Broker::start().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    mqtt_gateway(&field).await;
    let (writer, _task) = Writer::start(field.db.pool.clone());
    tokio::spawn(client::serve(
        anonymous(&broker, "powertab-test"),
        field.db.pool.clone(),
        writer,
        Dispatch::default(),
    ));
    let mut options = MqttOptions::new("gw-1", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (gw, mut events) = AsyncClient::new(options, 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let reading = |total: i64| {
        let ts = chrono::Utc::now().timestamp_millis();
        format!(
            r#"{{"v": 1, "readings": [{{"bus": 1, "addr": "17", "ts": {ts}, "energy_wh": {{"total": {total}}}}}]}}"#
        )
    };
    let online =
        || async { scalar_i64(&field, "select count(*) from {s}.bus_sessions where online").await };
    // A reading alone (no status message) says the gateway is there.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            gw.publish("pt/gw-1/up/reading", QoS::AtLeastOnce, false, reading(100))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            online().await == 1
        })
        .await
    );
    gw.disconnect().await.unwrap();
    // Ten minutes of silence (the default limit is five).
    sqlx::query(&format!(
        "update {}.bus_sessions set last_seen_at = now() - interval '10 minutes'",
        field.schema.as_str()
    ))
    .execute(&field.db.pool)
    .await
    .unwrap();
    let report = powertab_ingest::alarms::check(&field.db.pool, &field.schema)
        .await
        .unwrap();
    assert_eq!(online().await, 0, "silence marks the gateway offline");
    assert_eq!(report.raised, 1);
    let alarms = scalar_i64(
        &field,
        "select count(*) from {s}.field_alarms where kind = 'gateway_offline' and cleared_at is null",
    )
    .await;
    assert_eq!(
        alarms, 1,
        "offline since it was last heard, ten minutes ago"
    );
}

/// A secure purchase over MQTT (MQTT-GATEWAY.md): the command message carries the frame the
/// server stored, base64, byte for byte; the meter behind the gateway (loaded with the exported
/// key) accepts it and its acknowledgement comes back in `secure_ack`, which ingest keeps with
/// the command for the server to check — a malformed one is refused and kept nowhere.
#[tokio::test]
async fn a_secure_purchase_goes_out_with_its_stored_frame_and_its_acknowledgement_is_kept() {
    use base64::Engine;
    use powertab_core::secure::commands::{self as secure_commands, Counters};
    use powertab_core::secure::frame::SecureOp;
    use powertab_ingest::sim::secure_meter::SecureMeter;
    let b64 = base64::engine::general_purpose::STANDARD;
    let broker = Broker::start().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let meters = mqtt_gateway(&field).await;
    let s = field.schema.as_str();
    sqlx::query(&format!(
        "update {s}.meters set meter_number = '202611250017', prepayment_mode = 'meter' where id = $1"
    ))
    .bind(meters[0])
    .execute(&field.db.pool)
    .await
    .unwrap();
    let mut conn = field.db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, field.company_id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let mut admin =
        powertab_core::auth::Principal::system("test", powertab_core::kernel::clock::system())
            .in_company(scope);
    admin.role = powertab_core::tenancy::roles::Role::CompanyAdmin;
    let keyring = powertab_core::kernel::secrets::Keyring::parse(
        &powertab_core::kernel::secrets::Keyring::new_key_entry("k1"),
        None,
    )
    .unwrap();
    let mut tx = powertab_core::db::begin_in(&field.db.pool, &field.schema)
        .await
        .unwrap();
    let counters = Counters {
        purchase_count: 0,
        control_count: 0,
        remaining_fen: 0,
        price_units: 10_000,
    };
    secure_commands::commission(
        &mut tx,
        &keyring,
        meters[0],
        counters,
        chrono::Utc::now(),
        "t",
    )
    .await
    .unwrap();
    let purchase = secure_commands::enqueue(
        &mut tx,
        &keyring,
        &admin,
        meters[0],
        SecureOp::Purchase,
        8_800,
        "operator:test",
    )
    .await
    .unwrap();
    let (_, km_hex) =
        powertab_core::secure::keys::export_meter_key(&mut tx, &keyring, &admin, meters[0])
            .await
            .unwrap();
    let (stored, _) = secure_commands::stored_frame(&mut tx, purchase.id)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let km: [u8; 16] = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&km_hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    let mut meter = SecureMeter::new("202611250017", &km).unwrap();

    // The gateway: subscribed, answering by hand.
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
    tokio::spawn(client::serve(
        anonymous(&broker, "powertab-secure"),
        field.db.pool.clone(),
        writer,
        Dispatch::default(),
    ));
    let sent = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the purchase is sent")
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(sent["op"], "purchase");
    let frame = b64
        .decode(sent["secure"].as_str().expect("a secure frame"))
        .unwrap();
    assert_eq!(frame, stored, "the stored bytes, unchanged");
    // The gateway lets this message expire (the meter never saw it): it ends that message only;
    // the purchase goes again as a new message — a new id, the same bytes. A repeat of the
    // expired message's acknowledgement is ignored (no third message).
    let first_id = sent["id"].as_str().unwrap().to_owned();
    assert_ne!(first_id, purchase.id.to_string(), "a message id of its own");
    // Its acknowledgement carries a malformed `secure_ack`: refused, kept nowhere.
    for _ in 0..2 {
        let expired = serde_json::json!({"v": 1, "id": &first_id, "status": "expired",
            "secure_ack": b64.encode([1, 2, 3]), "detail": ""});
        gw.publish(
            "pt/gw-1/up/ack",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&expired).unwrap(),
        )
        .await
        .unwrap();
    }
    let sent = tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("the purchase is sent again")
        .unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent).unwrap();
    let second_id = sent["id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id, "a new message");
    assert_eq!(
        b64.decode(sent["secure"].as_str().unwrap()).unwrap(),
        stored,
        "the same secure bytes"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(7), rx.recv())
            .await
            .is_err(),
        "the repeated acknowledgement sent nothing more"
    );
    let messages: Vec<(Option<String>,)> = sqlx::query_as(&format!(
        "select outcome from {s}.command_messages where command_id = $1 order by sent_at"
    ))
    .bind(purchase.id)
    .fetch_all(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(messages, [(Some("expired".to_owned()),), (None,)]);
    let answer = meter.handle(&frame);
    assert_eq!(
        (answer[16], meter.remaining_fen),
        (0, 8_800),
        "accepted once"
    );
    let kept_before: Option<Vec<u8>> = sqlx::query_scalar(&format!(
        "select secure_ack from {s}.commands where id = $1"
    ))
    .bind(purchase.id)
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert_eq!(
        kept_before, None,
        "the malformed acknowledgement is kept nowhere"
    );
    // The meter's own acknowledgement, on the message that reached it.
    for secure_ack in [b64.encode(&answer)] {
        let ack = serde_json::json!({"v": 1, "id": &second_id, "status": "done",
            "secure_ack": secure_ack, "detail": ""});
        gw.publish(
            "pt/gw-1/up/ack",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&ack).unwrap(),
        )
        .await
        .unwrap();
    }
    let kept = wait_until(Duration::from_secs(10), || async {
        let stored: Option<Vec<u8>> = sqlx::query_scalar(&format!(
            "select secure_ack from {s}.commands where id = $1"
        ))
        .bind(purchase.id)
        .fetch_one(&field.db.pool)
        .await
        .unwrap();
        stored.as_deref() == Some(&answer[..])
    })
    .await;
    assert!(kept, "the meter's acknowledgement is kept with the command");
    // The gateway's `done` does not settle a purchase: the server's settle worker does, from
    // the acknowledgement and the counters.
    let state: String =
        sqlx::query_scalar(&format!("select state from {s}.commands where id = $1"))
            .bind(purchase.id)
            .fetch_one(&field.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "sent");
    // A reading with the four counter fields is the meter's read-back.
    let reading = serde_json::json!({"v": 1, "readings": [{"bus": 1, "addr": "17",
        "ts": chrono::Utc::now().timestamp_millis(), "energy_wh": {"total": 1_000_000},
        "remaining_fen": meter.remaining_fen, "purchase_count": meter.purchase_count,
        "control_count": meter.control_count, "price_units": meter.price_units}]});
    gw.publish(
        "pt/gw-1/up/reading",
        QoS::AtLeastOnce,
        false,
        serde_json::to_vec(&reading).unwrap(),
    )
    .await
    .unwrap();
    let read_back = wait_until(Duration::from_secs(10), || async {
        let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(&format!(
            "select purchase_count, control_count, remaining_fen, price_units
             from {s}.meter_secure_readback where meter_id = $1"
        ))
        .bind(meters[0])
        .fetch_optional(&field.db.pool)
        .await
        .unwrap();
        row == Some((1, 0, 8_800, i64::from(meter.price_units)))
    })
    .await;
    let readings: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {s}.readings where meter_id = $1"
    ))
    .bind(meters[0])
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    assert!(
        read_back,
        "the counters are stored for the settle worker ({readings} readings)"
    );
}
