//! Connection pool and tenant scoping. Every company-scoped piece of work runs in a transaction
//! whose `search_path` is that company's schema, set with `set_config(…, true)` so it ends with
//! the transaction and a pooled connection never carries one company into the next request.

pub mod migrate;

use crate::kernel::error::CoreResult;
use crate::kernel::names::SchemaName;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;

/// A transaction; company-scoped ones have their schema on the search path.
pub type Tx = Transaction<'static, Postgres>;

/// Opens a pool of at most `connections_max` connections (PostgreSQL allows 100 in all, so
/// tests use small pools).
pub async fn connect(database_url: &str, connections_max: u32) -> CoreResult<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await?;
    Ok(pool)
}

/// Begins a transaction whose unqualified names resolve in `schema`.
pub async fn begin_in(pool: &PgPool, schema: &SchemaName) -> CoreResult<Tx> {
    let mut tx = pool.begin().await?;
    set_schema(&mut tx, schema).await?;
    Ok(tx)
}

/// Runs one statement in `schema`, in a transaction of its own; returns the rows it touched.
pub async fn execute_in(
    pool: &PgPool,
    schema: &SchemaName,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> CoreResult<u64> {
    let mut tx = begin_in(pool, schema).await?;
    let done = query.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Points the rest of the transaction at `schema`.
pub async fn set_schema(tx: &mut sqlx::PgConnection, schema: &SchemaName) -> CoreResult<()> {
    sqlx::query("select set_config('search_path', $1, true)")
        .bind(schema.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

/// Attempts [`retrying`] makes before giving the error back.
pub const RETRY_ATTEMPTS_MAX: u32 = 5;

/// Runs `work` (which begins, does and commits a transaction of its own) again when it fails
/// with a serialization failure or a deadlock, at most [`RETRY_ATTEMPTS_MAX`] times with a
/// short growing pause; any other outcome is returned at once. Money postings at
/// `serializable` isolation go through here.
pub async fn retrying<T, F, Fut>(mut work: F) -> CoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CoreResult<T>>,
{
    let mut attempt = 1;
    loop {
        match work().await {
            Err(err) if err.is_retryable() && attempt < RETRY_ATTEMPTS_MAX => {
                metrics::counter!("powertab_db_retries_total").increment(1);
                tracing::info!(attempt, cause = %err, "retrying a transaction");
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Whether the database answers (for `/readyz`).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, i32>("select 1")
        .fetch_one(pool)
        .await
        .is_ok()
}
