//! The kernel: vocabulary every context shares and that depends on nothing of ours — errors,
//! money, names that must be valid, pages of lists, the clock, secrets at rest, and the Excel writer
//! every list exports through. Pure modules compile to WebAssembly for the frontend; `page` and `xlsx` need
//! the `db` feature.

pub mod clock;
pub mod error;
pub mod money;
pub mod names;
pub mod vocabulary;

#[cfg(feature = "db")]
pub mod page;
#[cfg(feature = "db")]
pub mod secrets;
#[cfg(feature = "db")]
pub mod xlsx;
