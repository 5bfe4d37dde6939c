//! The intended relay state (DESIGN.md: "From balance, keep-power, quiet hours and operator
//! overrides the platform knows each meter's intended relay state and compares it with every
//! reading"). A meter of an open account should be closed under keep-power; else as an
//! operator's trip or close left it (`relay_override`); else closed unless its account is
//! tripped. When its latest reading shows the other state, no control command of
//! the meter is open, and the last one ended at least [`SETTLE_S`] before that reading, the
//! command is sent again (`rule:relay_state`) — so a shop that has paid is never left dark by an
//! expired or lost `close`, and a trip lost on the way is repeated. After [`RESENDS_MAX`]
//! re-sends within an hour the meter gets a `relay_mismatch` field alarm instead, for a person
//! to look at; the alarm clears once a reading agrees. A DL/T 645 meter reporting "close
//! allowed" (relay open, trip command cleared: the tenant's button closes it) agrees with
//! "closed".

use crate::auth::Principal;
use crate::commands::{self, NewCommand, Op};
use crate::kernel::error::CoreResult;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Who asked, on the commands re-sent here.
pub const RELAY_RULE_SOURCE: &str = "rule:relay_state";
/// A reading this long after the last command ended still disagreeing is a mismatch.
pub const SETTLE_S: i64 = 60;
/// Re-sends per meter per hour before a person is asked.
pub const RESENDS_MAX: i64 = 3;
const RESEND_VALID_S: i64 = 600;

/// What one comparison did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    pub resent: u64,
    pub alarms: u64,
    pub cleared: u64,
}

/// Compares every meter of the company's open accounts with its latest reading, in the
/// caller's transaction (company schema on the search path).
#[tracing::instrument(skip_all)]
pub async fn reconcile(conn: &mut PgConnection, principal: &Principal) -> CoreResult<RelayReport> {
    let now = principal.now();
    // Only meters out of step, or with an alarm to clear, come back: the agreeing many cost
    // one index scan, not a statement each.
    let rows = sqlx::query(
        "select * from (
           select m.id, m.keep_power, m.relay_override, (p.tripped_at is not null) as tripped,
                  -- A DL/T 645 relay waiting for the tenant's button has done what a close can.
                  (l.relay_closed or $3 = any(l.alarms)) as relay_closed, l.read_at,
                  exists (select 1 from field_alarms f where f.kind = 'relay_mismatch'
                            and f.target_id = m.id and f.cleared_at is null) as alarmed
           from shop_accounts a
           join account_meters am on am.account_id = a.id and am.left_at is null
           join meters m on m.id = am.meter_id
           join meter_latest l on l.meter_id = m.id
           left join account_power p on p.account_id = a.id
           -- Meter-side meters open their own relay at zero credit: nothing to correct.
           where a.state = 'open' and a.prepayment_mode = 'platform' and l.relay_closed is not null
         ) s
         cross join lateral (
           select (select max(c.updated_at) from commands c where c.meter_id = s.id
                     and c.op in ('trip', 'close', 'keep_power_on')) as last_command_at,
                  exists (select 1 from commands c where c.meter_id = s.id
                     and c.op in ('trip', 'close', 'release', 'keep_power_on', 'keep_power_off')
                     and c.state in ('queued', 'sent', 'acknowledged')) as command_open,
                  (select count(*) from commands c where c.meter_id = s.id and c.source = $1
                     and c.created_at > $2) as resent_lately
         ) c
         where s.relay_closed <> (s.keep_power or coalesce(s.relay_override = 'closed', not s.tripped))
            or s.alarmed",
    )
    .bind(RELAY_RULE_SOURCE)
    .bind(now - Duration::hours(1))
    .bind(commands::CLOSE_ALLOWED)
    .fetch_all(&mut *conn)
    .await?;
    let mut report = RelayReport::default();
    let schema = principal.company()?.schema.clone();
    for r in &rows {
        let meter: Uuid = r.try_get("id")?;
        let keep_power: bool = r.try_get("keep_power")?;
        let relay_override: Option<String> = r.try_get("relay_override")?;
        // Keep-power first, then a person's trip or close, then the rules.
        let intended_closed = keep_power
            || match relay_override.as_deref() {
                Some(wanted) => wanted == "closed",
                None => !r.try_get::<bool, _>("tripped")?,
            };
        let relay_closed: bool = r.try_get("relay_closed")?;
        if relay_closed == intended_closed {
            // Only alarmed meters that agree again come back here.
            report.cleared += clear_alarm(conn, meter).await?;
            continue;
        }
        let read_at: DateTime<Utc> = r.try_get("read_at")?;
        let last: Option<DateTime<Utc>> = r.try_get("last_command_at")?;
        let settled = last.is_none_or(|at| read_at - at >= Duration::seconds(SETTLE_S));
        if r.try_get::<bool, _>("command_open")? || !settled {
            continue;
        }
        if r.try_get::<i64, _>("resent_lately")? >= RESENDS_MAX {
            report.alarms += raise_alarm(conn, meter, intended_closed).await?;
            continue;
        }
        let op = match (intended_closed, keep_power) {
            (true, true) => Op::KeepPowerOn,
            (true, false) => Op::Close,
            (false, _) => Op::Trip,
        };
        commands::enqueue(
            conn,
            &schema,
            &NewCommand {
                meter_id: meter,
                op,
                source: RELAY_RULE_SOURCE.to_owned(),
                detail: format!(
                    "the reading of {} shows the relay {}",
                    read_at.to_rfc3339(),
                    if relay_closed { "closed" } else { "open" }
                ),
                expires_at: Some(now + Duration::seconds(RESEND_VALID_S)),
                batch_id: None,
                retry_of: None,
            },
            now,
        )
        .await?;
        tracing::warn!(%meter, %op, "the relay disagrees with the intended state: sent again");
        metrics::counter!("power_relay_resends_total").increment(1);
        report.resent += 1;
    }
    Ok(report)
}

async fn raise_alarm(
    conn: &mut PgConnection,
    meter: Uuid,
    intended_closed: bool,
) -> CoreResult<u64> {
    let raised = sqlx::query(
        "insert into field_alarms (id, kind, target_id, detail) values ($1, 'relay_mismatch', $2, $3)
         on conflict do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(meter)
    .bind(if intended_closed {
        "the relay stays open though the shop should have power"
    } else {
        "the relay stays closed though the shop should be tripped"
    })
    .execute(&mut *conn)
    .await?;
    Ok(raised.rows_affected())
}

async fn clear_alarm(conn: &mut PgConnection, meter: Uuid) -> CoreResult<u64> {
    let cleared = sqlx::query(
        "update field_alarms set cleared_at = now()
         where kind = 'relay_mismatch' and target_id = $1 and cleared_at is null",
    )
    .bind(meter)
    .execute(&mut *conn)
    .await?;
    Ok(cleared.rows_affected())
}
