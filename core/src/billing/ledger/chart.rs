//! The chart of accounts (DESIGN.md: Money and the ledger), each account written once here with
//! its one string form (`wallet:<account id>`, `clearing:cash:<shift id>`, `revenue:energy`).
//!
//! **Signs.** Every entry is signed and a transaction's entries sum to zero; an account's balance
//! is the sum of its entries. What the company owes or has earned reads positive — a shop's
//! `wallet` and `deposit`, `refunds_payable`, `revenue:*` — and what it holds or is owed reads
//! negative: a cash drawer that took ¥100 shows `clearing:cash:<shift>` = −100 fen, credit given
//! away shows in `promotions` below zero, and a shop that left owing ¥5 shows
//! `arrears_receivable` = −500.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// How money came in or went out at the counter or online (DESIGN.md: `clearing:{method}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClearingMethod {
    /// Cash, per cashier shift.
    Cash {
        shift: Uuid,
    },
    Card,
    Transfer,
    Wechat,
    Alipay,
    Sandbox,
}

impl ClearingMethod {
    /// The method's word (`cash`, `card`, …), as forms, receipts and transactions name it.
    pub fn word(&self) -> &'static str {
        match self {
            ClearingMethod::Cash { .. } => "cash",
            ClearingMethod::Card => "card",
            ClearingMethod::Transfer => "transfer",
            ClearingMethod::Wechat => "wechat",
            ClearingMethod::Alipay => "alipay",
            ClearingMethod::Sandbox => "sandbox",
        }
    }
}

/// One account of a company's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKey {
    /// A shop account's spendable credit.
    Wallet(Uuid),
    /// A shop account's deposit (押金): never spendable, never counted toward a trip.
    Deposit(Uuid),
    /// What a closed account still owes.
    ArrearsReceivable(Uuid),
    /// Bought for a meter-side meter, frame not yet verified on the meter (per meter).
    InTransit(Uuid),
    /// Credit a meter-side meter holds (per meter).
    OnMeter(Uuid),
    Clearing(ClearingMethod),
    RevenueEnergy,
    RevenueFee,
    /// Opening credit given away.
    Promotions,
    RefundsPayable,
    Adjustments,
    /// Sub-fen rests rounded when an account closes.
    Rounding,
    /// Payments that match no order.
    Suspense,
}

/// The kind of an account, whatever shop, meter or shift it belongs to: what templates speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountClass {
    Wallet,
    Deposit,
    ArrearsReceivable,
    InTransit,
    OnMeter,
    ClearingCash,
    /// A clearing account other than cash.
    ClearingOther,
    RevenueEnergy,
    RevenueFee,
    Promotions,
    RefundsPayable,
    Adjustments,
    Rounding,
    Suspense,
}

impl AccountClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountClass::Wallet => "wallet",
            AccountClass::Deposit => "deposit",
            AccountClass::ArrearsReceivable => "arrears_receivable",
            AccountClass::InTransit => "in_transit",
            AccountClass::OnMeter => "on_meter",
            AccountClass::ClearingCash => "clearing_cash",
            AccountClass::ClearingOther => "clearing",
            AccountClass::RevenueEnergy => "revenue_energy",
            AccountClass::RevenueFee => "revenue_fee",
            AccountClass::Promotions => "promotions",
            AccountClass::RefundsPayable => "refunds_payable",
            AccountClass::Adjustments => "adjustments",
            AccountClass::Rounding => "rounding",
            AccountClass::Suspense => "suspense",
        }
    }

    /// Clearing of any method.
    pub fn is_clearing(self) -> bool {
        matches!(
            self,
            AccountClass::ClearingCash | AccountClass::ClearingOther
        )
    }
}

impl AccountKey {
    pub fn class(&self) -> AccountClass {
        match self {
            AccountKey::Wallet(_) => AccountClass::Wallet,
            AccountKey::Deposit(_) => AccountClass::Deposit,
            AccountKey::ArrearsReceivable(_) => AccountClass::ArrearsReceivable,
            AccountKey::InTransit(_) => AccountClass::InTransit,
            AccountKey::OnMeter(_) => AccountClass::OnMeter,
            AccountKey::Clearing(ClearingMethod::Cash { .. }) => AccountClass::ClearingCash,
            AccountKey::Clearing(_) => AccountClass::ClearingOther,
            AccountKey::RevenueEnergy => AccountClass::RevenueEnergy,
            AccountKey::RevenueFee => AccountClass::RevenueFee,
            AccountKey::Promotions => AccountClass::Promotions,
            AccountKey::RefundsPayable => AccountClass::RefundsPayable,
            AccountKey::Adjustments => AccountClass::Adjustments,
            AccountKey::Rounding => AccountClass::Rounding,
            AccountKey::Suspense => AccountClass::Suspense,
        }
    }

    /// The shop account this ledger account belongs to, if any.
    /// Whether the account keeps a cached running balance, moved under a row lock by every
    /// posting: the accounts of one shop, meter or cashier shift, which rules read (the overdraft
    /// rule on a wallet, a drawer's count). The company-wide accounts (revenue, promotions,
    /// refunds payable, adjustments, rounding, suspense, non-cash clearing) do not: every posting
    /// of the company touches them, and one locked row would make all postings queue behind each
    /// other; their balance is the sum of their entries.
    pub fn keeps_running_balance(&self) -> bool {
        matches!(
            self,
            AccountKey::Wallet(_)
                | AccountKey::Deposit(_)
                | AccountKey::ArrearsReceivable(_)
                | AccountKey::InTransit(_)
                | AccountKey::OnMeter(_)
                | AccountKey::Clearing(ClearingMethod::Cash { .. })
        )
    }

    pub fn shop_account(&self) -> Option<Uuid> {
        match self {
            AccountKey::Wallet(id)
            | AccountKey::Deposit(id)
            | AccountKey::ArrearsReceivable(id) => Some(*id),
            _ => None,
        }
    }

    /// The meter this ledger account belongs to, if any.
    pub fn meter(&self) -> Option<Uuid> {
        match self {
            AccountKey::InTransit(id) | AccountKey::OnMeter(id) => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountKey::Wallet(id) => write!(f, "wallet:{id}"),
            AccountKey::Deposit(id) => write!(f, "deposit:{id}"),
            AccountKey::ArrearsReceivable(id) => write!(f, "arrears_receivable:{id}"),
            AccountKey::InTransit(id) => write!(f, "in_transit:{id}"),
            AccountKey::OnMeter(id) => write!(f, "on_meter:{id}"),
            AccountKey::Clearing(ClearingMethod::Cash { shift }) => {
                write!(f, "clearing:cash:{shift}")
            }
            AccountKey::Clearing(method) => write!(f, "clearing:{}", method.word()),
            AccountKey::RevenueEnergy => f.write_str("revenue:energy"),
            AccountKey::RevenueFee => f.write_str("revenue:fee"),
            AccountKey::Promotions => f.write_str("promotions"),
            AccountKey::RefundsPayable => f.write_str("refunds_payable"),
            AccountKey::Adjustments => f.write_str("adjustments"),
            AccountKey::Rounding => f.write_str("rounding"),
            AccountKey::Suspense => f.write_str("suspense"),
        }
    }
}

/// A text that is not an account of the chart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an account of the chart: {0}")]
pub struct UnknownAccount(pub String);

impl FromStr for AccountKey {
    type Err = UnknownAccount;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownAccount(text.to_owned());
        let id = |s: &str| Uuid::parse_str(s).map_err(|_| unknown());
        let parts: Vec<&str> = text.split(':').collect();
        Ok(match parts.as_slice() {
            ["wallet", a] => AccountKey::Wallet(id(a)?),
            ["deposit", a] => AccountKey::Deposit(id(a)?),
            ["arrears_receivable", a] => AccountKey::ArrearsReceivable(id(a)?),
            ["in_transit", m] => AccountKey::InTransit(id(m)?),
            ["on_meter", m] => AccountKey::OnMeter(id(m)?),
            ["clearing", "cash", shift] => {
                AccountKey::Clearing(ClearingMethod::Cash { shift: id(shift)? })
            }
            ["clearing", "card"] => AccountKey::Clearing(ClearingMethod::Card),
            ["clearing", "transfer"] => AccountKey::Clearing(ClearingMethod::Transfer),
            ["clearing", "wechat"] => AccountKey::Clearing(ClearingMethod::Wechat),
            ["clearing", "alipay"] => AccountKey::Clearing(ClearingMethod::Alipay),
            ["clearing", "sandbox"] => AccountKey::Clearing(ClearingMethod::Sandbox),
            ["revenue", "energy"] => AccountKey::RevenueEnergy,
            ["revenue", "fee"] => AccountKey::RevenueFee,
            ["promotions"] => AccountKey::Promotions,
            ["refunds_payable"] => AccountKey::RefundsPayable,
            ["adjustments"] => AccountKey::Adjustments,
            ["rounding"] => AccountKey::Rounding,
            ["suspense"] => AccountKey::Suspense,
            _ => return Err(unknown()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_has_one_string_form_that_reads_back() {
        let (a, m, s) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let keys = [
            AccountKey::Wallet(a),
            AccountKey::Deposit(a),
            AccountKey::ArrearsReceivable(a),
            AccountKey::InTransit(m),
            AccountKey::OnMeter(m),
            AccountKey::Clearing(ClearingMethod::Cash { shift: s }),
            AccountKey::Clearing(ClearingMethod::Card),
            AccountKey::Clearing(ClearingMethod::Transfer),
            AccountKey::Clearing(ClearingMethod::Wechat),
            AccountKey::Clearing(ClearingMethod::Alipay),
            AccountKey::Clearing(ClearingMethod::Sandbox),
            AccountKey::RevenueEnergy,
            AccountKey::RevenueFee,
            AccountKey::Promotions,
            AccountKey::RefundsPayable,
            AccountKey::Adjustments,
            AccountKey::Rounding,
            AccountKey::Suspense,
        ];
        for key in keys {
            assert_eq!(key.to_string().parse::<AccountKey>(), Ok(key));
        }
        assert_eq!(format!("{}", AccountKey::Wallet(a)), format!("wallet:{a}"));
        for bad in [
            "wallet",
            "wallet:x",
            "clearing:cash",
            "clearing:bitcoin",
            "revenue",
            "",
        ] {
            assert!(bad.parse::<AccountKey>().is_err(), "{bad}");
        }
    }
}
