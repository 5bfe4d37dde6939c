//! Review of held readings (DESIGN.md: Tariffs and rating, the flag table): the list of meters
//! whose rating stopped at a held reading, and the operator's release or correction of it (right
//! `readings_review`). A release rates the held interval as the flag table says (0 Wh for a
//! reset, the register difference for a gap or a jump); a correction replaces that energy and
//! keeps the reading as it was, audited. Energy above the company's
//! `correction_approval_above_wh` is billed only once an approver other than the operator agrees
//! (an `approval_requests` row), whether typed or as read — one person alone never bills an
//! implausible amount. Either way the held interval then counts: the reading's `counted_wh` and
//! the meter's `daily_energy` take the released energy (split by day and period as rating split
//! it), and rating continues from the held reading.

use super::approvals::{self, ApprovalKind, ApprovalRequest, Ask};
use super::rating::{counters_of, rate_operator_interval, save_state, Position};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::EnergyWh;
use crate::tariff::rating::Usage;
use crate::tariff::Period;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A meter whose rating waits for review.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldReading {
    pub meter_id: Uuid,
    pub meter_number: String,
    pub shop_number: Option<String>,
    pub shop_name: Option<String>,
    pub account_id: Uuid,
    /// Why rating stopped (the reading's flag, or `no_tariff`, `rating: …`).
    pub held_reason: Option<String>,
    pub held_at: DateTime<Utc>,
    /// The reading rating starts from.
    pub previous_read_at: DateTime<Utc>,
    pub previous_energy_wh: EnergyWh,
    /// The held reading, when one is stored after the previous one.
    pub read_at: Option<DateTime<Utc>>,
    pub energy_wh: Option<EnergyWh>,
    pub flag: Option<String>,
    /// The register difference (none when the register went back).
    pub energy_as_read_wh: Option<EnergyWh>,
    /// A correction waiting for an approver.
    pub waiting_request: Option<Uuid>,
}

/// What a release did: rated (the interval's energy) or waiting for an approver.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseOutcome {
    pub energy_wh: EnergyWh,
    /// Set when the energy is above the company's threshold: nothing is rated until an
    /// approver approves this request.
    pub request: Option<ApprovalRequest>,
}

/// The held meters within the caller's buildings, oldest hold first.
#[tracing::instrument(skip_all)]
pub async fn held(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<HeldReading>> {
    principal.require_read_company()?;
    let rows = sqlx::query(
        "select r.meter_id, m.meter_number, s.number as shop_number, s.name as shop_name,
                r.account_id, r.held_reason, r.held_at, r.last_read_at, r.last_energy_wh,
                h.read_at, h.energy_wh, h.flag,
                (select q.id from approval_requests q where q.kind = 'reading_correction'
                   and q.target_id = r.meter_id and q.state = 'requested') as waiting_request
         from rating_state r
         join shop_accounts a on a.id = r.account_id and a.state in ('open', 'closing')
         join meters m on m.id = r.meter_id
         left join shops s on s.id = m.shop_id
         left join lateral (
             select read_at, energy_wh, flag from readings
             where meter_id = r.meter_id and read_at > r.last_read_at and flag is distinct from 'out_of_order'
             order by read_at limit 1) h on true
         where r.held_at is not null and ($1::uuid[] is null or s.building_id = any($1))
         order by r.held_at limit 500",
    )
    .bind(principal.building_limit_param())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let previous: i64 = r.try_get("last_energy_wh")?;
            let energy: Option<i64> = r.try_get("energy_wh")?;
            Ok(HeldReading {
                meter_id: r.try_get("meter_id")?,
                meter_number: r.try_get("meter_number")?,
                shop_number: r.try_get("shop_number")?,
                shop_name: r.try_get("shop_name")?,
                account_id: r.try_get("account_id")?,
                held_reason: r.try_get("held_reason")?,
                held_at: r.try_get("held_at")?,
                previous_read_at: r.try_get("last_read_at")?,
                previous_energy_wh: EnergyWh::from_wh(previous),
                read_at: r.try_get("read_at")?,
                energy_wh: energy.map(EnergyWh::from_wh),
                flag: r.try_get("flag")?,
                energy_as_read_wh: energy
                    .and_then(|e| e.checked_sub(previous))
                    .filter(|wh| *wh >= 0)
                    .map(EnergyWh::from_wh),
                waiting_request: r.try_get("waiting_request")?,
            })
        })
        .collect()
}

/// The meter's building, 404 outside the caller's buildings.
async fn visible_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<()> {
    principal.require_read_company()?;
    let building: Option<Uuid> = sqlx::query_scalar(
        "select s.building_id from meters m left join shops s on s.id = m.shop_id where m.id = $1",
    )
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("meter"))?;
    if let Some(limit) = principal.building_limit() {
        if !building.is_some_and(|b| limit.contains(&b)) {
            return Err(CoreError::NotFound("meter"));
        }
    }
    Ok(())
}

/// The hold of a meter, locked: its account, position and counters, and the held reading.
struct Hold {
    account: Uuid,
    state: sqlx::postgres::PgRow,
    last_read_at: DateTime<Utc>,
    last_energy: i64,
    read_at: DateTime<Utc>,
    read_energy: i64,
    flag: Option<String>,
}

impl Hold {
    async fn lock(conn: &mut PgConnection, meter: Uuid) -> CoreResult<Hold> {
        let state = sqlx::query(
            "select r.account_id, r.last_read_at, r.last_energy_wh, r.from_opening, r.held_reason,
                    r.month_year, r.month, r.month_wh, r.year, r.year_wh, r.remainder_e5
             from rating_state r join shop_accounts a on a.id = r.account_id and a.state in ('open', 'closing')
             where r.meter_id = $1 and r.held_at is not null for update of r",
        )
        .bind(meter)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| CoreError::Conflict("no reading of this meter is held".into()))?;
        let last_read_at: DateTime<Utc> = state.try_get("last_read_at")?;
        let held = sqlx::query(
            "select read_at, energy_wh, flag from readings
             where meter_id = $1 and read_at > $2 and flag is distinct from 'out_of_order'
             order by read_at limit 1",
        )
        .bind(meter)
        .bind(last_read_at)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            CoreError::Conflict(
                "rating stopped without a held reading (no tariff plan?): fix the meter's plan"
                    .into(),
            )
        })?;
        Ok(Hold {
            account: state.try_get("account_id")?,
            last_read_at,
            last_energy: state.try_get("last_energy_wh")?,
            read_at: held.try_get("read_at")?,
            read_energy: held.try_get("energy_wh")?,
            flag: held.try_get("flag")?,
            state,
        })
    }

    fn as_read(&self) -> Option<i64> {
        self.read_energy
            .checked_sub(self.last_energy)
            .filter(|wh| *wh >= 0)
    }

    /// The energy to rate: the operator's, else the flag table's.
    fn energy(&self, correction: Option<EnergyWh>) -> CoreResult<EnergyWh> {
        match (correction, self.flag.as_deref()) {
            (Some(wh), _) if wh < EnergyWh::ZERO => Err(CoreError::field("energy_wh", "not negative")),
            (_, Some("ratio_mismatch")) => Err(CoreError::Conflict(
                "resolve the meter's CT/PT ratio first: its readings do not match the configured one"
                    .into(),
            )),
            (Some(wh), _) => Ok(wh),
            (None, Some("reset")) => Ok(EnergyWh::ZERO),
            (None, _) => self.as_read().map(EnergyWh::from_wh).ok_or_else(|| {
                CoreError::field("energy_wh", "the register went back: enter the interval's energy")
            }),
        }
    }
}

/// Releases (or, with `correction`, corrects) the held reading that stopped `meter`'s rating.
/// Above the company's threshold the release waits for an approver (`reason` then required;
/// `request_key` makes asking twice one request). Audited.
#[tracing::instrument(skip_all)]
pub async fn release(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
    correction: Option<EnergyWh>,
    reason: &str,
    request_key: &str,
) -> CoreResult<ReleaseOutcome> {
    visible_meter(conn, principal, meter).await?;
    principal.require(Need::Act(Right::ReadingsReview))?;
    let hold = Hold::lock(conn, meter).await?;
    let energy = hold.energy(correction)?;
    let threshold = EnergyWh::from_wh(
        sqlx::query_scalar("select correction_approval_above_wh from settings")
            .fetch_one(&mut *conn)
            .await?,
    );
    if energy > threshold {
        let reason = approvals::checked_reason(reason)?;
        let request = approvals::ask(
            conn,
            principal,
            &Ask {
                kind: ApprovalKind::ReadingCorrection,
                target_id: meter,
                read_at: Some(hold.read_at),
                energy_wh: Some(energy),
                amount_fen: None,
                reason,
                request_key: format!("client:{request_key}"),
            },
        )
        .await?;
        return Ok(ReleaseOutcome {
            energy_wh: energy,
            request: Some(request),
        });
    }
    settle(
        conn,
        principal,
        meter,
        hold,
        energy,
        correction.is_some(),
        reason,
    )
    .await?;
    Ok(ReleaseOutcome {
        energy_wh: energy,
        request: None,
    })
}

/// Approves a correction request (an approver other than the requester) and rates it — if the
/// held reading is still the one the request names.
#[tracing::instrument(skip_all)]
pub async fn approve_correction(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    idempotency_key: &str,
) -> CoreResult<ApprovalRequest> {
    principal.require_read_company()?;
    let request = approvals::get(conn, id).await?;
    if request.kind != ApprovalKind::ReadingCorrection
        || !approvals::visible(conn, principal, &request).await?
    {
        return Err(CoreError::NotFound("approval request"));
    }
    super::client_keys::claim(conn, idempotency_key, "approve", id).await?;
    let request = approvals::decidable(conn, principal, id).await?;
    let meter = request.target_id;
    let hold = Hold::lock(conn, meter).await?;
    if Some(hold.read_at) != request.read_at {
        return Err(CoreError::Conflict(
            "the meter's held reading changed since the request: ask again".into(),
        ));
    }
    let energy = request
        .energy_wh
        .ok_or_else(|| CoreError::Internal("a correction request without energy".into()))?;
    let corrected = hold.as_read() != Some(energy.wh());
    settle(
        conn,
        principal,
        meter,
        hold,
        energy,
        corrected,
        &request.reason,
    )
    .await?;
    approvals::decide(conn, principal, id, "done", None).await
}

/// Rates the held interval with `energy`, counts it in the reading and the daily energy, moves
/// rating on to the held reading, clears the alarm, and audits it.
async fn settle(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
    hold: Hold,
    energy: EnergyWh,
    corrected: bool,
    reason: &str,
) -> CoreResult<()> {
    let mut counters = counters_of(&hold.state)?;
    let mut daily: BTreeMap<(NaiveDate, Period), i64> = BTreeMap::new();
    if energy > EnergyWh::ZERO {
        let usage = Usage {
            start: hold.last_read_at,
            end: hold.read_at,
            energy_wh: energy,
            tou_wh: None,
        };
        // Rated at the plan in force at the interval's time.
        let rated = rate_operator_interval(
            conn,
            principal,
            hold.account,
            meter,
            &usage,
            &counters,
            "energy_wh",
        )
        .await?;
        for line in &rated.lines {
            let day = line.start.with_timezone(&principal.tz()).date_naive();
            let wh = daily.entry((day, line.period)).or_default();
            *wh = wh
                .checked_add(line.energy_wh.wh())
                .ok_or_else(|| CoreError::Internal("daily energy overflows".into()))?;
        }
        counters = rated.state;
    }
    count_released(conn, meter, hold.read_at, energy, &daily).await?;
    let position = Position {
        read_at: hold.read_at,
        energy_wh: hold.read_energy,
        from_opening: false,
        held: None,
    };
    save_state(
        conn,
        hold.account,
        meter,
        &position,
        &counters,
        principal.now(),
    )
    .await?;
    sqlx::query(
        "update field_alarms set cleared_at = $2 where kind = 'reading_held' and target_id = $1 and cleared_at is null",
    )
    .bind(meter)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    crate::tenancy::audit::record(
        conn,
        principal,
        if corrected {
            "reading.correct"
        } else {
            "reading.release"
        },
        "meter",
        Some(meter.to_string()),
        Some(serde_json::json!({
            "read_at": hold.read_at, "flag": hold.flag, "energy_as_read_wh": hold.as_read(),
            "held_reason": hold.state.try_get::<Option<String>, _>("held_reason")?,
        })),
        Some(serde_json::json!({ "energy_wh": energy, "reason": reason })),
    )
    .await?;
    Ok(())
}

/// The released interval counts from now on (DESIGN.md: "a release or correction updates
/// both"): the reading's `counted_wh` (which hourly energy sums) and the daily energy per local
/// day and period. The reading's register values stay as read.
async fn count_released(
    conn: &mut PgConnection,
    meter: Uuid,
    read_at: DateTime<Utc>,
    energy: EnergyWh,
    daily: &BTreeMap<(NaiveDate, Period), i64>,
) -> CoreResult<()> {
    sqlx::query("update readings set counted_wh = $3 where meter_id = $1 and read_at = $2")
        .bind(meter)
        .bind(read_at)
        .bind(energy.wh())
        .execute(&mut *conn)
        .await?;
    for ((day, period), wh) in daily {
        sqlx::query(
            "insert into daily_energy (meter_id, day, period, energy_wh) values ($1, $2, $3, $4)
             on conflict (meter_id, day, period) do update set energy_wh = daily_energy.energy_wh + excluded.energy_wh",
        )
        .bind(meter)
        .bind(day)
        .bind(period.as_str())
        .bind(wh)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
