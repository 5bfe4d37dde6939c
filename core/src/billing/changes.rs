//! Mid-account changes (DESIGN.md: Money and the ledger, mid-account changes), called by the
//! field context in the same database transaction as the change itself, so money and meters
//! never disagree:
//! - a **meter swap** rates the old meter up to its final reading, posts its lines, and carries
//!   the (meter, account) rating state — carried rest of a fen, month- and year-to-date energy,
//!   the last fee date — to the new meter, which joins the account from its initial reading;
//! - a **plan or CT/PT change** takes effect from an explicit reading, never retroactively:
//!   every stored reading up to the change is rated under the old plan and ratio first, so the
//!   new one prices only what comes after the meter's latest reading.
//!
//! Energy of meters that belong to no open account is reported as unbilled ([`unbilled`]).

use super::rating::{self, counters_of, CompanyRules, Position};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::EnergyWh;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The open account holding `meter`, if any.
async fn account_of(conn: &mut PgConnection, meter: Uuid) -> CoreResult<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "select am.account_id from account_meters am
         join shop_accounts a on a.id = am.account_id and a.state in ('open', 'closing')
         where am.meter_id = $1 and am.left_at is null",
    )
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Rates `meter`'s stored readings under what is configured now (before a plan or ratio change
/// lands). A held reading refuses the change: it must be reviewed under the old plan first.
pub async fn rate_before_change(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<()> {
    let Some(account) = account_of(conn, meter).await? else {
        return Ok(());
    };
    let company = CompanyRules::load(conn).await?;
    // Lock the state (a worker rating it now finishes first), then rate everything stored.
    let held: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "select held_at from rating_state where account_id = $1 and meter_id = $2 for update",
    )
    .bind(account)
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?;
    if held.flatten().is_some() {
        return Err(CoreError::Conflict(
            "a held reading of this meter waits for review: release or correct it before changing its plan or ratio"
                .into(),
        ));
    }
    rating::rate_meter(conn, principal, &company, account, meter).await?;
    let still_held: Option<DateTime<Utc>> = sqlx::query_scalar(
        "select held_at from rating_state where account_id = $1 and meter_id = $2",
    )
    .bind(account)
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    if still_held.is_some() {
        return Err(CoreError::Conflict(
            "a reading of this meter was held while rating it: review it before changing its plan or ratio"
                .into(),
        ));
    }
    Ok(())
}

/// What a swap hands over.
pub struct Swap {
    pub old_meter: Uuid,
    pub new_meter: Uuid,
    pub at: DateTime<Utc>,
    pub old_final: EnergyWh,
    pub new_initial: EnergyWh,
}

/// Moves the old meter's place in its open account (if any) to the new meter: the old one rated
/// to its final reading and posted, the rating state carried, the new one joining from its
/// initial reading at the swap time. Returns the account.
pub async fn carry_swap(
    conn: &mut PgConnection,
    principal: &Principal,
    swap: &Swap,
) -> CoreResult<Option<Uuid>> {
    let Some(account) = account_of(conn, swap.old_meter).await? else {
        return Ok(None);
    };
    let company = CompanyRules::load(conn).await?;
    rating::rate_meter(conn, principal, &company, account, swap.old_meter).await?;
    // The old meter's last interval ends at its final reading; a held reading refuses the swap.
    rating::rate_final(
        conn,
        principal,
        account,
        swap.old_meter,
        Some((swap.at, swap.old_final)),
    )
    .await?;
    // Fees due so far are the old meter's (the new one carries on from the last fee date).
    super::fees::post_due(conn, principal, account, swap.old_meter).await?;
    rating::post_if_due(conn, principal, &company, account, swap.old_meter, true).await?;
    let state = sqlx::query(
        "select month_year, month, month_wh, year, year_wh, remainder_e5, fees_through
         from rating_state where account_id = $1 and meter_id = $2 for update",
    )
    .bind(account)
    .bind(swap.old_meter)
    .fetch_one(&mut *conn)
    .await?;
    let counters = counters_of(&state)?;
    let fees_through: Option<NaiveDate> = state.try_get("fees_through")?;
    sqlx::query(
        "update account_meters set left_at = $3, closing_energy_wh = $4, closing_read_at = $3, closing_manual = true
         where account_id = $1 and meter_id = $2",
    )
    .bind(account)
    .bind(swap.old_meter)
    .bind(swap.at)
    .bind(swap.old_final.wh())
    .execute(&mut *conn)
    .await?;
    // The rest of a fen moves with the state: the old meter keeps none, so it is rounded once.
    sqlx::query(
        "update rating_state set remainder_e5 = 0, updated_at = $3 where account_id = $1 and meter_id = $2",
    )
    .bind(account)
    .bind(swap.old_meter)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into account_meters (account_id, meter_id, opening_energy_wh, opening_read_at, opening_manual, joined_at)
         values ($1, $2, $3, $4, true, $4)",
    )
    .bind(account)
    .bind(swap.new_meter)
    .bind(swap.new_initial.wh())
    .bind(swap.at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into rating_state (account_id, meter_id, last_read_at, last_energy_wh, fees_through)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(account)
    .bind(swap.new_meter)
    .bind(swap.at)
    .bind(swap.new_initial.wh())
    .bind(fees_through)
    .execute(&mut *conn)
    .await?;
    let position = Position {
        read_at: swap.at,
        energy_wh: swap.new_initial.wh(),
        from_opening: true,
        held: None,
    };
    rating::save_state(
        conn,
        account,
        swap.new_meter,
        &position,
        &counters,
        principal.now(),
    )
    .await?;
    Ok(Some(account))
}

/// Energy a meter used on a local day when no open account held it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnbilledDay {
    pub meter_id: Uuid,
    pub meter_number: String,
    pub shop_number: Option<String>,
    pub day: NaiveDate,
    pub energy_wh: EnergyWh,
}

/// Days in [`from`, `to`] on which a platform-side meter counted energy outside any account (a
/// day an account held the meter for any part of is the account's), within the caller's
/// buildings — never lost, reported.
#[tracing::instrument(skip_all)]
pub async fn unbilled(
    conn: &mut PgConnection,
    principal: &Principal,
    from: NaiveDate,
    to: NaiveDate,
) -> CoreResult<Vec<UnbilledDay>> {
    principal.require_read_company()?;
    if to < from || (to - from).num_days() > 366 {
        return Err(CoreError::field("to", "from ≤ to, at most a year apart"));
    }
    let tz = principal.tz().name().to_owned();
    let rows = sqlx::query(
        "select d.meter_id, m.meter_number, s.number as shop_number, d.day, sum(d.energy_wh)::bigint as wh
         from daily_energy d join meters m on m.id = d.meter_id left join shops s on s.id = m.shop_id
         where d.day between $1 and $2 and m.prepayment_mode = 'platform' and m.role = 'shop'
           and ($3::uuid[] is null or s.building_id = any($3))
           and not exists (
               select 1 from account_meters am where am.meter_id = d.meter_id
                 and (am.joined_at at time zone $4)::date <= d.day
                 and (am.left_at is null or (am.left_at at time zone $4)::date >= d.day))
         group by d.meter_id, m.meter_number, s.number, d.day having sum(d.energy_wh) > 0
         order by d.day, m.meter_number limit 5000",
    )
    .bind(from)
    .bind(to)
    .bind(principal.building_limit_param())
    .bind(&tz)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UnbilledDay {
                meter_id: r.try_get("meter_id")?,
                meter_number: r.try_get("meter_number")?,
                shop_number: r.try_get("shop_number")?,
                day: r.try_get("day")?,
                energy_wh: EnergyWh::from_wh(r.try_get("wh")?),
            })
        })
        .collect()
}
