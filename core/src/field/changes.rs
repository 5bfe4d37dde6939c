//! Changes to the field over time: editing a gateway's buses, removing gateways and meters, and
//! meter swaps. Nothing that meters have used is deleted: a removed gateway or bus is retired
//! (its identity or port number can be used again), a removed meter keeps its record with its
//! final reading, and a swap links the old meter to its replacement with both readings so that
//! consumption is never counted across the change. `control.gateway_directory` follows every
//! change, because ingest finds gateways there. All of it needs the `settings` right and is
//! audited.

use crate::auth::Principal;
use crate::field::{self, Bus, BusInput, Gateway, Meter, MeterInput, MeterStatus};
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The complete list of a gateway's buses: buses are matched by port number; a new number adds
/// a bus, a missing one removes it (only when no meter is on it), the others are changed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct BusesInput {
    pub buses: Vec<BusInput>,
}

/// Replaces a gateway's bus list (see [`BusesInput`]). A bus that carries meters keeps its
/// protocol; serial settings may change (ingest picks them up on its next poll cycle).
#[tracing::instrument(skip_all)]
pub async fn set_buses(
    conn: &mut PgConnection,
    principal: &Principal,
    gateway_id: Uuid,
    input: &BusesInput,
) -> CoreResult<Gateway> {
    let before = field::gateway(conn, principal, gateway_id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let mut fields = BTreeMap::new();
    if input.buses.is_empty() || input.buses.len() > 64 {
        fields.insert("buses".into(), "1 to 64 buses".into());
    }
    let wanted: Vec<Bus> = input
        .buses
        .iter()
        .enumerate()
        .map(|(i, b)| field::check_bus(i, b, before.kind.as_str(), &mut fields))
        .collect();
    let mut numbers: Vec<i32> = wanted.iter().map(|b| b.number).collect();
    numbers.sort_unstable();
    if numbers.windows(2).any(|w| w[0] == w[1]) {
        fields.insert("buses".into(), "two buses share a port number".into());
    }
    for (i, bus) in wanted.iter().enumerate() {
        let existing = before.buses.iter().find(|b| b.number == bus.number);
        if let Some(old) = existing.filter(|old| old.meter_count > 0) {
            if old.protocol != bus.protocol {
                fields.insert(
                    format!("buses.{i}.protocol"),
                    format!(
                        "port {} carries {} meters speaking {}; move them first",
                        old.number, old.meter_count, old.protocol
                    ),
                );
            }
        }
    }
    for old in &before.buses {
        if old.meter_count > 0 && !wanted.iter().any(|b| b.number == old.number) {
            fields.insert(
                "buses".into(),
                format!(
                    "port {} still carries {} meters; move or remove them first",
                    old.number, old.meter_count
                ),
            );
        }
    }
    CoreError::check_fields(fields)?;
    for old in &before.buses {
        if !wanted.iter().any(|b| b.number == old.number) {
            sqlx::query("update buses set removed_at = now() where id = $1")
                .bind(old.id)
                .execute(&mut *conn)
                .await?;
        }
    }
    for bus in &wanted {
        field::write_bus(conn, gateway_id, &before.buses, bus).await?;
    }
    sqlx::query("update gateways set updated_at = now() where id = $1")
        .bind(gateway_id)
        .execute(&mut *conn)
        .await?;
    let after = field::load_gateway(conn, gateway_id).await?;
    audit::record(
        conn,
        principal,
        "gateway.buses",
        "gateway",
        Some(gateway_id.to_string()),
        Some(audit::snapshot(&before)),
        Some(audit::snapshot(&after)),
    )
    .await?;
    Ok(after)
}

/// Removes a gateway that no longer carries meters: it is retired with its buses, and its
/// identity and registration leave the platform directory at once, so ingest refuses it and the
/// identity can be given to another gateway.
#[tracing::instrument(skip_all)]
pub async fn remove_gateway(
    conn: &mut PgConnection,
    principal: &Principal,
    gateway_id: Uuid,
) -> CoreResult<()> {
    let before = field::gateway(conn, principal, gateway_id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    let meters: i64 = before.buses.iter().map(|b| b.meter_count).sum();
    if meters > 0 {
        return Err(CoreError::Conflict(format!(
            "the gateway still carries {meters} meters; move or remove them first"
        )));
    }
    sqlx::query(
        "update gateways set status = 'removed', removed_at = now(), updated_at = now() where id = $1",
    )
    .bind(gateway_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("update buses set removed_at = now() where gateway_id = $1 and removed_at is null")
        .bind(gateway_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from control.gateway_directory where gateway_id = $1")
        .bind(gateway_id)
        .execute(&mut *conn)
        .await?;
    let json = audit::snapshot(&before);
    audit::record(
        conn,
        principal,
        "gateway.remove",
        "gateway",
        Some(gateway_id.to_string()),
        Some(json),
        None,
    )
    .await?;
    Ok(())
}

/// Taking a meter off: its last register reading and when.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MeterRemoval {
    pub final_energy_wh: i64,
    /// Defaults to now; never in the future.
    pub removed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: String,
}

/// A replacement meter: what differs from the old one, and the two readings at the swap. The new
/// meter takes the old one's bus, shop, plan, role, feeder, ratios and alarm levels.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct MeterSwapInput {
    pub meter_number: String,
    /// Defaults to the old meter's model.
    pub model: Option<String>,
    /// Defaults to the old meter's bus address.
    pub address: Option<String>,
    /// The old meter's register when it came off.
    pub old_final_energy_wh: i64,
    /// The new meter's register when it went on.
    #[serde(default)]
    pub new_initial_energy_wh: i64,
    /// Defaults to now; never in the future.
    pub swapped_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub dlt645_password: String,
    #[serde(default)]
    pub dlt645_operator: String,
}

/// One swap in a meter's history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeterSwap {
    pub id: Uuid,
    pub old_meter_id: Uuid,
    pub old_meter_number: String,
    pub new_meter_id: Uuid,
    pub new_meter_number: String,
    pub swapped_at: DateTime<Utc>,
    pub old_final_energy_wh: i64,
    pub new_initial_energy_wh: i64,
    pub reason: String,
}

/// What a swap did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwapResult {
    pub old: Meter,
    pub new: Meter,
    pub swap: MeterSwap,
}

/// The time of a removal or swap: now by default, never in the future, never before the meter
/// went in.
fn change_time(
    now: DateTime<Utc>,
    at: Option<DateTime<Utc>>,
    meter: &Meter,
    field_name: &str,
    fields: &mut BTreeMap<String, String>,
) -> DateTime<Utc> {
    let at = at.unwrap_or(now);
    if at > now + chrono::Duration::minutes(5) {
        fields.insert(field_name.into(), "not in the future".into());
    }
    if meter
        .install_date
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .is_some_and(|installed| at.naive_utc() < installed - chrono::Duration::days(1))
    {
        fields.insert(field_name.into(), "before the meter was installed".into());
    }
    at
}

/// Checks a final reading: registers only count up, so it cannot be below the meter's initial
/// reading (or its latest stored reading, once ingest stores readings).
async fn check_final_reading(
    conn: &mut PgConnection,
    meter: &Meter,
    final_wh: i64,
    field_name: &str,
    fields: &mut BTreeMap<String, String>,
) -> CoreResult<()> {
    let latest = latest_energy_wh(conn, meter.id).await?;
    let floor = latest.unwrap_or(0).max(meter.initial_energy_wh);
    if final_wh < floor {
        fields.insert(
            field_name.into(),
            format!("at least {floor} Wh (the meter's last known reading)"),
        );
    }
    Ok(())
}

/// The meter's latest stored register reading, when readings exist. The readings tables come
/// with ingest; until its migration ran there are none.
async fn latest_energy_wh(conn: &mut PgConnection, meter_id: Uuid) -> CoreResult<Option<i64>> {
    let has_table: bool = sqlx::query_scalar("select to_regclass('meter_latest') is not null")
        .fetch_one(&mut *conn)
        .await?;
    if !has_table {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("select energy_wh from meter_latest where meter_id = $1")
            .bind(meter_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// The checks every way of taking a meter off shares.
async fn check_removable(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<Meter> {
    let meter = field::meter(conn, principal, meter_id).await?;
    principal.require(Need::Act(Right::Settings))?;
    if meter.status == MeterStatus::Removed {
        return Err(CoreError::Conflict("this meter was already removed".into()));
    }
    Ok(meter)
}

/// Marks a meter removed with its final reading.
async fn retire_meter(
    conn: &mut PgConnection,
    meter_id: Uuid,
    final_wh: i64,
    at: DateTime<Utc>,
) -> CoreResult<()> {
    sqlx::query(
        "update meters set status = 'removed', removed_at = $2, final_energy_wh = $3, updated_at = now()
         where id = $1",
    )
    .bind(meter_id)
    .bind(at)
    .bind(final_wh)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes a meter off for good (the shop closed, the circuit is gone). A meter that carries an
/// open account or feeds other meters is refused: close the account or re-parent them first.
#[tracing::instrument(skip_all)]
pub async fn remove_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
    input: &MeterRemoval,
) -> CoreResult<Meter> {
    let before = check_removable(conn, principal, meter_id).await?;
    if field::meter_has_open_account(conn, meter_id).await? {
        return Err(CoreError::Conflict(
            "close the meter's account before removing it".into(),
        ));
    }
    let children: i64 = sqlx::query_scalar(
        "select count(*) from meters where parent_id = $1 and status = 'active'",
    )
    .bind(meter_id)
    .fetch_one(&mut *conn)
    .await?;
    if children > 0 {
        return Err(CoreError::Conflict(format!(
            "{children} meters hang under this feeder; give them another parent first"
        )));
    }
    let mut fields = BTreeMap::new();
    let at = change_time(
        principal.now(),
        input.removed_at,
        &before,
        "removed_at",
        &mut fields,
    );
    check_final_reading(
        conn,
        &before,
        input.final_energy_wh,
        "final_energy_wh",
        &mut fields,
    )
    .await?;
    CoreError::check_fields(fields)?;
    retire_meter(conn, meter_id, input.final_energy_wh, at).await?;
    let after = field::meter(conn, principal, meter_id).await?;
    let mut change = audit::snapshot(&after);
    change["reason"] = input.reason.trim().into();
    audit::record(
        conn,
        principal,
        "meter.remove",
        "meter",
        Some(meter_id.to_string()),
        Some(audit::snapshot(&before)),
        Some(change),
    )
    .await?;
    Ok(after)
}

/// Swaps a meter for a new one in the same place. The old meter is removed with its final
/// reading; the new one starts from its initial reading and takes over the old one's place
/// (bus, shop, plan, settings) and its sub-meters. Rating never takes a delta across the swap:
/// the old meter's last interval ends at its final reading, the new meter's first starts at its
/// initial reading. A meter-side meter with an open account is refused (its credit lives on the
/// old meter; settle it first).
#[tracing::instrument(skip_all)]
pub async fn swap_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
    input: &MeterSwapInput,
) -> CoreResult<SwapResult> {
    let old = check_removable(conn, principal, meter_id).await?;
    if old.prepayment_mode == crate::field::PrepaymentMode::Meter
        && field::meter_has_open_account(conn, meter_id).await?
    {
        return Err(CoreError::Conflict(
            "the credit of a meter-side account is on the old meter: settle the account first"
                .into(),
        ));
    }
    let mut fields = BTreeMap::new();
    let at = change_time(
        principal.now(),
        input.swapped_at,
        &old,
        "swapped_at",
        &mut fields,
    );
    check_final_reading(
        conn,
        &old,
        input.old_final_energy_wh,
        "old_final_energy_wh",
        &mut fields,
    )
    .await?;
    if input.new_initial_energy_wh < 0 {
        fields.insert("new_initial_energy_wh".into(), "not negative".into());
    }
    CoreError::check_fields(fields)?;
    // Retire first: the new meter may take the old one's address and number slot.
    retire_meter(conn, meter_id, input.old_final_energy_wh, at).await?;
    let new_input = MeterInput {
        bus_id: old.bus_id,
        model: input
            .model
            .clone()
            .unwrap_or_else(|| old.model.as_str().to_owned()),
        address: input.address.clone().unwrap_or_else(|| old.address.clone()),
        meter_number: input.meter_number.clone(),
        ct_ratio: Some(old.ct_ratio),
        pt_ratio: Some(old.pt_ratio),
        prepayment_mode: Some(old.prepayment_mode.as_str().to_owned()),
        role: Some(old.role.as_str().to_owned()),
        parent_id: old.parent_id,
        shop_id: old.shop_id,
        tariff_plan_id: old.tariff_plan_id,
        alarm1_fen: old.alarm1_fen,
        alarm2_fen: old.alarm2_fen,
        install_date: Some(local_date(principal, at)),
        initial_energy_wh: Some(input.new_initial_energy_wh),
        // The new meter's registers are not known to match until someone says so.
        tou_registers_match: false,
        dlt645_password: input.dlt645_password.clone(),
        dlt645_operator: input.dlt645_operator.clone(),
        // The swap keeps the bus's meter count.
        accept_crowded_bus: true,
    };
    // The meter count does not change, so no quota check.
    let new_id = field::insert_meter(conn, principal, &new_input, false).await?;
    sqlx::query("update meters set parent_id = $2 where parent_id = $1 and status = 'active'")
        .bind(meter_id)
        .bind(new_id)
        .execute(&mut *conn)
        .await?;
    // The money follows in the same transaction: the account's rating state moves to the new
    // meter (DESIGN.md: mid-account changes).
    crate::billing::changes::carry_swap(
        conn,
        principal,
        &crate::billing::changes::Swap {
            old_meter: meter_id,
            new_meter: new_id,
            at,
            old_final: crate::kernel::money::EnergyWh::from_wh(input.old_final_energy_wh),
            new_initial: crate::kernel::money::EnergyWh::from_wh(input.new_initial_energy_wh),
        },
    )
    .await?;
    let swap_id = Uuid::now_v7();
    sqlx::query(
        "insert into meter_swaps (id, old_meter_id, new_meter_id, swapped_at, old_final_energy_wh,
             new_initial_energy_wh, reason, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(swap_id)
    .bind(meter_id)
    .bind(new_id)
    .bind(at)
    .bind(input.old_final_energy_wh)
    .bind(input.new_initial_energy_wh)
    .bind(input.reason.trim())
    .bind(principal.user_id)
    .execute(&mut *conn)
    .await?;
    let result = SwapResult {
        old: field::meter(conn, principal, meter_id).await?,
        new: field::meter(conn, principal, new_id).await?,
        swap: load_swap(conn, swap_id).await?,
    };
    audit::record(
        conn,
        principal,
        "meter.swap",
        "meter",
        Some(meter_id.to_string()),
        Some(audit::snapshot(&old)),
        Some(audit::snapshot(&result.swap)),
    )
    .await?;
    Ok(result)
}

/// The local calendar date of `at` in the company's time zone.
fn local_date(principal: &Principal, at: DateTime<Utc>) -> chrono::NaiveDate {
    at.with_timezone(&principal.tz()).date_naive()
}

const SWAP_SELECT: &str = "select s.id, s.old_meter_id, o.meter_number as old_meter_number, s.new_meter_id,
        n.meter_number as new_meter_number, s.swapped_at, s.old_final_energy_wh, s.new_initial_energy_wh, s.reason
     from meter_swaps s join meters o on o.id = s.old_meter_id join meters n on n.id = s.new_meter_id";

fn swap_from(r: sqlx::postgres::PgRow) -> CoreResult<MeterSwap> {
    Ok(MeterSwap {
        id: r.try_get("id")?,
        old_meter_id: r.try_get("old_meter_id")?,
        old_meter_number: r.try_get("old_meter_number")?,
        new_meter_id: r.try_get("new_meter_id")?,
        new_meter_number: r.try_get("new_meter_number")?,
        swapped_at: r.try_get("swapped_at")?,
        old_final_energy_wh: r.try_get("old_final_energy_wh")?,
        new_initial_energy_wh: r.try_get("new_initial_energy_wh")?,
        reason: r.try_get("reason")?,
    })
}

async fn load_swap(conn: &mut PgConnection, id: Uuid) -> CoreResult<MeterSwap> {
    let row = sqlx::query(&format!("{SWAP_SELECT} where s.id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?;
    swap_from(row)
}

/// Every swap in the chain of meters this one belongs to (its predecessors and successors in
/// the same place), oldest first.
#[tracing::instrument(skip_all)]
pub async fn meter_history(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<Vec<MeterSwap>> {
    field::meter(conn, principal, meter_id).await?;
    let rows = sqlx::query(&format!(
        "with recursive chain(id) as (
             select $1::uuid
             union
             select case when s.old_meter_id = c.id then s.new_meter_id else s.old_meter_id end
             from meter_swaps s join chain c on s.old_meter_id = c.id or s.new_meter_id = c.id
         )
         {SWAP_SELECT} where s.old_meter_id in (select id from chain) order by s.swapped_at, s.id"
    ))
    .bind(meter_id)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(swap_from).collect()
}
