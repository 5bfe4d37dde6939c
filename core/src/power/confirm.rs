//! "Power cut" and "power back" messages after the fact (issue: "a notice after the trip and
//! after the restore"): the rules' trip or restore only records what the tenant is to be told
//! (`account_power.told_pending`); [`tell_confirmed`] sends it once every meter of the account
//! is seen in that state — a reading since then shows the relay, or the meter's command of that
//! kind since then is verified. Meters under keep-power are left out of a trip (their relay
//! stays closed); an account whose meters all keep power is told nothing. A restore that comes
//! before the trip was seen replaces it, so a tenant is never told of a cut that did not last.

use super::Action;
use crate::auth::Principal;
use crate::kernel::error::CoreResult;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Records that the tenant is to be told of `action` (a trip or a restore) once seen.
pub(crate) async fn expect(
    conn: &mut PgConnection,
    account: Uuid,
    action: Action,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    let told = match action {
        Action::Trip => "tripped",
        Action::Restore => "restored",
        _ => return Ok(()),
    };
    sqlx::query(
        "update account_power set told_pending = $2, pending_since = $3 where account_id = $1",
    )
    .bind(account)
    .bind(told)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Tells the tenants of every account whose trip or restore is now seen on all its meters;
/// returns how many were told. In the caller's transaction (company schema on the search path).
#[tracing::instrument(skip_all)]
pub async fn tell_confirmed(conn: &mut PgConnection, principal: &Principal) -> CoreResult<u64> {
    let rows = sqlx::query(
        "select p.account_id, p.told_pending, p.pending_since,
                count(m.id) as meters,
                count(m.id) filter (where
                    (l.read_at >= p.pending_since and l.relay_closed = (p.told_pending = 'restored'))
                    or exists (select 1 from commands c where c.meter_id = m.id and c.state = 'verified'
                                 and c.created_at >= p.pending_since
                                 and c.op = any(case when p.told_pending = 'tripped' then array['trip']
                                                     else array['close', 'keep_power_on'] end))) as seen
         from account_power p
         join shop_accounts a on a.id = p.account_id and a.state = 'open'
         left join account_meters am on am.account_id = p.account_id and am.left_at is null
         left join meters m on m.id = am.meter_id and not (p.told_pending = 'tripped' and m.keep_power)
         left join meter_latest l on l.meter_id = m.id
         where p.told_pending is not null
         group by p.account_id, p.told_pending, p.pending_since",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut told = 0;
    for r in rows {
        let account: Uuid = r.try_get("account_id")?;
        let pending: String = r.try_get("told_pending")?;
        let since: DateTime<Utc> = r.try_get("pending_since")?;
        let (meters, seen): (i64, i64) = (r.try_get("meters")?, r.try_get("seen")?);
        if seen < meters {
            continue;
        }
        // Cleared only if nothing changed it meanwhile (a restore replacing a trip); of two
        // sweeps at once, only the one that clears it tells.
        let cleared = sqlx::query(
            "update account_power set told_pending = null, pending_since = null
             where account_id = $1 and told_pending = $2 and pending_since = $3",
        )
        .bind(account)
        .bind(&pending)
        .bind(since)
        .execute(&mut *conn)
        .await?;
        if cleared.rows_affected() == 0 || meters == 0 {
            continue;
        }
        let action = if pending == "tripped" {
            Action::Trip
        } else {
            Action::Restore
        };
        super::evaluate::tell(conn, principal, account, action).await?;
        told += 1;
    }
    Ok(told)
}
