//! What the field brings back for meter-side meters (SECURE-COMMAND.md: Counters read-back,
//! Carriage): the meter's counters as last read and each command's acknowledgement bytes. Ingest
//! stores them here and holds no key; every write NOTIFYs [`CHANNEL`] (`<schema>:<meter>`) in
//! the same transaction so the server's settle worker (`super::settle`) judges them at once.

use super::frame::{Counters, ACK_LEN};
use crate::kernel::error::CoreResult;
use crate::kernel::names::SchemaName;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// The settle worker's wake-up channel.
pub const CHANNEL: &str = "pt_secure";

/// Stores the newest counters of each meter (older read-backs than the stored one are ignored:
/// store-and-forward may deliver late) and wakes the settle worker. `readbacks` may hold several
/// per meter.
pub async fn store_counters(
    conn: &mut PgConnection,
    schema: &SchemaName,
    readbacks: &[(Uuid, Counters, DateTime<Utc>)],
) -> CoreResult<()> {
    if readbacks.is_empty() {
        return Ok(());
    }
    let mut newest: std::collections::BTreeMap<Uuid, (Counters, DateTime<Utc>)> =
        Default::default();
    for (meter, counters, at) in readbacks {
        let keep = newest.get(meter).is_none_or(|(_, seen)| seen < at);
        if keep {
            newest.insert(*meter, (*counters, *at));
        }
    }
    let meters: Vec<Uuid> = newest.keys().copied().collect();
    let column =
        |f: &dyn Fn(&Counters) -> i64| -> Vec<i64> { newest.values().map(|(c, _)| f(c)).collect() };
    let at: Vec<DateTime<Utc>> = newest.values().map(|(_, at)| *at).collect();
    // The worker is woken only when it has something to do: a first read-back (commissioning),
    // a count that moved, or a secure command waiting on this meter's counters — not for every
    // poll of a meter counting down.
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "with old as (select meter_id, purchase_count, control_count from meter_secure_readback
                      where meter_id = any($1)),
         up as (
         insert into meter_secure_readback as b (meter_id, purchase_count, control_count, remaining_fen,
             price_units, read_at)
         select * from unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
             $6::timestamptz[])
         on conflict (meter_id) do update set purchase_count = excluded.purchase_count,
             control_count = excluded.control_count, remaining_fen = excluded.remaining_fen,
             price_units = excluded.price_units, read_at = excluded.read_at, updated_at = now()
         where b.read_at < excluded.read_at
         returning meter_id, purchase_count, control_count)
         select up.meter_id from up left join old on old.meter_id = up.meter_id
         where old.meter_id is null or old.purchase_count <> up.purchase_count
            or old.control_count <> up.control_count
            or exists (select 1 from commands c where c.meter_id = up.meter_id
                         and c.secure_frame is not null and c.state in ('queued', 'sent', 'acknowledged'))",
    )
    .bind(&meters)
    .bind(column(&|c| i64::from(c.purchase_count)))
    .bind(column(&|c| i64::from(c.control_count)))
    .bind(column(&|c| c.remaining_fen))
    .bind(column(&|c| i64::from(c.price_units)))
    .bind(&at)
    .fetch_all(&mut *conn)
    .await?;
    wake(conn, schema, &changed).await
}

/// Keeps `bytes` as the acknowledgement of secure command `id` (of one of `meters`) for the
/// settle worker; false when it is no secure command of those meters or the bytes cannot be one.
pub async fn store_ack(
    conn: &mut PgConnection,
    schema: &SchemaName,
    id: Uuid,
    meters: &[Uuid],
    bytes: &[u8],
) -> CoreResult<bool> {
    if bytes.len() != ACK_LEN {
        return Ok(false);
    }
    let meter: Option<Uuid> = sqlx::query_scalar(
        "update commands set secure_ack = $2, updated_at = now()
         where id = $1 and meter_id = any($3) and secure_frame is not null
           and state in ('sent', 'acknowledged')
         returning meter_id",
    )
    .bind(id)
    .bind(bytes)
    .bind(meters)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(meter) = meter else {
        return Ok(false);
    };
    wake(conn, schema, &[meter]).await?;
    Ok(true)
}

async fn wake(conn: &mut PgConnection, schema: &SchemaName, meters: &[Uuid]) -> CoreResult<()> {
    if meters.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = meters
        .iter()
        .map(|m| format!("{}:{m}", schema.as_str()))
        .collect();
    sqlx::query("select count(pg_notify($1, p)) from unnest($2::text[]) as u(p)")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
