//! The money workers a server process runs beside the API: the rating worker, a pass over every
//! company every few seconds (DESIGN.md: platform-side meters), and the daily ledger check of
//! every company, recorded for platform staff. Several server processes may run
//! them at once: each meter is rated under `for update skip locked`, each posting has its
//! derived idempotency key.

use powertab_core::auth::{self, Principal};
use powertab_core::billing::rating;
use powertab_core::kernel::clock::SharedClock;
use sqlx::PgPool;
use std::time::Duration;

/// Pause between rating passes. Readings arrive every 30 s per meter; posting batches are
/// minutes apart, so a few seconds keeps the available balance current without busy work.
const RATING_PAUSE: Duration = Duration::from_secs(5);

/// How often each company's ledger is checked (DESIGN.md: nightly), and how often the worker
/// looks whether one is due.
const LEDGER_CHECK_EVERY_H: i64 = 24;
const LEDGER_CHECK_LOOK: Duration = Duration::from_secs(600);

/// Starts the rating worker and the nightly ledger check; they stop with the process.
pub fn spawn(pool: PgPool, clock: SharedClock) {
    let (check_pool, check_clock) = (pool.clone(), clock.clone());
    tokio::spawn(async move {
        loop {
            let every = chrono::Duration::hours(LEDGER_CHECK_EVERY_H);
            if let Err(e) = powertab_core::billing::ledger::check::run_due(
                &check_pool,
                check_clock.now(),
                every,
            )
            .await
            {
                tracing::error!(error = %e, "the ledger check could not run; retrying");
            }
            tokio::time::sleep(LEDGER_CHECK_LOOK).await;
        }
    });
    tokio::spawn(async move {
        loop {
            if let Err(e) = rate_every_company(&pool, &clock).await {
                tracing::error!(error = %e, "a rating pass failed; retrying");
            }
            tokio::time::sleep(RATING_PAUSE).await;
        }
    });
}

async fn rate_every_company(pool: &PgPool, clock: &SharedClock) -> anyhow::Result<()> {
    let ids: Vec<i64> = sqlx::query_scalar("select id from control.company order by id")
        .fetch_all(pool)
        .await?;
    for id in ids {
        let mut conn = pool.acquire().await?;
        let Some(scope) = auth::load_company(&mut conn, id).await? else {
            continue;
        };
        drop(conn);
        let principal = Principal::system("rating", clock.clone()).in_company(scope);
        match rating::run_pass(pool, &principal).await {
            Ok(report) if report.readings_rated > 0 || report.postings > 0 || report.held > 0 => {
                tracing::info!(company = id, ?report, "rated");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(company = id, error = %e, "rating failed for a company"),
        }
    }
    Ok(())
}
