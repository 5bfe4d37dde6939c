//! Keeps the broker's logins in step with the MQTT gateways (MQTT-GATEWAY.md: Connection),
//! through Mosquitto's dynamic-security plugin: every MQTT gateway in `control.gateway_directory`
//! is a broker client named by its identity, with the password derived by
//! `core::gateway_credential` and a role `pt-gw-{identity}` that may publish only under
//! `pt/{gw}/up/#` and subscribe only to `pt/{gw}/down/#`. Suspended gateways (or gateways of a
//! suspended company) are disabled, which also disconnects them; removed ones are deleted; a
//! rotated credential replaces the password, which disconnects the old login.
//!
//! The broker is the state: after every (re)connect the plugin's client and role lists are read
//! and everything PowerTab manages (clients with their `pt-gw-` role) is set right, so a broker
//! that lost its configuration is provisioned again. Only what differs is sent: Mosquitto 2.0's
//! plugin saves its whole configuration file after every change, so a fleet's full sync costs
//! time that grows with the square of the gateways changed (docs/perf.md). Between connects the directory is read every
//! [`CHECK`] and only what changed is sent. PowerTab's own login gets the role
//! `powertab-platform` (all gateways' topics), so the ingest client can read and command them.
//! A broker without the plugin never answers: that is logged, and asked again later.

use super::client::MqttConfig;
use powertab_core::auth::Secret;
use powertab_core::gateway_credential;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

/// How often the gateway directory is compared with what was provisioned.
pub const CHECK: Duration = Duration::from_secs(3);
/// How long the broker has to answer a command batch before it counts as not answering.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How long to wait before asking a broker that did not answer again.
pub const RETRY: Duration = Duration::from_secs(60);
/// Commands per message: the plugin takes a list, and one message per gateway would be slow
/// when a whole fleet is provisioned again.
const BATCH: usize = 100;

pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The role PowerTab's own login gets.
pub const PLATFORM_ROLE: &str = "powertab-platform";
const ROLE_PREFIX: &str = "pt-gw-";

/// A gateway as the broker should know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub gateway_id: Uuid,
    pub generation: i32,
    pub enabled: bool,
}

/// Identity → what the broker should have.
pub type WantedSet = BTreeMap<String, Wanted>;

/// A managed client as the broker has it: `tag` names the password it was given (see
/// [`password_tag`]), kept in the client's text name, so a broker that was given another
/// password (older generation, another platform secret, a restored backup) is told the right one
/// while an unchanged one is left alone — setting a password disconnects the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBroker {
    pub tag: String,
    pub enabled: bool,
}

/// Identity → what the broker has.
pub type BrokerState = BTreeMap<String, OnBroker>;

const TEXT_NAME: &str = "PowerTab MQTT gateway";

pub fn role_name(identity: &str) -> String {
    format!("{ROLE_PREFIX}{identity}")
}

/// 48 bits of the password's SHA-256: tells passwords apart without revealing them.
pub fn password_tag(password: &str) -> String {
    Sha256::digest(password.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text_name(tag: &str) -> String {
    format!("{TEXT_NAME} {tag}")
}

fn acl(acltype: &str, topic: String) -> Value {
    json!({"acltype": acltype, "topic": topic, "priority": 0, "allow": true})
}

/// The platform role's ACL: every gateway's uplink to read, every downlink to write.
fn platform_acls() -> Value {
    json!([
        acl("subscribePattern", "pt/+/up/#".into()),
        acl("publishClientReceive", "pt/+/up/#".into()),
        acl("publishClientSend", "pt/+/down/#".into()),
    ])
}

/// Gives PowerTab's own login the platform role. Adding a role disconnects that login's
/// connections, so this is sent only when the broker's list shows the role missing.
pub fn platform_role_commands(own_username: &str) -> Vec<Value> {
    vec![
        json!({"command": "createRole", "rolename": PLATFORM_ROLE, "textname": "PowerTab ingest", "acls": platform_acls()}),
        json!({"command": "addClientRole", "username": own_username, "rolename": PLATFORM_ROLE}),
    ]
}

fn password(secret: &Secret, identity: &str, wanted: &Wanted) -> String {
    gateway_credential::derive(secret, wanted.gateway_id, identity, wanted.generation)
}

/// A gateway's ACL: publish under its own uplink, subscribe to and receive its own downlink.
fn gateway_acls(identity: &str) -> Value {
    json!([
        acl("publishClientSend", format!("pt/{identity}/up/#")),
        acl("subscribePattern", format!("pt/{identity}/down/#")),
        acl("publishClientReceive", format!("pt/{identity}/down/#")),
    ])
}

/// Sets a role's ACL whatever it was (replacing a role's ACL disconnects nobody).
fn set_role_acls(role: &str, acls: Value) -> Value {
    json!({"command": "modifyRole", "rolename": role, "acls": acls})
}

/// An ACL list as a set (the broker keeps its own order).
pub type AclSet = BTreeSet<(String, String, bool)>;

/// Roles on the broker by name, with their ACLs.
pub type RoleState = BTreeMap<String, AclSet>;

pub fn acl_set(acls: &Value) -> AclSet {
    acls.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["acltype"].as_str().unwrap_or("").to_owned(),
                a["topic"].as_str().unwrap_or("").to_owned(),
                a["allow"] == true,
            )
        })
        .collect()
}

/// From a `listRoles` answer (verbose): every role with its ACL.
pub fn read_roles(list_answer: &Value) -> RoleState {
    let roles = list_answer["data"]["roles"].as_array();
    roles
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["rolename"].as_str()?.to_owned(), acl_set(&r["acls"]))))
        .collect()
}

/// The command that makes role `role` have `acls`, if the broker's `roles` say it is needed:
/// create it when missing, rewrite it when different. Every change makes the plugin save its
/// whole configuration, so nothing is sent for a role that is right.
fn role_command(roles: &RoleState, role: &str, acls: Value) -> Option<Value> {
    match roles.get(role) {
        None => Some(json!({"command": "createRole", "rolename": role, "acls": acls})),
        Some(have) if *have != acl_set(&acls) => Some(set_role_acls(role, acls)),
        Some(_) => None,
    }
}

/// The commands that take the broker from `have` to `wanted`, and what it has after them.
/// `roles` is the broker's role list after a (re)connect: then a gateway's role is created or
/// rewritten only where it is missing or wrong. Without it (changes between reconnects) a new
/// gateway's role is created, and one left over with that name is set right at the next full
/// sync.
pub fn changes(
    secret: &Secret,
    have: &BrokerState,
    wanted: &WantedSet,
    roles: Option<&RoleState>,
) -> (Vec<Value>, BrokerState) {
    let mut commands = Vec::new();
    let mut after = BrokerState::new();
    for (identity, want) in wanted {
        let password = password(secret, identity, want);
        let tag = password_tag(&password);
        let role = role_name(identity);
        match roles {
            Some(roles) => commands.extend(role_command(roles, &role, gateway_acls(identity))),
            None if !have.contains_key(identity) => commands.push(
                json!({"command": "createRole", "rolename": role, "acls": gateway_acls(identity)}),
            ),
            None => {}
        }
        match have.get(identity) {
            None => {
                commands.push(json!({"command": "createClient", "username": identity, "clientid": identity,
                    "password": password, "textname": text_name(&tag), "roles": [{"rolename": role}]}));
                if !want.enabled {
                    commands.push(json!({"command": "disableClient", "username": identity}));
                }
            }
            Some(on) => {
                if on.tag != tag {
                    // Replacing the password disconnects whoever logged in with the old one.
                    commands.push(json!({"command": "setClientPassword", "username": identity, "password": password}));
                    commands.push(json!({"command": "modifyClient", "username": identity, "textname": text_name(&tag)}));
                }
                if on.enabled != want.enabled {
                    let command = if want.enabled {
                        "enableClient"
                    } else {
                        "disableClient"
                    };
                    commands.push(json!({"command": command, "username": identity}));
                }
            }
        }
        after.insert(
            identity.clone(),
            OnBroker {
                tag,
                enabled: want.enabled,
            },
        );
    }
    for identity in have.keys().filter(|c| !wanted.contains_key(*c)) {
        commands.push(json!({"command": "deleteClient", "username": identity}));
        commands.push(json!({"command": "deleteRole", "rolename": role_name(identity)}));
    }
    (commands, after)
}

/// From a `listClients` answer: the gateways PowerTab manages on the broker (clients that carry
/// their own `pt-gw-` role; anything else is somebody else's and left alone), and whether
/// `own_username` has the platform role.
pub fn read_list(list_answer: &Value, own_username: &str) -> (BrokerState, bool) {
    let mut state = BrokerState::new();
    let mut platform = false;
    let clients = list_answer["data"]["clients"].as_array();
    for c in clients.into_iter().flatten() {
        let Some(username) = c["username"].as_str() else {
            continue;
        };
        let roles: Vec<&str> = c["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["rolename"].as_str())
            .collect();
        if username == own_username {
            platform = roles.contains(&PLATFORM_ROLE);
        }
        if !roles.contains(&role_name(username).as_str()) {
            continue;
        }
        let tag = c["textname"]
            .as_str()
            .and_then(|t| t.strip_prefix(TEXT_NAME))
            .unwrap_or("")
            .trim()
            .to_owned();
        let enabled = c["disabled"] != true;
        state.insert(username.to_owned(), OnBroker { tag, enabled });
    }
    (state, platform)
}

/// Errors in an answer that mean something is wrong (not "it was already so").
pub fn real_errors(answer: &Value) -> Vec<String> {
    let responses = answer["responses"].as_array();
    responses
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let error = r["error"].as_str()?;
            let command = r["command"].as_str().unwrap_or("");
            let benign = matches!(
                (command, error),
                ("createRole", "Role already exists")
                    | ("deleteClient", "Client not found")
                    | ("deleteRole", "Role not found")
            ) || (command == "addClientRole" && error.contains("already"));
            (!benign).then(|| format!("{}: {error}", r["command"].as_str().unwrap_or("?")))
        })
        .collect()
}

/// The MQTT gateways as the broker should know them. A gateway of a suspended company is
/// disabled like a suspended gateway.
pub async fn wanted(pool: &PgPool) -> anyhow::Result<WantedSet> {
    let rows = sqlx::query(
        "select d.identity, d.gateway_id, d.mqtt_credential_gen, d.status = 'enabled' and c.status = 'active' as enabled
         from control.gateway_directory d join control.company c on c.id = d.company_id
         where d.kind = 'mqtt'",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("identity")?,
                Wanted {
                    gateway_id: r.try_get("gateway_id")?,
                    generation: r.try_get("mqtt_credential_gen")?,
                    enabled: r.try_get("enabled")?,
                },
            ))
        })
        .collect()
}

/// Where the provisioner is with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the (re)connect.
    Disconnected,
    /// `listClients` sent at this time; its answer starts a full sync.
    Listing(Instant),
    /// The broker has `have`; changes in the directory are sent as they come.
    InStep,
    /// Ask for the list again at this time (the broker did not answer, or refused something).
    ListAt(Instant),
}

/// Runs until the task is dropped. `config` is PowerTab's own login at the broker, which must
/// be allowed to use the dynamic-security topic.
pub async fn run(config: MqttConfig, pool: PgPool, secret: Secret) {
    let mut options = MqttOptions::new(
        format!("{}-provision", config.client_id),
        config.host.clone(),
        config.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    // A full client list of a large fleet is one message.
    options.set_max_packet_size(64 << 20, 64 << 20);
    options.set_credentials(config.username.clone(), config.password.clone());
    let (client, mut events) = AsyncClient::new(options, 100);
    // Commands go out through their own task, in order: a full sync of a large fleet is more
    // messages than the client's queue holds, and this loop must keep polling meanwhile.
    let (outbox, queued) = mpsc::unbounded_channel::<Vec<Value>>();
    tokio::spawn(publish_all(client.clone(), queued));
    let send = |commands: Vec<Value>| {
        let _ = outbox.send(commands);
    };
    let mut phase = Phase::Disconnected;
    let mut have = BrokerState::new();
    let mut last_wanted = WantedSet::new();
    let mut next_check = Instant::now();
    let list = || {
        vec![
            json!({"command": "listClients", "verbose": true}),
            json!({"command": "listRoles", "verbose": true}),
        ]
    };
    loop {
        let wait = next_check.saturating_duration_since(Instant::now());
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("MQTT provisioning connected");
                    let _ = client.subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce).await;
                    send(list());
                    phase = Phase::Listing(Instant::now());
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE_TOPIC => {
                    let Ok(answer) = serde_json::from_slice::<Value>(&p.payload) else { continue };
                    let answer_to = |command: &str| answer["responses"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r["command"] == command));
                    if let (Some(clients), Some(roles), Phase::Listing(_)) =
                        (answer_to("listClients"), answer_to("listRoles"), phase)
                    {
                        let roles = read_roles(roles);
                        let (next, commands) = full_sync(&pool, &secret, &config.username, clients, &roles, &mut have, &mut last_wanted).await;
                        send(commands);
                        phase = next;
                    }
                    let errors = real_errors(&answer);
                    for error in &errors {
                        metrics::counter!("ingest_mqtt_provision_errors_total").increment(1);
                        tracing::warn!(%error, "the broker refused a provisioning command");
                    }
                    if !errors.is_empty() && phase == Phase::InStep {
                        // The broker is not as we think: read its list again soon.
                        phase = Phase::ListAt(Instant::now() + Duration::from_secs(30));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if phase != Phase::Disconnected {
                        tracing::warn!(error = %e, "MQTT provisioning connection lost; reconnecting");
                    }
                    phase = Phase::Disconnected;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            },
            _ = tokio::time::sleep(wait) => {
                next_check = Instant::now() + CHECK;
                match phase {
                    Phase::InStep => match wanted(&pool).await {
                        Ok(want) if want != last_wanted => {
                            let (commands, after) = changes(&secret, &have, &want, None);
                            if !commands.is_empty() {
                                tracing::info!(commands = commands.len(), "MQTT gateways changed; provisioning");
                                send(commands);
                            }
                            (have, last_wanted) = (after, want);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reading the MQTT gateways failed"),
                    },
                    Phase::Listing(since) if since.elapsed() >= ANSWER_WITHIN => {
                        tracing::warn!("the MQTT broker does not answer dynamic-security commands; gateway logins are not provisioned (asking again in a minute)");
                        metrics::counter!("ingest_mqtt_provision_silent_total").increment(1);
                        phase = Phase::ListAt(Instant::now() + RETRY);
                    }
                    Phase::ListAt(at) if Instant::now() >= at => {
                        send(list());
                        phase = Phase::Listing(Instant::now());
                    }
                    _ => {}
                }
            }
        }
    }
}

/// What sets the broker right, from its client list; and the next phase.
async fn full_sync(
    pool: &PgPool,
    secret: &Secret,
    own_username: &str,
    listed: &Value,
    roles: &RoleState,
    have: &mut BrokerState,
    last_wanted: &mut WantedSet,
) -> (Phase, Vec<Value>) {
    let (on_broker, platform) = read_list(listed, own_username);
    if !platform {
        // This disconnects our own logins once, and the list is read again after the
        // reconnect; if it cannot be done (no such client), the refusal is logged and we ask
        // again later.
        tracing::info!(
            role = PLATFORM_ROLE,
            user = own_username,
            "giving PowerTab's broker login its role"
        );
        return (
            Phase::ListAt(Instant::now() + RETRY),
            platform_role_commands(own_username),
        );
    }
    match wanted(pool).await {
        Ok(want) => {
            let (mut commands, after) = changes(secret, &on_broker, &want, Some(roles));
            commands.splice(0..0, role_command(roles, PLATFORM_ROLE, platform_acls()));
            tracing::info!(
                gateways = want.len(),
                commands = commands.len(),
                "MQTT gateway logins provisioned at the broker"
            );
            (*have, *last_wanted) = (after, want);
            (Phase::InStep, commands)
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the MQTT gateways failed");
            (Phase::ListAt(Instant::now() + CHECK), Vec::new())
        }
    }
}

/// Publishes queued command lists in order, [`BATCH`] commands a message.
async fn publish_all(client: AsyncClient, mut queued: mpsc::UnboundedReceiver<Vec<Value>>) {
    while let Some(commands) = queued.recv().await {
        for batch in commands.chunks(BATCH) {
            let message = json!({ "commands": batch }).to_string();
            if let Err(e) = client
                .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, message)
                .await
            {
                tracing::warn!(error = %e, "sending provisioning commands failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("a-platform-gateway-secret-of-32-bytes!")
    }

    fn want(generation: i32, enabled: bool) -> Wanted {
        Wanted {
            gateway_id: Uuid::from_u128(1),
            generation,
            enabled,
        }
    }

    /// What the broker has after `want` was provisioned.
    fn on(identity: &str, w: &Wanted) -> OnBroker {
        OnBroker {
            tag: password_tag(&password(&secret(), identity, w)),
            enabled: w.enabled,
        }
    }

    fn names(commands: &[Value]) -> Vec<String> {
        commands
            .iter()
            .map(|c| {
                let who = c["username"].as_str().or(c["rolename"].as_str()).unwrap();
                format!("{} {who}", c["command"].as_str().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_new_gateway_gets_a_role_limited_to_its_own_topics_and_its_derived_password() {
        let wanted = WantedSet::from([("gw-1".to_owned(), want(1, true))]);
        let (commands, after) = changes(&secret(), &BrokerState::new(), &wanted, None);
        assert_eq!(
            names(&commands),
            ["createRole pt-gw-gw-1", "createClient gw-1"]
        );
        let topics: Vec<&str> = commands[0]["acls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["topic"].as_str().unwrap())
            .collect();
        assert_eq!(topics, ["pt/gw-1/up/#", "pt/gw-1/down/#", "pt/gw-1/down/#"]);
        let password = gateway_credential::derive(&secret(), Uuid::from_u128(1), "gw-1", 1);
        assert_eq!(commands[1]["password"], password.as_str());
        assert_eq!(after["gw-1"], on("gw-1", &want(1, true)));
        // The text name carries the tag, and reading it back gives the same state.
        let listed = json!({"data": {"clients": [{"username": "gw-1",
            "textname": commands[1]["textname"], "roles": [{"rolename": "pt-gw-gw-1"}]}]}});
        assert_eq!(read_list(&listed, "admin").0, after);
    }

    #[test]
    fn only_what_differs_is_sent() {
        let have = BrokerState::from([
            ("a".to_owned(), on("a", &want(1, true))),
            ("b".to_owned(), on("b", &want(1, true))),
            ("c".to_owned(), on("c", &want(1, true))),
            ("d".to_owned(), on("d", &want(1, true))),
            // Provisioned with another secret or by hand: the tag does not match.
            (
                "f".to_owned(),
                OnBroker {
                    tag: "0123456789ab".into(),
                    enabled: false,
                },
            ),
        ]);
        let wanted = WantedSet::from([
            ("a".to_owned(), want(1, true)),
            ("b".to_owned(), want(2, true)),
            ("c".to_owned(), want(1, false)),
            ("e".to_owned(), want(1, false)),
            ("f".to_owned(), want(1, true)),
        ]);
        let (commands, after) = changes(&secret(), &have, &wanted, None);
        assert_eq!(
            names(&commands),
            [
                "setClientPassword b",
                "modifyClient b",
                "disableClient c",
                "createRole pt-gw-e",
                "createClient e",
                "disableClient e",
                "setClientPassword f",
                "modifyClient f",
                "enableClient f",
                "deleteClient d",
                "deleteRole pt-gw-d",
            ]
        );
        // Applying it again changes nothing.
        assert!(changes(&secret(), &after, &wanted, None).0.is_empty());
        // After a reconnect the broker's roles decide: only a missing or wrong one is sent
        // (every change makes the plugin save its whole configuration).
        let mut roles: RoleState = ["a", "b", "c", "e"]
            .iter()
            .map(|i| (role_name(i), acl_set(&gateway_acls(i))))
            .collect();
        roles.insert(role_name("e"), acl_set(&gateway_acls("someone-else")));
        let repaired = names(&changes(&secret(), &after, &wanted, Some(&roles)).0);
        assert_eq!(repaired, ["modifyRole pt-gw-e", "createRole pt-gw-f"]);
    }

    #[test]
    fn only_clients_with_their_own_gateway_role_are_ours() {
        let answer = json!({"command": "listClients", "data": {"clients": [
            {"username": "admin", "roles": [{"rolename": "admin"}, {"rolename": PLATFORM_ROLE}]},
            {"username": "gw-1", "textname": "PowerTab MQTT gateway abc", "disabled": true,
             "roles": [{"rolename": "pt-gw-gw-1"}]},
            {"username": "gw-2", "roles": [{"rolename": "pt-gw-gw-1"}]},
            {"username": "gw-3"}
        ]}});
        let (state, platform) = read_list(&answer, "admin");
        assert!(platform);
        assert_eq!(
            state,
            BrokerState::from([(
                "gw-1".to_owned(),
                OnBroker {
                    tag: "abc".into(),
                    enabled: false
                }
            )])
        );
        assert!(!read_list(&answer, "gw-1").1);
    }

    #[test]
    fn already_done_is_not_an_error() {
        let answer = json!({"responses": [
            {"command": "createRole", "error": "Role already exists"},
            {"command": "deleteClient", "error": "Client not found"},
            {"command": "createClient", "error": "Client already exists"},
            {"command": "setClientPassword"},
            {"command": "addClientRole", "error": "Client not found"}
        ]});
        assert_eq!(
            real_errors(&answer),
            [
                "createClient: Client already exists",
                "addClientRole: Client not found"
            ]
        );
    }
}
