//! Billing (DESIGN.md: Money and the ledger): the double-entry ledger and its check
//! ([`ledger`]), shop accounts with their meters ([`accounts`]), the counter — top-ups, refunds
//! (退电), reversals (冲正) and cashier shifts ([`counter`]) — and the rating worker that turns
//! stored readings into charges on the wallet ([`rating`]), with the review of held readings
//! ([`review`]), fixed service fees ([`fees`]), maker-checker requests ([`approvals`]), the
//! daily close ([`books`]), invoice requests ([`invoices`]) and mid-account changes ([`changes`]). Money is posted here and nowhere
//! else; amounts are `kernel::money::AmountFen`, always checked.

pub mod ledger;

#[cfg(feature = "db")]
pub mod accounts;
#[cfg(feature = "db")]
pub mod approvals;
#[cfg(feature = "db")]
mod batch;
#[cfg(feature = "db")]
pub mod books;
#[cfg(feature = "db")]
pub mod changes;
#[cfg(feature = "db")]
pub(crate) mod client_keys;
#[cfg(feature = "db")]
pub mod closing;
#[cfg(feature = "db")]
pub mod counter;
#[cfg(feature = "db")]
pub mod fees;
#[cfg(feature = "db")]
pub mod invoices;
#[cfg(feature = "db")]
pub mod rating;
#[cfg(feature = "db")]
pub mod reversals;
#[cfg(feature = "db")]
pub mod review;
