//! What operators see of meter-side meters (issue: Pages): each meter's secure state — counters
//! the platform verified against those the meter reads back (purchase-count reconciliation,
//! 比对充值次数: a meter that counts more took purchases the platform did not make), key version,
//! commands in flight — and its drift: the shadow balance (`on_meter`) less the remaining amount
//! the meter reads back (leaving out credit an operator accepted at opening). Also one meter's
//! purchase history with each frame's state, and the drift alarm the settle worker raises above
//! the company's threshold (`settings.drift_alarm_fen`).

use crate::auth::Principal;
use crate::kernel::error::CoreResult;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// One meter-side meter's secure state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecureState {
    pub meter_id: Uuid,
    pub meter_number: String,
    pub shop_number: Option<String>,
    pub account_id: Option<Uuid>,
    /// The master-key version the meter holds (none before commissioning).
    pub key_version: Option<i32>,
    /// The version a waiting re-key takes it to (`core::secure::rekey`).
    pub rekey_to_version: Option<i32>,
    /// Counters as the platform verified them.
    pub platform_purchase_count: Option<i64>,
    pub platform_control_count: Option<i64>,
    /// Counters as the meter last read them back, and when.
    pub meter_purchase_count: Option<i64>,
    pub meter_control_count: Option<i64>,
    pub meter_remaining_fen: Option<i64>,
    pub meter_price_units: Option<i64>,
    pub read_back_at: Option<DateTime<Utc>>,
    /// The meter counts purchases the platform did not make (out of band).
    pub out_of_band: bool,
    pub in_transit_fen: i64,
    /// The shadow balance: what the platform reckons is on the meter.
    pub on_meter_fen: i64,
    /// Credit an operator accepted as already on the meter at opening.
    pub accepted_at_opening_fen: i64,
    /// Shadow − (read-back remaining − accepted at opening); `None` without a read-back.
    pub drift_fen: Option<i64>,
    pub commands_in_flight: i64,
}

/// Every meter-side meter of the company (operators limited to buildings see theirs).
pub async fn states(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Vec<SecureState>> {
    principal.require_read_company()?;
    let rows = sqlx::query(
        "select m.id, m.meter_number, sh.number as shop_number, am.account_id, s.key_version,
                s.rekey_to_version,
                s.purchase_count as p_count, s.control_count as c_count,
                b.purchase_count as m_count, b.control_count as m_controls, b.remaining_fen,
                b.price_units, b.read_at,
                coalesce((select balance_fen from ledger_accounts where key = 'in_transit:' || m.id), 0) as in_transit,
                coalesce((select balance_fen from ledger_accounts where key = 'on_meter:' || m.id), 0) as on_meter,
                coalesce(am.opening_remaining_fen, 0) as accepted,
                (select count(*) from commands c where c.meter_id = m.id and c.secure_frame is not null
                   and c.state in ('queued', 'sent', 'acknowledged')) as in_flight
         from meters m
         left join shops sh on sh.id = m.shop_id
         left join account_meters am on am.meter_id = m.id and am.left_at is null
         left join meter_secure s on s.meter_id = m.id
         left join meter_secure_readback b on b.meter_id = m.id
         where m.prepayment_mode = 'meter' and m.status = 'active'
           and ($1::uuid[] is null or sh.building_id = any($1))
         order by m.meter_number",
    )
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(state_of).collect()
}

fn state_of(r: &sqlx::postgres::PgRow) -> CoreResult<SecureState> {
    let platform_purchase_count: Option<i64> = r.try_get("p_count")?;
    let meter_purchase_count: Option<i64> = r.try_get("m_count")?;
    let in_flight: i64 = r.try_get("in_flight")?;
    let on_meter_fen: i64 = r.try_get("on_meter")?;
    let accepted: i64 = r.try_get("accepted")?;
    let meter_remaining_fen: Option<i64> = r.try_get("remaining_fen")?;
    Ok(SecureState {
        meter_id: r.try_get("id")?,
        meter_number: r.try_get("meter_number")?,
        shop_number: r.try_get("shop_number")?,
        account_id: r.try_get("account_id")?,
        key_version: r.try_get("key_version")?,
        rekey_to_version: r.try_get("rekey_to_version")?,
        platform_purchase_count,
        platform_control_count: r.try_get("c_count")?,
        meter_purchase_count,
        meter_control_count: r.try_get("m_controls")?,
        meter_remaining_fen,
        meter_price_units: r.try_get("price_units")?,
        read_back_at: r.try_get("read_at")?,
        // A purchase in flight may be on the meter before the platform verified it.
        out_of_band: matches!((platform_purchase_count, meter_purchase_count),
            (Some(p), Some(m)) if m > p + i64::from(in_flight > 0)),
        in_transit_fen: r.try_get("in_transit")?,
        on_meter_fen,
        accepted_at_opening_fen: accepted,
        drift_fen: meter_remaining_fen
            .and_then(|fen| on_meter_fen.checked_sub(fen.checked_sub(accepted)?)),
        commands_in_flight: in_flight,
    })
}

/// One secure command of a meter's history.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecureCommand {
    pub id: Uuid,
    pub op: String,
    pub state: String,
    pub sequence: Option<i64>,
    /// Fen for purchase and deduct, price units for set price.
    pub amount: Option<i64>,
    /// The meter's acknowledgement status (`00` …, or why it was not believed).
    pub ack_status: Option<String>,
    pub attempts: i32,
    pub source: String,
    pub detail: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The secure commands of `meter`, newest first (at most 500).
pub async fn history(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<Vec<SecureCommand>> {
    principal.require_read_company()?;
    let visible: bool = sqlx::query_scalar(
        "select exists (select 1 from meters m left join shops sh on sh.id = m.shop_id
             where m.id = $1 and ($2::uuid[] is null or sh.building_id = any($2)))",
    )
    .bind(meter)
    .bind(principal.building_limit_param())
    .fetch_one(&mut *conn)
    .await?;
    if !visible {
        return Err(crate::CoreError::NotFound("meter"));
    }
    let rows = sqlx::query(
        "select id, op, state, secure_sequence, secure_amount, secure_status, attempts, source, detail,
                created_at, updated_at
         from commands where meter_id = $1 and secure_frame is not null
         order by created_at desc limit 500",
    )
    .bind(meter)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SecureCommand {
                id: r.try_get("id")?,
                op: r.try_get("op")?,
                state: r.try_get("state")?,
                sequence: r.try_get("secure_sequence")?,
                amount: r.try_get("secure_amount")?,
                ack_status: r.try_get("secure_status")?,
                attempts: r.try_get("attempts")?,
                source: r.try_get("source")?,
                detail: r.try_get("detail")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

/// Raises a drift alarm on each meter whose drift is beyond the company's threshold, and one
/// reconciliation alarm on each meter counting purchases the platform did not make; clears
/// drift alarms that came back within it. Returns how many were raised.
pub async fn raise_alarms(conn: &mut PgConnection, principal: &Principal) -> CoreResult<u64> {
    let threshold: i64 = sqlx::query_scalar("select drift_alarm_fen from settings")
        .fetch_one(&mut *conn)
        .await?;
    let mut raised = 0;
    for s in states(conn, principal).await? {
        let beyond = s.drift_fen.is_some_and(|d| d.abs() > threshold) && s.commands_in_flight == 0;
        if beyond {
            raised += raise(
                conn,
                "secure_drift",
                s.meter_id,
                &format!(
                    "shadow {} fen, the meter reads {} fen: drift {} fen",
                    s.on_meter_fen,
                    s.meter_remaining_fen.unwrap_or(0),
                    s.drift_fen.unwrap_or(0)
                ),
            )
            .await?;
        } else if s.drift_fen.is_some() {
            sqlx::query(
                "update field_alarms set cleared_at = now() where kind = 'secure_drift'
                   and target_id = $1 and cleared_at is null",
            )
            .bind(s.meter_id)
            .execute(&mut *conn)
            .await?;
        }
        if s.out_of_band {
            raised += raise(
                conn,
                "secure_reconcile",
                s.meter_id,
                &format!(
                    "the meter counts {} purchases, the platform made {}: out-of-band purchases",
                    s.meter_purchase_count.unwrap_or(0),
                    s.platform_purchase_count.unwrap_or(0)
                ),
            )
            .await?;
        }
    }
    Ok(raised)
}

async fn raise(conn: &mut PgConnection, kind: &str, meter: Uuid, detail: &str) -> CoreResult<u64> {
    let done = sqlx::query(
        "insert into field_alarms (id, kind, target_id, detail) values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(kind)
    .bind(meter)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The secure state list as `.xlsx` (drift and purchase-count reconciliation), headers in
/// `lang`.
pub fn states_sheet(states: &[SecureState], lang: &str) -> crate::kernel::xlsx::Sheet {
    use crate::kernel::xlsx::{Cell, Column, Sheet};
    let zh = lang != "en";
    let header = |zh_text: &str, en_text: &str| if zh { zh_text } else { en_text }.to_owned();
    let int = |v: Option<i64>| v.map_or(Cell::Empty, Cell::Int);
    let money = |v: Option<i64>| v.map_or(Cell::Empty, Cell::MoneyFen);
    Sheet {
        name: header("表内费控对账", "Meter-side reconciliation"),
        columns: vec![
            Column::new(header("表号", "Meter number"), 18.0),
            Column::new(header("商铺", "Shop"), 10.0),
            Column::new(header("密钥版本", "Key version"), 10.0),
            Column::new(header("平台购电次数", "Platform purchases"), 14.0),
            Column::new(header("表内购电次数", "Meter purchases"), 14.0),
            Column::new(header("次数不符", "Out of band"), 10.0),
            Column::new(header("平台控制计数", "Platform controls"), 14.0),
            Column::new(header("表内控制计数", "Meter controls"), 14.0),
            Column::new(header("在途 (元)", "In transit (yuan)"), 14.0),
            Column::new(header("影子余额 (元)", "Shadow balance (yuan)"), 16.0),
            Column::new(header("表内余额 (元)", "Meter remaining (yuan)"), 16.0),
            Column::new(header("开户确认 (元)", "Accepted at opening (yuan)"), 16.0),
            Column::new(header("偏差 (元)", "Drift (yuan)"), 12.0),
            Column::new(header("表内电价", "Meter price units"), 12.0),
            Column::new(header("回读时间", "Read back at"), 20.0),
            Column::new(header("在途指令", "Commands in flight"), 10.0),
        ],
        rows: states
            .iter()
            .map(|s| {
                vec![
                    Cell::Text(s.meter_number.clone()),
                    Cell::Text(s.shop_number.clone().unwrap_or_default()),
                    s.key_version
                        .map_or(Cell::Empty, |v| Cell::Int(i64::from(v))),
                    int(s.platform_purchase_count),
                    int(s.meter_purchase_count),
                    Cell::Bool(s.out_of_band),
                    int(s.platform_control_count),
                    int(s.meter_control_count),
                    Cell::MoneyFen(s.in_transit_fen),
                    Cell::MoneyFen(s.on_meter_fen),
                    money(s.meter_remaining_fen),
                    Cell::MoneyFen(s.accepted_at_opening_fen),
                    money(s.drift_fen),
                    int(s.meter_price_units),
                    s.read_back_at.map_or(Cell::Empty, Cell::Time),
                    Cell::Int(s.commands_in_flight),
                ]
            })
            .collect(),
        totals: Some(header("合计", "Total")),
    }
}
