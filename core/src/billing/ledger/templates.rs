//! Transaction templates (DESIGN.md: "each kind of transaction has a template"): which accounts
//! a kind touches and with which signs. Posting checks a transaction against its template before
//! it is written, and `ledger check` checks every stored one again. Signs follow
//! [`super::chart`]: a top-up of X is `wallet:<a>` +X, `clearing:<method>` −X.

use super::chart::{AccountClass, AccountKey};
use crate::kernel::money::AmountFen;
use crate::vocabulary;

vocabulary! {
    /// What a ledger transaction is.
    pub enum TxnKind {
        /// Money in at the counter: wallet +, clearing −.
        TopUp = "top_up",
        /// Money out at the counter (退电): wallet −, clearing +.
        Refund = "refund",
        /// A correction (冲正) of a top-up or refund: its original's entries with opposite signs
        /// (cash in the shift of whoever posts it).
        Reversal = "reversal",
        /// Opening credit (from `promotions`): wallet +, promotions −.
        OpeningCredit = "opening_credit",
        /// A deposit taken (押金): deposit +, clearing −.
        DepositTaken = "deposit_taken",
        /// Charge lines posted: wallet −, revenue:energy +.
        ChargePosting = "charge_posting",
        /// A fixed service fee: wallet −, revenue:fee +.
        Fee = "fee",
        /// Meter-side: a purchase leaves the wallet: wallet −, in_transit +.
        Purchase = "purchase",
        /// Meter-side: the meter verified it: in_transit −, on_meter +.
        PurchaseVerified = "purchase_verified",
        /// Meter-side: an approved cancel: in_transit −, wallet +.
        PurchaseCancelled = "purchase_cancelled",
        /// Meter-side: a verified deduct: on_meter −, wallet +.
        DeductVerified = "deduct_verified",
        /// Meter-side: charge lines posted against the credit on the meter (the shadow
        /// balance): on_meter −, revenue:energy +.
        MeterCharge = "meter_charge",
        /// Meter-side close: what the shadow balance still holds leaves `on_meter` — the part
        /// an operator decided to return from an unreachable meter to the wallet, the rest
        /// (shadow − R) to `adjustments` (audited).
        MeterSettled = "meter_settled",
        /// Closing an account: rounding, the deposit back to the wallet, and the wallet to
        /// refunds payable or arrears receivable — the account's wallet and deposit end at 0.
        CloseOut = "close_out",
        /// Refunds payable paid out: refunds_payable −, clearing +.
        Payout = "payout",
        /// Arrears of a closed account collected: arrears_receivable +, clearing −.
        ArrearsCollected = "arrears_collected",
        /// Arrears written off with approval: arrears_receivable +, adjustments −.
        WriteOff = "write_off",
        /// An online payment credited: wallet +, clearing:<provider> −.
        OnlinePayment = "online_payment",
        /// An online payment for an account that closed meanwhile: refunds_payable +,
        /// clearing:<provider> − (paid back out, and an operator looks at it).
        OnlinePaymentClosed = "online_payment_closed",
        /// An online refund asked of the provider: wallet −, refunds_payable +.
        OnlineRefundRequested = "online_refund_requested",
        /// The provider refunded: refunds_payable −, clearing:<provider> +.
        OnlineRefundSucceeded = "online_refund_succeeded",
        /// The provider could not: refunds_payable −, wallet +.
        OnlineRefundFailed = "online_refund_failed",
        /// A payment that matches no order: suspense +, clearing:<provider> −.
        Suspense = "suspense",
        /// A correction of a shop's credit or a shift's counted cash, either sign: one of wallet
        /// or clearing:cash against adjustments.
        Adjustment = "adjustment",
    }
}

/// What a kind's entries must look like.
enum Template {
    /// Two entries of one amount X > 0: `plus` gets +X, `minus` gets −X.
    Pair {
        plus: AccountClass,
        minus: AccountClass,
    },
    /// Two entries of one amount, either sign: one of `either` against `against`.
    Either {
        either: &'static [AccountClass],
        against: AccountClass,
    },
    /// The original's entries negated (checked with the original in hand).
    Mirror,
    /// Several entries within `allowed`, the shop account's wallet and deposit ending at zero
    /// (checked with the balances in hand).
    CloseOut { allowed: &'static [AccountClass] },
}

fn template(kind: TxnKind) -> Template {
    use AccountClass as C;
    let pair = |plus, minus| Template::Pair { plus, minus };
    match kind {
        TxnKind::TopUp => pair(C::Wallet, C::ClearingCash),
        TxnKind::Refund => pair(C::ClearingCash, C::Wallet),
        TxnKind::Reversal => Template::Mirror,
        TxnKind::OpeningCredit => pair(C::Wallet, C::Promotions),
        TxnKind::DepositTaken => pair(C::Deposit, C::ClearingCash),
        TxnKind::ChargePosting => pair(C::RevenueEnergy, C::Wallet),
        TxnKind::Fee => pair(C::RevenueFee, C::Wallet),
        TxnKind::Purchase => pair(C::InTransit, C::Wallet),
        TxnKind::PurchaseVerified => pair(C::OnMeter, C::InTransit),
        TxnKind::PurchaseCancelled => pair(C::Wallet, C::InTransit),
        TxnKind::DeductVerified => pair(C::Wallet, C::OnMeter),
        TxnKind::MeterCharge => pair(C::RevenueEnergy, C::OnMeter),
        TxnKind::MeterSettled => Template::CloseOut {
            allowed: &[C::OnMeter, C::Wallet, C::Adjustments],
        },
        TxnKind::CloseOut => Template::CloseOut {
            allowed: &[
                C::Wallet,
                C::Deposit,
                C::Rounding,
                C::RevenueEnergy,
                C::RefundsPayable,
                C::ArrearsReceivable,
            ],
        },
        TxnKind::Payout => pair(C::ClearingCash, C::RefundsPayable),
        TxnKind::ArrearsCollected => pair(C::ArrearsReceivable, C::ClearingCash),
        TxnKind::WriteOff => pair(C::ArrearsReceivable, C::Adjustments),
        TxnKind::OnlinePayment => pair(C::Wallet, C::ClearingOther),
        TxnKind::OnlinePaymentClosed => pair(C::RefundsPayable, C::ClearingOther),
        TxnKind::OnlineRefundRequested => pair(C::RefundsPayable, C::Wallet),
        TxnKind::OnlineRefundSucceeded => pair(C::ClearingOther, C::RefundsPayable),
        TxnKind::OnlineRefundFailed => pair(C::Wallet, C::RefundsPayable),
        TxnKind::Suspense => pair(C::Suspense, C::ClearingOther),
        TxnKind::Adjustment => Template::Either {
            either: &[C::Wallet, C::ClearingCash],
            against: C::Adjustments,
        },
    }
}

/// Classes that stand for "clearing of any method" in a pair: counter kinds take cash, card or
/// transfer alike.
fn class_matches(wanted: AccountClass, actual: AccountClass) -> bool {
    wanted == actual || (wanted == AccountClass::ClearingCash && actual.is_clearing())
}

/// The shape every transaction has whatever its kind: at least two entries, none zero, summing
/// to exactly zero without overflow, each account once.
pub fn check_balanced(legs: &[(AccountKey, AmountFen)]) -> Result<(), String> {
    if legs.len() < 2 {
        return Err(format!(
            "{} entries; a transaction has at least two",
            legs.len()
        ));
    }
    let mut sum = AmountFen::ZERO;
    for (i, (key, amount)) in legs.iter().enumerate() {
        if *amount == AmountFen::ZERO {
            return Err(format!("a zero entry on {key}"));
        }
        if legs[..i].iter().any(|(k, _)| k == key) {
            return Err(format!("{key} appears twice"));
        }
        sum = sum
            .checked_add(*amount)
            .ok_or_else(|| "entries overflow".to_owned())?;
    }
    if sum != AmountFen::ZERO {
        return Err(format!("entries sum to {} fen, not 0", sum.fen()));
    }
    Ok(())
}

/// Checks `legs` of a transaction of `kind` against its template. `original` is the reversed
/// transaction's entries (for a reversal); `closing_balances` the wallet and deposit balances
/// after a close-out (both must be 0).
pub fn conforms(
    kind: TxnKind,
    legs: &[(AccountKey, AmountFen)],
    original: Option<(TxnKind, &[(AccountKey, AmountFen)])>,
) -> Result<(), String> {
    check_balanced(legs)?;
    match template(kind) {
        Template::Pair { plus, minus } => {
            let [(a, x), (b, y)] = legs else {
                return Err(format!("{kind} has two entries, not {}", legs.len()));
            };
            let (p, m) = if x.fen() > 0 {
                ((a, x), (b, y))
            } else {
                ((b, y), (a, x))
            };
            if !class_matches(plus, p.0.class()) || !class_matches(minus, m.0.class()) {
                return Err(format!(
                    "{kind} moves {} → {}, not {} → {}",
                    m.0.class().as_str(),
                    p.0.class().as_str(),
                    minus.as_str(),
                    plus.as_str()
                ));
            }
            same_shop_account(legs)
        }
        Template::Either { either, against } => {
            let [(a, _), (b, _)] = legs else {
                return Err(format!("{kind} has two entries, not {}", legs.len()));
            };
            let ok = |x: &AccountKey, y: &AccountKey| {
                either.iter().any(|c| *c == x.class()) && y.class() == against
            };
            if ok(a, b) || ok(b, a) {
                Ok(())
            } else {
                Err(format!(
                    "{kind} touches {} and {}",
                    a.class().as_str(),
                    b.class().as_str()
                ))
            }
        }
        Template::Mirror => {
            let Some((original_kind, original_legs)) = original else {
                return Err("a reversal without its original".into());
            };
            if !matches!(original_kind, TxnKind::TopUp | TxnKind::Refund) {
                return Err(format!("a reversal of a {original_kind}"));
            }
            mirrors(legs, original_legs)
        }
        Template::CloseOut { allowed } => {
            if let Some((key, _)) = legs.iter().find(|(k, _)| !allowed.contains(&k.class())) {
                return Err(format!("a close-out touches {key}"));
            }
            same_shop_account(legs)
        }
    }
}

/// All shop-account legs belong to one shop account.
fn same_shop_account(legs: &[(AccountKey, AmountFen)]) -> Result<(), String> {
    let mut accounts = legs.iter().filter_map(|(k, _)| k.shop_account());
    match accounts.next() {
        Some(first) if accounts.any(|other| other != first) => {
            Err("entries of two shop accounts in one transaction".into())
        }
        _ => Ok(()),
    }
}

/// `legs` are `original` negated, account by account; a cash entry may land in another shift.
fn mirrors(
    legs: &[(AccountKey, AmountFen)],
    original: &[(AccountKey, AmountFen)],
) -> Result<(), String> {
    if legs.len() != original.len() {
        return Err("a reversal has as many entries as its original".into());
    }
    for (key, amount) in original {
        let negated = amount
            .checked_neg()
            .ok_or_else(|| "entries overflow".to_owned())?;
        let found = legs.iter().any(|(k, a)| {
            *a == negated
                && (k == key
                    || (k.class() == AccountClass::ClearingCash
                        && key.class() == AccountClass::ClearingCash))
        });
        if !found {
            return Err(format!(
                "the reversal does not undo {} fen on {key}",
                amount.fen()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::chart::ClearingMethod;
    use super::*;
    use uuid::Uuid;

    fn fen(n: i64) -> AmountFen {
        AmountFen::from_fen(n)
    }

    #[test]
    fn a_top_up_moves_money_from_clearing_to_the_wallet_and_nothing_else() {
        let (a, shift) = (Uuid::now_v7(), Uuid::now_v7());
        let cash = AccountKey::Clearing(ClearingMethod::Cash { shift });
        let top_up = [(AccountKey::Wallet(a), fen(5000)), (cash, fen(-5000))];
        assert_eq!(conforms(TxnKind::TopUp, &top_up, None), Ok(()));
        let card = [
            (AccountKey::Wallet(a), fen(5000)),
            (AccountKey::Clearing(ClearingMethod::Card), fen(-5000)),
        ];
        assert_eq!(conforms(TxnKind::TopUp, &card, None), Ok(()));
        // The same entries are not a refund, and a top-up from revenue is not a top-up.
        assert!(conforms(TxnKind::Refund, &top_up, None).is_err());
        let from_revenue = [
            (AccountKey::Wallet(a), fen(5000)),
            (AccountKey::RevenueEnergy, fen(-5000)),
        ];
        assert!(conforms(TxnKind::TopUp, &from_revenue, None).is_err());
        // Unbalanced, zero, repeated or single entries are never a transaction.
        assert!(check_balanced(&[(AccountKey::Wallet(a), fen(5000)), (cash, fen(-4999))]).is_err());
        assert!(check_balanced(&[(AccountKey::Wallet(a), fen(0)), (cash, fen(0))]).is_err());
        assert!(check_balanced(&[(cash, fen(1)), (cash, fen(-1))]).is_err());
        assert!(check_balanced(&[(cash, fen(1))]).is_err());
        assert!(check_balanced(&[(cash, fen(i64::MAX)), (AccountKey::Wallet(a), fen(1))]).is_err());
    }

    #[test]
    fn a_reversal_undoes_exactly_its_original_of_the_counter() {
        let (a, s1, s2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let original = [
            (AccountKey::Wallet(a), fen(5000)),
            (
                AccountKey::Clearing(ClearingMethod::Cash { shift: s1 }),
                fen(-5000),
            ),
        ];
        let reversal = [
            (AccountKey::Wallet(a), fen(-5000)),
            (
                AccountKey::Clearing(ClearingMethod::Cash { shift: s2 }),
                fen(5000),
            ),
        ];
        let of = Some((TxnKind::TopUp, &original[..]));
        assert_eq!(conforms(TxnKind::Reversal, &reversal, of), Ok(()));
        let partial = [
            (AccountKey::Wallet(a), fen(-4000)),
            (
                AccountKey::Clearing(ClearingMethod::Cash { shift: s2 }),
                fen(4000),
            ),
        ];
        assert!(conforms(TxnKind::Reversal, &partial, of).is_err());
        assert!(conforms(TxnKind::Reversal, &reversal, None).is_err());
        assert!(conforms(
            TxnKind::Reversal,
            &reversal,
            Some((TxnKind::ChargePosting, &original[..]))
        )
        .is_err());
    }

    #[test]
    fn a_transaction_never_mixes_two_shops() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let legs = [
            (AccountKey::Wallet(a), fen(-100)),
            (AccountKey::Deposit(b), fen(100)),
        ];
        assert!(conforms(TxnKind::CloseOut, &legs, None).is_err());
    }
}
