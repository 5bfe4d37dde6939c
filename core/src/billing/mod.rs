//! Billing (DESIGN.md: Money and the ledger): the double-entry ledger and its check
//! ([`ledger`]), shop accounts with their meters ([`accounts`]), and the counter — top-ups,
//! refunds (退电), reversals (冲正) and cashier shifts ([`counter`]). Money is posted here and
//! nowhere else; amounts are `kernel::money::AmountFen`, always checked.

pub mod ledger;

#[cfg(feature = "db")]
pub mod accounts;
#[cfg(feature = "db")]
pub mod counter;
