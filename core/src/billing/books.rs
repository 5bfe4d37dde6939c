//! The books: the daily close (日结, DESIGN.md: Booking) and the day report. Closing day D (right
//! `daily_close`) needs every cashier shift with transactions booked on a date ≤ D closed, and
//! freezes all dates ≤ D: from then on a posting is refused a booking date ≤ D (it books today
//! and keeps its event time), and `ledger check` reports anything booked on a closed day after
//! its close. A day can be closed only once it is over (charges and fees post around the clock),
//! and only once. Postings take a shared lock on the company's books and the close an exclusive
//! one, so no posting straddles a close.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// What a span of booking dates booked, per kind and method.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DayLine {
    pub kind: String,
    /// Empty for transactions without a method (charges, fees, close-outs).
    pub method: String,
    pub count: i64,
    /// The money each moved (the sum of its positive entries).
    pub amount_fen: AmountFen,
}

/// A closed day.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayClose {
    pub day: NaiveDate,
    pub closed_at: DateTime<Utc>,
    pub closed_by: Option<Uuid>,
    /// What the dates after the previous close up to `day` booked, as it was at the close.
    pub lines: Vec<DayLine>,
}

/// The day report (日结报表) of `day`, and whether that day is closed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayReport {
    pub day: NaiveDate,
    pub closed: bool,
    pub lines: Vec<DayLine>,
    /// Shifts still open that hold transactions booked on or before `day` (they block its close).
    pub open_shifts: Vec<OpenShift>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenShift {
    pub shift_id: Uuid,
    pub username: String,
    pub opened_at: DateTime<Utc>,
}

/// The lock both sides take: postings shared, the close exclusive (per company schema).
const BOOKS_LOCK: &str = "hashtextextended(current_schema() || ':books', 11)";

/// The last closed date.
pub async fn closed_through(conn: &mut PgConnection) -> CoreResult<Option<NaiveDate>> {
    Ok(sqlx::query_scalar("select max(day) from day_closes")
        .fetch_one(&mut *conn)
        .await?)
}

/// Refuses a posting booked on a closed date (the poster's clock is behind a close). Holds the
/// books' shared lock to the end of the caller's transaction.
pub(crate) async fn guard_open(conn: &mut PgConnection, booked_on: NaiveDate) -> CoreResult<()> {
    sqlx::query(&format!(
        "select pg_advisory_xact_lock_shared({BOOKS_LOCK})"
    ))
    .execute(&mut *conn)
    .await?;
    match closed_through(conn).await? {
        Some(closed) if booked_on <= closed => Err(CoreError::Conflict(format!(
            "the books are closed through {closed}: nothing more is booked on {booked_on}"
        ))),
        _ => Ok(()),
    }
}

/// What booking dates in (`after`, `through`] booked.
async fn lines(
    conn: &mut PgConnection,
    after: Option<NaiveDate>,
    through: NaiveDate,
) -> CoreResult<Vec<DayLine>> {
    let rows = sqlx::query(
        "select t.kind, coalesce(t.method, '') as method, count(*) as n,
                coalesce(sum(p.fen), 0)::bigint as fen
         from ledger_transactions t
         join lateral (select sum(amount_fen) as fen from ledger_entries e
                       where e.txn_id = t.id and e.amount_fen > 0) p on true
         where ($1::date is null or t.booked_on > $1) and t.booked_on <= $2
         group by 1, 2 order by 1, 2",
    )
    .bind(after)
    .bind(through)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DayLine {
                kind: r.try_get("kind")?,
                method: r.try_get("method")?,
                count: r.try_get("n")?,
                amount_fen: AmountFen::from_fen(r.try_get("fen")?),
            })
        })
        .collect()
}

/// Open shifts holding transactions booked on or before `day`: cash in their drawer account, or
/// counter movements their cashier posted since the shift opened.
async fn blocking_shifts(conn: &mut PgConnection, day: NaiveDate) -> CoreResult<Vec<OpenShift>> {
    let rows = sqlx::query(
        "select s.id, u.username, s.opened_at from cashier_shifts s join users u on u.id = s.user_id
         where s.closed_at is null and (
             exists (select 1 from ledger_entries e join ledger_transactions t on t.id = e.txn_id
                     where e.account_key = 'clearing:cash:' || s.id::text and t.booked_on <= $1)
             or exists (select 1 from ledger_transactions t
                        where t.actor = 'user:' || s.user_id::text and t.method is not null
                          and t.posted_at >= s.opened_at and t.booked_on <= $1))
         order by s.opened_at",
    )
    .bind(day)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OpenShift {
                shift_id: r.try_get("id")?,
                username: r.try_get("username")?,
                opened_at: r.try_get("opened_at")?,
            })
        })
        .collect()
}

/// The day report of `day` (live for an open day).
#[tracing::instrument(skip_all)]
pub async fn day_report(
    conn: &mut PgConnection,
    principal: &Principal,
    day: NaiveDate,
) -> CoreResult<DayReport> {
    principal.require_read_company()?;
    let closed = closed_through(conn).await?.is_some_and(|c| day <= c);
    Ok(DayReport {
        day,
        closed,
        lines: lines(conn, Some(day.pred_opt().unwrap_or(day)), day).await?,
        open_shifts: if closed {
            vec![]
        } else {
            blocking_shifts(conn, day).await?
        },
    })
}

/// Closes the books through `day` (right `daily_close`). Closing a closed day answers with its
/// close.
#[tracing::instrument(skip_all)]
pub async fn close_day(
    conn: &mut PgConnection,
    principal: &Principal,
    day: NaiveDate,
) -> CoreResult<DayClose> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::DailyClose))?;
    // No posting is half-way while the close looks at the books.
    sqlx::query(&format!("select pg_advisory_xact_lock({BOOKS_LOCK})"))
        .execute(&mut *conn)
        .await?;
    let through = closed_through(conn).await?;
    if through.is_some_and(|c| day <= c) {
        return match get(conn, day).await? {
            Some(done) => Ok(done),
            None => Err(CoreError::Conflict(format!(
                "the books are already closed through {}",
                through.unwrap_or(day)
            ))),
        };
    }
    if day >= principal.today() {
        return Err(CoreError::field(
            "day",
            "a day is closed once it is over: charges and fees book around the clock",
        ));
    }
    let open = blocking_shifts(conn, day).await?;
    if !open.is_empty() {
        let who: Vec<&str> = open.iter().map(|s| s.username.as_str()).collect();
        return Err(CoreError::Conflict(format!(
            "close these shifts first: {}",
            who.join(", ")
        )));
    }
    let lines = lines(conn, through, day).await?;
    let summary = serde_json::to_value(&lines)
        .map_err(|e| CoreError::Internal(format!("day summary: {e}")))?;
    sqlx::query(
        "insert into day_closes (day, closed_at, closed_by, summary) values ($1, now(), $2, $3)",
    )
    .bind(day)
    .bind((!principal.user_id.is_nil()).then_some(principal.user_id))
    .bind(&summary)
    .execute(&mut *conn)
    .await?;
    audit::record(
        conn,
        principal,
        "books.close_day",
        "day_close",
        Some(day.to_string()),
        None,
        Some(serde_json::json!({ "day": day, "lines": summary })),
    )
    .await?;
    get(conn, day)
        .await?
        .ok_or_else(|| CoreError::Internal("a close without its row".into()))
}

async fn get(conn: &mut PgConnection, day: NaiveDate) -> CoreResult<Option<DayClose>> {
    let row =
        sqlx::query("select day, closed_at, closed_by, summary from day_closes where day = $1")
            .bind(day)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| from_row(&r)).transpose()
}

fn from_row(r: &sqlx::postgres::PgRow) -> CoreResult<DayClose> {
    let summary: serde_json::Value = r.try_get("summary")?;
    Ok(DayClose {
        day: r.try_get("day")?,
        closed_at: r.try_get("closed_at")?,
        closed_by: r.try_get("closed_by")?,
        lines: serde_json::from_value(summary)
            .map_err(|e| CoreError::Internal(format!("day summary: {e}")))?,
    })
}

/// The latest closes, newest first.
#[tracing::instrument(skip_all)]
pub async fn closes(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<DayClose>> {
    principal.require_read_company()?;
    let rows = sqlx::query(
        "select day, closed_at, closed_by, summary from day_closes order by day desc limit 100",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}
