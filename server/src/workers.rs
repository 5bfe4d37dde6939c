//! The money workers a server process runs beside the API: the rating worker, a pass over every
//! company every few seconds (DESIGN.md: platform-side meters), the daily ledger check of every
//! company, recorded for platform staff, and the power rules (`core::power`): evaluated for an
//! account the moment a posting moves its wallet (LISTEN `available_changed`), and swept every
//! few seconds so a trip notice that ran out or a quiet window that ended is never missed. Several
//! server processes may run them at once: each meter is rated under `for update skip locked`,
//! each posting has its derived idempotency key, and the rules lock the account's power row.
//! The notification worker (`core::notify`) writes operator alerts, sends due messages and pulls
//! delivery reports every second or so; its messages are claimed under a lease.

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

/// How often the power rules sweep every company.
const POWER_SWEEP: Duration = Duration::from_secs(10);

/// Pause between notification passes (a trip notice should reach its phone within seconds).
const NOTIFY_PAUSE: Duration = Duration::from_secs(2);
/// Claims one company's sender takes in a row before the next company's turn.
const NOTIFY_ROUNDS_MAX: usize = 50;

/// Starts the rating worker, the nightly ledger check and the power rules; they stop with the
/// process.
pub fn spawn(pool: PgPool, clock: SharedClock, vendors: powertab_core::notify::accounts::Vendors) {
    let (notify_pool, notify_clock) = (pool.clone(), clock.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = notify_every_company(&notify_pool, &notify_clock, &vendors).await {
                tracing::error!(error = %e, "a notification pass failed; retrying");
            }
            tokio::time::sleep(NOTIFY_PAUSE).await;
        }
    });
    let (listen_pool, listen_clock) = (pool.clone(), clock.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen_for_balances(&listen_pool, &listen_clock).await {
                tracing::error!(error = %e, "the power rules' listener stopped; restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let (sweep_pool, sweep_clock) = (pool.clone(), clock.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = sweep_every_company(&sweep_pool, &sweep_clock).await {
                tracing::error!(error = %e, "a power sweep failed; retrying");
            }
            tokio::time::sleep(POWER_SWEEP).await;
        }
    });
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

/// Every company's id, in order.
async fn company_ids(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("select id from control.company order by id")
            .fetch_all(pool)
            .await?,
    )
}

/// The system worker `worker` inside company `id` (none when the company is gone).
async fn worker_in(
    pool: &PgPool,
    clock: &SharedClock,
    worker: &str,
    id: i64,
) -> anyhow::Result<Option<Principal>> {
    let mut conn = pool.acquire().await?;
    let scope = auth::load_company(&mut conn, id).await?;
    Ok(scope.map(|scope| Principal::system(worker, clock.clone()).in_company(scope)))
}

async fn rate_every_company(pool: &PgPool, clock: &SharedClock) -> anyhow::Result<()> {
    for id in company_ids(pool).await? {
        let Some(principal) = worker_in(pool, clock, "rating", id).await? else {
            continue;
        };
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

/// Evaluates the power rules for each account whose wallet a committed posting moved.
async fn listen_for_balances(pool: &PgPool, clock: &SharedClock) -> anyhow::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener
        .listen(powertab_core::billing::ledger::post::AVAILABLE_CHANGED_CHANNEL)
        .await?;
    loop {
        let note = listener.recv().await?;
        let Some((schema, account)) = note.payload().split_once(':') else {
            continue;
        };
        let Ok(account) = account.parse::<uuid::Uuid>() else {
            continue;
        };
        let company_id: Option<i64> =
            sqlx::query_scalar("select id from control.company where schema_name = $1")
                .bind(schema)
                .fetch_optional(pool)
                .await?;
        let Some(id) = company_id else { continue };
        if let Err(e) = evaluate_one(pool, clock, id, account).await {
            tracing::error!(%account, error = %e, "the power rules failed for an account");
            metrics::counter!("power_rule_errors_total").increment(1);
        }
    }
}

async fn evaluate_one(
    pool: &PgPool,
    clock: &SharedClock,
    company: i64,
    account: uuid::Uuid,
) -> anyhow::Result<()> {
    let Some(principal) = worker_in(pool, clock, "power", company).await? else {
        return Ok(());
    };
    let mut tx = powertab_core::db::begin_in(pool, &principal.company()?.schema).await?;
    powertab_core::power::evaluate(&mut tx, &principal, account).await?;
    tx.commit().await?;
    Ok(())
}

async fn sweep_every_company(pool: &PgPool, clock: &SharedClock) -> anyhow::Result<()> {
    for id in company_ids(pool).await? {
        let Some(principal) = worker_in(pool, clock, "power", id).await? else {
            continue;
        };
        match powertab_core::power::sweep(pool, &principal).await {
            Ok(report)
                if report.actions > 0
                    || report.errors > 0
                    || report.relay != Default::default() =>
            {
                tracing::info!(company = id, ?report, "power rules swept");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(company = id, error = %e, "the power sweep failed for a company")
            }
        }
    }
    Ok(())
}

/// Operator alerts, due messages and delivery reports, company by company.
async fn notify_every_company(
    pool: &PgPool,
    clock: &SharedClock,
    vendors: &powertab_core::notify::accounts::Vendors,
) -> anyhow::Result<()> {
    use powertab_core::notify::{alerts, sender};
    for id in company_ids(pool).await? {
        let Some(principal) = worker_in(pool, clock, "notify", id).await? else {
            continue;
        };
        let mut tx = powertab_core::db::begin_in(pool, &principal.company()?.schema).await?;
        match alerts::sweep(&mut tx, &principal).await {
            Ok(_) => tx.commit().await?,
            Err(e) => tracing::error!(company = id, error = %e, "operator alerts failed"),
        }
        // A full claim means more are waiting: go on (bounded, so other companies get a turn).
        for _ in 0..NOTIFY_ROUNDS_MAX {
            match sender::send_due(pool, &principal, vendors).await {
                Ok(report) => {
                    let handled = report.sent
                        + report.delivered
                        + report.retried
                        + report.held
                        + report.failed;
                    if handled > 0 {
                        tracing::info!(company = id, ?report, "notifications sent");
                    }
                    if handled < sender::CLAIM_MAX.unsigned_abs() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(company = id, error = %e, "sending notifications failed");
                    break;
                }
            }
        }
        if let Err(e) = sender::pull_reports(pool, &principal, vendors).await {
            tracing::error!(company = id, error = %e, "pulling delivery reports failed");
        }
    }
    Ok(())
}
