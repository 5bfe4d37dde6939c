//! The command queue as people use it (DESIGN.md: Commands). This issue brings `read_now`
//! ("read this meter now", from the meter page); the billing issue adds trip/close, keep-power
//! and the secure purchase. A command is a row in the company's `commands` table plus a NOTIFY
//! on [`CHANNEL`] in the same transaction, so ingest hears of it the moment it is committed.

use crate::audit;
use crate::auth::Principal;
use crate::error::{CoreError, CoreResult};
use crate::roles::{Need, Right};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The NOTIFY channel ingest listens on; payload `<schema>:<meter id>:<command id>`.
pub const CHANNEL: &str = "pt_commands";
/// A read-now nobody could carry out within this long is expired.
pub const READ_NOW_VALID_S: i64 = 120;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Command {
    pub id: Uuid,
    pub meter_id: Uuid,
    pub op: String,
    /// queued, sent, acknowledged, verified, failed or expired.
    pub state: String,
    pub source: String,
    pub detail: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn command_from(r: sqlx::postgres::PgRow) -> CoreResult<Command> {
    Ok(Command {
        id: r.try_get("id")?,
        meter_id: r.try_get("meter_id")?,
        op: r.try_get("op")?,
        state: r.try_get("state")?,
        source: r.try_get("source")?,
        detail: r.try_get("detail")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const SELECT: &str = "select id, meter_id, op, state, source, detail, expires_at, created_at, updated_at from commands";

/// Asks ingest to read `meter_id` now, ahead of its schedule. Staff who sell, switch or set
/// up meters may ask; an open read-now of the same meter is reused rather than doubled.
pub async fn read_now(
    conn: &mut PgConnection,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<Command> {
    let meter = crate::field::meter(conn, principal, meter_id).await?;
    if ![Right::TopUp, Right::TripClose, Right::Settings]
        .into_iter()
        .any(|r| principal.can(Need::Act(r)))
    {
        return Err(CoreError::Forbidden("your role may not do this".into()));
    }
    if meter.status != "active" {
        return Err(CoreError::Conflict("this meter was removed".into()));
    }
    let open = sqlx::query(&format!(
        "{SELECT} where meter_id = $1 and op = 'read_now' and state in ('queued', 'sent') and expires_at > now()"
    ))
    .bind(meter_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = open {
        return command_from(row);
    }
    let id = Uuid::now_v7();
    let row = sqlx::query(
        "insert into commands (id, meter_id, op, source, expires_at) values ($1, $2, 'read_now', $3, $4)
         returning id, meter_id, op, state, source, detail, expires_at, created_at, updated_at",
    )
    .bind(id)
    .bind(meter_id)
    .bind(format!("operator:{}", principal.user_id))
    .bind(Utc::now() + Duration::seconds(READ_NOW_VALID_S))
    .fetch_one(&mut *conn)
    .await?;
    let schema = principal.company()?.schema.as_str().to_owned();
    sqlx::query("select pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{schema}:{meter_id}:{id}"))
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "meter.read_now",
        "meter",
        Some(meter_id.to_string()),
        None,
        None,
    )
    .await?;
    command_from(row)
}

/// One command, for its state.
pub async fn get(conn: &mut PgConnection, principal: &Principal, id: Uuid) -> CoreResult<Command> {
    principal.require_read_company()?;
    let row = sqlx::query(&format!("{SELECT} where id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(CoreError::NotFound("command"))?;
    let command = command_from(row)?;
    // A command of a meter outside the caller's building limit does not exist for them.
    crate::field::meter(conn, principal, command.meter_id)
        .await
        .map_err(|_| CoreError::NotFound("command"))?;
    Ok(command)
}
