//! The field as a company configures it: gateways of three kinds, their RS485 buses, and the
//! meters on the buses (DESIGN.md: Ingest; DOMAIN.md: serial servers, DTUs and gateways).
//! Gateway identities and DTU registration bytes are unique across the platform: they are also
//! written to `control.gateway_directory`, where ingest looks them up before it knows the company.
//! A taken identity answers "taken" without saying by whom. Quotas (gateways, meters) are
//! enforced here. Changes need the `settings` right and are audited.

use crate::audit;
use crate::auth::Principal;
use crate::companies::{check_quota, Quota};
use crate::error::{CoreError, CoreResult};
use crate::roles::{Need, Right};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Meters per bus beyond which RS485 gets unreliable: more needs the admin's confirmation.
pub const BUS_METERS_WARN: i64 = 32;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bus {
    pub id: Uuid,
    pub number: i32,
    /// `modbus_rtu` or `dlt645`.
    pub protocol: String,
    pub baud: i32,
    /// `N`, `E` or `O`.
    pub parity: String,
    pub stop_bits: i32,
    pub gap_ms: i32,
    pub timeout_ms: i32,
    pub tcp_port: Option<i32>,
    pub meter_count: i64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gateway {
    pub id: Uuid,
    pub identity: String,
    pub name: String,
    /// `dtu`, `modbus_tcp` or `mqtt`.
    pub kind: String,
    pub status: String,
    /// Always null in answers: registration bytes are a credential, shown only through
    /// `GET /gateways/{id}/registration` (settings right, audited).
    pub registration_hex: Option<String>,
    /// Whether the gateway has registration bytes (DTUs).
    pub registration_set: bool,
    pub registration_repeats: bool,
    pub heartbeat_hex: Option<String>,
    pub host: Option<String>,
    /// MQTT gateways: the generation of their broker credential (core::gateway_credential).
    pub mqtt_credential_generation: Option<i32>,
    pub buses: Vec<Bus>,
}

/// A bus as forms give it; absent fields take the protocol's usual settings (Modbus 9600 8N1,
/// DL/T 645 2400 8E1).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct BusInput {
    pub number: i32,
    pub protocol: String,
    pub baud: Option<i32>,
    pub parity: Option<String>,
    pub stop_bits: Option<i32>,
    pub gap_ms: Option<i32>,
    pub timeout_ms: Option<i32>,
    pub tcp_port: Option<i32>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct GatewayInput {
    pub identity: String,
    #[serde(default)]
    pub name: String,
    pub kind: String,
    /// DTU registration bytes as text (`registration_is_hex` false) or hex.
    #[serde(default)]
    pub registration: String,
    #[serde(default)]
    pub registration_is_hex: bool,
    #[serde(default)]
    pub registration_repeats: bool,
    #[serde(default)]
    pub heartbeat: String,
    #[serde(default)]
    pub heartbeat_is_hex: bool,
    #[serde(default)]
    pub host: String,
    pub buses: Vec<BusInput>,
}

/// Whether `identity` can stand as one MQTT topic level and in an ACL pattern: no `/`, no
/// wildcards, no leading `$`.
pub fn is_topic_safe(identity: &str) -> bool {
    !identity.is_empty()
        && identity
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Bytes given as lowercase hex, as text when they are all printable ASCII (registrations are
/// often typed as text: `PT-0001`).
pub fn printable_text(hex: &str) -> Option<String> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes)
        .ok()
        .filter(|t| t.chars().all(|c| c.is_ascii_graphic() || c == ' '))
}

/// Bytes typed as text or hex, as lowercase hex; `None` when empty, `Err` when not hex.
pub fn bytes_hex(text: &str, is_hex: bool) -> Result<Option<String>, &'static str> {
    if text.is_empty() {
        return Ok(None);
    }
    if !is_hex {
        return Ok(Some(text.bytes().map(|b| format!("{b:02x}")).collect()));
    }
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if compact.len() % 2 == 1 || !compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("pairs of hex digits, e.g. 50 54 01");
    }
    Ok(Some(compact))
}

/// A checked bus with the protocol's defaults filled in.
pub(crate) fn check_bus(
    i: usize,
    bus: &BusInput,
    kind: &str,
    fields: &mut BTreeMap<String, String>,
) -> Bus {
    let key = |f: &str| format!("buses.{i}.{f}");
    let dlt645 = bus.protocol == "dlt645";
    if bus.protocol != "modbus_rtu" && !dlt645 {
        fields.insert(key("protocol"), "modbus_rtu or dlt645".into());
    }
    if kind == "modbus_tcp" && dlt645 {
        fields.insert(
            key("protocol"),
            "a Modbus-TCP gateway carries Modbus RTU buses".into(),
        );
    }
    if !(1..=64).contains(&bus.number) {
        fields.insert(key("number"), "serial port 1 to 64".into());
    }
    let baud = bus.baud.unwrap_or(if dlt645 { 2400 } else { 9600 });
    if ![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&baud) {
        fields.insert(key("baud"), "a standard baud rate (1200 … 115200)".into());
    }
    let parity = bus
        .parity
        .clone()
        .unwrap_or_else(|| if dlt645 { "E".into() } else { "N".into() });
    if !["N", "E", "O"].contains(&parity.as_str()) {
        fields.insert(key("parity"), "N, E or O".into());
    }
    let stop_bits = bus.stop_bits.unwrap_or(1);
    if stop_bits != 1 && stop_bits != 2 {
        fields.insert(key("stop_bits"), "1 or 2".into());
    }
    let gap_ms = bus.gap_ms.unwrap_or(50);
    if !(0..=10_000).contains(&gap_ms) {
        fields.insert(key("gap_ms"), "0 to 10,000 ms".into());
    }
    let timeout_ms = bus.timeout_ms.unwrap_or(1000);
    if !(50..=60_000).contains(&timeout_ms) {
        fields.insert(key("timeout_ms"), "50 to 60,000 ms".into());
    }
    match (kind, bus.tcp_port) {
        ("modbus_tcp", Some(port)) if (1..=65535).contains(&port) => {}
        ("modbus_tcp", _) => {
            fields.insert(
                key("tcp_port"),
                "the TCP port of this bus on the gateway".into(),
            );
        }
        (_, Some(_)) => {
            fields.insert(
                key("tcp_port"),
                "only Modbus-TCP gateways have ports per bus".into(),
            );
        }
        _ => {}
    }
    Bus {
        id: Uuid::now_v7(),
        number: bus.number,
        protocol: bus.protocol.clone(),
        baud,
        parity,
        stop_bits,
        gap_ms,
        timeout_ms,
        tcp_port: bus.tcp_port,
        meter_count: 0,
    }
}

/// SQL: gateway `{g}` carries a meter of a shop in the buildings `$n` (a building limit; null
/// for callers who see everything).
fn gateway_visible(gateway_id: &str, n: usize) -> String {
    format!(
        "(${n}::uuid[] is null or exists (select 1 from buses vb join meters vm on vm.bus_id = vb.id
             join shops vs on vs.id = vm.shop_id
          where vb.gateway_id = {gateway_id} and vm.status <> 'removed' and vs.building_id = any(${n})))"
    )
}

pub async fn list_gateways(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Vec<Gateway>> {
    principal.require_read_company()?;
    let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
        "select id from gateways where status <> 'removed' and {} order by identity",
        gateway_visible("gateways.id", 1)
    ))
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    let mut gateways = Vec::with_capacity(ids.len());
    for id in ids {
        gateways.push(load_gateway(conn, id).await?);
    }
    Ok(gateways)
}

/// Filters and paging of the gateway list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct GatewayFilter {
    /// `enabled` or `suspended`; both when absent.
    pub status: Option<String>,
    /// `dtu`, `modbus_tcp` or `mqtt`.
    pub kind: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// One page of gateways, newest first (`limit` ≤ 500, opaque `cursor`).
pub async fn gateways_page(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &GatewayFilter,
) -> CoreResult<crate::page::Page<Gateway>> {
    principal.require_read_company()?;
    let limit = crate::page::limit(filter.limit)?;
    let cursor = crate::page::decode_cursor(filter.cursor.as_deref())?;
    let non_empty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let ids: Vec<Uuid> = sqlx::query_scalar(&format!(
        "select id from gateways where status <> 'removed' and ($1::uuid is null or id < $1)
             and ($3::text is null or status = $3) and ($4::text is null or kind = $4) and {}
         order by id desc limit $2",
        gateway_visible("gateways.id", 5)
    ))
    .bind(cursor)
    .bind(limit + 1)
    .bind(non_empty(&filter.status))
    .bind(non_empty(&filter.kind))
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    let mut gateways = Vec::with_capacity(ids.len());
    for id in ids {
        gateways.push(load_gateway(conn, id).await?);
    }
    Ok(crate::page::page_from(gateways, limit, |g| g.id))
}

pub async fn gateway(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Gateway> {
    principal.require_read_company()?;
    let visible: bool = sqlx::query_scalar(&format!(
        "select exists (select 1 from gateways where id = $2 and {})",
        gateway_visible("gateways.id", 1)
    ))
    .bind(principal.building_limit_param())
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if !visible {
        return Err(CoreError::NotFound("gateway"));
    }
    let gateway = load_gateway(conn, id).await?;
    if gateway.status == "removed" {
        // A removed gateway lives on only in its meters' history.
        return Err(CoreError::NotFound("gateway"));
    }
    Ok(gateway)
}

pub(crate) async fn load_gateway(conn: &mut PgConnection, id: Uuid) -> CoreResult<Gateway> {
    let r = sqlx::query(
        "select g.id, g.identity, g.name, g.kind, g.status, g.registration_hex, g.registration_repeats,
                g.heartbeat_hex, g.host, d.mqtt_credential_gen
         from gateways g left join control.gateway_directory d on d.gateway_id = g.id
         where g.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("gateway"))?;
    let buses = sqlx::query(
        "select b.id, b.number, b.protocol, b.baud, b.parity, b.stop_bits, b.gap_ms, b.timeout_ms, b.tcp_port,
                (select count(*) from meters m where m.bus_id = b.id and m.status = 'active') as meter_count
         from buses b where b.gateway_id = $1 and b.removed_at is null order by b.number",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|b| {
        Ok(Bus {
            id: b.try_get("id")?,
            number: b.try_get("number")?,
            protocol: b.try_get("protocol")?,
            baud: b.try_get("baud")?,
            parity: b.try_get("parity")?,
            stop_bits: b.try_get("stop_bits")?,
            gap_ms: b.try_get("gap_ms")?,
            timeout_ms: b.try_get("timeout_ms")?,
            tcp_port: b.try_get("tcp_port")?,
            meter_count: b.try_get("meter_count")?,
        })
    })
    .collect::<CoreResult<Vec<Bus>>>()?;
    Ok(Gateway {
        id: r.try_get("id")?,
        identity: r.try_get("identity")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        // Never loaded into a gateway's answer, an export or an audit snapshot.
        registration_hex: None,
        registration_set: r
            .try_get::<Option<String>, _>("registration_hex")?
            .is_some(),
        registration_repeats: r.try_get("registration_repeats")?,
        heartbeat_hex: r.try_get("heartbeat_hex")?,
        host: r.try_get("host")?,
        mqtt_credential_generation: r.try_get("mqtt_credential_gen")?,
        buses,
    })
}

/// Creates a gateway with its buses, registers its identity platform-wide, checks the quota.
pub async fn create_gateway(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &GatewayInput,
) -> CoreResult<Gateway> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let company_id = principal.company()?.id;
    let mut fields = BTreeMap::new();
    let identity = input.identity.trim();
    if identity.is_empty() || identity.len() > 64 || !identity.chars().all(|c| c.is_ascii_graphic())
    {
        fields.insert("identity".into(), "1–64 visible ASCII characters".into());
    }
    let kind = input.kind.as_str();
    if !["dtu", "modbus_tcp", "mqtt"].contains(&kind) {
        fields.insert("kind".into(), "dtu, modbus_tcp or mqtt".into());
    }
    let registration =
        bytes_hex(&input.registration, input.registration_is_hex).unwrap_or_else(|e| {
            fields.insert("registration".into(), e.into());
            None
        });
    let heartbeat = bytes_hex(&input.heartbeat, input.heartbeat_is_hex).unwrap_or_else(|e| {
        fields.insert("heartbeat".into(), e.into());
        None
    });
    if kind == "dtu" && registration.is_none() && !fields.contains_key("registration") {
        fields.insert(
            "registration".into(),
            "a DTU identifies itself with registration bytes".into(),
        );
    }
    if let Some(problem) = registration
        .as_deref()
        .and_then(crate::registration::length_problem)
    {
        fields.insert("registration".into(), problem);
    }
    if kind != "dtu" && registration.is_some() {
        fields.insert(
            "registration".into(),
            "only DTUs register with bytes".into(),
        );
    }
    if crate::names::is_reserved_gateway_identity(identity) {
        fields.insert(
            "identity".into(),
            "this name is reserved by the platform".into(),
        );
    }
    let host = input.host.trim();
    if kind == "modbus_tcp" && (host.is_empty() || host.len() > 253) {
        fields.insert("host".into(), "the gateway's host name or address".into());
    }
    if kind == "mqtt" && !is_topic_safe(identity) {
        // The identity is a topic level (pt/{gw}/up/#) and the broker's ACL pattern.
        fields.insert(
            "identity".into(),
            "MQTT identities use letters, digits and . _ : - only".into(),
        );
    }
    if input.buses.is_empty() || input.buses.len() > 64 {
        fields.insert("buses".into(), "1 to 64 buses".into());
    }
    let buses: Vec<Bus> = input
        .buses
        .iter()
        .enumerate()
        .map(|(i, b)| check_bus(i, b, kind, &mut fields))
        .collect();
    let mut numbers: Vec<i32> = buses.iter().map(|b| b.number).collect();
    numbers.sort_unstable();
    if numbers.windows(2).any(|w| w[0] == w[1]) {
        fields.insert("buses".into(), "two buses share a port number".into());
    }
    CoreError::check_fields(fields)?;
    check_quota(conn, company_id, Quota::Gateways, 1).await?;
    if let Some(hex) = &registration {
        crate::registration::check(conn, principal, hex, None).await?;
    }
    let id = Uuid::now_v7();
    // The directory is the platform-wide uniqueness check; "taken" never says by whom.
    let inserted = sqlx::query(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status, mqtt_credential_gen)
         values ($1, $2, $3, $4, $5, 'enabled', case when $5 = 'mqtt' then 1 end) on conflict do nothing",
    )
    .bind(identity)
    .bind(registration.as_deref())
    .bind(company_id)
    .bind(id)
    .bind(kind)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CoreError::field(
            "identity",
            "this identity or registration is already taken",
        ));
    }
    sqlx::query(
        "insert into gateways (id, identity, name, kind, registration_hex, registration_repeats, heartbeat_hex, host)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(identity)
    .bind(input.name.trim())
    .bind(kind)
    .bind(registration.as_deref())
    .bind(input.registration_repeats && kind == "dtu")
    .bind(heartbeat.as_deref())
    .bind((kind == "modbus_tcp").then_some(host))
    .execute(&mut *conn)
    .await?;
    for bus in &buses {
        write_bus(conn, id, &[], bus).await?;
    }
    let created = load_gateway(conn, id).await?;
    let json = snapshot_with_registration(&created, registration.as_deref());
    audit::record(
        conn,
        principal,
        "gateway.create",
        "gateway",
        Some(id.to_string()),
        None,
        Some(json),
    )
    .await?;
    Ok(created)
}

/// Updates the bus with `bus.number` among `existing`, or adds it.
pub(crate) async fn write_bus(
    conn: &mut PgConnection,
    gateway_id: Uuid,
    existing: &[Bus],
    bus: &Bus,
) -> CoreResult<()> {
    let id = existing
        .iter()
        .find(|b| b.number == bus.number)
        .map(|b| b.id);
    let sql = if id.is_some() {
        "update buses set protocol = $4, baud = $5, parity = $6, stop_bits = $7, gap_ms = $8,
             timeout_ms = $9, tcp_port = $10
         where id = $1 and gateway_id = $2 and number = $3"
    } else {
        "insert into buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms, tcp_port)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    };
    sqlx::query(sql)
        .bind(id.unwrap_or(bus.id))
        .bind(gateway_id)
        .bind(bus.number)
        .bind(&bus.protocol)
        .bind(bus.baud)
        .bind(&bus.parity)
        .bind(bus.stop_bits)
        .bind(bus.gap_ms)
        .bind(bus.timeout_ms)
        .bind(bus.tcp_port)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Changes to a gateway's connection settings; absent fields stay.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct GatewayPatch {
    pub name: Option<String>,
    /// DTU registration bytes, as text or hex (`registration_is_hex`).
    pub registration: Option<String>,
    #[serde(default)]
    pub registration_is_hex: bool,
    pub registration_repeats: Option<bool>,
    /// Heartbeat bytes; an empty string removes them.
    pub heartbeat: Option<String>,
    #[serde(default)]
    pub heartbeat_is_hex: bool,
    /// Modbus-TCP gateways: the host the platform dials.
    pub host: Option<String>,
}

/// Edits a gateway's name and connection settings; a new registration is checked for
/// uniqueness across the platform in the same transaction.
pub async fn update_gateway(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    patch: &GatewayPatch,
) -> CoreResult<Gateway> {
    let before = gateway(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let mut fields = BTreeMap::new();
    let stored: Option<String> =
        sqlx::query_scalar("select registration_hex from gateways where id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    let registration = match (&patch.registration, before.kind.as_str()) {
        (None, _) => stored.clone(),
        (Some(_), kind) if kind != "dtu" => {
            fields.insert(
                "registration".into(),
                "only DTUs register with bytes".into(),
            );
            None
        }
        (Some(text), _) => match bytes_hex(text, patch.registration_is_hex) {
            Ok(Some(hex)) => {
                if let Some(problem) = crate::registration::length_problem(&hex) {
                    fields.insert("registration".into(), problem);
                }
                Some(hex)
            }
            Ok(None) => {
                fields.insert(
                    "registration".into(),
                    "a DTU identifies itself with registration bytes".into(),
                );
                None
            }
            Err(e) => {
                fields.insert("registration".into(), e.into());
                None
            }
        },
    };
    let heartbeat = match &patch.heartbeat {
        None => before.heartbeat_hex.clone(),
        Some(text) => bytes_hex(text, patch.heartbeat_is_hex).unwrap_or_else(|e| {
            fields.insert("heartbeat".into(), e.into());
            None
        }),
    };
    let host = match (&patch.host, before.kind.as_str()) {
        (None, _) => before.host.clone(),
        (Some(h), "modbus_tcp") if !h.trim().is_empty() && h.trim().len() <= 253 => {
            Some(h.trim().to_owned())
        }
        (Some(_), "modbus_tcp") => {
            fields.insert("host".into(), "the gateway's host name or address".into());
            None
        }
        (Some(_), _) => {
            fields.insert("host".into(), "only Modbus-TCP gateways are dialled".into());
            None
        }
    };
    CoreError::check_fields(fields)?;
    if registration != stored {
        if let Some(hex) = &registration {
            crate::registration::check(conn, principal, hex, Some(id)).await?;
        }
        let taken = sqlx::query(
            "update control.gateway_directory set registration_hex = $2 where gateway_id = $1",
        )
        .bind(id)
        .bind(registration.as_deref())
        .execute(&mut *conn)
        .await;
        if let Err(sqlx::Error::Database(e)) = &taken {
            if e.code().as_deref() == Some("23505") {
                return Err(CoreError::field(
                    "registration",
                    "this registration is already taken",
                ));
            }
        }
        taken?;
    }
    sqlx::query(
        "update gateways set name = $2, registration_hex = $3, registration_repeats = $4, heartbeat_hex = $5,
             host = $6, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(patch.name.as_deref().map_or(before.name.as_str(), str::trim))
    .bind(registration.as_deref())
    .bind(patch.registration_repeats.unwrap_or(before.registration_repeats) && before.kind == "dtu")
    .bind(heartbeat.as_deref())
    .bind(host.as_deref())
    .execute(&mut *conn)
    .await?;
    let after = load_gateway(conn, id).await?;
    audit::record(
        conn,
        principal,
        "gateway.update",
        "gateway",
        Some(id.to_string()),
        Some(snapshot_with_registration(&before, stored.as_deref())),
        Some(snapshot_with_registration(&after, registration.as_deref())),
    )
    .await?;
    Ok(after)
}

/// A gateway's audit snapshot with its registration as a fingerprint (`audit::mask_secrets`),
/// so the log shows that the bytes changed without holding them.
fn snapshot_with_registration(
    gateway: &Gateway,
    registration_hex: Option<&str>,
) -> serde_json::Value {
    let mut json = audit::snapshot(gateway);
    json["registration_hex"] = registration_hex.map_or(serde_json::Value::Null, |hex| hex.into());
    audit::mask_secrets(&mut json);
    json
}

/// A DTU's registration bytes, for someone who may change settings.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub registration_hex: String,
    /// The bytes as text when they are printable.
    pub registration_text: Option<String>,
}

/// Shows gateway `id`'s registration bytes, like an MQTT credential: to an unlimited user with
/// the settings right, every look audited (one entry per person and gateway within 5 minutes, so
/// a page rendered twice is one look).
pub async fn reveal_registration(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Registration> {
    gateway(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let hex: Option<String> =
        sqlx::query_scalar("select registration_hex from gateways where id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    let hex = hex.ok_or(CoreError::NotFound("registration"))?;
    audit::record_look(
        conn,
        principal,
        "gateway.registration_view",
        &id.to_string(),
        None,
    )
    .await?;
    let text = printable_text(&hex);
    Ok(Registration {
        registration_hex: hex,
        registration_text: text,
    })
}

/// Enables or suspends a gateway (ingest refuses suspended ones).
pub async fn set_gateway_status(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    enabled: bool,
) -> CoreResult<Gateway> {
    let before = gateway(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let status = if enabled { "enabled" } else { "suspended" };
    sqlx::query("update gateways set status = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update control.gateway_directory set status = $2 where gateway_id = $1")
        .bind(id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    let after = load_gateway(conn, id).await?;
    let action = if enabled {
        "gateway.enable"
    } else {
        "gateway.suspend"
    };
    audit::record(
        conn,
        principal,
        action,
        "gateway",
        Some(id.to_string()),
        Some(audit::snapshot(&before)),
        Some(audit::snapshot(&after)),
    )
    .await?;
    Ok(after)
}

// ---------------------------------------------------------------------------------------------
// Meters

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meter {
    pub id: Uuid,
    pub bus_id: Uuid,
    pub gateway_id: Uuid,
    pub gateway_identity: String,
    pub bus_number: i32,
    pub model: String,
    pub address: String,
    pub meter_number: String,
    pub ct_ratio: i32,
    pub pt_ratio: i32,
    pub prepayment_mode: String,
    pub role: String,
    pub parent_id: Option<Uuid>,
    pub shop_id: Option<Uuid>,
    pub tariff_plan_id: Option<Uuid>,
    pub alarm1_fen: Option<i64>,
    pub alarm2_fen: Option<i64>,
    pub install_date: Option<chrono::NaiveDate>,
    pub initial_energy_wh: i64,
    pub status: String,
    /// When a removed meter was taken off (a swap or a removal).
    pub removed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A removed meter's last register reading.
    pub final_energy_wh: Option<i64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MeterInput {
    pub bus_id: Uuid,
    /// `dtsy1352`, `ddsy1352`, `dlt645` or `modbus_generic`.
    pub model: String,
    pub address: String,
    pub meter_number: String,
    pub ct_ratio: Option<i32>,
    pub pt_ratio: Option<i32>,
    /// `platform` (default) or `meter`.
    pub prepayment_mode: Option<String>,
    /// `shop` (default), `main` or `common`.
    pub role: Option<String>,
    pub parent_id: Option<Uuid>,
    pub shop_id: Option<Uuid>,
    pub tariff_plan_id: Option<Uuid>,
    pub alarm1_fen: Option<i64>,
    pub alarm2_fen: Option<i64>,
    pub install_date: Option<chrono::NaiveDate>,
    pub initial_energy_wh: Option<i64>,
    #[serde(default)]
    pub dlt645_password: String,
    #[serde(default)]
    pub dlt645_operator: String,
    /// Confirms adding a meter to a bus that already has 32 or more.
    #[serde(default)]
    pub accept_crowded_bus: bool,
}

/// Filters of the meter list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct MeterFilter {
    pub gateway_id: Option<Uuid>,
    pub building_id: Option<Uuid>,
    pub model: Option<String>,
    pub prepayment_mode: Option<String>,
    pub status: Option<String>,
    /// Matches meter number or address.
    pub q: Option<String>,
    /// For [`meters_page`]: opaque cursor and page size (≤ 500).
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

const METER_SELECT: &str = "select m.id, m.bus_id, b.gateway_id, g.identity as gateway_identity, b.number as bus_number,
        m.model, m.address, m.meter_number, m.ct_ratio, m.pt_ratio, m.prepayment_mode, m.role, m.parent_id,
        m.shop_id, m.tariff_plan_id, m.alarm1_fen, m.alarm2_fen, m.install_date, m.initial_energy_wh, m.status,
        m.removed_at, m.final_energy_wh
     from meters m join buses b on b.id = m.bus_id join gateways g on g.id = b.gateway_id
     left join shops s on s.id = m.shop_id";

fn meter_from(r: sqlx::postgres::PgRow) -> CoreResult<Meter> {
    Ok(Meter {
        id: r.try_get("id")?,
        bus_id: r.try_get("bus_id")?,
        gateway_id: r.try_get("gateway_id")?,
        gateway_identity: r.try_get("gateway_identity")?,
        bus_number: r.try_get("bus_number")?,
        model: r.try_get("model")?,
        address: r.try_get("address")?,
        meter_number: r.try_get("meter_number")?,
        ct_ratio: r.try_get("ct_ratio")?,
        pt_ratio: r.try_get("pt_ratio")?,
        prepayment_mode: r.try_get("prepayment_mode")?,
        role: r.try_get("role")?,
        parent_id: r.try_get("parent_id")?,
        shop_id: r.try_get("shop_id")?,
        tariff_plan_id: r.try_get("tariff_plan_id")?,
        alarm1_fen: r.try_get("alarm1_fen")?,
        alarm2_fen: r.try_get("alarm2_fen")?,
        install_date: r.try_get("install_date")?,
        initial_energy_wh: r.try_get("initial_energy_wh")?,
        status: r.try_get("status")?,
        removed_at: r.try_get("removed_at")?,
        final_energy_wh: r.try_get("final_energy_wh")?,
    })
}

/// Every meter matching `filter` (up to 20,000), in wiring order: gateway, bus, address.
pub async fn meters(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &MeterFilter,
) -> CoreResult<Vec<Meter>> {
    query_meters(conn, principal, filter, None).await
}

/// One page of meters matching `filter`, newest first.
pub async fn meters_page(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &MeterFilter,
) -> CoreResult<crate::page::Page<Meter>> {
    let limit = crate::page::limit(filter.limit)?;
    let cursor = crate::page::decode_cursor(filter.cursor.as_deref())?;
    let rows = query_meters(conn, principal, filter, Some((cursor, limit + 1))).await?;
    Ok(crate::page::page_from(rows, limit, |m| m.id))
}

async fn query_meters(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &MeterFilter,
    page: Option<(Option<Uuid>, i64)>,
) -> CoreResult<Vec<Meter>> {
    principal.require_read_company()?;
    let mut q = QueryBuilder::new(METER_SELECT);
    q.push(" where true");
    if let Some(id) = filter.gateway_id {
        q.push(" and b.gateway_id = ").push_bind(id);
    }
    if let Some(id) = filter.building_id {
        q.push(" and s.building_id = ").push_bind(id);
    }
    if let Some(ids) = principal.building_limit_param() {
        // Meters without a shop are outside every building limit.
        q.push(" and s.building_id = any(").push_bind(ids).push(")");
    }
    for (column, value) in [
        ("m.model", &filter.model),
        ("m.prepayment_mode", &filter.prepayment_mode),
        ("m.status", &filter.status),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            q.push(format!(" and {column} = "))
                .push_bind(value.to_owned());
        }
    }
    if let Some(text) = filter.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        q.push(" and (m.meter_number like ")
            .push_bind(format!("%{text}%"));
        q.push(" or m.address = ")
            .push_bind(text.to_owned())
            .push(")");
    }
    match page {
        Some((cursor, fetch)) => {
            if let Some(cursor) = cursor {
                q.push(" and m.id < ").push_bind(cursor);
            }
            q.push(" order by m.id desc limit ").push_bind(fetch);
        }
        // Whole lists (pages, exports) read in wiring order.
        None => {
            q.push(" order by g.identity, b.number, m.address limit 20000");
        }
    }
    q.build()
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(meter_from)
        .collect()
}

pub async fn meter(conn: &mut PgConnection, principal: &Principal, id: Uuid) -> CoreResult<Meter> {
    principal.require_read_company()?;
    let row = sqlx::query(&format!(
        "{METER_SELECT} where m.id = $1 and ($2::uuid[] is null or s.building_id = any($2))"
    ))
    .bind(id)
    .bind(principal.building_limit_param())
    .fetch_optional(conn)
    .await?
    .ok_or(CoreError::NotFound("meter"))?;
    meter_from(row)
}

/// Whether `model` has a driver with the secure purchase (meter-side prepayment). The simulator
/// and secure firmware implement SECURE-COMMAND.md for the Acrel models; DL/T 645 and generic
/// Modbus meters do not.
pub fn model_supports_meter_side(model: &str) -> bool {
    matches!(model, "dtsy1352" | "ddsy1352")
}

/// Checks a meter's address for its bus protocol.
pub fn check_address(protocol: &str, address: &str) -> Result<String, &'static str> {
    let address = address.trim();
    if protocol == "dlt645" {
        if address.len() == 12 && address.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(address.to_owned());
        }
        return Err("a DL/T 645 address is 12 digits");
    }
    match address.parse::<u8>() {
        Ok(n) if (1..=247).contains(&n) => Ok(n.to_string()),
        _ => Err("a Modbus address is 1 to 247"),
    }
}

/// Creates a meter after every check, including the meter quota.
pub async fn create_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &MeterInput,
) -> CoreResult<Meter> {
    let id = insert_meter(conn, principal, input, true).await?;
    meter(conn, principal, id).await
}

/// A meter's fields after validation.
pub(crate) struct CheckedMeter {
    pub(crate) address: String,
    pub(crate) number: String,
    pub(crate) mode: String,
    pub(crate) role: String,
}

/// Checks a meter's fields against its bus, the shop, the plan and the other meters; `except`
/// is the meter being edited (it does not collide with itself).
pub(crate) async fn validate_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &MeterInput,
    except: Option<Uuid>,
) -> CoreResult<CheckedMeter> {
    let mut fields = BTreeMap::new();
    let bus = sqlx::query("select protocol, (select count(*) from meters m where m.bus_id = b.id and m.status = 'active') as n from buses b where id = $1 and removed_at is null")
        .bind(input.bus_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (protocol, on_bus): (String, i64) = match bus {
        Some(r) => (r.try_get("protocol")?, r.try_get("n")?),
        None => {
            fields.insert("bus_id".into(), "no such bus".into());
            (String::new(), 0)
        }
    };
    let model = input.model.as_str();
    let model_protocol = match model {
        "dtsy1352" | "ddsy1352" | "modbus_generic" => "modbus_rtu",
        "dlt645" => "dlt645",
        _ => {
            fields.insert(
                "model".into(),
                "dtsy1352, ddsy1352, dlt645 or modbus_generic".into(),
            );
            ""
        }
    };
    if !protocol.is_empty() && !model_protocol.is_empty() && protocol != model_protocol {
        fields.insert(
            "model".into(),
            format!("this model speaks {model_protocol}; the bus is {protocol}"),
        );
    }
    let address = check_address(
        if protocol.is_empty() {
            model_protocol
        } else {
            &protocol
        },
        &input.address,
    )
    .unwrap_or_else(|e| {
        fields.insert("address".into(), e.into());
        String::new()
    });
    let number = input.meter_number.trim();
    if number.is_empty() || number.len() > 16 || !number.bytes().all(|b| b.is_ascii_digit()) {
        fields.insert("meter_number".into(), "1 to 16 digits".into());
    }
    let mode = input
        .prepayment_mode
        .clone()
        .unwrap_or_else(|| "platform".into());
    match mode.as_str() {
        "platform" => {}
        "meter" if model_supports_meter_side(model) => {}
        "meter" => {
            fields.insert(
                "prepayment_mode".into(),
                "meter-side prepayment needs a model with the secure purchase".into(),
            );
        }
        _ => {
            fields.insert("prepayment_mode".into(), "platform or meter".into());
        }
    }
    let role = input.role.clone().unwrap_or_else(|| "shop".into());
    if !["shop", "main", "common"].contains(&role.as_str()) {
        fields.insert("role".into(), "shop, main or common".into());
    }
    for (field, value) in [("ct_ratio", input.ct_ratio), ("pt_ratio", input.pt_ratio)] {
        if value.is_some_and(|v| !(1..=10_000).contains(&v)) {
            fields.insert(field.into(), "1 to 10,000".into());
        }
    }
    if let (Some(a1), Some(a2)) = (input.alarm1_fen, input.alarm2_fen) {
        if a1 < a2 {
            fields.insert(
                "alarm1_fen".into(),
                "alarm 1 must be at least alarm 2".into(),
            );
        }
    }
    if input.initial_energy_wh.is_some_and(|wh| wh < 0) {
        fields.insert("initial_energy_wh".into(), "not negative".into());
    }
    if model == "dlt645" {
        for (field, value) in [
            ("dlt645_password", &input.dlt645_password),
            ("dlt645_operator", &input.dlt645_operator),
        ] {
            let well_formed = value.is_empty()
                || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_hexdigit()));
            if !well_formed {
                fields.insert(field.into(), "8 hex digits".into());
            }
        }
    }
    if let Some(shop_id) = input.shop_id {
        // Shops outside an operator's buildings do not exist for them.
        if crate::property::shop(conn, principal, shop_id)
            .await
            .is_err()
        {
            fields.insert("shop_id".into(), "no such shop".into());
        }
    } else {
        principal.require_unlimited()?;
    }
    if principal.building_limit().is_some() {
        let gateway_id: Option<Uuid> =
            sqlx::query_scalar("select gateway_id from buses where id = $1")
                .bind(input.bus_id)
                .fetch_optional(&mut *conn)
                .await?;
        let visible = match gateway_id {
            Some(g) => gateway(conn, principal, g).await.is_ok(),
            None => false,
        };
        if !visible {
            fields.insert("bus_id".into(), "no such bus".into());
        }
    }
    if let Some(plan_id) = input.tariff_plan_id {
        match crate::tariffs::get(conn, principal, plan_id).await {
            Ok(plan)
                if mode == "meter"
                    && plan
                        .versions
                        .iter()
                        .any(|v| v.tiers.is_some() || !v.fees.is_empty()) =>
            {
                fields.insert(
                    "tariff_plan_id".into(),
                    "meter-side prepayment takes plans without tiers or fees".into(),
                );
            }
            Ok(_) => {}
            Err(_) => {
                fields.insert("tariff_plan_id".into(), "no such tariff plan".into());
            }
        }
    }
    if let Some(parent_id) = input.parent_id {
        if meter(conn, principal, parent_id).await.is_err() {
            fields.insert("parent_id".into(), "no such meter".into());
        }
    }
    if fields.is_empty() {
        // Two lookups, each served by its partial unique index (an `or` would scan all meters).
        let address_taken: bool = sqlx::query_scalar(
            "select exists (select 1 from meters where status = 'active' and bus_id = $1 and address = $2 and id is distinct from $3)",
        )
        .bind(input.bus_id)
        .bind(&address)
        .bind(except)
        .fetch_one(&mut *conn)
        .await?;
        if address_taken {
            fields.insert(
                "address".into(),
                "another meter on this bus has this address".into(),
            );
        }
        let number_taken: bool = sqlx::query_scalar(
            "select exists (select 1 from meters where status = 'active' and meter_number = $1 and id is distinct from $2)",
        )
        .bind(number)
        .bind(except)
        .fetch_one(&mut *conn)
        .await?;
        if number_taken {
            fields.insert(
                "meter_number".into(),
                "another meter has this number".into(),
            );
        }
        let joins_bus = match except {
            None => true,
            Some(id) => {
                sqlx::query_scalar::<_, Uuid>("select bus_id from meters where id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                    != Some(input.bus_id)
            }
        };
        if joins_bus && on_bus >= BUS_METERS_WARN && !input.accept_crowded_bus {
            fields.insert(
                "accept_crowded_bus".into(),
                format!("the bus already has {on_bus} meters; confirm to add more"),
            );
        }
    }
    CoreError::check_fields(fields)?;
    Ok(CheckedMeter {
        address,
        number: number.to_owned(),
        mode,
        role,
    })
}

/// Validates and inserts a meter; returns its id. `check_quota` is false only when the caller
/// already checked the quota for all the meters it adds.
pub async fn insert_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &MeterInput,
    check_quota: bool,
) -> CoreResult<Uuid> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    let company_id = principal.company()?.id;
    let checked = validate_meter(conn, principal, input, None).await?;
    let CheckedMeter {
        address,
        number,
        mode,
        role,
    } = checked;
    let model = input.model.as_str();
    if check_quota {
        crate::companies::check_quota(conn, company_id, Quota::Meters, 1).await?;
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into meters (id, bus_id, model, address, meter_number, ct_ratio, pt_ratio, prepayment_mode, role, parent_id,
             shop_id, tariff_plan_id, alarm1_fen, alarm2_fen, install_date, initial_energy_wh, dlt645_password, dlt645_operator)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(id)
    .bind(input.bus_id)
    .bind(model)
    .bind(&address)
    .bind(&number)
    .bind(input.ct_ratio.unwrap_or(1))
    .bind(input.pt_ratio.unwrap_or(1))
    .bind(&mode)
    .bind(&role)
    .bind(input.parent_id)
    .bind(input.shop_id)
    .bind(input.tariff_plan_id)
    .bind(input.alarm1_fen)
    .bind(input.alarm2_fen)
    .bind(input.install_date)
    .bind(input.initial_energy_wh.unwrap_or(0))
    .bind(Some(input.dlt645_password.as_str()).filter(|s| !s.is_empty()))
    .bind(Some(input.dlt645_operator.as_str()).filter(|s| !s.is_empty()))
    .execute(&mut *conn)
    .await?;
    // The audit entry is built from what was stored, without reading the row back (imports
    // insert thousands).
    let after = serde_json::json!({
        "bus_id": input.bus_id, "model": model, "address": address, "meter_number": number,
        "prepayment_mode": mode, "role": role, "shop_id": input.shop_id,
        "tariff_plan_id": input.tariff_plan_id, "initial_energy_wh": input.initial_energy_wh.unwrap_or(0),
    });
    audit::record(
        conn,
        principal,
        "meter.create",
        "meter",
        Some(id.to_string()),
        None,
        Some(after),
    )
    .await?;
    Ok(id)
}

/// `Some(None)` for an explicit `null` (clear the value), `None` when the field is absent.
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Changes to a meter; absent fields stay, `null` clears the optional ones.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MeterPatch {
    pub ct_ratio: Option<i32>,
    pub pt_ratio: Option<i32>,
    pub prepayment_mode: Option<String>,
    pub role: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Uuid>))]
    pub parent_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Uuid>))]
    pub shop_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Uuid>))]
    pub tariff_plan_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub alarm1_fen: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub alarm2_fen: Option<Option<i64>>,
}

/// Whether a meter carries an open shop account. Accounts arrive with the billing issue, whose
/// migration creates the `accounts` table; until then no meter can carry one.
pub(crate) async fn meter_has_open_account(conn: &mut PgConnection, id: Uuid) -> CoreResult<bool> {
    let has_table: bool = sqlx::query_scalar("select to_regclass('accounts') is not null")
        .fetch_one(&mut *conn)
        .await?;
    if !has_table {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(
        "select exists (select 1 from accounts where meter_id = $1 and closed_at is null)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// Edits a meter with the same checks as creation. Its prepayment mode cannot change while it
/// carries an open account (the money would be on the wrong side).
pub async fn update_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    patch: &MeterPatch,
) -> CoreResult<Meter> {
    let before = meter(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    if before.status == "removed" {
        return Err(CoreError::Conflict(
            "this meter was removed; its record is kept as history".into(),
        ));
    }
    let input = MeterInput {
        bus_id: before.bus_id,
        model: before.model.clone(),
        address: before.address.clone(),
        meter_number: before.meter_number.clone(),
        ct_ratio: Some(patch.ct_ratio.unwrap_or(before.ct_ratio)),
        pt_ratio: Some(patch.pt_ratio.unwrap_or(before.pt_ratio)),
        prepayment_mode: Some(
            patch
                .prepayment_mode
                .clone()
                .unwrap_or_else(|| before.prepayment_mode.clone()),
        ),
        role: Some(patch.role.clone().unwrap_or_else(|| before.role.clone())),
        parent_id: patch.parent_id.unwrap_or(before.parent_id),
        shop_id: patch.shop_id.unwrap_or(before.shop_id),
        tariff_plan_id: patch.tariff_plan_id.unwrap_or(before.tariff_plan_id),
        alarm1_fen: patch.alarm1_fen.unwrap_or(before.alarm1_fen),
        alarm2_fen: patch.alarm2_fen.unwrap_or(before.alarm2_fen),
        install_date: before.install_date,
        initial_energy_wh: Some(before.initial_energy_wh),
        dlt645_password: String::new(),
        dlt645_operator: String::new(),
        accept_crowded_bus: true,
    };
    if input.parent_id == Some(id) {
        return Err(CoreError::field("parent_id", "a meter cannot feed itself"));
    }
    let mode_changes = input.prepayment_mode.as_deref() != Some(before.prepayment_mode.as_str());
    if mode_changes && meter_has_open_account(conn, id).await? {
        return Err(CoreError::field(
            "prepayment_mode",
            "close the meter's account before changing its prepayment mode",
        ));
    }
    let checked = validate_meter(conn, principal, &input, Some(id)).await?;
    sqlx::query(
        "update meters set ct_ratio = $2, pt_ratio = $3, prepayment_mode = $4, role = $5, parent_id = $6, shop_id = $7,
             tariff_plan_id = $8, alarm1_fen = $9, alarm2_fen = $10, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(input.ct_ratio)
    .bind(input.pt_ratio)
    .bind(&checked.mode)
    .bind(&checked.role)
    .bind(input.parent_id)
    .bind(input.shop_id)
    .bind(input.tariff_plan_id)
    .bind(input.alarm1_fen)
    .bind(input.alarm2_fen)
    .execute(&mut *conn)
    .await?;
    let after = meter(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "meter.update",
        "meter",
        Some(id.to_string()),
        Some(audit::snapshot(&before)),
        Some(audit::snapshot(&after)),
    )
    .await?;
    Ok(after)
}

/// The same change for many meters: a tariff plan, alarm levels or a prepayment mode.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct BulkMeterChange {
    pub meter_ids: Vec<Uuid>,
    #[serde(flatten)]
    pub patch: MeterPatch,
}

/// What a bulk change did: every meter changed, or none with each meter's problems.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BulkReport {
    /// Meters whose change passed its checks.
    pub updated: usize,
    /// Whether the changes were kept: only when no meter had an error.
    pub committed: bool,
    /// (meter id, field, message)
    pub errors: Vec<(Uuid, String, String)>,
}

/// Applies `change` to each meter in a savepoint; the caller commits only when `errors` is empty.
pub async fn bulk_update(
    conn: &mut PgConnection,
    principal: &Principal,
    change: &BulkMeterChange,
) -> CoreResult<BulkReport> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    if change.meter_ids.is_empty() || change.meter_ids.len() > 5000 {
        return Err(CoreError::field("meter_ids", "1 to 5,000 meters"));
    }
    let mut report = BulkReport {
        updated: 0,
        committed: false,
        errors: Vec::new(),
    };
    for &id in &change.meter_ids {
        sqlx::query("savepoint bulk_meter")
            .execute(&mut *conn)
            .await?;
        let result = update_meter(conn, principal, id, &change.patch).await;
        let end = if result.is_ok() {
            "release savepoint bulk_meter"
        } else {
            "rollback to savepoint bulk_meter"
        };
        sqlx::query(end).execute(&mut *conn).await?;
        match result {
            Ok(_) => report.updated += 1,
            Err(CoreError::Validation { fields, .. }) => {
                report
                    .errors
                    .extend(fields.into_iter().map(|(f, m)| (id, f, m)));
            }
            Err(CoreError::NotFound(_)) => {
                report
                    .errors
                    .push((id, "meter_ids".into(), "no such meter".into()))
            }
            Err(other) => return Err(other),
        }
    }
    report.committed = report.errors.is_empty();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_bytes_are_taken_as_text_or_hex() {
        assert_eq!(bytes_hex("PT01", false), Ok(Some("50543031".into())));
        assert_eq!(bytes_hex("50 54 0A ff", true), Ok(Some("50540aff".into())));
        assert_eq!(bytes_hex("", true), Ok(None));
        assert!(bytes_hex("5", true).is_err());
        assert!(bytes_hex("zz", true).is_err());
    }

    #[test]
    fn addresses_follow_the_bus_protocol() {
        assert_eq!(check_address("modbus_rtu", " 017 "), Ok("17".into()));
        assert!(check_address("modbus_rtu", "0").is_err());
        assert!(check_address("modbus_rtu", "248").is_err());
        assert_eq!(
            check_address("dlt645", "202611250001"),
            Ok("202611250001".into())
        );
        assert!(check_address("dlt645", "12345").is_err());
    }
}
