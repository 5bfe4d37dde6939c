//! Database failures keep what callers need: the SQLSTATE of a serialization failure (so the
//! transaction is retried) and the name of a violated unique constraint (so an idempotency-key
//! replay is recognised), against a real PostgreSQL.

use powertab_core::db;
use powertab_core::CoreError;
use powertab_testkit::TestDb;
use std::sync::atomic::{AtomicU32, Ordering};

#[tokio::test]
async fn a_unique_violation_names_its_constraint_and_answers_409() {
    let test = TestDb::new().await;
    sqlx::query("create table keys (key text constraint keys_key_unique unique)")
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query("insert into keys values ('k1')")
        .execute(&test.pool)
        .await
        .unwrap();
    let err: CoreError = sqlx::query("insert into keys values ('k1')")
        .execute(&test.pool)
        .await
        .unwrap_err()
        .into();
    assert!(err.violates("keys_key_unique"), "{err:?}");
    assert!(!err.violates("another_constraint"));
    assert_eq!((err.http_status(), err.code()), (409, "conflict"));
    assert_eq!(
        err.public_message(),
        "already exists",
        "nothing of the row is said"
    );
}

#[tokio::test]
async fn write_skew_under_serializable_is_retryable_and_retried() {
    let test = TestDb::new().await;
    sqlx::query("create table slots (n int)")
        .execute(&test.pool)
        .await
        .unwrap();
    // Two transactions each read the sum and insert: one must fail with 40001.
    let mut a = test.pool.begin().await.unwrap();
    let mut b = test.pool.begin().await.unwrap();
    for tx in [&mut a, &mut b] {
        sqlx::query("set transaction isolation level serializable")
            .execute(&mut **tx)
            .await
            .unwrap();
        sqlx::query("select coalesce(sum(n), 0) from slots")
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    sqlx::query("insert into slots values (1)")
        .execute(&mut *b)
        .await
        .unwrap();
    b.commit().await.unwrap();
    let failed = async {
        sqlx::query("insert into slots values (2)")
            .execute(&mut *a)
            .await?;
        a.commit().await
    }
    .await
    .expect_err("a serialization failure");
    let err: CoreError = failed.into();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.http_status(), 500);

    // `retrying` runs the work again after such a failure and returns its success.
    let attempts = AtomicU32::new(0);
    let outcome = db::retrying(|| async {
        if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(CoreError::Database {
                sqlstate: Some("40001".into()),
                constraint: None,
                message: "could not serialize access".into(),
            });
        }
        Ok(7)
    })
    .await;
    assert_eq!(outcome.unwrap(), 7);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    // Other errors are not retried.
    let attempts = AtomicU32::new(0);
    let outcome: Result<(), _> = db::retrying(|| async {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(CoreError::Conflict("no".into()))
    })
    .await;
    assert!(outcome.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}
