//! `powertab ledger check`: every invariant of DESIGN.md (Money and the ledger) verified over
//! what is stored, per company — every transaction sums to zero and matches its template (a
//! reversal against its original), every cached balance equals its entries, a closed account
//! holds nothing in its wallet or deposit, a reversal undoes a counter transaction at most
//! once, every charge line is posted at most once and in full, and nothing is booked on a closed
//! day after its close. A report names every violation; the platform runs it nightly per company.

use super::post::{load_many, Transaction};
use super::templates;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::names::SchemaName;
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use uuid::Uuid;

/// Transactions checked per round trip.
const PAGE: i64 = 1_000;

/// What the check found in one company's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub schema: String,
    pub transactions: u64,
    pub accounts: u64,
    pub violations: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks the ledger of `schema`.
#[tracing::instrument(skip_all, fields(schema = %schema.as_str()))]
pub async fn check_company(pool: &PgPool, schema: &SchemaName) -> CoreResult<Report> {
    let mut tx = pool.begin().await?;
    // One snapshot for the whole check: postings committed meanwhile are not half-seen.
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    crate::db::set_schema(&mut tx, schema).await?;
    let mut report = Report {
        schema: schema.as_str().to_owned(),
        ..Report::default()
    };
    check_transactions(&mut tx, &mut report).await?;
    check_balances(&mut tx, &mut report).await?;
    check_closed_accounts(&mut tx, &mut report).await?;
    check_charge_lines(&mut tx, &mut report).await?;
    check_closed_days(&mut tx, &mut report).await?;
    tx.commit().await?;
    Ok(report)
}

/// Checks every company's ledger, in id order.
pub async fn check_all(pool: &PgPool, only: Option<&str>) -> CoreResult<Vec<Report>> {
    let rows = sqlx::query("select slug, schema_name from control.company order by id")
        .fetch_all(pool)
        .await?;
    let mut reports = Vec::new();
    for row in rows {
        let slug: String = row.try_get("slug")?;
        if only.is_some_and(|wanted| wanted != slug) {
            continue;
        }
        let stored: String = row.try_get("schema_name")?;
        let schema = SchemaName::from_stored(&stored)
            .map_err(|e| CoreError::Internal(format!("{stored}: {e}")))?;
        reports.push(check_company(pool, &schema).await?);
    }
    if let Some(wanted) = only {
        if reports.is_empty() {
            return Err(CoreError::Validation {
                message: format!("no company {wanted}"),
                fields: Default::default(),
            });
        }
    }
    Ok(reports)
}

async fn check_transactions(conn: &mut sqlx::PgConnection, report: &mut Report) -> CoreResult<()> {
    let mut after = Uuid::nil();
    loop {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "select id from ledger_transactions where id > $1 order by id limit $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = ids.last().copied() else {
            return Ok(());
        };
        let page = load_many(conn, &ids).await?;
        if page.len() != ids.len() {
            report.violations.push(format!(
                "{} transactions without entries",
                ids.len() - page.len()
            ));
        }
        let originals = originals_of(conn, &page).await?;
        for txn in &page {
            let original = txn
                .reverses
                .and_then(|id| originals.get(&id))
                .map(|o| (o.kind, o.legs.as_slice()));
            if let Err(why) = templates::conforms(txn.kind, &txn.legs, original) {
                report
                    .violations
                    .push(format!("transaction {} ({}): {why}", txn.id, txn.kind));
            }
        }
        report.transactions += page.len() as u64;
        after = last;
    }
}

async fn originals_of(
    conn: &mut sqlx::PgConnection,
    page: &[Transaction],
) -> CoreResult<HashMap<Uuid, Transaction>> {
    let ids: Vec<Uuid> = page.iter().filter_map(|t| t.reverses).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(load_many(conn, &ids)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect())
}

async fn check_balances(conn: &mut sqlx::PgConnection, report: &mut Report) -> CoreResult<()> {
    let rows = sqlx::query(
        "select a.key, a.balance_fen, a.entry_count,
                coalesce(sum(e.amount_fen), 0)::bigint as summed, count(e.txn_id) as counted
         from ledger_accounts a left join ledger_entries e on e.account_key = a.key
         group by a.key order by a.key",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let key: String = row.try_get("key")?;
        // A company-wide account keeps no running balance: its entries are its balance.
        let running = key
            .parse::<super::chart::AccountKey>()
            .map(|k| k.keeps_running_balance())
            .unwrap_or(true);
        if !running {
            continue;
        }
        let cached: i64 = row.try_get("balance_fen")?;
        let summed: i64 = row.try_get("summed")?;
        let (count, counted): (i64, i64) = (row.try_get("entry_count")?, row.try_get("counted")?);
        if cached != summed || count != counted {
            report.violations.push(format!(
                "account {key}: cached balance {cached} fen over {count} entries, but its entries sum to {summed} fen over {counted}"
            ));
        }
    }
    report.accounts = rows.len() as u64;
    Ok(())
}

/// Every charge posting carries exactly the lines it marked (a line names one posting, so it is
/// posted at most once), and a line marked posted without a transaction was worth 0 fen.
async fn check_charge_lines(conn: &mut sqlx::PgConnection, report: &mut Report) -> CoreResult<()> {
    let rows = sqlx::query(
        "select t.id, e.amount_fen, coalesce(sum(c.debit_fen), 0)::bigint as lines
         from ledger_transactions t
         join ledger_entries e on e.txn_id = t.id and e.account_key = 'revenue:energy'
         left join charge_lines c on c.posted_txn = t.id
         where t.kind = 'charge_posting'
         group by t.id, e.amount_fen having e.amount_fen <> coalesce(sum(c.debit_fen), 0)",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let (id, posted, lines): (Uuid, i64, i64) = (
            row.try_get("id")?,
            row.try_get("amount_fen")?,
            row.try_get("lines")?,
        );
        report.violations.push(format!(
            "charge posting {id} took {posted} fen but its charge lines add up to {lines} fen"
        ));
    }
    let stray: i64 = sqlx::query_scalar(
        "select count(*) from charge_lines
         where (posted and posted_txn is null and debit_fen <> 0) or (not posted and posted_txn is not null)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if stray > 0 {
        report.violations.push(format!(
            "{stray} charge lines marked posted without their money (or the reverse)"
        ));
    }
    Ok(())
}

/// Nothing is booked on a closed day after its close (DESIGN.md: Booking).
async fn check_closed_days(conn: &mut sqlx::PgConnection, report: &mut Report) -> CoreResult<()> {
    let rows = sqlx::query(
        "select t.id, t.booked_on, c.day from ledger_transactions t
         join day_closes c on t.booked_on <= c.day and t.posted_at > c.closed_at
         order by t.posted_at limit 100",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let (id, booked, day): (Uuid, chrono::NaiveDate, chrono::NaiveDate) = (
            row.try_get("id")?,
            row.try_get("booked_on")?,
            row.try_get("day")?,
        );
        report.violations.push(format!(
            "transaction {id} is booked on {booked} after the books were closed through {day}"
        ));
    }
    Ok(())
}

async fn check_closed_accounts(
    conn: &mut sqlx::PgConnection,
    report: &mut Report,
) -> CoreResult<()> {
    let rows = sqlx::query(
        "select a.id, l.key, l.balance_fen from shop_accounts a
         join ledger_accounts l on l.shop_account_id = a.id and l.class in ('wallet', 'deposit')
         where a.state in ('closed', 'closed_in_arrears') and l.balance_fen <> 0",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let (id, key, balance): (Uuid, String, i64) = (
            row.try_get("id")?,
            row.try_get("key")?,
            row.try_get("balance_fen")?,
        );
        report.violations.push(format!(
            "closed account {id} still holds {balance} fen in {key}"
        ));
    }
    Ok(())
}

/// Runs the check of every company whose last recorded run is older than `every` (or that has
/// none) and records each run in `control.ledger_checks`; a run with violations is logged as an
/// error and listed for platform staff ([`recent_runs`]). Returns the runs made.
pub async fn run_due(
    pool: &PgPool,
    now: chrono::DateTime<chrono::Utc>,
    every: chrono::Duration,
) -> CoreResult<Vec<Report>> {
    let due = sqlx::query(
        "select c.id, c.schema_name from control.company c
         where not exists (select 1 from control.ledger_checks l where l.company_id = c.id and l.ran_at > $1)
         order by c.id",
    )
    .bind(now - every)
    .fetch_all(pool)
    .await?;
    let mut reports = Vec::new();
    for row in due {
        let company_id: i64 = row.try_get("id")?;
        let stored: String = row.try_get("schema_name")?;
        let schema = SchemaName::from_stored(&stored)
            .map_err(|e| CoreError::Internal(format!("{stored}: {e}")))?;
        let report = check_company(pool, &schema).await?;
        if !report.is_clean() {
            tracing::error!(company_id, violations = ?report.violations, "the ledger check found violations");
        }
        sqlx::query(
            "insert into control.ledger_checks (id, company_id, ran_at, transactions, accounts, violations)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(company_id)
        .bind(now)
        .bind(i64::try_from(report.transactions).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.accounts).unwrap_or(i64::MAX))
        .bind(&report.violations)
        .execute(pool)
        .await?;
        reports.push(report);
    }
    Ok(reports)
}

/// One recorded run of the check.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRun {
    pub company_id: i64,
    pub company_slug: String,
    pub ran_at: chrono::DateTime<chrono::Utc>,
    pub transactions: i64,
    pub accounts: i64,
    pub violations: Vec<String>,
}

/// Each company's latest run, failures first (platform staff outside a company only).
pub async fn recent_runs(
    conn: &mut sqlx::PgConnection,
    principal: &crate::auth::Principal,
) -> CoreResult<Vec<CheckRun>> {
    if !principal.role.is_platform() || principal.company.is_some() {
        return Err(CoreError::NotFound("resource"));
    }
    let rows = sqlx::query(
        "select distinct on (l.company_id) l.company_id, c.slug, l.ran_at, l.transactions, l.accounts, l.violations
         from control.ledger_checks l join control.company c on c.id = l.company_id
         order by l.company_id, l.ran_at desc",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut runs = rows
        .iter()
        .map(|r| {
            Ok(CheckRun {
                company_id: r.try_get("company_id")?,
                company_slug: r.try_get("slug")?,
                ran_at: r.try_get("ran_at")?,
                transactions: r.try_get("transactions")?,
                accounts: r.try_get("accounts")?,
                violations: r.try_get("violations")?,
            })
        })
        .collect::<CoreResult<Vec<_>>>()?;
    runs.sort_by_key(|r| (r.violations.is_empty(), r.company_id));
    Ok(runs)
}
