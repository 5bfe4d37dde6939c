//! Meters on the buses: their model, address and ratios, prepayment mode and role, creation
//! (with quota and building-limit checks), changes one by one and in bulk, and removal. Changes
//! need the `settings` right and are audited.

use super::gateways::*;
use super::vocabulary::{MeterModel, MeterRole, MeterStatus, PrepaymentMode, Protocol};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::companies::Quota;
use crate::tenancy::roles::{Need, Right};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meter {
    pub id: Uuid,
    pub bus_id: Uuid,
    pub gateway_id: Uuid,
    pub gateway_identity: String,
    pub bus_number: i32,
    pub model: MeterModel,
    pub address: String,
    pub meter_number: String,
    pub ct_ratio: i32,
    pub pt_ratio: i32,
    pub prepayment_mode: PrepaymentMode,
    pub role: MeterRole,
    pub parent_id: Option<Uuid>,
    pub shop_id: Option<Uuid>,
    pub tariff_plan_id: Option<Uuid>,
    pub alarm1_fen: Option<AmountFen>,
    pub alarm2_fen: Option<AmountFen>,
    pub install_date: Option<chrono::NaiveDate>,
    pub initial_energy_wh: i64,
    /// The meter's own TOU registers split its energy into periods (else the plan's clock).
    pub tou_registers_match: bool,
    pub status: MeterStatus,
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
    pub alarm1_fen: Option<AmountFen>,
    pub alarm2_fen: Option<AmountFen>,
    pub install_date: Option<chrono::NaiveDate>,
    pub initial_energy_wh: Option<i64>,
    /// Use the meter's TOU registers for the period split (default off).
    #[serde(default)]
    pub tou_registers_match: bool,
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
        m.shop_id, m.tariff_plan_id, m.alarm1_fen, m.alarm2_fen, m.install_date, m.initial_energy_wh, m.tou_registers_match, m.status,
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
        tou_registers_match: r.try_get("tou_registers_match")?,
        status: r.try_get("status")?,
        removed_at: r.try_get("removed_at")?,
        final_energy_wh: r.try_get("final_energy_wh")?,
    })
}

/// Every meter matching `filter` (up to 20,000), in wiring order: gateway, bus, address.
#[tracing::instrument(skip_all)]
pub async fn meters(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &MeterFilter,
) -> CoreResult<Vec<Meter>> {
    query_meters(conn, principal, filter, None).await
}

/// One page of meters matching `filter`, newest first.
#[tracing::instrument(skip_all)]
pub async fn meters_page(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &MeterFilter,
) -> CoreResult<crate::kernel::page::Page<Meter>> {
    let limit = crate::kernel::page::limit(filter.limit)?;
    let cursor = crate::kernel::page::decode_cursor(filter.cursor.as_deref())?;
    let rows = query_meters(conn, principal, filter, Some((cursor, limit + 1))).await?;
    Ok(crate::kernel::page::page_from(rows, limit, |m| m.id))
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

#[tracing::instrument(skip_all)]
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
#[tracing::instrument(skip_all)]
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
    pub(crate) mode: PrepaymentMode,
    pub(crate) role: MeterRole,
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
    // Parse, don't validate: from here on the model, mode and role are words of their lists.
    let model = MeterModel::parse(input.model.trim());
    if model.is_none() {
        fields.insert("model".into(), MeterModel::choices());
    }
    let model_protocol = model.map(MeterModel::protocol);
    if let (Ok(bus_protocol), Some(model_protocol)) = (protocol.parse::<Protocol>(), model_protocol)
    {
        if bus_protocol != model_protocol {
            fields.insert(
                "model".into(),
                format!("this model speaks {model_protocol}; the bus is {bus_protocol}"),
            );
        }
    }
    let address = check_address(
        if protocol.is_empty() {
            model_protocol.map_or("", Protocol::as_str)
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
    let mode = match input.prepayment_mode.as_deref().map(str::trim) {
        None | Some("") => PrepaymentMode::Platform,
        Some(text) => PrepaymentMode::parse(text).unwrap_or_else(|| {
            fields.insert("prepayment_mode".into(), PrepaymentMode::choices());
            PrepaymentMode::Platform
        }),
    };
    if mode == PrepaymentMode::Meter && model.is_some_and(|m| !m.supports_meter_side()) {
        fields.insert(
            "prepayment_mode".into(),
            "meter-side prepayment needs a model with the secure purchase".into(),
        );
    }
    let role = match input.role.as_deref().map(str::trim) {
        None | Some("") => MeterRole::Shop,
        Some(text) => MeterRole::parse(text).unwrap_or_else(|| {
            fields.insert("role".into(), MeterRole::choices());
            MeterRole::Shop
        }),
    };
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
    if model == Some(MeterModel::Dlt645) {
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
        match crate::tariff::plans::get(conn, principal, plan_id).await {
            Ok(plan)
                if mode == PrepaymentMode::Meter
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
#[tracing::instrument(skip_all)]
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
        crate::tenancy::companies::check_quota(conn, company_id, Quota::Meters, 1).await?;
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into meters (id, bus_id, model, address, meter_number, ct_ratio, pt_ratio, prepayment_mode, role, parent_id,
             shop_id, tariff_plan_id, alarm1_fen, alarm2_fen, install_date, initial_energy_wh, dlt645_password, dlt645_operator,
             tou_registers_match)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(id)
    .bind(input.bus_id)
    .bind(model)
    .bind(&address)
    .bind(&number)
    .bind(input.ct_ratio.unwrap_or(1))
    .bind(input.pt_ratio.unwrap_or(1))
    .bind(mode)
    .bind(role)
    .bind(input.parent_id)
    .bind(input.shop_id)
    .bind(input.tariff_plan_id)
    .bind(input.alarm1_fen)
    .bind(input.alarm2_fen)
    .bind(input.install_date)
    .bind(input.initial_energy_wh.unwrap_or(0))
    .bind(Some(input.dlt645_password.as_str()).filter(|s| !s.is_empty()))
    .bind(Some(input.dlt645_operator.as_str()).filter(|s| !s.is_empty()))
    .bind(input.tou_registers_match)
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
    pub alarm1_fen: Option<Option<AmountFen>>,
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub alarm2_fen: Option<Option<AmountFen>>,
    /// Use the meter's TOU registers for the period split.
    #[serde(default)]
    pub tou_registers_match: Option<bool>,
}

/// Whether a meter carries a shop account that is not closed.
pub(crate) async fn meter_has_open_account(conn: &mut PgConnection, id: Uuid) -> CoreResult<bool> {
    // The meter's place in an account that has not been closed (core::billing::accounts).
    Ok(sqlx::query_scalar(
        "select exists (select 1 from account_meters where meter_id = $1 and left_at is null)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// Edits a meter with the same checks as creation. Its prepayment mode cannot change while it
/// carries an open account (the money would be on the wrong side).
#[tracing::instrument(skip_all)]
pub async fn update_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    patch: &MeterPatch,
) -> CoreResult<Meter> {
    let before = meter(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    if before.status == MeterStatus::Removed {
        return Err(CoreError::Conflict(
            "this meter was removed; its record is kept as history".into(),
        ));
    }
    let input = MeterInput {
        bus_id: before.bus_id,
        model: before.model.as_str().to_owned(),
        address: before.address.clone(),
        meter_number: before.meter_number.clone(),
        ct_ratio: Some(patch.ct_ratio.unwrap_or(before.ct_ratio)),
        pt_ratio: Some(patch.pt_ratio.unwrap_or(before.pt_ratio)),
        prepayment_mode: Some(
            patch
                .prepayment_mode
                .clone()
                .unwrap_or_else(|| before.prepayment_mode.as_str().to_owned()),
        ),
        role: Some(
            patch
                .role
                .clone()
                .unwrap_or_else(|| before.role.as_str().to_owned()),
        ),
        parent_id: patch.parent_id.unwrap_or(before.parent_id),
        shop_id: patch.shop_id.unwrap_or(before.shop_id),
        tariff_plan_id: patch.tariff_plan_id.unwrap_or(before.tariff_plan_id),
        alarm1_fen: patch.alarm1_fen.unwrap_or(before.alarm1_fen),
        alarm2_fen: patch.alarm2_fen.unwrap_or(before.alarm2_fen),
        install_date: before.install_date,
        initial_energy_wh: Some(before.initial_energy_wh),
        tou_registers_match: patch
            .tou_registers_match
            .unwrap_or(before.tou_registers_match),
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
    // A new plan or ratio prices only what comes after the latest reading: what is stored is
    // rated under the old one first (DESIGN.md: mid-account changes, never retroactively).
    if input.tariff_plan_id != before.tariff_plan_id
        || input.ct_ratio != Some(before.ct_ratio)
        || input.pt_ratio != Some(before.pt_ratio)
    {
        crate::billing::changes::rate_before_change(conn, principal, id).await?;
    }
    sqlx::query(
        "update meters set ct_ratio = $2, pt_ratio = $3, prepayment_mode = $4, role = $5, parent_id = $6, shop_id = $7,
             tariff_plan_id = $8, alarm1_fen = $9, alarm2_fen = $10, tou_registers_match = $11, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(input.ct_ratio)
    .bind(input.pt_ratio)
    .bind(checked.mode)
    .bind(checked.role)
    .bind(input.parent_id)
    .bind(input.shop_id)
    .bind(input.tariff_plan_id)
    .bind(input.alarm1_fen)
    .bind(input.alarm2_fen)
    .bind(input.tou_registers_match)
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
#[tracing::instrument(skip_all)]
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
