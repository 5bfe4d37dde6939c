//! Fixed service fees (DESIGN.md: derived keys, `fee:{meter}:{account}:{local_date}`): the fees
//! of the plan version in force on each local date an account holds a meter. Day fees post at
//! 00:00 local of their day (the opening day's at the opening); month fees on the 1st and on the
//! opening day, never prorated. One transaction per (meter, account, date) holds that date's
//! fees — the key makes a second posting of the same date impossible — and
//! `rating_state.fees_through` remembers the last date done. Fees may take the available balance
//! below zero, down to the trip rules, like charges.

use super::accounts::negate;
use super::ledger::post::{self, request_hash, Posting};
use super::ledger::{AccountKey, TxnKind};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tariff::{Fee, TariffVersion};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Dates handled per (meter, account) in one pass (a long-idle worker catches up over passes).
const DATES_PER_PASS: usize = 62;

/// The fee of `date` under the version in force then: its day fees, plus its month fees on the
/// 1st and on the opening day.
pub fn fee_of(
    versions: &[TariffVersion],
    date: NaiveDate,
    opening_date: NaiveDate,
) -> CoreResult<AmountFen> {
    let Some(version) = versions.iter().rev().find(|v| v.effective <= date) else {
        return Ok(AmountFen::ZERO);
    };
    let month_day = date.day() == 1 || date == opening_date;
    let mut total = AmountFen::ZERO;
    for fee in &version.fees {
        let fen = match *fee {
            Fee::Day(fen) => fen,
            Fee::Month(fen) if month_day => fen,
            Fee::Month(_) => 0,
        };
        total = total
            .checked_add(AmountFen::from_fen(fen))
            .ok_or_else(|| CoreError::Internal("fees overflow".into()))?;
    }
    debug_assert!(total >= AmountFen::ZERO, "fees are validated non-negative");
    Ok(total)
}

/// Posts the fees of every date from the one after `fees_through` (or the opening date) up to
/// today, local. The caller holds the (account, meter) rating state row. Returns how many
/// transactions were posted.
pub(crate) async fn post_due(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    meter: Uuid,
) -> CoreResult<u32> {
    let row = sqlx::query(
        "select r.fees_through, am.joined_at from rating_state r
         join account_meters am on am.account_id = r.account_id and am.meter_id = r.meter_id
         where r.account_id = $1 and r.meter_id = $2 for update of r skip locked",
    )
    .bind(account)
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?;
    // Another worker holds this meter: it posts the fees.
    let Some(row) = row else {
        return Ok(0);
    };
    let tz = principal.tz();
    let joined_at: DateTime<Utc> = row.try_get("joined_at")?;
    let opening_date = joined_at.with_timezone(&tz).date_naive();
    let through: Option<NaiveDate> = row.try_get("fees_through")?;
    let today = principal.now().with_timezone(&tz).date_naive();
    let first = through.map_or(opening_date, |d| d + Duration::days(1));
    if first > today {
        return Ok(0);
    }
    let versions = crate::tariff::plans::versions_by_meter(conn, &[meter])
        .await?
        .remove(&meter)
        .unwrap_or_default();
    let mut posted = 0u32;
    let mut done = None;
    for date in first
        .iter_days()
        .take_while(|d| *d <= today)
        .take(DATES_PER_PASS)
    {
        let fee = fee_of(&versions, date, opening_date)?;
        if fee > AmountFen::ZERO {
            // The day's fee is due at its 00:00 local; the opening day's at the opening.
            let event_at = if date == opening_date {
                joined_at
            } else {
                crate::tariff::rating::local_instant(tz, date, 0)
            };
            post::post(
                conn,
                principal,
                &Posting {
                    kind: TxnKind::Fee,
                    idempotency_key: format!("fee:{meter}:{account}:{date}"),
                    request_hash: request_hash(&["fee", &meter.to_string(), &date.to_string()]),
                    shop_account: Some(account),
                    event_at,
                    method: None,
                    receipt: false,
                    reverses: None,
                    memo: format!("服务费 {date}"),
                    legs: vec![
                        (AccountKey::Wallet(account), negate(fee)?),
                        (AccountKey::RevenueFee, fee),
                    ],
                    keep_at_least: None,
                },
            )
            .await?;
            posted += 1;
        }
        done = Some(date);
    }
    if let Some(date) = done {
        sqlx::query(
            "update rating_state set fees_through = $3 where account_id = $1 and meter_id = $2",
        )
        .bind(account)
        .bind(meter)
        .bind(date)
        .execute(&mut *conn)
        .await?;
    }
    Ok(posted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(effective: &str, fees: Vec<Fee>) -> TariffVersion {
        TariffVersion {
            fees,
            ..TariffVersion::flat(effective.parse().unwrap(), 8123)
        }
    }

    #[test]
    fn day_fees_every_day_month_fees_on_the_first_and_the_opening_day() {
        let versions = vec![
            version("2026-01-01", vec![Fee::Day(100), Fee::Month(3_000)]),
            version("2026-03-01", vec![Fee::Day(200)]),
        ];
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let opening = d("2026-01-15");
        assert_eq!(
            fee_of(&versions, d("2026-01-15"), opening).unwrap().fen(),
            3_100
        );
        assert_eq!(
            fee_of(&versions, d("2026-01-16"), opening).unwrap().fen(),
            100
        );
        assert_eq!(
            fee_of(&versions, d("2026-02-01"), opening).unwrap().fen(),
            3_100
        );
        assert_eq!(
            fee_of(&versions, d("2026-03-01"), opening).unwrap().fen(),
            200,
            "the new version has no month fee"
        );
        assert_eq!(
            fee_of(&versions, d("2025-12-31"), opening).unwrap().fen(),
            0,
            "before the plan"
        );
    }
}
