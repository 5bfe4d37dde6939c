//! The field as a company configures it: gateways of three kinds, their RS485 buses, and the
//! meters on the buses (DESIGN.md: Ingest; DOMAIN.md: serial servers, DTUs and gateways).
//! Gateway identities and DTU registration bytes are unique across the platform: they are also
//! written to `control.gateway_directory`, where ingest looks them up before it knows the company.
//! A taken identity answers "taken" without saying by whom. Quotas (gateways, meters) are
//! enforced here. Changes need the `settings` right and are audited.

use super::vocabulary::{GatewayKind, GatewayStatus};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use crate::tenancy::companies::{check_quota, Quota};
use crate::tenancy::roles::{Need, Right};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
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
    pub kind: GatewayKind,
    pub status: GatewayStatus,
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

#[tracing::instrument(skip_all)]
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
#[tracing::instrument(skip_all)]
pub async fn gateways_page(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &GatewayFilter,
) -> CoreResult<crate::kernel::page::Page<Gateway>> {
    principal.require_read_company()?;
    let limit = crate::kernel::page::limit(filter.limit)?;
    let cursor = crate::kernel::page::decode_cursor(filter.cursor.as_deref())?;
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
    Ok(crate::kernel::page::page_from(gateways, limit, |g| g.id))
}

#[tracing::instrument(skip_all)]
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
    if gateway.status == GatewayStatus::Removed {
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
#[tracing::instrument(skip_all)]
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
        .and_then(crate::field::registration::length_problem)
    {
        fields.insert("registration".into(), problem);
    }
    if kind != "dtu" && registration.is_some() {
        fields.insert(
            "registration".into(),
            "only DTUs register with bytes".into(),
        );
    }
    if crate::kernel::names::is_reserved_gateway_identity(identity) {
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
        crate::field::registration::check(conn, principal, hex, None).await?;
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
#[tracing::instrument(skip_all)]
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
                if let Some(problem) = crate::field::registration::length_problem(&hex) {
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
            crate::field::registration::check(conn, principal, hex, Some(id)).await?;
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
    .bind(patch.registration_repeats.unwrap_or(before.registration_repeats) && before.kind == GatewayKind::Dtu)
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
#[tracing::instrument(skip_all)]
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
#[tracing::instrument(skip_all)]
pub async fn set_gateway_status(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    enabled: bool,
) -> CoreResult<Gateway> {
    let before = gateway(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let status = if enabled {
        GatewayStatus::Enabled
    } else {
        GatewayStatus::Suspended
    };
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
