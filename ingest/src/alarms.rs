//! Field alarms (DESIGN.md: Ingest, Freshness): every [`CHECK_EVERY`] each company's meters
//! and gateways are compared with its limits (`settings.stale_meter_s`,
//! `settings.offline_gateway_s`): a meter with no reading for longer is stale, a gateway whose
//! buses have all been offline for longer is offline (an MQTT gateway silent for longer is
//! offline since it was last heard). One open alarm per (kind, target) is
//! raised and cleared when the target is back; the fleet page and `/api/v1/field-alarms` show
//! them. The same round expires commands past their expiry. Ingest owns this because it knows the field; any number of ingest copies may run the
//! check (the open-alarm index makes raising idempotent).

use powertab_core::kernel::names::SchemaName;
use sqlx::PgPool;
use std::time::Duration;

pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What one check did in one company.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub raised: u64,
    pub cleared: u64,
}

const RAISE_STALE: &str = "
    insert into field_alarms (id, kind, target_id, detail)
    select gen_random_uuid(), 'meter_stale', m.id,
           coalesce('no reading since ' || to_char(l.read_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', 'never read')
    from meters m left join meter_latest l on l.meter_id = m.id, settings s
    where m.status = 'active'
      and coalesce(l.read_at, m.created_at) < now() - make_interval(secs => s.stale_meter_s)
    on conflict (kind, target_id) where cleared_at is null do nothing";

const CLEAR_STALE: &str = "
    update field_alarms a set cleared_at = now()
    from meters m left join meter_latest l on l.meter_id = m.id, settings s
    where a.kind = 'meter_stale' and a.cleared_at is null and a.target_id = m.id
      and (m.status <> 'active' or l.read_at >= now() - make_interval(secs => s.stale_meter_s))";

/// MQTT gateways silent for longer than the limit are offline since they were last heard: a
/// clean disconnect sends no last will, and a gateway that just stops would otherwise stay
/// online for ever. (DTU and Modbus-TCP sessions end with their socket.)
const SILENT_MQTT_OFFLINE: &str = "
    update bus_sessions bs set online = false, updated_at = bs.last_seen_at
    from gateways g, settings s
    where bs.gateway_id = g.id and g.kind = 'mqtt' and bs.online
      and bs.last_seen_at < now() - make_interval(secs => s.offline_gateway_s)";

/// Gateways with buses, every one offline (or never connected) since longer than the limit.
const OFFLINE_GATEWAYS: &str = "
    select g.id from gateways g join buses b on b.gateway_id = g.id and b.removed_at is null
    left join bus_sessions bs on bs.bus_id = b.id, settings s
    where g.status = 'enabled'
    group by g.id, s.offline_gateway_s
    having bool_and(coalesce(not bs.online, true))
       and max(coalesce(bs.updated_at, g.created_at)) < now() - make_interval(secs => s.offline_gateway_s)";

/// Checks one company.
pub async fn check(pool: &PgPool, schema: &SchemaName) -> anyhow::Result<CheckReport> {
    let mut tx = powertab_core::db::begin_in(pool, schema).await?;
    let mut report = CheckReport::default();
    sqlx::query(SILENT_MQTT_OFFLINE).execute(&mut *tx).await?;
    report.raised += sqlx::query(RAISE_STALE)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    report.cleared += sqlx::query(CLEAR_STALE)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    report.raised += sqlx::query(&format!(
        "insert into field_alarms (id, kind, target_id, detail)
         select gen_random_uuid(), 'gateway_offline', id, 'every bus offline' from ({OFFLINE_GATEWAYS}) o
         on conflict (kind, target_id) where cleared_at is null do nothing"
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    report.cleared += sqlx::query(&format!(
        "update field_alarms set cleared_at = now()
         where kind = 'gateway_offline' and cleared_at is null and target_id not in ({OFFLINE_GATEWAYS})"
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(report)
}

/// Checks every company every [`CHECK_EVERY`] until the task is dropped.
pub async fn run(pool: PgPool) {
    loop {
        let schemas: Vec<String> = sqlx::query_scalar("select schema_name from control.company")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        for schema in schemas
            .iter()
            .filter_map(|s| SchemaName::from_stored(s).ok())
        {
            match crate::commands::expire(&pool, &schema).await {
                Ok(n) if n > 0 => {
                    metrics::counter!("ingest_commands_expired_total").increment(n);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(schema = schema.as_str(), error = %e, "expiring commands failed")
                }
            }
            match check(&pool, &schema).await {
                Ok(r) if r.raised + r.cleared > 0 => {
                    metrics::counter!("ingest_field_alarms_raised_total").increment(r.raised);
                    tracing::info!(
                        schema = schema.as_str(),
                        raised = r.raised,
                        cleared = r.cleared,
                        "field alarms"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(schema = schema.as_str(), error = %e, "checking field alarms failed")
                }
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}
