//! Batch control (DESIGN.md: Commands; issue "power follows money"): one person's trip, close,
//! release or keep-power over a selection of shop meters — by building, floor, gateway or a text
//! matching shop or meter numbers — in two steps. [`preview`] says how many meters and which
//! shops the selection holds now; [`start`] takes the count the person confirmed and refuses
//! when the selection changed since (a shop opened, a meter moved), so nobody trips more shops
//! than they were shown. Each meter gets its own typed command (source `operator:<id>`, the
//! batch's id), with the same effects as one meter's control (`control::apply`); a trip skips
//! the meters under keep-power and says how many. [`progress`] counts the batch's commands by
//! state for the page that follows it.

use super::control::{self, Link};
use crate::auth::Principal;
use crate::commands::{Op, State};
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use crate::tenancy::roles::Need;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Meters one batch takes at most.
pub const BATCH_METERS_MAX: usize = 20_000;
/// Shop names a preview lists (the count covers all).
pub const PREVIEW_SHOPS_MAX: usize = 50;

/// Which meters: active shop meters (role `shop`) matching every given part.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub building_id: Option<Uuid>,
    pub floor_id: Option<Uuid>,
    pub gateway_id: Option<Uuid>,
    /// Part of a shop number, shop name or meter number (plain text, no wildcards).
    pub q: Option<String>,
}

/// What a selection holds now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub op: Op,
    /// Meters the batch would command (confirm with this count).
    pub meters: usize,
    /// Meters left out: under keep-power, for a trip.
    pub skipped_keep_power: usize,
    /// How many shops, and the first [`PREVIEW_SHOPS_MAX`] of them (`number name`).
    pub shops_total: usize,
    pub shops: Vec<String>,
}

/// A batch and how far its commands got.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub id: Uuid,
    pub op: Op,
    pub selection: Selection,
    pub meters: i32,
    pub skipped: i32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Commands per state (`verified`, `failed`, …); a retried command counts as its retry.
    pub states: BTreeMap<String, i64>,
    /// Every command reached a final state.
    pub finished: bool,
}

struct Selected {
    meter_id: Uuid,
    shop: String,
    keep_power: bool,
}

async fn select(
    conn: &mut PgConnection,
    principal: &Principal,
    selection: &Selection,
    lock: bool,
) -> CoreResult<Vec<Selected>> {
    principal.require_read_company()?;
    let mut q = QueryBuilder::new(
        "select m.id, s.number || ' ' || s.name as shop, m.keep_power
         from meters m join shops s on s.id = m.shop_id join buses b on b.id = m.bus_id
         where m.status = 'active' and m.role = 'shop'",
    );
    if let Some(id) = selection.building_id {
        q.push(" and s.building_id = ").push_bind(id);
    }
    if let Some(id) = selection.floor_id {
        q.push(" and s.floor_id = ").push_bind(id);
    }
    if let Some(id) = selection.gateway_id {
        q.push(" and b.gateway_id = ").push_bind(id);
    }
    if let Some(text) = selection
        .q
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // strpos, not like: a `%` or `_` someone types is a character, not a wildcard.
        let text = text.to_lowercase();
        q.push(" and (strpos(lower(s.number), ")
            .push_bind(text.clone())
            .push(") > 0 or strpos(lower(s.name), ")
            .push_bind(text.clone())
            .push(") > 0 or strpos(m.meter_number, ")
            .push_bind(text)
            .push(") > 0)");
    }
    if let Some(ids) = principal.building_limit_param() {
        q.push(" and s.building_id = any(").push_bind(ids).push(")");
    }
    q.push(" order by s.number, m.meter_number limit ")
        .push_bind(i64::try_from(BATCH_METERS_MAX + 1).unwrap_or(i64::MAX));
    if lock {
        // Keep-power cannot change under a starting batch.
        q.push(" for update of m");
    }
    let rows = q.build().fetch_all(&mut *conn).await?;
    if rows.len() > BATCH_METERS_MAX {
        return Err(CoreError::field(
            "selection",
            "more than 20,000 meters: narrow it by building or floor",
        ));
    }
    rows.iter()
        .map(|r| {
            Ok(Selected {
                meter_id: r.try_get("id")?,
                shop: r.try_get::<String, _>("shop")?.trim().to_owned(),
                keep_power: r.try_get("keep_power")?,
            })
        })
        .collect()
}

/// Splits the selection into the meters `op` goes to and those keep-power leaves out.
fn targets(op: Op, selected: &[Selected]) -> (Vec<&Selected>, usize) {
    let (kept, sent): (Vec<&Selected>, Vec<&Selected>) = selected
        .iter()
        .partition(|s| op == Op::Trip && s.keep_power);
    (sent, kept.len())
}

/// How many meters and which shops `op` on `selection` would command now.
#[tracing::instrument(skip_all)]
pub async fn preview(
    conn: &mut PgConnection,
    principal: &Principal,
    op: &str,
    selection: &Selection,
) -> CoreResult<Preview> {
    let op = control::control_op(op)?;
    principal.require(Need::Act(control::right_for(op)))?;
    let selected = select(conn, principal, selection, false).await?;
    let (sent, skipped) = targets(op, &selected);
    let mut shops: Vec<String> = sent.iter().map(|s| s.shop.clone()).collect();
    shops.dedup();
    let shops_total = shops.len();
    shops.truncate(PREVIEW_SHOPS_MAX);
    Ok(Preview {
        op,
        meters: sent.len(),
        skipped_keep_power: skipped,
        shops_total,
        shops,
    })
}

/// Starts `op` on `selection` once the person confirmed `confirmed_meters` (the preview's
/// count): one command per meter, all in the caller's transaction, one audit record.
#[tracing::instrument(skip_all)]
pub async fn start(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&crate::kernel::secrets::Keyring>,
    op: &str,
    selection: &Selection,
    confirmed_meters: usize,
) -> CoreResult<Progress> {
    let op = control::control_op(op)?;
    principal.require(Need::Act(control::right_for(op)))?;
    let selected = select(conn, principal, selection, true).await?;
    let (sent, skipped) = targets(op, &selected);
    if sent.is_empty() {
        return Err(CoreError::field("selection", "no meter matches"));
    }
    if sent.len() != confirmed_meters {
        return Err(CoreError::Conflict(format!(
            "the selection holds {} meters now, not the {confirmed_meters} you confirmed: look again",
            sent.len()
        )));
    }
    let id = Uuid::now_v7();
    let now = principal.now();
    let created_by = format!("operator:{}", principal.user_id);
    sqlx::query(
        "insert into control_batches (id, op, selection, meters, skipped, created_by, created_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(op.as_str())
    .bind(serde_json::to_value(selection).map_err(|e| CoreError::Internal(e.to_string()))?)
    .bind(i32::try_from(sent.len()).map_err(|_| CoreError::Internal("batch size".into()))?)
    .bind(i32::try_from(skipped).map_err(|_| CoreError::Internal("batch size".into()))?)
    .bind(&created_by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let meters: Vec<Uuid> = sent.iter().map(|s| s.meter_id).collect();
    control::apply(conn, principal, &meters, op).await?;
    let link = Link {
        batch_id: Some(id),
        retry_of: None,
    };
    let meter_side = control::meter_side_of(conn, &meters).await?;
    for meter in &meters {
        let secure = meter_side.contains(meter);
        control::send(conn, principal, keyring, *meter, secure, op, link).await?;
    }
    audit::record(
        conn,
        principal,
        "meter.control_batch",
        "control_batch",
        Some(id.to_string()),
        None,
        Some(serde_json::json!({
            "op": op.as_str(), "selection": selection, "meters": meters.len(), "skipped": skipped,
        })),
    )
    .await?;
    metrics::counter!("power_batch_commands_total").increment(meters.len() as u64);
    progress(conn, principal, id).await
}

/// Batch `id` and its commands' states.
#[tracing::instrument(skip_all)]
pub async fn progress(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Progress> {
    principal.require_read_company()?;
    let row = sqlx::query(
        "select op, selection, meters, skipped, created_by, created_at from control_batches where id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("batch"))?;
    let selection: Selection = serde_json::from_value(row.try_get("selection")?)
        .map_err(|e| CoreError::Internal(format!("stored selection: {e}")))?;
    // A person limited to some buildings sees their own batches and those of their buildings.
    let created_by: String = row.try_get("created_by")?;
    if let Some(limit) = principal.building_limit() {
        let own = created_by == format!("operator:{}", principal.user_id);
        let theirs = selection.building_id.is_some_and(|b| limit.contains(&b));
        if !own && !theirs {
            return Err(CoreError::NotFound("batch"));
        }
    }
    let op: String = row.try_get("op")?;
    // The newest command per meter: a retry stands for the failed one it sends again.
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "with latest as (
           select distinct on (c.meter_id) c.state from commands c
           where c.batch_id = $1 order by c.meter_id, c.created_at desc)
         select state, count(*) from latest group by state",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let finished = counts
        .iter()
        .all(|(state, _)| State::parse(state).is_some_and(State::is_final));
    Ok(Progress {
        id,
        op: Op::parse(&op).ok_or_else(|| CoreError::Internal(format!("stored op {op:?}")))?,
        selection,
        meters: row.try_get("meters")?,
        skipped: row.try_get("skipped")?,
        created_by,
        created_at: row.try_get("created_at")?,
        states: counts.into_iter().collect(),
        finished,
    })
}
