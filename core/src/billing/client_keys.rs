//! One namespace for the clients' Idempotency-Keys of a company (DESIGN.md: API conventions —
//! "the same key with a different body answers 409"). Each money request keeps its own replay
//! rule in its own table (the ledger, account openings, reversal, approval and invoice requests),
//! but those tables cannot see each other: a key first used to ask for a reversal and then sent
//! with a top-up would otherwise post the top-up. Every request that takes a client key first
//! claims it here, in its own database transaction, for one operation on one object; the same
//! key for another operation or another object is refused, whatever table that operation uses.

use crate::kernel::error::{CoreError, CoreResult};
use sqlx::PgConnection;
use uuid::Uuid;

/// Claims `key` for `operation` on `subject` (the account, transaction, request or meter the
/// request acts on). Returns quietly when the key is new or was claimed for the very same
/// operation and subject — the caller's own replay rule then answers with the original — and
/// `IdempotencyKeyReused` when it was claimed for anything else. Rolled back with the caller's
/// transaction, so a refused request leaves the key free.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    key: &str,
    operation: &str,
    subject: Uuid,
) -> CoreResult<()> {
    debug_assert!(!key.is_empty() && !operation.is_empty());
    // A concurrent claim of the same key waits here on the primary key until the first commits
    // (then reads it) or rolls back (then inserts).
    let inserted = sqlx::query(
        "insert into client_keys (key, operation, subject) values ($1, $2, $3)
         on conflict (key) do nothing",
    )
    .bind(key)
    .bind(operation)
    .bind(subject)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(());
    }
    let (claimed_for, claimed_on): (String, Uuid) =
        sqlx::query_as("select operation, subject from client_keys where key = $1")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
    if claimed_for == operation && claimed_on == subject {
        Ok(())
    } else {
        tracing::info!(%operation, %claimed_for, "an Idempotency-Key was sent again with another request");
        Err(CoreError::IdempotencyKeyReused)
    }
}
