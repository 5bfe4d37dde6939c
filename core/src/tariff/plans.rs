//! Stored tariff plans and their versions (the plan model itself is [`crate::tariff`]).
//! History is never rewritten: a version may be added or replaced only for a date after today
//! (local time of the property); versions already in force stay as they are. The preview rates a
//! usage profile under several plans with the same [`crate::tariff::rating::rate`] that bills meters.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::{AmountFen, EnergyWh};
use crate::tariff::rating::{self, RatingState, Usage};
use crate::tariff::{Calendar, Period, TariffVersion};
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TariffPlan {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Oldest first.
    pub versions: Vec<TariffVersion>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct NewPlan {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The first version; its effective date may be in the past (nothing was rated yet).
    pub version: TariffVersion,
}

/// A usage profile for the preview: the same hourly energy every day for `days` days.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize)]
pub struct PreviewInput {
    pub plan_ids: Vec<Uuid>,
    pub start: NaiveDate,
    pub days: u32,
    /// 24 values: Wh used in each local hour of a day.
    pub hourly_wh: Vec<i64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PreviewResult {
    pub plan_id: Uuid,
    pub plan_name: String,
    pub energy_wh: i64,
    /// Whole fen debited over the profile, plus the rest rounded half-up as at account close.
    pub total_fen: AmountFen,
    /// Energy and exact charge per period: (Wh, fen rounded half-up).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub by_period: BTreeMap<Period, (i64, AmountFen)>,
}

fn prefixed(prefix: &str, fields: BTreeMap<String, String>) -> BTreeMap<String, String> {
    fields
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect()
}

/// Today in the property's time zone.
fn today(principal: &Principal) -> NaiveDate {
    principal.today()
}

async fn versions(conn: &mut PgConnection, plan_id: Uuid) -> CoreResult<Vec<TariffVersion>> {
    let bodies: Vec<serde_json::Value> = sqlx::query_scalar(
        "select body from tariff_versions where plan_id = $1 order by effective",
    )
    .bind(plan_id)
    .fetch_all(conn)
    .await?;
    bodies.into_iter().map(stored_version).collect()
}

fn stored_version(body: serde_json::Value) -> CoreResult<TariffVersion> {
    serde_json::from_value(body)
        .map_err(|e| CoreError::Internal(format!("stored tariff version: {e}")))
}

/// The tariff versions in force for each of `meter_ids` (through its plan), oldest first: the
/// one query that loads them, for rating, daily energy and previews. Meters without a plan are
/// absent. No principal: workers (ingest, rating) call it inside a company's transaction.
#[tracing::instrument(skip_all)]
pub async fn versions_by_meter(
    conn: &mut PgConnection,
    meter_ids: &[Uuid],
) -> CoreResult<std::collections::HashMap<Uuid, Vec<TariffVersion>>> {
    let meters: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "select id, tariff_plan_id from meters where id = any($1) and tariff_plan_id is not null",
    )
    .bind(meter_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut plan_ids: Vec<Uuid> = meters.iter().map(|(_, plan)| *plan).collect();
    plan_ids.sort_unstable();
    plan_ids.dedup();
    // Many meters share a plan: each plan's versions are read and parsed once.
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "select plan_id, body from tariff_versions where plan_id = any($1) order by effective",
    )
    .bind(&plan_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_plan: std::collections::HashMap<Uuid, Vec<TariffVersion>> = Default::default();
    for (plan_id, body) in rows {
        by_plan
            .entry(plan_id)
            .or_default()
            .push(stored_version(body)?);
    }
    Ok(meters
        .into_iter()
        .filter_map(|(meter, plan)| by_plan.get(&plan).map(|v| (meter, v.clone())))
        .collect())
}

#[tracing::instrument(skip_all)]
pub async fn list(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<TariffPlan>> {
    principal.require_read_company()?;
    let rows = sqlx::query("select id, name, description from tariff_plans order by name")
        .fetch_all(&mut *conn)
        .await?;
    let mut plans = Vec::with_capacity(rows.len());
    for r in rows {
        let id: Uuid = r.try_get("id")?;
        plans.push(TariffPlan {
            id,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            versions: versions(conn, id).await?,
        });
    }
    Ok(plans)
}

#[tracing::instrument(skip_all)]
pub async fn get(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<TariffPlan> {
    principal.require_read_company()?;
    let r = sqlx::query("select id, name, description from tariff_plans where id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("tariff plan"))?;
    Ok(TariffPlan {
        id,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        versions: versions(conn, id).await?,
    })
}

async fn store_version(
    conn: &mut PgConnection,
    plan_id: Uuid,
    version: &TariffVersion,
) -> CoreResult<()> {
    sqlx::query(
        "insert into tariff_versions (plan_id, effective, body) values ($1, $2, $3)
         on conflict (plan_id, effective) do update set body = excluded.body, created_at = now()",
    )
    .bind(plan_id)
    .bind(version.effective)
    .bind(serde_json::to_value(version).expect("plain data"))
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn create(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &NewPlan,
) -> CoreResult<TariffPlan> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    let mut fields = input
        .version
        .validate()
        .map(|_| BTreeMap::new())
        .unwrap_or_else(|f| prefixed("version", f));
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        fields.insert("name".into(), "1–100 characters".into());
    } else {
        let taken: bool =
            sqlx::query_scalar("select exists (select 1 from tariff_plans where name = $1)")
                .bind(name)
                .fetch_one(&mut *conn)
                .await?;
        if taken {
            fields.insert("name".into(), "a plan with this name exists".into());
        }
    }
    CoreError::check_fields(fields)?;
    let id = Uuid::now_v7();
    sqlx::query("insert into tariff_plans (id, name, description) values ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(input.description.trim())
        .execute(&mut *conn)
        .await?;
    store_version(conn, id, &input.version).await?;
    let plan = get(conn, principal, id).await?;
    let json = audit::snapshot(&plan);
    audit::record(
        conn,
        principal,
        "tariff_plan.create",
        "tariff_plan",
        Some(id.to_string()),
        None,
        Some(json),
    )
    .await?;
    Ok(plan)
}

/// Adds a version from a future date, or replaces a future one; versions in force are history.
#[tracing::instrument(skip_all)]
pub async fn add_version(
    conn: &mut PgConnection,
    principal: &Principal,
    plan_id: Uuid,
    version: &TariffVersion,
) -> CoreResult<TariffPlan> {
    let before = get(conn, principal, plan_id).await?;
    principal.require(Need::Act(Right::Settings))?;
    if let Err(fields) = version.validate() {
        CoreError::check_fields(fields)?;
    }
    if version.effective <= today(principal) {
        return Err(CoreError::field(
            "effective",
            "a new version starts tomorrow or later: prices in force are never rewritten",
        ));
    }
    store_version(conn, plan_id, version).await?;
    let after = get(conn, principal, plan_id).await?;
    audit::record(
        conn,
        principal,
        "tariff_plan.version",
        "tariff_plan",
        Some(plan_id.to_string()),
        Some(audit::snapshot(&before)),
        Some(audit::snapshot(&after)),
    )
    .await?;
    Ok(after)
}

/// Rates the profile under each plan.
#[tracing::instrument(skip_all)]
pub async fn preview(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &PreviewInput,
    calendar: &Calendar,
) -> CoreResult<Vec<PreviewResult>> {
    principal.require_read_company()?;
    if input.hourly_wh.len() != 24
        || input
            .hourly_wh
            .iter()
            .any(|wh| !(0..=10_000_000).contains(wh))
    {
        return Err(CoreError::field(
            "hourly_wh",
            "24 hourly values of 0 to 10,000 kWh",
        ));
    }
    if !(1..=366).contains(&input.days) {
        return Err(CoreError::field("days", "1 to 366 days"));
    }
    if input.plan_ids.is_empty() || input.plan_ids.len() > 5 {
        return Err(CoreError::field("plan_ids", "1 to 5 plans"));
    }
    let tz: Tz = principal.company()?.tz;
    let mut results = Vec::new();
    for &plan_id in &input.plan_ids {
        let plan = get(conn, principal, plan_id).await?;
        results.push(preview_plan(&plan, input, tz, calendar)?);
    }
    Ok(results)
}

fn preview_plan(
    plan: &TariffPlan,
    input: &PreviewInput,
    tz: Tz,
    calendar: &Calendar,
) -> CoreResult<PreviewResult> {
    let mut state = RatingState::default();
    let too_much = || CoreError::field("hourly_wh", "too much energy to preview");
    let mut debits = AmountFen::ZERO;
    let mut energy_wh = 0i64;
    let mut by_period_e5: BTreeMap<Period, (i64, i64)> = BTreeMap::new();
    for day in 0..input.days {
        let date = input.start + Duration::days(i64::from(day));
        for (hour, &wh) in input.hourly_wh.iter().enumerate() {
            let hour = u32::try_from(hour).expect("24 hours");
            let start = local(tz, date, hour);
            let end = if hour == 23 {
                local(tz, date + Duration::days(1), 0)
            } else {
                local(tz, date, hour + 1)
            };
            let usage = Usage {
                start,
                end,
                energy_wh: EnergyWh::from_wh(wh),
                tou_wh: None,
            };
            let rated = rating::rate(&usage, &plan.versions, tz, calendar, &state)
                .map_err(|e| CoreError::field("start", e.to_string()))?;
            for line in &rated.lines {
                let entry = by_period_e5.entry(line.period).or_default();
                entry.0 = entry
                    .0
                    .checked_add(line.energy_wh.wh())
                    .ok_or_else(too_much)?;
                entry.1 = entry.1.checked_add(line.charge_e5).ok_or_else(too_much)?;
            }
            debits = debits.checked_add(rated.debit_fen).ok_or_else(too_much)?;
            energy_wh = energy_wh.checked_add(wh).ok_or_else(too_much)?;
            state = rated.state;
        }
    }
    let half_up = |e5: i64| {
        AmountFen::from_fen(e5.saturating_add(rating::E5_PER_FEN / 2) / rating::E5_PER_FEN)
    };
    Ok(PreviewResult {
        plan_id: plan.id,
        plan_name: plan.name.clone(),
        energy_wh,
        total_fen: debits
            .checked_add(rating::closing_fen(state.remainder_e5))
            .ok_or_else(too_much)?,
        by_period: by_period_e5
            .into_iter()
            .map(|(p, (wh, e5))| (p, (wh, half_up(e5))))
            .collect(),
    })
}

fn local(tz: Tz, date: NaiveDate, hour: u32) -> chrono::DateTime<Utc> {
    use chrono::TimeZone;
    let naive = date.and_hms_opt(hour, 0, 0).expect("a valid hour");
    tz.from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
                .expect("after a DST gap")
        })
        .with_timezone(&Utc)
}
