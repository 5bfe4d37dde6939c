//! "Import the meter and gateway lists and it works": shops, gateways and meters from .xlsx or
//! .csv files shaped like the downloadable templates. Every row goes through the same service
//! functions as the API (same validation, same audit), each inside a savepoint so one bad row
//! does not hide the next one's errors. A dry run reports every row's errors and changes
//! nothing; a confirmed import is all-or-nothing: any error and nothing is kept.
//!
//! Columns are found by their header: the last word of each header cell is the column key
//! (`表号 meter_number`), so the Chinese label can be anything and columns may be in any order.

pub mod spreadsheet;

use crate::auth::Principal;
use crate::field::{self, BusInput, GatewayInput, MeterInput};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::kernel::xlsx::{Cell, Column, Sheet};
use crate::property::{self, BuildingInput, FloorInput, ShopInput};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Rows one file may hold.
pub use crate::import::spreadsheet::ROWS_MAX;

/// What a file holds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    Shops,
    Gateways,
    Meters,
}

/// One problem: the spreadsheet row (1 = header), the column key, the message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub column: String,
    pub message: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: usize,
    /// Records that were (or, in a dry run, would be) created.
    pub created: usize,
    pub errors: Vec<RowError>,
    pub dry_run: bool,
    /// Whether the changes were kept: a confirmed import without errors.
    pub committed: bool,
}

/// The columns of each kind: (key, Chinese label, width).
fn columns(kind: ImportKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        ImportKind::Shops => &[
            ("building", "建筑"),
            ("floor", "楼层"),
            ("number", "商铺号"),
            ("name", "名称"),
            ("area_m2", "面积m2"),
            ("contact_name", "联系人"),
            ("contact_phone", "联系电话"),
            ("status", "状态"),
        ],
        ImportKind::Gateways => &[
            ("identity", "网关标识"),
            ("name", "名称"),
            ("kind", "类型"),
            ("registration", "注册包"),
            ("registration_is_hex", "注册包为十六进制"),
            ("registration_repeats", "每包带注册包"),
            ("heartbeat", "心跳包"),
            ("heartbeat_is_hex", "心跳包为十六进制"),
            ("host", "主机"),
            ("bus", "总线号"),
            ("protocol", "协议"),
            ("baud", "波特率"),
            ("parity", "校验"),
            ("stop_bits", "停止位"),
            ("gap_ms", "间隔ms"),
            ("timeout_ms", "超时ms"),
            ("tcp_port", "TCP端口"),
        ],
        ImportKind::Meters => &[
            ("gateway", "网关标识"),
            ("bus", "总线号"),
            ("model", "型号"),
            ("address", "地址"),
            ("meter_number", "表号"),
            ("ct_ratio", "CT变比"),
            ("pt_ratio", "PT变比"),
            ("prepayment_mode", "预付费模式"),
            ("role", "用途"),
            ("building", "建筑"),
            ("shop_number", "商铺号"),
            ("tariff_plan", "电价方案"),
            ("alarm1_fen", "报警1(分)"),
            ("alarm2_fen", "报警2(分)"),
            ("install_date", "安装日期"),
            ("initial_energy_wh", "初始读数Wh"),
        ],
    }
}

/// The template: the header row, and one example row so people see the format.
pub fn template(kind: ImportKind) -> Sheet {
    let example: Vec<&str> = match kind {
        ImportKind::Shops => vec![
            "A座",
            "1F",
            "101",
            "奶茶店",
            "85.5",
            "张三",
            "13800138000",
            "occupied",
        ],
        ImportKind::Gateways => vec![
            "dtu-0001",
            "A座1F",
            "dtu",
            "IMEI861234",
            "false",
            "false",
            "FE",
            "true",
            "",
            "1",
            "modbus_rtu",
            "9600",
            "N",
            "1",
            "50",
            "1000",
            "",
        ],
        ImportKind::Meters => vec![
            "dtu-0001",
            "1",
            "dtsy1352",
            "1",
            "202611250001",
            "1",
            "1",
            "platform",
            "shop",
            "A座",
            "101",
            "商铺电价",
            "",
            "",
            "2026-11-25",
            "0",
        ],
    };
    sheet(
        kind,
        "zh",
        vec![example
            .into_iter()
            .map(|v| Cell::Text(v.to_owned()))
            .collect()],
    )
}

/// A sheet of `kind` in the import columns (headers "label key"), so what is exported imports
/// again unchanged.
pub fn sheet(kind: ImportKind, lang: &str, rows: Vec<Vec<Cell>>) -> Sheet {
    let zh = lang != "en";
    let name = match (kind, zh) {
        (ImportKind::Shops, true) => "商铺",
        (ImportKind::Gateways, true) => "网关",
        (ImportKind::Meters, true) => "电表",
        (ImportKind::Shops, false) => "Shops",
        (ImportKind::Gateways, false) => "Gateways",
        (ImportKind::Meters, false) => "Meters",
    };
    Sheet {
        name: name.to_owned(),
        columns: columns(kind)
            .iter()
            .map(|(key, label)| Column::new(format!("{label} {key}"), 16.0))
            .collect(),
        rows,
        totals: None,
    }
}

fn text(value: &str) -> Cell {
    Cell::Text(value.to_owned())
}

/// Shops as an importable sheet.
pub fn shops_sheet(shops: &[property::Shop], lang: &str) -> Sheet {
    let rows = shops
        .iter()
        .map(|s| {
            vec![
                text(&s.building_name),
                text(&s.floor_name),
                text(&s.number),
                text(&s.name),
                s.area_centi_m2.map_or(Cell::Empty, Cell::Decimal2),
                text(&s.contact_name),
                text(&s.contact_phone),
                text(s.status.as_str()),
            ]
        })
        .collect();
    sheet(ImportKind::Shops, lang, rows)
}

/// Gateways as an importable sheet, one row per bus. MQTT credentials are never exported: a
/// re-import of an MQTT gateway needs its credential typed in again.
pub fn gateways_sheet(gateways: &[field::Gateway], lang: &str) -> Sheet {
    let mut rows = Vec::new();
    for g in gateways {
        for b in &g.buses {
            rows.push(vec![
                text(&g.identity),
                text(&g.name),
                text(g.kind.as_str()),
                text(g.registration_hex.as_deref().unwrap_or("")),
                text("true"),
                text(if g.registration_repeats {
                    "true"
                } else {
                    "false"
                }),
                text(g.heartbeat_hex.as_deref().unwrap_or("")),
                text("true"),
                text(g.host.as_deref().unwrap_or("")),
                Cell::Int(b.number.into()),
                text(&b.protocol),
                Cell::Int(b.baud.into()),
                text(&b.parity),
                Cell::Int(b.stop_bits.into()),
                Cell::Int(b.gap_ms.into()),
                Cell::Int(b.timeout_ms.into()),
                b.tcp_port.map_or(Cell::Empty, |p| Cell::Int(p.into())),
            ]);
        }
    }
    sheet(ImportKind::Gateways, lang, rows)
}

/// Meters as an importable sheet; shops by building and number, plans by name.
pub fn meters_sheet(
    meters: &[field::Meter],
    shops: &BTreeMap<Uuid, (String, String)>,
    plans: &BTreeMap<Uuid, String>,
    lang: &str,
) -> Sheet {
    let rows = meters
        .iter()
        .map(|m| {
            let (building, shop) = m
                .shop_id
                .and_then(|id| shops.get(&id).cloned())
                .unwrap_or_default();
            let opt_int = |v: Option<i64>| v.map_or(Cell::Empty, Cell::Int);
            vec![
                text(&m.gateway_identity),
                Cell::Int(m.bus_number.into()),
                text(m.model.as_str()),
                text(&m.address),
                text(&m.meter_number),
                Cell::Int(m.ct_ratio.into()),
                Cell::Int(m.pt_ratio.into()),
                text(m.prepayment_mode.as_str()),
                text(m.role.as_str()),
                text(&building),
                text(&shop),
                text(
                    m.tariff_plan_id
                        .and_then(|id| plans.get(&id))
                        .map_or("", String::as_str),
                ),
                opt_int(m.alarm1_fen.map(AmountFen::fen)),
                opt_int(m.alarm2_fen.map(AmountFen::fen)),
                m.install_date.map_or(Cell::Empty, |d| text(&d.to_string())),
                Cell::Int(m.initial_energy_wh),
            ]
        })
        .collect();
    sheet(ImportKind::Meters, lang, rows)
}

/// Reads an uploaded file into text rows, within the import limits (see [`crate::import::spreadsheet`]).
pub use crate::import::spreadsheet::read_rows;

/// Rows keyed by column key, with their spreadsheet row number (header = row 1).
fn keyed(
    kind: ImportKind,
    rows: &[Vec<String>],
) -> CoreResult<Vec<(usize, BTreeMap<&'static str, String>)>> {
    let header = rows
        .first()
        .ok_or_else(|| CoreError::field("file", "the file is empty"))?;
    let known = columns(kind);
    let mut positions = Vec::new();
    for (i, cell) in header.iter().enumerate() {
        let key = cell.split_whitespace().last().unwrap_or("");
        if let Some((k, _)) = known.iter().find(|(k, _)| *k == key) {
            positions.push((i, *k));
        }
    }
    let required: &[&str] = match kind {
        ImportKind::Shops => &["building", "floor", "number"],
        ImportKind::Gateways => &["identity", "kind", "bus", "protocol"],
        ImportKind::Meters => &["gateway", "bus", "model", "address", "meter_number"],
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !positions.iter().any(|(_, k)| k == r))
        .collect();
    if !missing.is_empty() {
        return Err(CoreError::field(
            "file",
            format!(
                "missing columns: {} (download the template)",
                missing.join(", ")
            ),
        ));
    }
    Ok(rows
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, r)| r.iter().any(|v| !v.is_empty()))
        .map(|(n, r)| {
            let map = positions
                .iter()
                .map(|&(i, k)| (k, r.get(i).cloned().unwrap_or_default()))
                .collect();
            (n + 1, map)
        })
        .collect())
}

/// Where a service's field error shows in the file.
fn column_of(kind: ImportKind, field: &str) -> String {
    let mapped = match (kind, field) {
        (ImportKind::Shops, "floor_id") => "floor",
        (ImportKind::Gateways, f) if f.starts_with("buses.") => f
            .rsplit('.')
            .next()
            .map_or("bus", |c| if c == "number" { "bus" } else { c }),
        (ImportKind::Meters, "bus_id") => "bus",
        (ImportKind::Meters, "shop_id") => "shop_number",
        (ImportKind::Meters, "tariff_plan_id") => "tariff_plan",
        (_, f) => f,
    };
    mapped.to_owned()
}

fn errors_from(kind: ImportKind, row: usize, err: CoreError) -> Vec<RowError> {
    match err {
        CoreError::Validation { fields, .. } => fields
            .into_iter()
            .map(|(field, message)| RowError {
                row,
                column: column_of(kind, &field),
                message,
            })
            .collect(),
        err if err.is_internal() => {
            // Not the row's fault, and nothing of the database's text for the caller.
            tracing::error!(row, cause = %err, "import row failed");
            vec![RowError {
                row,
                column: String::new(),
                message: err.public_message(),
            }]
        }
        other => vec![RowError {
            row,
            column: String::new(),
            message: other.public_message(),
        }],
    }
}

fn flag(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "true" | "yes" | "1" | "是" | "y"
    )
}

fn optional_number<T: std::str::FromStr>(
    row: usize,
    column: &str,
    text: &str,
    errors: &mut Vec<RowError>,
) -> Option<T> {
    if text.is_empty() {
        return None;
    }
    text.parse().map(Some).unwrap_or_else(|_| {
        errors.push(RowError {
            row,
            column: column.into(),
            message: "a whole number".into(),
        });
        None
    })
}

/// Imports a file's rows of `kind`. With `dry_run` (or any error) nothing is kept; the caller
/// commits the transaction only when the report says `committed`.
#[tracing::instrument(skip_all)]
pub async fn import(
    conn: &mut PgConnection,
    principal: &Principal,
    kind: ImportKind,
    rows: &[Vec<String>],
    dry_run: bool,
) -> CoreResult<ImportReport> {
    principal.company()?;
    let rows = keyed(kind, rows)?;
    let mut report = ImportReport {
        rows: rows.len(),
        created: 0,
        errors: Vec::new(),
        dry_run,
        committed: false,
    };
    match kind {
        ImportKind::Shops => import_shops(conn, principal, &rows, &mut report).await?,
        ImportKind::Gateways => import_gateways(conn, principal, &rows, &mut report).await?,
        ImportKind::Meters => import_meters(conn, principal, &rows, &mut report).await?,
    }
    report.committed = !dry_run && report.errors.is_empty();
    Ok(report)
}

/// Starts one row's savepoint.
async fn savepoint(conn: &mut PgConnection) -> CoreResult<()> {
    sqlx::query("savepoint import_row").execute(conn).await?;
    Ok(())
}

/// Ends one row's savepoint: its work is kept when it succeeded and undone when it failed.
async fn end_savepoint<T>(
    conn: &mut PgConnection,
    result: CoreResult<T>,
) -> CoreResult<CoreResult<T>> {
    let end = if result.is_ok() {
        "release savepoint import_row"
    } else {
        "rollback to savepoint import_row"
    };
    sqlx::query(end).execute(conn).await?;
    Ok(result)
}

type Rows = [(usize, BTreeMap<&'static str, String>)];

async fn import_shops(
    conn: &mut PgConnection,
    principal: &Principal,
    rows: &Rows,
    report: &mut ImportReport,
) -> CoreResult<()> {
    // Buildings and floors are found by name, and created when missing.
    let mut floors: BTreeMap<(String, String), Uuid> = BTreeMap::new();
    for building in property::tree(conn, principal).await? {
        for floor in &building.floors {
            floors.insert((building.name.clone(), floor.name.clone()), floor.id);
        }
    }
    for (row, r) in rows {
        let get = |k: &str| r.get(k).cloned().unwrap_or_default();
        let key = (get("building"), get("floor"));
        let floor_id = match floors.get(&key) {
            Some(id) => *id,
            None => {
                savepoint(conn).await?;
                let result = ensure_floor(conn, principal, &key.0, &key.1).await;
                let created = end_savepoint(conn, result).await?;
                match created {
                    Ok(id) => {
                        floors.insert(key, id);
                        id
                    }
                    Err(e) => {
                        let mut errors = errors_from(ImportKind::Shops, *row, e);
                        for e in &mut errors {
                            if e.column == "name" {
                                e.column = "building".into();
                            }
                        }
                        report.errors.extend(errors);
                        continue;
                    }
                }
            }
        };
        let input = ShopInput {
            floor_id,
            number: get("number"),
            name: get("name"),
            area_m2: get("area_m2"),
            contact_name: get("contact_name"),
            contact_phone: get("contact_phone"),
            status: get("status"),
        };
        savepoint(conn).await?;
        let result = property::create_shop(conn, principal, &input).await;
        match end_savepoint(conn, result).await? {
            Ok(_) => report.created += 1,
            Err(e) => report
                .errors
                .extend(errors_from(ImportKind::Shops, *row, e)),
        }
    }
    Ok(())
}

async fn ensure_floor(
    conn: &mut PgConnection,
    principal: &Principal,
    building: &str,
    floor: &str,
) -> CoreResult<Uuid> {
    let existing = property::tree(conn, principal)
        .await?
        .into_iter()
        .find(|b| b.name == building.trim());
    let building = match existing {
        Some(b) => b,
        None => {
            property::create_building(
                conn,
                principal,
                &BuildingInput {
                    name: building.to_owned(),
                    address: String::new(),
                },
            )
            .await?
        }
    };
    if let Some(f) = building.floors.iter().find(|f| f.name == floor.trim()) {
        return Ok(f.id);
    }
    let created = property::create_floor(
        conn,
        principal,
        building.id,
        &FloorInput {
            name: floor.to_owned(),
            sort_order: 0,
        },
    )
    .await
    .map_err(|e| match e {
        CoreError::Validation { message, fields } => CoreError::Validation {
            message,
            fields: fields
                .into_iter()
                .map(|(k, v)| (if k == "name" { "floor".into() } else { k }, v))
                .collect(),
        },
        other => other,
    })?;
    Ok(created.id)
}

async fn import_gateways(
    conn: &mut PgConnection,
    principal: &Principal,
    rows: &Rows,
    report: &mut ImportReport,
) -> CoreResult<()> {
    // One row per bus: consecutive rows with the same identity make one gateway.
    let mut groups: Vec<(usize, Vec<&BTreeMap<&'static str, String>>)> = Vec::new();
    for (row, r) in rows {
        let identity = r.get("identity").cloned().unwrap_or_default();
        match groups.last_mut() {
            Some((_, members))
                if members[0].get("identity") == Some(&identity) && !identity.is_empty() =>
            {
                members.push(r)
            }
            _ => groups.push((*row, vec![r])),
        }
    }
    for (row, members) in groups {
        let first = members[0];
        let get = |k: &str| first.get(k).cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let buses = members
            .iter()
            .map(|m| {
                let g = |k: &str| m.get(k).cloned().unwrap_or_default();
                BusInput {
                    number: optional_number(row, "bus", &g("bus"), &mut errors).unwrap_or(0),
                    protocol: g("protocol"),
                    baud: optional_number(row, "baud", &g("baud"), &mut errors),
                    parity: Some(g("parity")).filter(|p| !p.is_empty()),
                    stop_bits: optional_number(row, "stop_bits", &g("stop_bits"), &mut errors),
                    gap_ms: optional_number(row, "gap_ms", &g("gap_ms"), &mut errors),
                    timeout_ms: optional_number(row, "timeout_ms", &g("timeout_ms"), &mut errors),
                    tcp_port: optional_number(row, "tcp_port", &g("tcp_port"), &mut errors),
                }
            })
            .collect();
        if !errors.is_empty() {
            report.errors.extend(errors);
            continue;
        }
        let input = GatewayInput {
            identity: get("identity"),
            name: get("name"),
            kind: get("kind"),
            registration: get("registration"),
            registration_is_hex: flag(&get("registration_is_hex")),
            registration_repeats: flag(&get("registration_repeats")),
            heartbeat: get("heartbeat"),
            heartbeat_is_hex: flag(&get("heartbeat_is_hex")),
            host: get("host"),
            buses,
        };
        savepoint(conn).await?;
        let result = field::create_gateway(conn, principal, &input).await;
        match end_savepoint(conn, result).await? {
            Ok(_) => report.created += 1,
            Err(e) => report
                .errors
                .extend(errors_from(ImportKind::Gateways, row, e)),
        }
    }
    Ok(())
}

async fn import_meters(
    conn: &mut PgConnection,
    principal: &Principal,
    rows: &Rows,
    report: &mut ImportReport,
) -> CoreResult<()> {
    // Lookups by the names people use: gateway identity + bus number, building + shop number,
    // tariff plan name.
    let mut buses: BTreeMap<(String, i32), Uuid> = BTreeMap::new();
    for g in field::list_gateways(conn, principal).await? {
        for b in &g.buses {
            buses.insert((g.identity.clone(), b.number), b.id);
        }
    }
    let shops: BTreeMap<(String, String), Uuid> =
        property::shops(conn, principal, &Default::default())
            .await?
            .into_iter()
            .map(|s| ((s.building_name, s.number), s.id))
            .collect();
    // The quota is checked once for the whole file instead of once per row.
    crate::tenancy::companies::check_quota(
        conn,
        principal.company()?.id,
        crate::tenancy::companies::Quota::Meters,
        rows.len(),
    )
    .await?;
    let plans: BTreeMap<String, Uuid> = crate::tariff::plans::list(conn, principal)
        .await?
        .into_iter()
        .map(|p| (p.name, p.id))
        .collect();
    for (row, r) in rows {
        let row = *row;
        let get = |k: &str| r.get(k).cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let bus_number: Option<i32> = optional_number(row, "bus", &get("bus"), &mut errors);
        let bus_id = bus_number.and_then(|n| buses.get(&(get("gateway"), n)).copied());
        if bus_id.is_none() && errors.is_empty() {
            errors.push(RowError {
                row,
                column: "bus".into(),
                message: "no such gateway and bus".into(),
            });
        }
        let shop_id = match (get("building"), get("shop_number")) {
            (_, n) if n.is_empty() => None,
            (b, n) => shops.get(&(b, n)).copied().or_else(|| {
                errors.push(RowError {
                    row,
                    column: "shop_number".into(),
                    message: "no such shop in that building".into(),
                });
                None
            }),
        };
        let plan_id = match get("tariff_plan") {
            p if p.is_empty() => None,
            p => plans.get(&p).copied().or_else(|| {
                errors.push(RowError {
                    row,
                    column: "tariff_plan".into(),
                    message: "no tariff plan with this name".into(),
                });
                None
            }),
        };
        let install_date = match get("install_date") {
            d if d.is_empty() => None,
            d => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map(Some)
                .unwrap_or_else(|_| {
                    errors.push(RowError {
                        row,
                        column: "install_date".into(),
                        message: "a date like 2026-11-25".into(),
                    });
                    None
                }),
        };
        let input = MeterInput {
            bus_id: bus_id.unwrap_or_else(Uuid::nil),
            model: get("model"),
            address: get("address"),
            meter_number: get("meter_number"),
            ct_ratio: optional_number(row, "ct_ratio", &get("ct_ratio"), &mut errors),
            pt_ratio: optional_number(row, "pt_ratio", &get("pt_ratio"), &mut errors),
            prepayment_mode: Some(get("prepayment_mode")).filter(|m| !m.is_empty()),
            role: Some(get("role")).filter(|m| !m.is_empty()),
            parent_id: None,
            shop_id,
            tariff_plan_id: plan_id,
            alarm1_fen: optional_number::<i64>(row, "alarm1_fen", &get("alarm1_fen"), &mut errors)
                .map(AmountFen::from_fen),
            alarm2_fen: optional_number::<i64>(row, "alarm2_fen", &get("alarm2_fen"), &mut errors)
                .map(AmountFen::from_fen),
            install_date,
            initial_energy_wh: optional_number(
                row,
                "initial_energy_wh",
                &get("initial_energy_wh"),
                &mut errors,
            ),
            tou_registers_match: false,
            dlt645_password: String::new(),
            dlt645_operator: String::new(),
            // Confirming the import accepts crowded buses; the admin sees the bus list after.
            accept_crowded_bus: true,
        };
        if !errors.is_empty() {
            report.errors.extend(errors);
            continue;
        }
        savepoint(conn).await?;
        let result = field::insert_meter(conn, principal, &input, false).await;
        match end_savepoint(conn, result).await? {
            Ok(_) => report.created += 1,
            Err(e) => report
                .errors
                .extend(errors_from(ImportKind::Meters, row, e)),
        }
    }
    Ok(())
}

/// An upload of the import wizard with its latest report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Upload {
    pub id: Uuid,
    pub kind: ImportKind,
    pub filename: String,
    pub report: ImportReport,
    pub confirmed: bool,
}

/// Uploads older than this are deleted; the wizard asks for the file again.
pub const UPLOAD_KEEP_HOURS: i64 = 24;

/// Keeps an uploaded file with its dry-run report (the dry run's changes are undone), so the
/// person can look at the errors and confirm later from another request.
#[tracing::instrument(skip_all)]
pub async fn stage(
    conn: &mut PgConnection,
    principal: &Principal,
    kind: ImportKind,
    filename: &str,
    bytes: &[u8],
) -> CoreResult<Upload> {
    principal.require_read_company()?;
    principal.require(crate::tenancy::roles::Need::Act(
        crate::tenancy::roles::Right::Settings,
    ))?;
    let rows = read_rows(bytes, filename)?;
    sqlx::query("savepoint dry_run").execute(&mut *conn).await?;
    let report = import(conn, principal, kind, &rows, true).await;
    sqlx::query("rollback to savepoint dry_run")
        .execute(&mut *conn)
        .await?;
    let report = report?;
    sqlx::query("delete from import_uploads where created_at < now() - $1 * interval '1 hour'")
        .bind(UPLOAD_KEEP_HOURS)
        .execute(&mut *conn)
        .await?;
    let id = Uuid::now_v7();
    sqlx::query("insert into import_uploads (id, kind, filename, content, report, created_by) values ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(serde_json::to_value(kind).expect("an enum").as_str().unwrap_or("shops"))
        .bind(filename)
        .bind(bytes)
        .bind(serde_json::to_value(&report).expect("plain data"))
        .bind(principal.user_id)
        .execute(&mut *conn)
        .await?;
    Ok(Upload {
        id,
        kind,
        filename: filename.to_owned(),
        report,
        confirmed: false,
    })
}

fn kind_from(text: &str) -> CoreResult<ImportKind> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| CoreError::Internal(format!("stored import kind {text:?}")))
}

/// One upload of the caller's company.
#[tracing::instrument(skip_all)]
pub async fn upload(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Upload> {
    principal.require_read_company()?;
    let r = sqlx::query("select kind, filename, report, confirmed_at is not null as confirmed from import_uploads where id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(CoreError::NotFound("upload"))?;
    let report: serde_json::Value = r.try_get("report")?;
    Ok(Upload {
        id,
        kind: kind_from(&r.try_get::<String, _>("kind")?)?,
        filename: r.try_get("filename")?,
        report: serde_json::from_value(report)
            .map_err(|e| CoreError::Internal(format!("stored report: {e}")))?,
        confirmed: r.try_get("confirmed")?,
    })
}

/// Imports a staged upload for real. The caller commits when the report says `committed`;
/// otherwise it rolls back and the person sees the new report's errors.
#[tracing::instrument(skip_all)]
pub async fn confirm(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Upload> {
    let staged = upload(conn, principal, id).await?;
    principal.require(crate::tenancy::roles::Need::Act(
        crate::tenancy::roles::Right::Settings,
    ))?;
    if staged.confirmed {
        return Err(CoreError::Conflict("this file was imported already".into()));
    }
    let content: Vec<u8> =
        sqlx::query_scalar("select content from import_uploads where id = $1 for update")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    let rows = read_rows(&content, &staged.filename)?;
    let report = import(conn, principal, staged.kind, &rows, false).await?;
    if report.committed {
        sqlx::query("update import_uploads set confirmed_at = now(), report = $2 where id = $1")
            .bind(id)
            .bind(serde_json::to_value(&report).expect("plain data"))
            .execute(&mut *conn)
            .await?;
        let summary = serde_json::json!({"kind": staged.kind, "file": staged.filename, "rows": report.rows, "created": report.created});
        crate::tenancy::audit::record(
            conn,
            principal,
            "import",
            "import",
            Some(id.to_string()),
            None,
            Some(summary),
        )
        .await?;
    }
    let confirmed = report.committed;
    Ok(Upload {
        report,
        confirmed,
        ..staged
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn csv_files_are_read_with_or_without_a_bom() {
        let rows = read_rows(
            "\u{feff}建筑 building,楼层 floor,商铺号 number\nA座,1F,101\n".as_bytes(),
            "shops.csv",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["建筑 building", "楼层 floor", "商铺号 number"],
                vec!["A座", "1F", "101"]
            ]
        );
        assert!(read_rows(&[0xff, 0xfe, 0x00], "x.csv").is_err());
        assert!(read_rows(b"not a workbook", "x.xlsx").is_err());
    }

    #[test]
    fn columns_are_found_by_the_last_word_of_their_header_and_blank_rows_skipped() {
        let rows: Vec<Vec<String>> = vec![
            vec![
                "楼层 floor".into(),
                "anything building".into(),
                "number".into(),
            ],
            vec!["1F".into(), "A".into(), "101".into()],
            vec![String::new(), String::new(), String::new()],
            vec!["2F".into(), "A".into(), "201".into()],
        ];
        let keyed = keyed(ImportKind::Shops, &rows).unwrap();
        assert_eq!(keyed.len(), 2);
        assert_eq!(
            keyed[1].0, 4,
            "spreadsheet row numbers count the header and blank rows"
        );
        assert_eq!(keyed[1].1["floor"], "2F");
        let missing = keyed_err(vec![vec!["floor".into()]]);
        assert!(
            missing.contains("building") && missing.contains("number"),
            "{missing}"
        );
    }

    fn keyed_err(rows: Vec<Vec<String>>) -> String {
        match keyed(ImportKind::Shops, &rows) {
            Err(CoreError::Validation { fields, .. }) => fields["file"].clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn templates_round_trip_through_the_reader() {
        for kind in [ImportKind::Shops, ImportKind::Gateways, ImportKind::Meters] {
            let bytes = template(kind).to_xlsx("Asia/Shanghai").unwrap();
            let rows = read_rows(&bytes, "template.xlsx").unwrap();
            let keyed = keyed(kind, &rows).unwrap();
            assert_eq!(keyed.len(), 1, "{kind:?}");
            assert_eq!(keyed[0].1.len(), columns(kind).len());
        }
    }
}
