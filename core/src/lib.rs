//! PowerTab's domain, shared by the server, the frontend and ingest.
//!
//! Without features this crate holds only plain types that also compile to WebAssembly for the
//! frontend: money, names that must be valid (`CompanySlug`, `Username`, …), roles and rights.
//! The `db` feature adds storage and the services built on it (tenancy, migrations, login,
//! companies, users, audit log, Excel export); server and ingest turn it on, and so does the
//! frontend's server-side build.

pub mod error;
pub mod money;
pub mod names;
pub mod profile;
pub mod rating;
pub mod roles;
pub mod tariff;

#[cfg(feature = "db")]
pub mod audit;
#[cfg(feature = "db")]
pub mod auth;
#[cfg(feature = "db")]
pub mod commands;
#[cfg(feature = "db")]
pub mod companies;
#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "db")]
pub mod field;
#[cfg(feature = "db")]
pub mod field_changes;
#[cfg(feature = "db")]
pub mod fleet;
#[cfg(feature = "db")]
pub mod gateway_credential;
#[cfg(feature = "db")]
pub mod import;
#[cfg(feature = "db")]
pub mod migrate;
#[cfg(feature = "db")]
pub mod page;
#[cfg(feature = "db")]
pub mod property;
#[cfg(feature = "db")]
pub mod registration;
#[cfg(feature = "db")]
pub mod settings;
#[cfg(feature = "db")]
pub mod spreadsheet;
#[cfg(feature = "db")]
pub mod tariffs;
#[cfg(feature = "db")]
pub mod users;
#[cfg(feature = "db")]
pub mod xlsx;

pub use error::{CoreError, CoreResult};
