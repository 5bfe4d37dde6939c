//! What the field looks like now, for people: gateways with each bus online or offline and
//! last heard, meters with the age of their newest reading, relay, power and alarms (from what
//! ingest writes: `bus_sessions`, `meter_latest`, `meter_polls`), a meter's reading history and
//! daily energy, and DTU registrations nobody claimed. Read-only; any company role may look.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// When a company has no settings row yet: the settings' default `stale_meter_s`.
const STALE_AFTER_S_DEFAULT: i32 = 300;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BusStatus {
    pub number: i32,
    pub online: bool,
    pub peer: String,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GatewayStatus {
    pub id: Uuid,
    pub identity: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    /// Every bus online.
    pub online: bool,
    pub buses: Vec<BusStatus>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeterStatus {
    pub id: Uuid,
    pub meter_number: String,
    pub gateway_identity: String,
    pub shop_id: Option<Uuid>,
    /// "Building · number name" of the meter's shop, empty without one.
    pub shop: String,
    pub read_at: Option<DateTime<Utc>>,
    /// Seconds since the newest reading; none without readings.
    pub age_s: Option<i64>,
    pub stale: bool,
    pub energy_wh: Option<i64>,
    pub power_w: Option<i64>,
    pub remaining_fen: Option<AmountFen>,
    pub relay_closed: Option<bool>,
    pub alarms: Vec<String>,
    pub consecutive_failures: i32,
    pub last_error: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fleet {
    /// The gateways (with `problems`: the offline ones).
    pub gateways: Vec<GatewayStatus>,
    /// One page of the meters that match, problems first: stale ones (never read first, then
    /// the oldest reading), then by gateway, bus and address.
    pub meters: Vec<MeterStatus>,
    /// Active meters in all, stale ones, and those matching the filter.
    pub meters_total: i64,
    pub meters_stale: i64,
    pub meters_matching: i64,
    /// Gateways in use in all, and offline ones (whatever the filter).
    pub gateways_total: usize,
    pub gateways_offline: usize,
    /// Open field alarms, newest first.
    pub alarms: Vec<FieldAlarm>,
}

/// Which part of the fleet to show. A company with thousands of meters looks at its problems
/// and pages through the rest.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct FleetFilter {
    /// Only meters with a problem (stale, failing polls, alarms) and offline gateways.
    #[serde(default)]
    pub problems: bool,
    /// Part of a meter number, gateway identity or shop number.
    #[serde(default)]
    pub q: Option<String>,
    /// Meters per page, 1 to 5,000 (default 500).
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// Default meters per fleet page.
pub const FLEET_PAGE_DEFAULT: i64 = 500;

/// A stale meter or an offline gateway, raised by ingest against the company's limits.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldAlarm {
    pub id: Uuid,
    /// `meter_stale` or `gateway_offline`.
    pub kind: String,
    pub target_id: Uuid,
    /// The meter number or gateway identity.
    pub target: String,
    pub raised_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
    pub detail: String,
    /// An operator saw it (the alarm stays open until its cause clears).
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// `user:<id>` of who acknowledged it.
    pub acknowledged_by: Option<String>,
}

/// Staff who act on meters, settings or held readings acknowledge alarms.
pub fn may_acknowledge(principal: &Principal) -> bool {
    [Right::TripClose, Right::Settings, Right::ReadingsReview]
        .into_iter()
        .any(|r| principal.can(Need::Act(r)))
}

/// Marks open field alarm `id` as seen by the principal (staff who act on meters or settings);
/// audited. 404 for an alarm the caller may not see, 409 once cleared or acknowledged.
#[tracing::instrument(skip_all, fields(%id))]
pub async fn acknowledge_alarm(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<FieldAlarm> {
    let Some(alarm) = field_alarms(conn, principal, true)
        .await?
        .into_iter()
        .find(|a| a.id == id)
    else {
        return Err(CoreError::NotFound("alarm"));
    };
    if !may_acknowledge(principal) {
        return Err(CoreError::Forbidden("your role may not do this".into()));
    }
    let done = sqlx::query(
        "update field_alarms set acknowledged_at = $2, acknowledged_by = $3
         where id = $1 and cleared_at is null and acknowledged_at is null",
    )
    .bind(id)
    .bind(principal.now())
    .bind(format!("user:{}", principal.user_id))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::Conflict(
            "the alarm was cleared or acknowledged already".into(),
        ));
    }
    crate::tenancy::audit::record(
        conn,
        principal,
        "alarm.acknowledge",
        "field_alarm",
        Some(id.to_string()),
        None,
        Some(serde_json::json!({ "kind": alarm.kind, "target": alarm.target })),
    )
    .await?;
    field_alarms(conn, principal, true)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or(CoreError::NotFound("alarm"))
}

/// How many field alarms are open (for the header of every page).
#[tracing::instrument(skip_all)]
pub async fn open_alarm_count(conn: &mut PgConnection) -> CoreResult<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from field_alarms where cleared_at is null")
            .fetch_one(conn)
            .await?,
    )
}

/// Field alarms, newest first: the open ones, or with `all` also the last 500 cleared.
#[tracing::instrument(skip_all)]
pub async fn field_alarms(
    conn: &mut PgConnection,
    principal: &Principal,
    all: bool,
) -> CoreResult<Vec<FieldAlarm>> {
    principal.require_read_company()?;
    sqlx::query(
        "select a.id, a.kind, a.target_id, coalesce(m.meter_number, g.identity, '') as target, a.raised_at,
                a.cleared_at, a.detail, a.acknowledged_at, a.acknowledged_by
         from field_alarms a left join meters m on a.kind <> 'gateway_offline' and m.id = a.target_id
         left join shops s on s.id = m.shop_id
         left join gateways g on a.kind = 'gateway_offline' and g.id = a.target_id
         where ($1 or a.cleared_at is null)
           and ($2::uuid[] is null
                or (a.kind <> 'gateway_offline' and s.building_id = any($2))
                or (a.kind = 'gateway_offline' and exists (
                    select 1 from buses vb join meters vm on vm.bus_id = vb.id join shops vs on vs.id = vm.shop_id
                    where vb.gateway_id = g.id and vm.status <> 'removed' and vs.building_id = any($2))))
         order by a.raised_at desc limit 500",
    )
    .bind(all)
    .bind(principal.building_limit_param())
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(FieldAlarm {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            target_id: r.try_get("target_id")?,
            target: r.try_get("target")?,
            raised_at: r.try_get("raised_at")?,
            cleared_at: r.try_get("cleared_at")?,
            detail: r.try_get("detail")?,
            acknowledged_at: r.try_get("acknowledged_at")?,
            acknowledged_by: r.try_get("acknowledged_by")?,
        })
    })
    .collect()
}

/// The `.xlsx` twin of the alarm list, headers in `lang`.
pub fn alarms_sheet(alarms: &[FieldAlarm], lang: &str) -> crate::kernel::xlsx::Sheet {
    use crate::kernel::xlsx::{Cell, Column, Sheet};
    let zh = lang != "en";
    let header = |zh_text: &str, en_text: &str| if zh { zh_text } else { en_text }.to_owned();
    let time = |t: Option<DateTime<Utc>>| t.map_or(Cell::Empty, Cell::Time);
    Sheet {
        name: header("告警", "Alarms"),
        columns: vec![
            Column::new(header("发生时间", "Raised at"), 20.0),
            Column::new(header("类型", "Kind"), 16.0),
            Column::new(header("对象", "Target"), 18.0),
            Column::new(header("说明", "Detail"), 40.0),
            Column::new(header("确认时间", "Acknowledged at"), 20.0),
            Column::new(header("确认人", "Acknowledged by"), 24.0),
            Column::new(header("解除时间", "Cleared at"), 20.0),
        ],
        rows: alarms
            .iter()
            .map(|a| {
                vec![
                    Cell::Time(a.raised_at),
                    Cell::Text(a.kind.clone()),
                    Cell::Text(a.target.clone()),
                    Cell::Text(a.detail.clone()),
                    time(a.acknowledged_at),
                    Cell::Text(a.acknowledged_by.clone().unwrap_or_default()),
                    time(a.cleared_at),
                ]
            })
            .collect(),
        totals: None,
    }
}

/// Gateways and a page of active meters with their live state.
#[tracing::instrument(skip_all)]
pub async fn fleet(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &FleetFilter,
) -> CoreResult<Fleet> {
    principal.require_read_company()?;
    let limit = filter.limit.unwrap_or(FLEET_PAGE_DEFAULT);
    if !(1..=5_000).contains(&limit) {
        return Err(CoreError::field("limit", "1 to 5,000"));
    }
    let offset = filter.offset.unwrap_or(0);
    if offset < 0 {
        return Err(CoreError::field("offset", "0 or more"));
    }
    let q = filter.q.as_deref().map(str::trim).unwrap_or("");
    let limit_ids = principal.building_limit_param();
    let mut gateways = gateway_statuses(conn).await?;
    if limit_ids.is_some() {
        let visible = visible_gateways(conn, principal).await?;
        gateways.retain(|g| visible.contains(&g.id));
    }
    let gateways_offline = gateways.iter().filter(|g| !g.online).count();
    let gateways_total = gateways.len();
    if filter.problems {
        gateways.retain(|g| !g.online);
    }
    if !q.is_empty() {
        let needle = q.to_lowercase();
        gateways.retain(|g| g.identity.to_lowercase().contains(&needle));
    }
    // One limit for "stale" everywhere: the company's setting, which the stale-meter alarms use.
    let stale_after_s: i32 = sqlx::query_scalar("select stale_meter_s from settings")
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(STALE_AFTER_S_DEFAULT);
    let (meters_total, meters_stale): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where l.read_at is null or l.read_at < now() - make_interval(secs => $2))
         from meters m left join meter_latest l on l.meter_id = m.id left join shops s on s.id = m.shop_id
         where m.status = 'active' and ($1::uuid[] is null or s.building_id = any($1))",
    )
    .bind(&limit_ids)
    .bind(f64::from(stale_after_s))
    .fetch_one(&mut *conn)
    .await?;
    let now = principal.now();
    let rows = sqlx::query(
        "with live as (
             select m.id, m.meter_number, g.identity, m.shop_id, b.number as bus, m.address,
                    coalesce(bl.name || ' · ' || s.number || ' ' || s.name, '') as shop,
                    l.read_at, l.energy_wh, l.power_w, l.remaining_fen, l.relay_closed,
                    coalesce(l.alarms, '{}') as alarms,
                    coalesce(p.consecutive_failures, 0) as consecutive_failures,
                    coalesce(p.last_error, '') as last_error,
                    (l.read_at is null or l.read_at < now() - make_interval(secs => $6)) as stale
             from meters m join buses b on b.id = m.bus_id join gateways g on g.id = b.gateway_id
             left join shops s on s.id = m.shop_id left join buildings bl on bl.id = s.building_id
             left join meter_latest l on l.meter_id = m.id left join meter_polls p on p.meter_id = m.id
             where m.status = 'active' and ($5::uuid[] is null or s.building_id = any($5)))
         select *, count(*) over () as matching from live
         where (not $1 or stale or consecutive_failures > 0 or cardinality(alarms) > 0)
           and ($2 = '' or strpos(lower(meter_number), lower($2)) > 0 or strpos(lower(identity), lower($2)) > 0
                or strpos(lower(shop), lower($2)) > 0)
         order by stale desc, read_at nulls first, identity, bus, address
         limit $3 offset $4",
    )
    .bind(filter.problems)
    .bind(q)
    .bind(limit)
    .bind(offset)
    .bind(&limit_ids)
    .bind(f64::from(stale_after_s))
    .fetch_all(&mut *conn)
    .await?;
    let meters_matching = match rows.first() {
        Some(r) => r.try_get("matching")?,
        None => 0,
    };
    let meters = rows
        .into_iter()
        .map(|r| {
            let read_at: Option<DateTime<Utc>> = r.try_get("read_at")?;
            let age_s = read_at.map(|t| (now - t).num_seconds().max(0));
            Ok(MeterStatus {
                id: r.try_get("id")?,
                meter_number: r.try_get("meter_number")?,
                gateway_identity: r.try_get("identity")?,
                shop_id: r.try_get("shop_id")?,
                shop: r.try_get("shop")?,
                read_at,
                age_s,
                stale: r.try_get("stale")?,
                energy_wh: r.try_get("energy_wh")?,
                power_w: r.try_get("power_w")?,
                remaining_fen: r.try_get("remaining_fen")?,
                relay_closed: r.try_get("relay_closed")?,
                alarms: r.try_get("alarms")?,
                consecutive_failures: r.try_get("consecutive_failures")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .collect::<CoreResult<Vec<MeterStatus>>>()?;
    let alarms = field_alarms(conn, principal, false).await?;
    Ok(Fleet {
        alarms,
        gateways_total,
        gateways_offline,
        meters_total,
        meters_stale,
        meters_matching,
        gateways,
        meters,
    })
}

/// The gateways an operator limited to buildings may see: those carrying a meter of a shop in
/// their buildings.
async fn visible_gateways(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<std::collections::HashSet<Uuid>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select distinct b.gateway_id from buses b join meters m on m.bus_id = b.id
         join shops s on s.id = m.shop_id
         where m.status <> 'removed' and ($1::uuid[] is null or s.building_id = any($1))",
    )
    .bind(principal.building_limit_param())
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Every gateway in use with each bus's session.
async fn gateway_statuses(conn: &mut PgConnection) -> CoreResult<Vec<GatewayStatus>> {
    let bus_rows = sqlx::query(
        "select g.id, g.identity, g.name, g.kind, g.status, b.number,
                coalesce(s.online, false) as online, coalesce(s.peer, '') as peer, s.last_seen_at
         from gateways g join buses b on b.gateway_id = g.id and b.removed_at is null
         left join bus_sessions s on s.bus_id = b.id
         where g.status <> 'removed' order by g.identity, b.number",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut gateways: Vec<GatewayStatus> = Vec::new();
    for r in bus_rows {
        let id: Uuid = r.try_get("id")?;
        let bus = BusStatus {
            number: r.try_get("number")?,
            online: r.try_get("online")?,
            peer: r.try_get("peer")?,
            last_seen_at: r.try_get("last_seen_at")?,
        };
        match gateways.last_mut().filter(|g| g.id == id) {
            Some(g) => g.buses.push(bus),
            None => gateways.push(GatewayStatus {
                id,
                identity: r.try_get("identity")?,
                name: r.try_get("name")?,
                kind: r.try_get("kind")?,
                status: r.try_get("status")?,
                online: false,
                buses: vec![bus],
            }),
        }
    }
    for g in &mut gateways {
        g.online = g.buses.iter().all(|b| b.online);
    }
    Ok(gateways)
}

/// One stored reading.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reading {
    pub read_at: DateTime<Utc>,
    pub energy_wh: i64,
    pub power_w: Option<i64>,
    pub voltage_dv: Option<Vec<i32>>,
    pub current_ca: Option<Vec<i32>>,
    pub remaining_fen: Option<AmountFen>,
    pub relay_closed: Option<bool>,
    pub alarms: Vec<String>,
    /// Why the reading did not count as consumption (reset, gap, …), or `rollover`.
    pub flag: Option<String>,
    /// The meter's own TOU registers (sharp, peak, flat, valley), when it has them.
    pub tou_wh: Option<Vec<i64>>,
    /// The meter's own purchase counter (meter-side prepayment).
    pub purchase_count: Option<i32>,
    /// Power factor × 1000.
    pub pf_milli: Option<i32>,
    /// The energy the interval ending at this reading counted; none when held or the first.
    pub counted_wh: Option<i64>,
}

/// Filters of a meter's reading history (newest first).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ReadingFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only flagged readings.
    #[serde(default)]
    pub flagged: bool,
    /// At most this many (default 500, at most 20,000).
    pub limit: Option<i64>,
}

/// A meter's readings, newest first.
#[tracing::instrument(skip_all)]
pub async fn readings(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
    filter: &ReadingFilter,
) -> CoreResult<Vec<Reading>> {
    crate::field::meter(conn, principal, meter_id).await?;
    let limit = filter.limit.unwrap_or(500);
    if !(1..=20_000).contains(&limit) {
        return Err(CoreError::field("limit", "1 to 20,000"));
    }
    sqlx::query(
        "select read_at, energy_wh, power_w, voltage_dv, current_ca, remaining_fen, relay_closed,
                coalesce(alarms, '{}') as alarms, flag, tou_wh, purchase_count, pf_milli, counted_wh
         from readings where meter_id = $1 and ($2::timestamptz is null or read_at >= $2)
           and ($3::timestamptz is null or read_at < $3) and (not $4 or flag is not null)
         order by read_at desc limit $5",
    )
    .bind(meter_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.flagged)
    .bind(limit)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(Reading {
            read_at: r.try_get("read_at")?,
            energy_wh: r.try_get("energy_wh")?,
            power_w: r.try_get("power_w")?,
            voltage_dv: r.try_get("voltage_dv")?,
            current_ca: r.try_get("current_ca")?,
            remaining_fen: r.try_get("remaining_fen")?,
            relay_closed: r.try_get("relay_closed")?,
            alarms: r.try_get("alarms")?,
            flag: r.try_get("flag")?,
            tou_wh: r.try_get("tou_wh")?,
            purchase_count: r.try_get("purchase_count")?,
            pf_milli: r.try_get("pf_milli")?,
            counted_wh: r.try_get("counted_wh")?,
        })
    })
    .collect()
}

/// Energy of one local day and TOU period.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DailyEnergy {
    pub day: NaiveDate,
    pub period: String,
    pub energy_wh: i64,
}

/// A meter's daily energy by TOU period over the last `days` local days (oldest first).
#[tracing::instrument(skip_all)]
pub async fn daily_energy(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
    days: i64,
) -> CoreResult<Vec<DailyEnergy>> {
    crate::field::meter(conn, principal, meter_id).await?;
    if !(1..=366).contains(&days) {
        return Err(CoreError::field("days", "1 to 366"));
    }
    principal.company()?;
    let today = principal.today();
    let first = today - chrono::Duration::days(days - 1);
    sqlx::query(
        "select day, period, energy_wh from daily_energy where meter_id = $1 and day >= $2
         order by day, period",
    )
    .bind(meter_id)
    .bind(first)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(DailyEnergy {
            day: r.try_get("day")?,
            period: r.try_get("period")?,
            energy_wh: r.try_get("energy_wh")?,
        })
    })
    .collect()
}

/// Energy of one local hour.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HourlyEnergy {
    /// The hour's start, local time of the property, `YYYY-MM-DD HH:00`.
    pub hour: String,
    pub energy_wh: i64,
}

/// A meter's energy per local hour over the last `hours` hours (oldest first): each counted
/// delta between two readings belongs to the hour its later reading falls in (at a 30 s poll
/// interval the difference to an exact split is a few Wh at the hour's edges). Flagged
/// readings (resets, gaps, …) count nothing.
#[tracing::instrument(skip_all)]
pub async fn hourly_energy(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
    hours: i64,
) -> CoreResult<Vec<HourlyEnergy>> {
    crate::field::meter(conn, principal, meter_id).await?;
    if !(1..=168).contains(&hours) {
        return Err(CoreError::field("hours", "1 to 168"));
    }
    let tz = principal.company()?.time_zone.clone();
    sqlx::query(
        "select to_char(hour, 'YYYY-MM-DD HH24:00') as hour, sum(counted_wh)::bigint as energy_wh from (
             select date_trunc('hour', read_at at time zone $3) as hour, counted_wh
             from readings where meter_id = $1 and counted_wh is not null
               and read_at >= now() - make_interval(hours => $2::int + 1)
         ) d
         where hour >= date_trunc('hour', now() at time zone $3) - make_interval(hours => $2::int - 1)
         group by hour order by hour",
    )
    .bind(meter_id)
    .bind(hours)
    .bind(tz)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(HourlyEnergy {
            hour: r.try_get("hour")?,
            energy_wh: r.try_get("energy_wh")?,
        })
    })
    .collect()
}

/// A DTU registration that matched no gateway.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unclaimed {
    pub registration_hex: String,
    /// The bytes as text when they are printable.
    pub registration_text: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub last_peer: String,
    pub attempts: i64,
}

/// Registrations refused by ingest (DESIGN.md: Ingest). Platform staff see all of them: those
/// that match no gateway are theirs alone to claim for a company, since the bytes may be another
/// company's DTU secret. A company sees, with the settings right (registration bytes are
/// credentials), those of its own suspended gateways and those platform staff claimed for it.
#[tracing::instrument(skip_all)]
pub async fn unclaimed(
    conn: &mut PgConnection,
    principal: &Principal,
) -> CoreResult<Vec<Unclaimed>> {
    let company_id = match principal.company.as_ref() {
        Some(c) => {
            principal.require_read_company()?;
            if !principal.can(Need::Act(Right::Settings)) {
                return Ok(Vec::new());
            }
            Some(c.id)
        }
        None if principal.role.is_platform() => None,
        None => return Err(CoreError::NotFound("resource")),
    };
    sqlx::query(
        "select registration_hex, first_seen_at, last_seen_at, last_peer, attempts
         from control.unclaimed_registrations
         where $1::bigint is null or company_id = $1 or claimed_for = $1
         order by last_seen_at desc limit 500",
    )
    .bind(company_id)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| {
        let hex: String = r.try_get("registration_hex")?;
        Ok(Unclaimed {
            registration_text: crate::field::printable_text(&hex),
            registration_hex: hex,
            first_seen_at: r.try_get("first_seen_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            last_peer: r.try_get("last_peer")?,
            attempts: r.try_get("attempts")?,
        })
    })
    .collect()
}

/// Platform admins hand a refused registration to a company (audited): its admins then see it
/// and enter the gateway with those bytes.
#[tracing::instrument(skip_all)]
pub async fn claim_unclaimed(
    conn: &mut PgConnection,
    principal: &Principal,
    registration_hex: &str,
    company_id: i64,
) -> CoreResult<()> {
    if principal.role != crate::tenancy::roles::Role::PlatformAdmin || principal.company.is_some() {
        return Err(CoreError::NotFound("resource"));
    }
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from control.company where id = $1)")
            .bind(company_id)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(CoreError::field("company_id", "no such company"));
    }
    let done = sqlx::query(
        "update control.unclaimed_registrations set claimed_for = $2 where registration_hex = $1",
    )
    .bind(registration_hex)
    .bind(company_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound("registration"));
    }
    crate::tenancy::audit::record_platform(
        conn,
        principal,
        "registration.claim",
        Some(company_id),
        None,
        Some(serde_json::json!({"registration_hex": registration_hex})),
    )
    .await
}

/// A meter's readings as Excel (times in the property's time zone, energy in Wh, money in yuan).
pub fn readings_sheet(
    meter_number: &str,
    readings: &[Reading],
    lang: &str,
) -> crate::kernel::xlsx::Sheet {
    use crate::kernel::xlsx::{Cell, Column, Sheet};
    let zh = lang != "en";
    let header = |zh_text: &str, en_text: &str| {
        if zh {
            zh_text.to_owned()
        } else {
            en_text.to_owned()
        }
    };
    let list = |v: &Option<Vec<i32>>| {
        v.as_ref().map_or(Cell::Empty, |v| {
            Cell::Text(v.iter().map(i32::to_string).collect::<Vec<_>>().join("/"))
        })
    };
    Sheet {
        name: meter_number.to_owned(),
        columns: vec![
            Column::new(header("抄表时间", "Read at"), 20.0),
            Column::new(header("电能 Wh", "Energy Wh"), 14.0),
            Column::new(header("功率 W", "Power W"), 10.0),
            Column::new(header("电压 0.1V", "Voltage 0.1 V"), 16.0),
            Column::new(header("电流 0.01A", "Current 0.01 A"), 16.0),
            Column::new(header("剩余金额 元", "Remaining yuan"), 14.0),
            Column::new(header("继电器合闸", "Relay closed"), 10.0),
            Column::new(header("报警", "Alarms"), 16.0),
            Column::new(header("标记", "Flag"), 14.0),
        ],
        rows: readings
            .iter()
            .map(|r| {
                vec![
                    Cell::Time(r.read_at),
                    Cell::Int(r.energy_wh),
                    r.power_w.map_or(Cell::Empty, Cell::Int),
                    list(&r.voltage_dv),
                    list(&r.current_ca),
                    r.remaining_fen
                        .map_or(Cell::Empty, |f| Cell::MoneyFen(f.fen())),
                    r.relay_closed.map_or(Cell::Empty, Cell::Bool),
                    Cell::Text(r.alarms.join(",")),
                    r.flag.clone().map_or(Cell::Empty, Cell::Text),
                ]
            })
            .collect(),
        totals: None,
    }
}
