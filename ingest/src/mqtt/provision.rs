//! Keeps the broker's logins in step with the MQTT gateways (MQTT-GATEWAY.md: Connection),
//! through Mosquitto's dynamic-security plugin: every MQTT gateway in `control.gateway_directory`
//! is a broker client named by its identity, with the password derived by
//! `core::gateway_credential` and a role `pt-gw-{identity}` that may publish only under
//! `pt/{gw}/up/#` and subscribe only to `pt/{gw}/down/#`. Suspended gateways (or gateways of a
//! suspended company) are disabled, which also disconnects them; removed ones are deleted; a
//! rotated credential replaces the password, which disconnects the old login.
//!
//! The broker is the state: after every (re)connect the plugin's client and role lists are read
//! and everything PowerTab manages is set right, so a broker that lost its configuration is
//! provisioned again. A client is PowerTab's only when it carries PowerTab's own marker (its
//! `pt-gw-` role *and* the text name only provisioning writes), never because of its name: a
//! tenant names its gateways, and a gateway named like a login PowerTab or anyone else has on the
//! broker (`powertab-admin`) must never disable, re-password or delete that login. Such a
//! gateway is skipped and counted (`ingest_mqtt_provision_conflicts_total`); a suspended gateway
//! is never created, so no `disableClient` can follow a `createClient` that failed.
//!
//! Provisioning logs in with the dynamic-security admin; the readings client uses a separate,
//! least-privilege login (role `powertab-platform`: gateways' uplinks and downlinks only), which
//! provisioning creates when the broker lacks it. Only what differs is sent: Mosquitto 2.0's
//! plugin saves its whole configuration file after every change, so a fleet's full sync costs
//! time that grows with the square of the gateways changed (docs/perf.md). Between connects the directory is read every
//! [`CHECK`] and only what changed is sent. PowerTab's own login gets the role
//! `powertab-platform` (all gateways' topics), so the ingest client can read and command them.
//! A broker without the plugin never answers: that is logged, and asked again later.

use super::client::MqttConfig;
use powertab_core::auth::Secret;
use powertab_core::field::credentials;
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
/// Command lists waiting to be published.
const OUTBOX_LISTS_MAX: usize = 256;

pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The role PowerTab's readings login gets.
pub const PLATFORM_ROLE: &str = "powertab-platform";
/// The text name of the readings login when provisioning created it.
const INGEST_TEXT_NAME: &str = "PowerTab ingest";
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

/// The least-privilege login the readings client uses (`ingest.mqtt_username`).
#[derive(Debug, Clone)]
pub struct IngestLogin {
    pub username: String,
    pub password: String,
}

/// How the broker has the readings login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginState {
    Missing,
    WithoutRole,
    Ready,
}

/// What makes the readings login exist with the platform role (the role itself is created or
/// set right before these). Adding a role to an existing login disconnects it once.
pub fn ingest_login_commands(login: &IngestLogin, state: LoginState) -> Vec<Value> {
    match state {
        LoginState::Missing => vec![
            json!({"command": "createClient", "username": login.username,
            "password": login.password, "textname": INGEST_TEXT_NAME,
            "roles": [{"rolename": PLATFORM_ROLE}]}),
        ],
        LoginState::WithoutRole => vec![
            json!({"command": "addClientRole", "username": login.username, "rolename": PLATFORM_ROLE}),
        ],
        LoginState::Ready => Vec::new(),
    }
}

fn password(secret: &Secret, identity: &str, wanted: &Wanted) -> String {
    credentials::derive(secret, wanted.gateway_id, identity, wanted.generation)
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
/// `foreign` are the broker's logins that are not PowerTab's gateways (PowerTab's own logins,
/// anybody else's): a wanted gateway of that name is skipped, never touched. `roles` is the
/// broker's role list after a (re)connect: then a gateway's role is created or rewritten only
/// where it is missing or wrong. Without it (changes between reconnects) a new gateway's role is
/// created, and one left over with that name is set right at the next full sync.
pub fn changes(
    secret: &Secret,
    have: &BrokerState,
    foreign: &BTreeSet<String>,
    wanted: &WantedSet,
    roles: Option<&RoleState>,
) -> (Vec<Value>, BrokerState) {
    let mut commands = Vec::new();
    let mut after = BrokerState::new();
    for (identity, want) in wanted {
        if foreign.contains(identity) {
            continue;
        }
        if !have.contains_key(identity) && !want.enabled {
            // Created when enabled: a create that fails (the name is taken after all) must
            // never be followed by a disable that would hit somebody else's login.
            continue;
        }
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
                // The answer names the identity, so a refused create is known to be somebody
                // else's login (see `refused_creates`).
                commands.push(json!({"command": "createClient", "username": identity, "clientid": identity,
                    "password": password, "textname": text_name(&tag), "roles": [{"rolename": role}],
                    "correlationData": identity}));
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

/// What a `listClients` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The gateways PowerTab manages: clients with their own `pt-gw-` role and provisioning's
    /// text name.
    pub managed: BrokerState,
    /// Every other login on the broker.
    pub foreign: BTreeSet<String>,
    /// The readings login.
    pub ingest: LoginState,
}

/// Reads a `listClients` answer; `ingest_username` is the readings login.
pub fn read_list(list_answer: &Value, ingest_username: &str) -> Listed {
    let mut listed = Listed {
        managed: BrokerState::new(),
        foreign: BTreeSet::new(),
        ingest: LoginState::Missing,
    };
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
        if username == ingest_username {
            listed.ingest = if roles.contains(&PLATFORM_ROLE) {
                LoginState::Ready
            } else {
                LoginState::WithoutRole
            };
        }
        let tag = c["textname"]
            .as_str()
            .and_then(|t| t.strip_prefix(TEXT_NAME))
            .map(|t| t.trim().to_owned());
        match tag {
            Some(tag) if roles.contains(&role_name(username).as_str()) => {
                let enabled = c["disabled"] != true;
                listed
                    .managed
                    .insert(username.to_owned(), OnBroker { tag, enabled });
            }
            _ => {
                listed.foreign.insert(username.to_owned());
            }
        }
    }
    listed
}

/// Identities whose `createClient` the broker refused (a login of that name exists that is not
/// ours): they are somebody else's and must not be touched.
pub fn refused_creates(answer: &Value) -> Vec<String> {
    answer["responses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["command"] == "createClient" && r["error"].is_string())
        .filter_map(|r| r["correlationData"].as_str().map(str::to_owned))
        .collect()
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

/// Runs until the task is dropped. `config` is the broker's dynamic-security admin login;
/// `ingest` the readings client's login, which is made to exist with the platform role.
pub async fn run(config: MqttConfig, ingest: IngestLogin, pool: PgPool, secret: Secret) {
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
    // Bounded in lists, not commands: a full sync is one list. Lists that do not fit (the
    // broker stopped taking them) are dropped and counted; the next full sync after a reconnect
    // sets the broker right from its own state.
    let (outbox, queued) = mpsc::channel::<Vec<Value>>(OUTBOX_LISTS_MAX);
    tokio::spawn(publish_all(client.clone(), queued));
    let send = |commands: Vec<Value>| {
        if outbox.try_send(commands).is_err() {
            metrics::counter!("ingest_mqtt_provision_dropped_total").increment(1);
            tracing::warn!("the provisioning outbox is full; the next full sync catches up");
        }
    };
    let mut phase = Phase::Disconnected;
    let mut have = BrokerState::new();
    let mut foreign = BTreeSet::new();
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
                        let logins = Logins { admin: &config.username, ingest: &ingest };
                        let (next, commands) = full_sync(&pool, &secret, logins, clients, &roles, &mut have, &mut foreign, &mut last_wanted).await;
                        send(commands);
                        phase = next;
                    }
                    for identity in refused_creates(&answer) {
                        // A login of that name appeared that is not ours: leave it alone.
                        metrics::counter!("ingest_mqtt_provision_conflicts_total").increment(1);
                        tracing::warn!(%identity, "an MQTT gateway is named like another login on the broker; it is not provisioned");
                        have.remove(&identity);
                        foreign.insert(identity);
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
                            let (commands, after) = changes(&secret, &have, &foreign, &want, None);
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

/// PowerTab's logins at the broker.
#[derive(Debug, Clone, Copy)]
struct Logins<'a> {
    /// The dynamic-security admin provisioning uses.
    admin: &'a str,
    /// The readings client's.
    ingest: &'a IngestLogin,
}

/// What sets the broker right, from its client list; and the next phase.
#[allow(clippy::too_many_arguments)]
async fn full_sync(
    pool: &PgPool,
    secret: &Secret,
    logins: Logins<'_>,
    listed: &Value,
    roles: &RoleState,
    have: &mut BrokerState,
    foreign: &mut BTreeSet<String>,
    last_wanted: &mut WantedSet,
) -> (Phase, Vec<Value>) {
    let mut listed = read_list(listed, &logins.ingest.username);
    // PowerTab's own logins are never a gateway's, whether or not they exist yet.
    listed.foreign.insert(logins.admin.to_owned());
    listed.foreign.insert(logins.ingest.username.clone());
    let mut commands: Vec<Value> = role_command(roles, PLATFORM_ROLE, platform_acls())
        .into_iter()
        .collect();
    if !logins.ingest.username.is_empty() && listed.ingest != LoginState::Ready {
        tracing::info!(
            role = PLATFORM_ROLE,
            user = %logins.ingest.username,
            "giving PowerTab's readings login its role"
        );
        commands.extend(ingest_login_commands(logins.ingest, listed.ingest));
        if logins.ingest.username == logins.admin {
            // One login for both (an older configuration): adding the role disconnects this
            // connection, and the list is read again after the reconnect.
            return (Phase::ListAt(Instant::now() + RETRY), commands);
        }
    }
    match wanted(pool).await {
        Ok(want) => {
            let (gateways, after) =
                changes(secret, &listed.managed, &listed.foreign, &want, Some(roles));
            let conflicts: Vec<&String> = want
                .keys()
                .filter(|i| listed.foreign.contains(*i))
                .collect();
            if !conflicts.is_empty() {
                metrics::counter!("ingest_mqtt_provision_conflicts_total")
                    .increment(conflicts.len() as u64);
                tracing::warn!(
                    ?conflicts,
                    "MQTT gateways named like other logins on the broker are not provisioned"
                );
            }
            commands.extend(gateways);
            tracing::info!(
                gateways = want.len(),
                commands = commands.len(),
                "MQTT gateway logins provisioned at the broker"
            );
            (*have, *foreign, *last_wanted) = (after, listed.foreign, want);
            (Phase::InStep, commands)
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the MQTT gateways failed");
            (Phase::ListAt(Instant::now() + CHECK), commands)
        }
    }
}

/// Publishes queued command lists in order, [`BATCH`] commands a message.
async fn publish_all(client: AsyncClient, mut queued: mpsc::Receiver<Vec<Value>>) {
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
        let (commands, after) = changes(
            &secret(),
            &BrokerState::new(),
            &BTreeSet::new(),
            &wanted,
            None,
        );
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
        let password = credentials::derive(&secret(), Uuid::from_u128(1), "gw-1", 1);
        assert_eq!(commands[1]["password"], password.as_str());
        assert_eq!(after["gw-1"], on("gw-1", &want(1, true)));
        // The text name carries the tag, and reading it back gives the same state.
        let listed = json!({"data": {"clients": [{"username": "gw-1",
            "textname": commands[1]["textname"], "roles": [{"rolename": "pt-gw-gw-1"}]}]}});
        assert_eq!(read_list(&listed, "admin").managed, after);
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
        let (commands, after) = changes(&secret(), &have, &BTreeSet::new(), &wanted, None);
        assert_eq!(
            names(&commands),
            [
                "setClientPassword b",
                "modifyClient b",
                "disableClient c",
                "setClientPassword f",
                "modifyClient f",
                "enableClient f",
                "deleteClient d",
                "deleteRole pt-gw-d",
            ]
        );
        // Applying it again changes nothing.
        assert!(changes(&secret(), &after, &BTreeSet::new(), &wanted, None)
            .0
            .is_empty());
        // After a reconnect the broker's roles decide: only a missing or wrong one is sent
        // (every change makes the plugin save its whole configuration).
        let mut roles: RoleState = ["a", "b", "c", "e"]
            .iter()
            .map(|i| (role_name(i), acl_set(&gateway_acls(i))))
            .collect();
        roles.insert(role_name("e"), acl_set(&gateway_acls("someone-else")));
        let repaired =
            names(&changes(&secret(), &after, &BTreeSet::new(), &wanted, Some(&roles)).0);
        assert_eq!(
            repaired,
            ["createRole pt-gw-f"],
            "e is suspended and never created"
        );
    }

    #[test]
    fn only_clients_with_their_own_role_and_provisionings_text_name_are_ours() {
        let answer = json!({"command": "listClients", "data": {"clients": [
            {"username": "admin", "roles": [{"rolename": "admin"}]},
            {"username": "ingest", "roles": [{"rolename": PLATFORM_ROLE}]},
            {"username": "gw-1", "textname": "PowerTab MQTT gateway abc", "disabled": true,
             "roles": [{"rolename": "pt-gw-gw-1"}]},
            {"username": "gw-2", "roles": [{"rolename": "pt-gw-gw-1"}]},
            {"username": "gw-3"},
            {"username": "powertab-admin", "roles": [{"rolename": "pt-gw-powertab-admin"}]}
        ]}});
        let listed = read_list(&answer, "ingest");
        assert_eq!(listed.ingest, LoginState::Ready);
        assert_eq!(
            listed.managed,
            BrokerState::from([(
                "gw-1".to_owned(),
                OnBroker {
                    tag: "abc".into(),
                    enabled: false
                }
            )])
        );
        let foreign: Vec<&str> = listed.foreign.iter().map(String::as_str).collect();
        assert_eq!(
            foreign,
            ["admin", "gw-2", "gw-3", "ingest", "powertab-admin"]
        );
        assert_eq!(read_list(&answer, "admin").ingest, LoginState::WithoutRole);
        assert_eq!(read_list(&answer, "nobody").ingest, LoginState::Missing);
    }

    #[test]
    fn a_gateway_named_like_a_foreign_login_is_never_touched() {
        let foreign = BTreeSet::from(["powertab-admin".to_owned()]);
        for enabled in [true, false] {
            let wanted = WantedSet::from([("powertab-admin".to_owned(), want(1, enabled))]);
            let (commands, after) =
                changes(&secret(), &BrokerState::new(), &foreign, &wanted, None);
            assert!(commands.is_empty(), "{commands:?}");
            assert!(after.is_empty());
        }
        // A create the broker refused names the identity, which then counts as foreign.
        let answer = json!({"responses": [
            {"command": "createClient", "error": "Client already exists", "correlationData": "powertab-admin"},
            {"command": "createClient", "correlationData": "gw-9"}
        ]});
        assert_eq!(refused_creates(&answer), ["powertab-admin"]);
    }

    #[test]
    fn the_readings_login_is_created_with_the_platform_role_only() {
        let login = IngestLogin {
            username: "powertab-ingest".into(),
            password: "pw".into(),
        };
        let created = ingest_login_commands(&login, LoginState::Missing);
        assert_eq!(created[0]["command"], "createClient");
        assert_eq!(created[0]["roles"], json!([{"rolename": PLATFORM_ROLE}]));
        assert_eq!(
            ingest_login_commands(&login, LoginState::WithoutRole)[0]["command"],
            "addClientRole"
        );
        assert!(ingest_login_commands(&login, LoginState::Ready).is_empty());
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
