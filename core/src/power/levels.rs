//! Per-account levels (DESIGN.md: "Levels per account (from company defaults, changeable per
//! account)"): each of alarm 1, alarm 2, overdraft limit and restore level is the account's own
//! when set, else the company's default. A change is checked as a whole — the levels in force
//! afterwards must keep DESIGN.md's order — audited, and the rules run at once.

use super::Levels;
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::AmountFen;
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use crate::tenancy::settings::CompanySettings;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// An account's own levels; `None` follows the company default.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountLevels {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub alarm1_fen: Option<AmountFen>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub alarm2_fen: Option<AmountFen>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub overdraft_limit_fen: Option<AmountFen>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub restore_level_fen: Option<AmountFen>,
}

/// An account's levels: its own and the ones in force.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LevelsView {
    pub own: AccountLevels,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub alarm1_fen: AmountFen,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub alarm2_fen: AmountFen,
    /// Trip at or below −this.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub overdraft_limit_fen: AmountFen,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub restore_level_fen: AmountFen,
}

/// The most a level may be (¥1,000,000), as the company settings allow.
const LEVEL_FEN_MAX: i64 = 100_000_000;

pub(crate) async fn own(conn: &mut PgConnection, account: Uuid) -> CoreResult<AccountLevels> {
    let r = sqlx::query(
        "select alarm1_fen, alarm2_fen, overdraft_limit_fen, restore_level_fen
         from shop_accounts where id = $1",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    Ok(AccountLevels {
        alarm1_fen: r.try_get("alarm1_fen")?,
        alarm2_fen: r.try_get("alarm2_fen")?,
        overdraft_limit_fen: r.try_get("overdraft_limit_fen")?,
        restore_level_fen: r.try_get("restore_level_fen")?,
    })
}

/// The levels in force: the account's own over the company's defaults.
pub(crate) fn in_force(own: &AccountLevels, company: &CompanySettings) -> LevelsView {
    LevelsView {
        own: *own,
        alarm1_fen: own.alarm1_fen.unwrap_or(company.alarm1_fen),
        alarm2_fen: own.alarm2_fen.unwrap_or(company.alarm2_fen),
        overdraft_limit_fen: own
            .overdraft_limit_fen
            .unwrap_or(company.overdraft_limit_fen),
        restore_level_fen: own.restore_level_fen.unwrap_or(company.restore_level_fen),
    }
}

impl LevelsView {
    /// The rules' form, the trip and restore levels lowered by `credit` (emergency credit).
    pub(crate) fn for_rules(&self, credit: AmountFen) -> CoreResult<Levels> {
        let overflow = || CoreError::Internal("levels overflow".into());
        Ok(Levels {
            alarm1: self.alarm1_fen,
            alarm2: self.alarm2_fen,
            trip: AmountFen::ZERO
                .checked_sub(self.overdraft_limit_fen)
                .and_then(|t| t.checked_sub(credit))
                .ok_or_else(overflow)?,
            restore: self
                .restore_level_fen
                .checked_sub(credit)
                .ok_or_else(overflow)?,
        })
    }
}

/// `account`'s levels, for whoever may read the account.
pub async fn get(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
) -> CoreResult<LevelsView> {
    crate::billing::accounts::get(conn, principal, account).await?;
    let company = crate::tenancy::settings::load(conn).await?;
    Ok(in_force(&own(conn, account).await?, &company))
}

/// Sets `account`'s own levels (right `accounts`); the levels in force must keep DESIGN.md's
/// order (alarm 1 ≥ alarm 2 ≥ 0 ≥ −overdraft limit, restore > −overdraft limit).
#[tracing::instrument(skip_all, fields(%account))]
pub async fn set(
    conn: &mut PgConnection,
    principal: &Principal,
    account: Uuid,
    wanted: &AccountLevels,
) -> CoreResult<LevelsView> {
    crate::billing::accounts::lock_for_money(conn, principal, account).await?;
    principal.require(Need::Act(Right::Accounts))?;
    let max = AmountFen::from_fen(LEVEL_FEN_MAX);
    for (field, value) in [
        ("alarm1_fen", wanted.alarm1_fen),
        ("alarm2_fen", wanted.alarm2_fen),
        ("overdraft_limit_fen", wanted.overdraft_limit_fen),
    ] {
        if value.is_some_and(|v| v < AmountFen::ZERO || v > max) {
            return Err(CoreError::field(field, "from 0 to ¥1,000,000"));
        }
    }
    if wanted
        .restore_level_fen
        .is_some_and(|v| v < AmountFen::ZERO.checked_sub(max).unwrap_or(v) || v > max)
    {
        return Err(CoreError::field("restore_level_fen", "within ±¥1,000,000"));
    }
    let company = crate::tenancy::settings::load(conn).await?;
    let view = in_force(wanted, &company);
    let levels = view.for_rules(AmountFen::ZERO)?;
    if levels.alarm1 < levels.alarm2 {
        return Err(CoreError::field("alarm2_fen", "at most alarm 1"));
    }
    if levels.restore <= levels.trip {
        return Err(CoreError::field(
            "restore_level_fen",
            "above the trip level (−overdraft limit)",
        ));
    }
    debug_assert!(levels.are_ordered());
    let before = own(conn, account).await?;
    sqlx::query(
        "update shop_accounts set alarm1_fen = $2, alarm2_fen = $3, overdraft_limit_fen = $4,
             restore_level_fen = $5, updated_at = now() where id = $1",
    )
    .bind(account)
    .bind(wanted.alarm1_fen)
    .bind(wanted.alarm2_fen)
    .bind(wanted.overdraft_limit_fen)
    .bind(wanted.restore_level_fen)
    .execute(&mut *conn)
    .await?;
    audit::record(
        conn,
        principal,
        "account.levels",
        "shop_account",
        Some(account.to_string()),
        Some(serde_json::to_value(before).unwrap_or_default()),
        Some(serde_json::to_value(wanted).unwrap_or_default()),
    )
    .await?;
    super::evaluate(conn, principal, account).await?;
    Ok(view)
}
