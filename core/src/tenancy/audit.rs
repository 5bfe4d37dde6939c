//! The audit log: who did what, when, from where, with the record before and after. Each company
//! schema has its own `audit_log`; platform actions go to `control.audit_log`. Entries are
//! written in the same transaction as the change they describe, so a change without its entry
//! (or the reverse) cannot happen.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::page::{self, Page};
use crate::kernel::xlsx::{Cell, Column, Sheet};
use crate::tenancy::actor::Actor;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, QueryBuilder, Row};
use uuid::Uuid;

/// One audit entry as lists and exports show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub actor_role: String,
    pub source_ip: Option<String>,
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Filters of the audit list; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct AuditFilter {
    /// Actions starting with this text (`user.` for everything about users).
    pub action: Option<String>,
    /// Actor username, exact.
    pub actor: Option<String>,
    pub target_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

fn actor_label(actor: &Principal) -> String {
    if let Some(system) = actor.actor.system_label() {
        system
    } else if actor.display_name.is_empty() {
        actor.username.clone()
    } else {
        format!("{} ({})", actor.username, actor.display_name)
    }
}

/// The user behind an entry; none for the system.
fn actor_id(actor: &Principal) -> Option<Uuid> {
    matches!(actor.actor, Actor::Person).then_some(actor.user_id)
}

fn actor_role(actor: &Principal) -> &'static str {
    match actor.actor {
        Actor::Person => actor.role.as_str(),
        Actor::System { .. } => "system",
    }
}

/// A value as the audit log keeps it (before/after snapshots of plain data).
pub fn snapshot<T: serde::Serialize>(value: &T) -> serde_json::Value {
    let mut value = serde_json::to_value(value).expect("plain data serialises");
    mask_secrets(&mut value);
    value
}

/// Keys whose values are credentials (a DTU's registration bytes may hold a secret): the log
/// keeps a fingerprint, enough to see that one changed, never the bytes.
const SECRET_KEYS: [&str; 1] = ["registration_hex"];

/// Replaces credential values anywhere in `value` by `sha256:` and 8 hex digits of their hash.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    Value::String(text)
                        if SECRET_KEYS.contains(&key.as_str()) && !text.starts_with("sha256:") =>
                    {
                        *text = fingerprint(text);
                    }
                    other => mask_secrets(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

fn fingerprint(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Records an entry in the `audit_log` of the transaction's current schema.
#[tracing::instrument(skip_all)]
pub async fn record(
    conn: &mut PgConnection,
    actor: &Principal,
    action: &str,
    target_kind: &str,
    target_id: Option<String>,
    before: Option<Value>,
    mut after: Option<Value>,
) -> CoreResult<()> {
    let mut before = before;
    before
        .iter_mut()
        .chain(after.iter_mut())
        .for_each(mask_secrets);
    sqlx::query(
        "insert into audit_log
             (id, actor_id, actor_name, actor_role, source_ip, action, target_kind, target_id, before, after)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(actor_id(actor))
    .bind(actor_label(actor))
    .bind(actor_role(actor))
    .bind(actor.source_ip.as_deref())
    .bind(action)
    .bind(target_kind)
    .bind(target_id)
    .bind(before)
    .bind(after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `actor` looked at a credential (`action` on gateway `target_id`, with `after`
/// naming what was seen): one entry per person, target and `after` within five minutes, so a
/// page that is reloaded, or rendered in two passes at once, is one look. An advisory lock
/// makes a simultaneous second look wait for the first one's entry.
#[tracing::instrument(skip_all)]
pub async fn record_look(
    conn: &mut PgConnection,
    actor: &Principal,
    action: &str,
    target_id: &str,
    after: Option<Value>,
) -> CoreResult<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .bind(action)
        .bind(target_id)
        .execute(&mut *conn)
        .await?;
    let seen: bool = sqlx::query_scalar(
        "select exists (select 1 from audit_log where action = $1
             and target_id = $2 and actor_id is not distinct from $3 and after is not distinct from $4
             and at > now() - interval '5 minutes')",
    )
    .bind(action)
    .bind(target_id)
    .bind(actor_id(actor))
    .bind(&after)
    .fetch_one(&mut *conn)
    .await?;
    if seen {
        return Ok(());
    }
    record(
        conn,
        actor,
        action,
        "gateway",
        Some(target_id.to_owned()),
        None,
        after,
    )
    .await
}

/// Records a platform action in `control.audit_log`, whatever the current schema.
#[tracing::instrument(skip_all)]
pub async fn record_platform(
    conn: &mut PgConnection,
    actor: &Principal,
    action: &str,
    company_id: Option<i64>,
    before: Option<Value>,
    mut after: Option<Value>,
) -> CoreResult<()> {
    let mut before = before;
    before
        .iter_mut()
        .chain(after.iter_mut())
        .for_each(mask_secrets);
    sqlx::query(
        "insert into control.audit_log
             (id, actor_id, actor_name, actor_role, source_ip, action, target_kind, target_id,
              company_id, before, after)
         values ($1, $2, $3, $4, $5, $6, 'company', $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(actor_id(actor))
    .bind(actor_label(actor))
    .bind(actor_role(actor))
    .bind(actor.source_ip.as_deref())
    .bind(action)
    .bind(company_id.map(|id| id.to_string()))
    .bind(company_id)
    .bind(before)
    .bind(after)
    .execute(conn)
    .await?;
    Ok(())
}

/// Lists entries of the current schema's audit log, newest first. An operator limited to
/// buildings sees only their own entries: the log spans the whole company.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &AuditFilter,
) -> CoreResult<Page<AuditEntry>> {
    let limit = page::limit(filter.limit)?;
    let cursor = page::decode_cursor(filter.cursor.as_deref())?;
    let rows = query(conn, principal, filter, cursor, limit + 1).await?;
    Ok(page::page_from(rows, limit, |e| e.id))
}

/// Every entry matching `filter`, up to the export limit, newest first.
#[tracing::instrument(skip_all)]
pub async fn list_for_export(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &AuditFilter,
) -> CoreResult<Vec<AuditEntry>> {
    let rows = query(conn, principal, filter, None, page::EXPORT_ROWS_MAX + 1).await?;
    if rows.len() as i64 > page::EXPORT_ROWS_MAX {
        return Err(CoreError::field(
            "from",
            format!(
                "more than {} entries: narrow the time range",
                page::EXPORT_ROWS_MAX
            ),
        ));
    }
    Ok(rows)
}

async fn query(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &AuditFilter,
    cursor: Option<Uuid>,
    fetch: i64,
) -> CoreResult<Vec<AuditEntry>> {
    let mut q = QueryBuilder::new(
        "select id, at, actor_id, actor_name, actor_role, source_ip, action, target_kind, target_id, before, after
         from audit_log where true",
    );
    if principal.building_limit().is_some() {
        q.push(" and actor_id = ").push_bind(principal.user_id);
    }
    if let Some(action) = filter.action.as_deref().filter(|a| !a.is_empty()) {
        q.push(" and starts_with(action, ")
            .push_bind(action.to_owned())
            .push(")");
    }
    if let Some(actor) = filter.actor.as_deref().filter(|a| !a.is_empty()) {
        // actor_name is "username (display name)"; match the username part exactly.
        q.push(" and split_part(actor_name, ' ', 1) = ")
            .push_bind(actor.to_owned());
    }
    if let Some(target) = filter.target_id.as_deref().filter(|a| !a.is_empty()) {
        q.push(" and target_id = ").push_bind(target.to_owned());
    }
    if let Some(from) = filter.from {
        q.push(" and at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" and at < ").push_bind(to);
    }
    if let Some(cursor) = cursor {
        q.push(" and id < ").push_bind(cursor);
    }
    q.push(" order by id desc limit ").push_bind(fetch);
    let rows = q.build().fetch_all(conn).await?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                actor_id: r.try_get("actor_id")?,
                actor_name: r.try_get("actor_name")?,
                actor_role: r.try_get("actor_role")?,
                source_ip: r.try_get("source_ip")?,
                action: r.try_get("action")?,
                target_kind: r.try_get("target_kind")?,
                target_id: r.try_get("target_id")?,
                // Entries written before masking keep their bytes in the table; never shown.
                before: r.try_get::<Option<Value>, _>("before")?.map(|mut v| {
                    mask_secrets(&mut v);
                    v
                }),
                after: r.try_get::<Option<Value>, _>("after")?.map(|mut v| {
                    mask_secrets(&mut v);
                    v
                }),
            })
        })
        .collect()
}

/// The audit log as an Excel sheet (`lang` picks the header language: "zh" or "en").
pub fn to_sheet(entries: &[AuditEntry], lang: &str) -> Sheet {
    let zh = lang != "en";
    let h = |zh_text: &str, en_text: &str| {
        if zh {
            zh_text.to_owned()
        } else {
            en_text.to_owned()
        }
    };
    let columns = vec![
        Column::new(h("时间", "Time"), 20.0),
        Column::new(h("操作人", "Actor"), 24.0),
        Column::new(h("角色", "Role"), 16.0),
        Column::new(h("来源地址", "Source address"), 16.0),
        Column::new(h("操作", "Action"), 24.0),
        Column::new(h("对象类型", "Target kind"), 12.0),
        Column::new(h("对象", "Target"), 38.0),
        Column::new(h("修改前", "Before"), 40.0),
        Column::new(h("修改后", "After"), 40.0),
    ];
    let json =
        |v: &Option<Value>| Cell::Text(v.as_ref().map(|v| v.to_string()).unwrap_or_default());
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                Cell::Time(e.at),
                Cell::Text(e.actor_name.clone()),
                Cell::Text(e.actor_role.clone()),
                Cell::Text(e.source_ip.clone().unwrap_or_default()),
                Cell::Text(e.action.clone()),
                Cell::Text(e.target_kind.clone()),
                Cell::Text(e.target_id.clone().unwrap_or_default()),
                json(&e.before),
                json(&e.after),
            ]
        })
        .collect();
    Sheet {
        name: h("操作日志", "Audit log"),
        columns,
        rows,
        totals: None,
    }
}
