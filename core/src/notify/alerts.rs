//! Operators' messages (issue: "operators get field alarms, stuck commands and held readings,
//! with escalation"): [`sweep`] looks at what needs a person — open field alarms nobody
//! acknowledged (stale meters, offline gateways, held readings, relay mismatches), stuck
//! commands, and a ledger check of the company that found violations — and writes one message
//! per source to the company's operators (level 1), and, when the source is still open and
//! unacknowledged after the company's `escalate_after_min`, one to its admins (level 2).
//! Acknowledging the alarm (or settling the command) is what stops the escalation. Each
//! recipient's preferences apply; recipients without a phone get theirs in the sandbox log.

use super::accounts;
use crate::auth::Principal;
use crate::kernel::error::CoreResult;
use crate::power::centre::STUCK_AFTER_S;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Something that needs a person.
#[derive(Debug, Clone)]
struct Source {
    /// `field_alarm:<id>`, `command:<id>`, `ledger_check:<id>`.
    key: String,
    kind: &'static str,
    since: DateTime<Utc>,
    what: String,
}

fn field_kind(kind: &str) -> &'static str {
    match kind {
        "meter_stale" => "alert_meter_stale",
        "gateway_offline" => "alert_gateway_offline",
        "reading_held" => "alert_reading_held",
        _ => "alert_relay_mismatch",
    }
}

async fn sources(
    conn: &mut PgConnection,
    company_id: i64,
    now: DateTime<Utc>,
) -> CoreResult<Vec<Source>> {
    let mut found = Vec::new();
    let alarms = sqlx::query(
        "select a.id, a.kind, a.raised_at, a.detail,
                coalesce(m.meter_number, g.name, '') as target
         from field_alarms a left join meters m on m.id = a.target_id
         left join gateways g on g.id = a.target_id
         where a.cleared_at is null and a.acknowledged_at is null
         order by a.raised_at limit 500",
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in alarms {
        let id: Uuid = r.try_get("id")?;
        let kind: String = r.try_get("kind")?;
        let target: String = r.try_get("target")?;
        let detail: String = r.try_get("detail")?;
        found.push(Source {
            key: format!("field_alarm:{id}"),
            kind: field_kind(&kind),
            since: r.try_get("raised_at")?,
            what: format!("{target} {detail}").trim().to_owned(),
        });
    }
    let stuck = sqlx::query(
        "select c.id, c.op as kind, coalesce(c.sent_at, c.created_at) as since, m.meter_number
         from commands c join meters m on m.id = c.meter_id
         where c.state in ('queued', 'sent', 'acknowledged') and c.next_try_at is null
           and not (c.op = 'sync_clock' and c.state = 'acknowledged')
           and coalesce(c.sent_at, c.created_at) < $1
         order by since limit 500",
    )
    .bind(now - Duration::seconds(STUCK_AFTER_S))
    .fetch_all(&mut *conn)
    .await?;
    for r in stuck {
        let id: Uuid = r.try_get("id")?;
        let kind: String = r.try_get("kind")?;
        let meter: String = r.try_get("meter_number")?;
        found.push(Source {
            key: format!("command:{id}"),
            kind: "alert_command_stuck",
            since: r.try_get("since")?,
            what: format!("{meter} {kind}"),
        });
    }
    let check = sqlx::query(
        "select id, ran_at, array_length(violations, 1) as n from control.ledger_checks
         where company_id = $1 order by ran_at desc limit 1",
    )
    .bind(company_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = check {
        let n: Option<i32> = r.try_get("n")?;
        if n.unwrap_or(0) > 0 {
            let id: Uuid = r.try_get("id")?;
            found.push(Source {
                key: format!("ledger_check:{id}"),
                kind: "alert_ledger_check",
                since: r.try_get("ran_at")?,
                what: format!("{} violations", n.unwrap_or(0)),
            });
        }
    }
    Ok(found)
}

fn body(source: &Source, level: i16) -> String {
    let title = match source.kind {
        "alert_meter_stale" => "电表离线",
        "alert_gateway_offline" => "网关离线",
        "alert_reading_held" => "读数待审核",
        "alert_relay_mismatch" => "继电器状态不符",
        "alert_command_stuck" => "指令未完成",
        _ => "账务核对异常",
    };
    let prefix = if level == 2 {
        "【告警升级】"
    } else {
        "【运维告警】"
    };
    format!("{prefix}{title}：{}，请及时处理。", source.what)
}

/// Level 1 goes to active operators (company admins when there are none), level 2 to active
/// company admins; `(user_id, phone or login)`.
async fn recipients(
    conn: &mut PgConnection,
    level: i16,
    kind: &str,
) -> CoreResult<Vec<(Uuid, String)>> {
    let role = if level == 1 {
        "operator"
    } else {
        "company_admin"
    };
    let query = "select u.id, case when u.phone <> '' then u.phone else u.username end
         from users u where u.status = 'active' and u.role = $1
           and not exists (select 1 from notify_preferences p where p.user_id = u.id and p.kind = $2)
         order by u.username";
    let mut found: Vec<(Uuid, String)> = sqlx::query_as(query)
        .bind(role)
        .bind(kind)
        .fetch_all(&mut *conn)
        .await?;
    if found.is_empty() && level == 1 {
        found = sqlx::query_as(query)
            .bind("company_admin")
            .bind(kind)
            .fetch_all(&mut *conn)
            .await?;
    }
    Ok(found)
}

/// Writes the operator messages that are due; how many messages were written.
#[tracing::instrument(skip_all)]
pub async fn sweep(conn: &mut PgConnection, principal: &Principal) -> CoreResult<u64> {
    let now = principal.now();
    let company_id = principal.company()?.id;
    let delivery = accounts::delivery(conn).await?;
    let escalate = Duration::minutes(i64::from(delivery.escalate_after_min));
    let mut written = 0;
    for source in sources(conn, company_id, now).await? {
        for level in [1i16, 2] {
            if level == 2 && now - source.since < escalate {
                continue;
            }
            let fresh = sqlx::query(
                "insert into notify_alerts (source, level, created_at) values ($1, $2, $3)
                 on conflict do nothing",
            )
            .bind(&source.key)
            .bind(level)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if !fresh {
                continue;
            }
            for (user_id, to) in recipients(conn, level, source.kind).await? {
                let channel = if super::is_phone(&to) {
                    delivery.sms_channel.as_str()
                } else {
                    "sandbox"
                };
                let params = vec![("what".to_owned(), source.what.clone())];
                sqlx::query(
                    "insert into notifications (id, kind, recipient, channel, body, created_at,
                         deliver_after, user_id, params, source)
                     values ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)",
                )
                .bind(Uuid::now_v7())
                .bind(source.kind)
                .bind(&to)
                .bind(channel)
                .bind(body(&source, level))
                .bind(now)
                .bind(user_id)
                .bind(serde_json::to_value(&params).unwrap_or_default())
                .bind(&source.key)
                .execute(&mut *conn)
                .await?;
                written += 1;
            }
        }
    }
    Ok(written)
}
