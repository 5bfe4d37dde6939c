//! The money workers a server process runs beside the API: the rating worker, a pass over every
//! company every few seconds (DESIGN.md: platform-side meters), the daily ledger check of every
//! company, recorded for platform staff, and the power rules (`core::power`): evaluated for an
//! account the moment a posting moves its wallet (LISTEN `available_changed`), and swept every
//! few seconds so a trip notice that ran out or a quiet window that ended is never missed. Several
//! server processes may run them at once: each meter is rated under `for update skip locked`,
//! each posting has its derived idempotency key, and the rules lock the account's power row.
//! The notification worker (`core::notify`) writes operator alerts, sends due messages and pulls
//! delivery reports every second or so; its messages are claimed under a lease. The secure
//! settle worker (`core::secure::settle`: commissioning, acknowledgements and counters of
//! meter-side meters, purchases from top-ups) runs the moment ingest brings something back or a
//! top-up asks (LISTEN `pt_secure`) and every few seconds; it needs the keyring (meter keys), so
//! it does not run without one. The payments worker books payment notifications the inbox
//! still holds (one that was not booked right after its answer: a crash, a busy database) and
//! expires orders whose time ran out, every few seconds.

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
pub fn spawn(
    pool: PgPool,
    clock: SharedClock,
    vendors: powertab_core::notify::accounts::Vendors,
    keyring: Option<std::sync::Arc<powertab_core::kernel::secrets::Keyring>>,
) {
    match keyring {
        Some(keyring) => spawn_secure(pool.clone(), clock.clone(), keyring),
        None => {
            tracing::warn!("no keyring is configured: meter-side (secure) commands are not settled")
        }
    }
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
    let (pay_pool, pay_clock) = (pool.clone(), clock.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = payments_pass(&pay_pool, &pay_clock).await {
                tracing::error!(error = %e, "a payments pass failed; retrying");
            }
            tokio::time::sleep(PAYMENTS_PAUSE).await;
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

/// Pause between payments passes (the inbox's leftovers and orders' expiry).
const PAYMENTS_PAUSE: Duration = Duration::from_secs(5);

/// Books what the payment inbox still holds, then expires every company's unpaid orders and
/// asks the provider about those without a notice.
async fn payments_pass(pool: &PgPool, clock: &SharedClock) -> anyhow::Result<()> {
    powertab_core::payments::inbox::process_waiting(pool, clock, 500).await?;
    for id in company_ids(pool).await? {
        let Some(principal) = worker_in(pool, clock, "payments", id).await? else {
            continue;
        };
        let mut tx =
            powertab_core::db::begin_in(pool, &principal.company()?.schema.clone()).await?;
        let expired = powertab_core::payments::orders::expire_due(&mut tx, clock.now()).await?;
        // Orders without a notice: the provider is asked (a lost notice is booked, an expired
        // order closed there).
        let asked = powertab_core::payments::query::query_unnotified(&mut tx, &principal).await?;
        tx.commit().await?;
        if expired > 0 || asked.credited > 0 {
            tracing::info!(
                company = id,
                expired,
                ?asked,
                "payment orders expired or found paid"
            );
        }
    }
    Ok(())
}

/// How often the secure settle worker looks at every company without being woken.
const SECURE_SWEEP: Duration = Duration::from_secs(5);

/// The settle worker: woken per company by `pt_secure`, and sweeping all of them regularly (a
/// missed notification, a restart).
fn spawn_secure(
    pool: PgPool,
    clock: SharedClock,
    keyring: std::sync::Arc<powertab_core::kernel::secrets::Keyring>,
) {
    tokio::spawn(async move {
        let mut last_sweep = tokio::time::Instant::now() - SECURE_SWEEP;
        loop {
            let listened = listen_secure(&pool, &clock, &keyring, &mut last_sweep).await;
            if let Err(e) = listened {
                tracing::error!(error = %e, "the secure settle worker stopped; restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn listen_secure(
    pool: &PgPool,
    clock: &SharedClock,
    keyring: &powertab_core::kernel::secrets::Keyring,
    last_sweep: &mut tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener
        .listen(powertab_core::secure::readback::CHANNEL)
        .await?;
    loop {
        if last_sweep.elapsed() >= SECURE_SWEEP {
            for id in company_ids(pool).await? {
                settle_company(pool, clock, keyring, id).await;
            }
            *last_sweep = tokio::time::Instant::now();
        }
        let wait = SECURE_SWEEP.saturating_sub(last_sweep.elapsed());
        let Ok(note) = tokio::time::timeout(wait, listener.recv()).await else {
            continue;
        };
        let note = note?;
        // Several notes of one company arriving together are one pass.
        let mut schemas = std::collections::BTreeSet::new();
        schemas.insert(
            note.payload()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
        while let Some(more) = listener.next_buffered() {
            schemas.insert(
                more.payload()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        for schema in schemas {
            let id: Option<i64> =
                sqlx::query_scalar("select id from control.company where schema_name = $1")
                    .bind(&schema)
                    .fetch_optional(pool)
                    .await?;
            if let Some(id) = id {
                settle_company(pool, clock, keyring, id).await;
            }
        }
    }
}

async fn settle_company(
    pool: &PgPool,
    clock: &SharedClock,
    keyring: &powertab_core::kernel::secrets::Keyring,
    id: i64,
) {
    let principal = match worker_in(pool, clock, "secure", id).await {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(company = id, error = %e, "the secure worker cannot act in a company");
            return;
        }
    };
    match powertab_core::secure::settle::run_pass(pool, &principal, keyring).await {
        Ok(report) if report != Default::default() => {
            tracing::info!(company = id, ?report, "secure commands settled")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(company = id, error = %e, "the secure pass failed for a company"),
    }
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
