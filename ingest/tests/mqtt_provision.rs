//! Broker logins of MQTT gateways, against a real Mosquitto with the dynamic-security plugin
//! started for this test: PowerTab provisions each gateway's derived credential and topic ACL,
//! repairs what it finds wrong on the broker, and follows suspensions, rotations and removals.
//! A gateway's readings reach PowerTab only from its own topics.

mod common;

use common::Field;
use powertab_core::auth::Secret;
use powertab_core::field::credentials;
use powertab_ingest::commands::Dispatch;
use powertab_ingest::mqtt::client::{self, MqttConfig};
use powertab_ingest::mqtt::provision;
use powertab_ingest::writer::Writer;
use powertab_testkit::broker::Broker;
use powertab_testkit::wait_until;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const SECRET: &str = "test-gateway-secret-test-gateway-secret";

fn options(broker: &Broker, client_id: &str, username: &str, password: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_credentials(username, password);
    options
}

/// Logs in; `Ok` with the connected client, or the broker's refusal.
async fn login(
    broker: &Broker,
    username: &str,
    password: &str,
) -> Result<(AsyncClient, EventLoop), ConnectReturnCode> {
    let (client, mut events) = AsyncClient::new(options(broker, username, username, password), 100);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, events)),
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(code),
            other => panic!("no answer from the broker: {other:?}"),
        }
    }
}

async fn can_login(broker: &Broker, username: &str, password: &str) -> bool {
    login(broker, username, password).await.is_ok()
}

/// Sends dynamic-security commands as the broker's admin and returns the answer.
async fn admin(broker: &Broker, commands: Value) -> Value {
    let (user, password) = broker.admin.clone().unwrap();
    let id = format!("test-admin-{}", Uuid::now_v7().simple());
    let (client, mut events) = AsyncClient::new(options(broker, &id, &user, &password), 10);
    client
        .subscribe(provision::RESPONSE_TOPIC, QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut sent = false;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await.expect("admin connection") {
                Event::Incoming(Packet::SubAck(_)) if !sent => {
                    let message = json!({ "commands": commands }).to_string();
                    client
                        .publish(provision::CONTROL_TOPIC, QoS::AtLeastOnce, false, message)
                        .await
                        .unwrap();
                    sent = true;
                }
                Event::Incoming(Packet::Publish(p)) => {
                    return serde_json::from_slice::<Value>(&p.payload).unwrap();
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the broker answers its admin");
    let _ = client.disconnect().await;
    answer
}

/// The readings client's least-privilege login in these tests (provisioning creates it).
const INGEST_USER: &str = "powertab-ingest";
const INGEST_PASSWORD: &str = "ingest-password-for-tests";

/// PowerTab's MQTT side as ingest runs it: provisioning logged in as `username` (the broker's
/// admin) and the readings client with its own login. Keep the returned writer task alive.
fn start_ingest(
    broker: &Broker,
    field: &Field,
    username: &str,
    password: &str,
) -> tokio::task::JoinHandle<()> {
    let admin = MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-test".into(),
        username: username.into(),
        password: password.into(),
    };
    let ingest = provision::IngestLogin {
        username: INGEST_USER.into(),
        password: INGEST_PASSWORD.into(),
    };
    let readings = MqttConfig {
        username: INGEST_USER.into(),
        password: INGEST_PASSWORD.into(),
        ..admin.clone()
    };
    tokio::spawn(provision::run(
        admin,
        ingest,
        field.db.pool.clone(),
        Secret::new(SECRET),
    ));
    let (writer, task) = Writer::start(field.db.pool.clone());
    tokio::spawn(client::serve(
        readings,
        field.db.pool.clone(),
        writer,
        Dispatch::default(),
    ));
    task
}

fn password(gateway: Uuid, identity: &str, generation: i32) -> String {
    credentials::derive(&Secret::new(SECRET), gateway, identity, generation)
}

async fn set_directory(field: &Field, identity: &str, set: &str) {
    sqlx::query(&format!(
        "update control.gateway_directory set {set} where identity = $1"
    ))
    .bind(identity)
    .execute(&field.db.pool)
    .await
    .unwrap();
}

async fn readings_of(field: &Field, meter: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "select count(*) from {}.readings where meter_id = $1",
        field.schema.as_str()
    ))
    .bind(meter)
    .fetch_one(&field.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn gateways_get_their_own_login_and_topics_and_lose_them_when_suspended_rotated_or_removed() {
    let broker = Broker::with_dynamic_security().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let (gw1, meters1) = field.add_mqtt_gateway("gw-1", &["17"]).await;
    let (gw2, meters2) = field.add_mqtt_gateway("gw-2", &["17"]).await;

    // The broker as a previous run (or a person) left it: gw-1 with a stale password, a
    // managed client whose gateway is gone, and somebody else's client.
    let answer = admin(
        &broker,
        json!([
            {"command": "createRole", "rolename": "pt-gw-gw-1"},
            {"command": "createClient", "username": "gw-1", "password": "stale-password",
             "textname": "PowerTab MQTT gateway 000000000000", "roles": [{"rolename": "pt-gw-gw-1"}]},
            {"command": "createRole", "rolename": "pt-gw-gone"},
            {"command": "createClient", "username": "gone", "password": "gone-password",
             "textname": "PowerTab MQTT gateway 000000000000", "roles": [{"rolename": "pt-gw-gone"}]},
            {"command": "createClient", "username": "someone", "password": "someone-password"}
        ]),
    )
    .await;
    assert!(provision::real_errors(&answer).is_empty(), "{answer}");

    let (user, pw) = broker.admin.clone().unwrap();
    let _writer = start_ingest(&broker, &field, &user, &pw);

    let pw1 = password(gw1, "gw-1", 1);
    let pw2 = password(gw2, "gw-2", 1);
    let provisioned = wait_until(Duration::from_secs(20), || async {
        can_login(&broker, "gw-1", &pw1).await && can_login(&broker, "gw-2", &pw2).await
    })
    .await;
    assert!(
        provisioned,
        "both gateways log in with their derived credential"
    );
    assert_eq!(
        login(&broker, "gw-1", "stale-password").await.err(),
        Some(ConnectReturnCode::NotAuthorized),
        "the stale password was replaced"
    );
    assert!(
        !can_login(&broker, "gone", "gone-password").await,
        "a managed client without a gateway is deleted"
    );
    assert!(
        can_login(&broker, "someone", "someone-password").await,
        "clients PowerTab does not manage are left alone"
    );

    // gw-1 may subscribe to its own downlink only, and publishes readings that PowerTab takes
    // only from its own uplink: the reading it puts under gw-2's topic never arrives.
    let (gw, mut events) = login(&broker, "gw-1", &pw1).await.unwrap();
    gw.subscribe("pt/gw-2/down/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    gw.subscribe("pt/gw-1/down/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut granted = vec![];
    while granted.len() < 2 {
        if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await.unwrap() {
            granted.push(!matches!(ack.return_codes[0], SubscribeReasonCode::Failure));
        }
    }
    assert_eq!(
        granted,
        [false, true],
        "other gateways' downlinks are refused"
    );
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let event = events.poll().await;
            let failed = event.is_err();
            let _ = events_tx.send(event.map_err(|e| e.to_string()));
            if failed {
                break;
            }
        }
    });
    let reading = |ts: i64, total: i64| {
        json!({"v": 1, "readings": [{"bus": 1, "addr": "17", "ts": ts, "energy_wh": {"total": total}}]})
            .to_string()
    };
    let delivered = wait_until(Duration::from_secs(15), || async {
        let ts = chrono::Utc::now().timestamp_millis();
        for (topic, total) in [("pt/gw-2/up/reading", 222), ("pt/gw-1/up/reading", 111)] {
            gw.publish(topic, QoS::AtLeastOnce, false, reading(ts, total))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        readings_of(&field, meters1[0]).await > 0
    })
    .await;
    assert!(delivered, "gw-1's readings under its own topic are stored");
    assert_eq!(
        readings_of(&field, meters2[0]).await,
        0,
        "what gw-1 published under gw-2's topic never reached PowerTab"
    );

    // Suspending gw-1 disconnects it and refuses it.
    set_directory(&field, "gw-1", "status = 'suspended'").await;
    let kicked = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = events_rx.recv().await {
            if event.is_err() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(kicked, Ok(true), "the connected gateway is disconnected");
    assert_eq!(
        login(&broker, "gw-1", &pw1).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    set_directory(&field, "gw-1", "status = 'enabled'").await;
    assert!(
        wait_until(Duration::from_secs(15), || can_login(&broker, "gw-1", &pw1)).await,
        "enabled again"
    );

    // A rotated credential replaces the old one.
    set_directory(&field, "gw-2", "mqtt_credential_gen = 2").await;
    let pw2_new = password(gw2, "gw-2", 2);
    assert!(
        wait_until(Duration::from_secs(15), || can_login(
            &broker, "gw-2", &pw2_new
        ))
        .await
    );
    assert!(!can_login(&broker, "gw-2", &pw2).await);

    // A removed gateway's login is deleted.
    sqlx::query("delete from control.gateway_directory where identity = 'gw-2'")
        .execute(&field.db.pool)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            !can_login(&broker, "gw-2", &pw2_new).await
        })
        .await
    );
    let listed = admin(&broker, json!([{"command": "listClients"}])).await;
    let clients = listed["responses"][0]["data"]["clients"].to_string();
    assert!(!clients.contains("\"gw-2\""), "{clients}");
}

/// A gateway named like PowerTab's own broker logins (as a tenant could before the names were
/// reserved, or on a broker whose admin has another name) is never provisioned: suspending and
/// removing it leaves the admin and readings logins working.
#[tokio::test]
async fn a_gateway_named_like_the_platforms_broker_logins_cannot_lock_them_out() {
    let broker = Broker::with_dynamic_security().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let (admin_user, admin_pw) = broker.admin.clone().unwrap();
    let (_, meters) = field.add_mqtt_gateway("gw-1", &["17"]).await;
    field.add_mqtt_gateway(&admin_user, &["18"]).await;
    field.add_mqtt_gateway(INGEST_USER, &["19"]).await;
    let _writer = start_ingest(&broker, &field, &admin_user, &admin_pw);
    let (gw1, _) = sqlx::query_as::<_, (Uuid, i32)>(
        "select gateway_id, mqtt_credential_gen from control.gateway_directory where identity = 'gw-1'",
    )
    .fetch_one(&field.db.pool)
    .await
    .unwrap();
    let pw1 = password(gw1, "gw-1", 1);
    assert!(
        wait_until(Duration::from_secs(20), || can_login(&broker, "gw-1", &pw1)).await,
        "the ordinary gateway is provisioned"
    );
    assert!(
        can_login(&broker, INGEST_USER, INGEST_PASSWORD).await,
        "the readings login was made"
    );
    for step in ["status = 'suspended'", "mqtt_credential_gen = 2"] {
        for identity in [admin_user.as_str(), INGEST_USER] {
            set_directory(&field, identity, step).await;
        }
        // gw-1's suspension is the sign that provisioning has acted on the directory.
        set_directory(&field, "gw-1", "status = 'suspended'").await;
        assert!(
            wait_until(Duration::from_secs(15), || async {
                !can_login(&broker, "gw-1", &pw1).await
            })
            .await
        );
        set_directory(&field, "gw-1", "status = 'enabled'").await;
        assert!(wait_until(Duration::from_secs(15), || can_login(&broker, "gw-1", &pw1)).await);
        assert!(
            can_login(&broker, &admin_user, &admin_pw).await,
            "admin still logs in after {step}"
        );
        assert!(
            can_login(&broker, INGEST_USER, INGEST_PASSWORD).await,
            "readings login after {step}"
        );
    }
    sqlx::query("delete from control.gateway_directory where identity = any($1)")
        .bind(vec![admin_user.clone(), INGEST_USER.to_owned()])
        .execute(&field.db.pool)
        .await
        .unwrap();
    set_directory(&field, "gw-1", "status = 'suspended'").await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            !can_login(&broker, "gw-1", &pw1).await
        })
        .await
    );
    assert!(
        can_login(&broker, &admin_user, &admin_pw).await,
        "admin survives the removal"
    );
    assert!(can_login(&broker, INGEST_USER, INGEST_PASSWORD).await);
    // The readings login may read gateways' uplinks but not administer the broker.
    let (ingest, mut events) = login(&broker, INGEST_USER, INGEST_PASSWORD).await.unwrap();
    ingest
        .subscribe(provision::RESPONSE_TOPIC, QoS::AtLeastOnce)
        .await
        .unwrap();
    let refused = loop {
        if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await.unwrap() {
            break matches!(ack.return_codes[0], SubscribeReasonCode::Failure);
        }
    };
    assert!(refused, "the readings login has no dynamic-security rights");
    let _ = meters;
}

#[tokio::test]
async fn a_broker_without_dynamic_security_is_left_alone_and_gateways_still_report() {
    // The open broker never answers the plugin's topic; provisioning waits and logs, and the
    // readings side works as before.
    let broker = Broker::start().await;
    let field = Field::new("acme", "dtu-unused", b"UNUSED", &[]).await;
    let (_, meters) = field.add_mqtt_gateway("gw-1", &["17"]).await;
    let _writer = start_ingest(&broker, &field, "powertab", "anything");
    let (gw, mut events) = AsyncClient::new(options(&broker, "gw-1", "gw-1", "whatever"), 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let delivered = wait_until(Duration::from_secs(15), || async {
        let ts = chrono::Utc::now().timestamp_millis();
        let message = json!({"v": 1, "readings": [{"bus": 1, "addr": "17", "ts": ts, "energy_wh": {"total": 5}}]});
        gw.publish("pt/gw-1/up/reading", QoS::AtLeastOnce, false, message.to_string())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        readings_of(&field, meters[0]).await > 0
    })
    .await;
    assert!(delivered);
}
