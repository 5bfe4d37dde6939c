//! The payment-notification inbox (`control.payment_inbox`, DESIGN.md: Tenancy). A provider's
//! notification whose signature checked out is stored first and answered at once (providers want
//! an answer within 5 s and retry otherwise); [`process`] then books it in the company's schema
//! (`orders::credit`). The inbox row and the booking are separate transactions on purpose: a crash
//! between them leaves the row `received`, and booking it again answers what the first booking
//! did (the ledger key `pay:{provider}:{transaction_id}`), so nothing is lost or doubled.

use super::orders::{self, Credited, PaidNotice, Provider};
use crate::auth::Principal;
use crate::kernel::clock::SharedClock;
use crate::kernel::error::{CoreError, CoreResult};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Bookings tried before a notification is left `failed` for an operator.
pub const ATTEMPTS_MAX: i32 = 5;

/// Keeps a verified notification of `provider` for company `company_id`.
pub async fn store(
    pool: &PgPool,
    provider: Provider,
    company_id: i64,
    body: &[u8],
    at: DateTime<Utc>,
) -> CoreResult<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into control.payment_inbox (id, provider, company_id, received_at, body)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(provider.as_str())
    .bind(company_id)
    .bind(at)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(id)
}

/// The paid notice a stored body of `provider` carries.
fn notice_of(provider: Provider, body: &[u8]) -> Result<PaidNotice, String> {
    match provider {
        Provider::Sandbox => super::sandbox::parse(body).map_err(|e| e.to_string()),
        other => Err(format!("{other} notifications are not read yet")),
    }
}

/// Books inbox row `id` if it is still waiting; what the booking did (`None`: someone else has
/// it, or it is done).
pub async fn process(pool: &PgPool, clock: &SharedClock, id: Uuid) -> CoreResult<Option<String>> {
    let mut control = pool.begin().await?;
    let row = sqlx::query(
        "select provider, company_id, body from control.payment_inbox
         where id = $1 and state = 'received' for update skip locked",
    )
    .bind(id)
    .fetch_optional(&mut *control)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let provider_text: String = row.try_get("provider")?;
    let company_id: i64 = row.try_get("company_id")?;
    let body: Vec<u8> = row.try_get("body")?;
    let booked = async {
        let provider = Provider::parse(&provider_text)
            .ok_or_else(|| CoreError::Internal(format!("stored provider {provider_text}")))?;
        let notice = notice_of(provider, &body).map_err(CoreError::Conflict)?;
        let scope = crate::auth::load_company(&mut control, company_id)
            .await?
            .ok_or(CoreError::NotFound("company"))?;
        let principal = Principal::system("payments", clock.clone()).in_company(scope.clone());
        let mut tx = crate::db::begin_in(pool, &scope.schema).await?;
        let credited = orders::credit(&mut tx, &principal, &notice).await?;
        tx.commit().await?;
        Ok::<Credited, CoreError>(credited)
    }
    .await;
    let now = clock.now();
    let outcome = match &booked {
        Ok(credited) => {
            let outcome = format!("{credited:?}");
            sqlx::query(
                "update control.payment_inbox set state = 'processed', outcome = $2,
                     attempts = attempts + 1, processed_at = $3 where id = $1",
            )
            .bind(id)
            .bind(&outcome)
            .bind(now)
            .execute(&mut *control)
            .await?;
            metrics::counter!("payment_notices_booked_total").increment(1);
            outcome
        }
        Err(e) => {
            // A body that is no paid notice never will be; anything else is tried again.
            let give_up = matches!(e, CoreError::Conflict(_));
            let outcome = e.to_string();
            sqlx::query(
                "update control.payment_inbox set attempts = attempts + 1, outcome = $2,
                     state = case when $3 or attempts + 1 >= $4 then 'failed' else state end,
                     processed_at = case when $3 or attempts + 1 >= $4 then $5 end
                 where id = $1",
            )
            .bind(id)
            .bind(&outcome)
            .bind(give_up)
            .bind(ATTEMPTS_MAX)
            .bind(now)
            .execute(&mut *control)
            .await?;
            metrics::counter!("payment_notices_failed_total").increment(1);
            tracing::warn!(%id, error = %e, "booking a payment notification failed");
            outcome
        }
    };
    control.commit().await?;
    Ok(Some(outcome))
}

/// Books every waiting notification (oldest first, at most `limit`); how many were looked at.
pub async fn process_waiting(pool: &PgPool, clock: &SharedClock, limit: i64) -> CoreResult<usize> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select id from control.payment_inbox where state = 'received' order by received_at limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    for id in &ids {
        process(pool, clock, *id).await?;
    }
    Ok(ids.len())
}
