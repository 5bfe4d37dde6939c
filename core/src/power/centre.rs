//! The command centre (DESIGN.md: Commands): the company's commands to meters as operators look
//! at them — open, failed and stuck ones across the company, one meter's history, one batch's —
//! and the two things a person does about them: send a failed command again (a new command
//! linked to the old one by `retry_of`, with the same rights and keep-power rule as a fresh one)
//! and cancel one still waiting (queued → cancelled; one its bus holds for a retry after no
//! answer → failed). Cancelling a rule's command stops this one only: while the rule's condition
//! holds, the intended-state comparison sends it again (`relay.rs`).

use super::control::{self, Link};
use crate::auth::Principal;
use crate::commands::{self, Command, Op, Settled, State};
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use crate::tenancy::roles::Need;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use uuid::Uuid;

/// An open command not finished this long after it was asked for (queued) or last handed to a
/// transport (sent, acknowledged) is stuck: its bus is gone, its gateway silent, or the read-back
/// never came.
pub const STUCK_AFTER_S: i64 = 300;
/// Rows a list shows at most (newest first).
pub const LIST_MAX: i64 = 2_000;

/// Which commands a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CentreView {
    /// Queued, sent or acknowledged.
    #[default]
    Open,
    /// Failed or expired.
    Failed,
    /// Open longer than [`STUCK_AFTER_S`].
    Stuck,
    /// Every state.
    All,
}

impl CentreView {
    pub fn parse(text: &str) -> Option<CentreView> {
        match text {
            "" | "open" => Some(CentreView::Open),
            "failed" => Some(CentreView::Failed),
            "stuck" => Some(CentreView::Stuck),
            "all" => Some(CentreView::All),
            _ => None,
        }
    }
}

/// What to list: a view, optionally one meter's or one batch's commands.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct CentreFilter {
    /// `open` (default), `failed`, `stuck` or `all`.
    pub view: Option<String>,
    pub meter_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    /// At most this many, newest first (≤ 2,000; default 500).
    pub limit: Option<i64>,
}

/// One command as the centre lists it: the command with its meter and shop.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CentreRow {
    #[serde(flatten)]
    pub command: Command,
    pub meter_number: String,
    /// The meter's shop, `number name`; empty for a meter without one.
    pub shop: String,
    /// Open longer than [`STUCK_AFTER_S`].
    pub stuck: bool,
}

/// The commands `filter` asks for, newest first, limited to the buildings the principal sees.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &CentreFilter,
) -> CoreResult<Vec<CentreRow>> {
    principal.require_read_company()?;
    let view = CentreView::parse(filter.view.as_deref().unwrap_or("").trim())
        .ok_or_else(|| CoreError::field("view", "one of open, failed, stuck, all"))?;
    let limit = filter.limit.unwrap_or(500);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(CoreError::field("limit", "between 1 and 2000"));
    }
    let now = principal.now();
    let stuck_before = now - Duration::seconds(STUCK_AFTER_S);
    // `command_from` reads the command's columns by name.
    let mut q = QueryBuilder::new(
        "select c.*, m.meter_number, coalesce(s.number || ' ' || s.name, '') as shop,
           (c.state in ('queued', 'sent', 'acknowledged')
            and coalesce(c.sent_at, c.created_at) < ",
    );
    q.push_bind(stuck_before);
    q.push(
        " and c.next_try_at is null and not (c.op = 'sync_clock' and c.state = 'acknowledged')) as stuck
         from commands c join meters m on m.id = c.meter_id left join shops s on s.id = m.shop_id
         where true",
    );
    match view {
        CentreView::Open => {
            q.push(" and c.state in ('queued', 'sent', 'acknowledged')");
        }
        CentreView::Failed => {
            q.push(" and c.state in ('failed', 'expired')");
        }
        CentreView::Stuck => {
            // A DL/T 645 broadcast time ends acknowledged (nobody answers it): not stuck.
            q.push(
                " and c.state in ('queued', 'sent', 'acknowledged') and c.next_try_at is null
                     and not (c.op = 'sync_clock' and c.state = 'acknowledged')
                     and coalesce(c.sent_at, c.created_at) < ",
            )
            .push_bind(stuck_before);
        }
        CentreView::All => {}
    }
    if let Some(meter) = filter.meter_id {
        q.push(" and c.meter_id = ").push_bind(meter);
    }
    if let Some(batch) = filter.batch_id {
        q.push(" and c.batch_id = ").push_bind(batch);
    }
    if let Some(ids) = principal.building_limit_param() {
        // Meters without a shop are outside every building limit.
        q.push(" and s.building_id = any(").push_bind(ids).push(")");
    }
    q.push(" order by c.created_at desc, c.id desc limit ")
        .push_bind(limit);
    let rows = q.build().fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            Ok(CentreRow {
                command: commands::command_from(r)?,
                meter_number: r.try_get("meter_number")?,
                shop: r.try_get::<String, _>("shop")?.trim().to_owned(),
                stuck: r.try_get("stuck")?,
            })
        })
        .collect()
}

/// Whether the principal may send `op` again or cancel it: the right a fresh one needs.
pub fn may_act(principal: &Principal, op: Op) -> bool {
    if op.is_control() {
        principal.can(Need::Act(control::right_for(op)))
    } else {
        commands::may_read_now(principal)
    }
}

fn require_for(principal: &Principal, op: Op) -> CoreResult<()> {
    if may_act(principal, op) {
        Ok(())
    } else {
        Err(CoreError::Forbidden("your role may not do this".into()))
    }
}

/// A failed, expired or cancelled relay command or read-now can be sent again ([`retry`]).
fn retriable(c: &Command) -> bool {
    (c.op.is_control() || c.op == Op::ReadNow)
        && matches!(c.state, State::Failed | State::Expired | State::Cancelled)
}

/// A queued command, or one its bus holds for a retry, can be cancelled ([`cancel`]) unless it
/// moves money.
fn cancellable(c: &Command) -> bool {
    !c.op.moves_money()
        && (c.state == State::Queued || (c.state == State::Sent && c.next_try_at.is_some()))
}

/// What the principal may do with `c` from the command centre: (send again, cancel).
pub fn actions(principal: &Principal, c: &Command) -> (bool, bool) {
    let acts = may_act(principal, c.op);
    (acts && retriable(c), acts && cancellable(c))
}

/// Sends failed, expired or cancelled command `id` again as a new command (`retry_of` = `id`;
/// source `operator:<you>`): relay commands with their rights and the keep-power rule, read-now
/// as a fresh read. Purchases and deducts are never sent anew — their stored bytes are resent
/// until verified (DESIGN.md: Secure commands) — and other ops wait for their drivers.
#[tracing::instrument(skip_all, fields(%id))]
pub async fn retry(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&crate::kernel::secrets::Keyring>,
    id: Uuid,
) -> CoreResult<Command> {
    // 404 for a command of a meter outside the caller's buildings.
    let old = commands::get(conn, principal, id).await?;
    require_for(principal, old.op)?;
    if !matches!(old.state, State::Failed | State::Expired | State::Cancelled) {
        return Err(CoreError::Conflict(format!(
            "the command is {}: only a failed, expired or cancelled one is sent again",
            old.state
        )));
    }
    let newer: Option<Uuid> = sqlx::query_scalar(
        "select id from commands where retry_of = $1 and state in ('queued', 'sent', 'acknowledged')",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(newer) = newer {
        return Err(CoreError::Conflict(format!(
            "it is being sent again already (command {newer})"
        )));
    }
    if old.op.is_control() {
        let link = Link {
            batch_id: old.batch_id,
            retry_of: Some(id),
        };
        return control::operate_linked(
            conn,
            principal,
            keyring,
            old.meter_id,
            old.op.as_str(),
            link,
        )
        .await;
    }
    if old.op == Op::ReadNow {
        let command = commands::read_now(conn, principal, old.meter_id).await?;
        sqlx::query("update commands set retry_of = $2 where id = $1 and retry_of is null")
            .bind(command.id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        return commands::get(conn, principal, command.id).await;
    }
    Err(CoreError::Conflict(format!(
        "a {} is not sent again from here",
        old.op
    )))
}

/// Cancels command `id` while it has not reached the meter: a queued one becomes `cancelled`;
/// one its bus holds for a retry after no answer becomes `failed` (it was sent once). One on
/// its way or sent and answered is refused: it ends verified, failed or expired by itself.
#[tracing::instrument(skip_all, fields(%id))]
pub async fn cancel(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Command> {
    let old = commands::get(conn, principal, id).await?;
    require_for(principal, old.op)?;
    if old.op.moves_money() {
        return Err(CoreError::Conflict(
            "a purchase or deduct is never cancelled: its money is on the way to the meter".into(),
        ));
    }
    let now = principal.now();
    let who = format!("cancelled by operator:{}", principal.user_id);
    let settled = match (old.state, old.next_try_at) {
        (State::Queued, _) => commands::settle(conn, id, State::Cancelled, &who, None, now).await?,
        (State::Sent, Some(_)) => cancel_retry(conn, id, &who, now).await?,
        (state, _) => Settled::Refused(state),
    };
    if let Settled::Refused(state) = settled {
        return Err(CoreError::Conflict(format!(
            "the command is {state}: it is on its way to the meter and ends by itself"
        )));
    }
    audit::record(
        conn,
        principal,
        "command.cancel",
        "command",
        Some(id.to_string()),
        Some(serde_json::json!({ "state": old.state.as_str() })),
        Some(serde_json::json!({ "op": old.op.as_str(), "meter": old.meter_id })),
    )
    .await?;
    commands::get(conn, principal, id).await
}

/// Ends a command its bus keeps `sent` while it waits to send it again.
async fn cancel_retry(
    conn: &mut PgConnection,
    id: Uuid,
    detail: &str,
    now: DateTime<Utc>,
) -> CoreResult<Settled> {
    let done = sqlx::query(
        "update commands set state = 'failed', detail = $2, updated_at = $3,
             lease_holder = null, lease_until = null, next_try_at = null
         where id = $1 and state = 'sent' and next_try_at is not null",
    )
    .bind(id)
    .bind(detail)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Settled::Moved(State::Sent)
    } else {
        Settled::Refused(State::Sent)
    })
}

/// The `.xlsx` twin of a command list, headers in `lang` (`zh` or `en`).
pub fn sheet(rows: &[CentreRow], lang: &str) -> crate::kernel::xlsx::Sheet {
    use crate::kernel::xlsx::{Cell, Column, Sheet};
    let zh = lang != "en";
    let header = |zh_text: &str, en_text: &str| if zh { zh_text } else { en_text }.to_owned();
    let time = |t: Option<DateTime<Utc>>| t.map_or(Cell::Empty, Cell::Time);
    Sheet {
        name: header("指令", "Commands"),
        columns: vec![
            Column::new(header("创建时间", "Created at"), 20.0),
            Column::new(header("表号", "Meter"), 16.0),
            Column::new(header("商铺", "Shop"), 20.0),
            Column::new(header("指令", "Op"), 14.0),
            Column::new(header("状态", "State"), 12.0),
            Column::new(header("来源", "Source"), 20.0),
            Column::new(header("发送次数", "Sends"), 8.0),
            Column::new(header("最后发送", "Last sent"), 20.0),
            Column::new(header("更新时间", "Updated at"), 20.0),
            Column::new(header("滞留", "Stuck"), 8.0),
            Column::new(header("说明", "Detail"), 40.0),
        ],
        rows: rows
            .iter()
            .map(|r| {
                let c = &r.command;
                vec![
                    Cell::Time(c.created_at),
                    Cell::Text(r.meter_number.clone()),
                    Cell::Text(r.shop.clone()),
                    Cell::Text(c.op.as_str().to_owned()),
                    Cell::Text(c.state.as_str().to_owned()),
                    Cell::Text(c.source.clone()),
                    Cell::Int(i64::from(c.attempts)),
                    time(c.sent_at),
                    Cell::Time(c.updated_at),
                    Cell::Bool(r.stuck),
                    Cell::Text(c.detail.clone()),
                ]
            })
            .collect(),
        totals: None,
    }
}
