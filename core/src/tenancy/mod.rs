//! Tenancy (DESIGN.md: Tenancy, login and access): property companies and their schemas, the
//! people who work in them and their roles and rights, the actor a service acts for, the audit
//! log of what every actor did, and company settings. Roles are plain data (also in the wasm
//! build); the rest needs the `db` feature.

pub mod actor;
pub mod roles;
pub mod status;

pub use status::{CompanyStatus, UserStatus};

#[cfg(feature = "db")]
pub mod audit;
#[cfg(feature = "db")]
pub mod companies;
#[cfg(feature = "db")]
pub mod settings;
#[cfg(feature = "db")]
pub mod users;
