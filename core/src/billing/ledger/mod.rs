//! The double-entry ledger (DESIGN.md: Money and the ledger): the chart of accounts
//! ([`chart`]), the template of every kind of transaction ([`templates`]), posting — the one way
//! money moves ([`post`]) — and the check of every invariant over what is stored ([`check`]).
//! Append-only in the database (triggers refuse UPDATE, DELETE and TRUNCATE; migration
//! company/0015); a balance is the sum of an account's entries, cached under a row lock.

pub mod chart;
pub mod templates;

#[cfg(feature = "db")]
pub mod check;
#[cfg(feature = "db")]
pub mod post;

pub use chart::{AccountClass, AccountKey, ClearingMethod};
pub use templates::TxnKind;
