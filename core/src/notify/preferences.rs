//! Which kinds of message a user does not want (issue: "preferences per user"). Everyone may
//! turn off what is only information — balance alarms, "power back", top-up receipts, each kind
//! of operator alert — but never the warning before a trip or the "power cut" message: those
//! are what the promise "nobody is cut off without warning" rests on. Each user sets their own.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// Kinds nobody can turn off.
pub const ALWAYS_SENT: [&str; 2] = ["trip_notice", "tripped"];

/// A user's preferences.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Preferences {
    /// Kinds the user turned off.
    pub muted: Vec<String>,
}

/// The calling user's preferences.
#[tracing::instrument(skip_all)]
pub async fn mine(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Preferences> {
    principal.company()?;
    Ok(Preferences {
        muted: sqlx::query_scalar(
            "select kind from notify_preferences where user_id = $1 order by kind",
        )
        .bind(principal.user_id)
        .fetch_all(conn)
        .await?,
    })
}

/// Replaces the calling user's preferences.
#[tracing::instrument(skip_all)]
pub async fn set_mine(
    conn: &mut PgConnection,
    principal: &Principal,
    wanted: &Preferences,
) -> CoreResult<Preferences> {
    principal.company()?;
    if principal.user_id.is_nil() {
        return Err(CoreError::Forbidden("only a person has preferences".into()));
    }
    for kind in &wanted.muted {
        if ALWAYS_SENT.contains(&kind.as_str()) {
            return Err(CoreError::field(
                "muted",
                format!("{kind} cannot be turned off"),
            ));
        }
        if !super::accounts::KINDS.contains(&kind.as_str()) {
            return Err(CoreError::field(
                "muted",
                format!("{kind} is not a message kind"),
            ));
        }
    }
    sqlx::query("delete from notify_preferences where user_id = $1")
        .bind(principal.user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into notify_preferences (user_id, kind) select $1, k from unnest($2::text[]) k
         on conflict do nothing",
    )
    .bind(principal.user_id)
    .bind(&wanted.muted)
    .execute(&mut *conn)
    .await?;
    mine(conn, principal).await
}

/// Whether `user` turned `kind` off.
pub(crate) async fn muted(conn: &mut PgConnection, user: Uuid, kind: &str) -> CoreResult<bool> {
    if ALWAYS_SENT.contains(&kind) {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(
        "select exists (select 1 from notify_preferences where user_id = $1 and kind = $2)",
    )
    .bind(user)
    .bind(kind)
    .fetch_one(conn)
    .await?)
}
