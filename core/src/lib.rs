//! PowerTab's domain, shared by the server, the frontend and ingest, laid out by context:
//!
//! | module | owns |
//! |---|---|
//! | [`kernel`] | errors, money, valid names, clock, pages, the Excel writer |
//! | [`db`] | the pool, company-scoped transactions, migrations |
//! | [`tenancy`] | companies, users, roles, the acting actor, audit log, settings |
//! | [`auth`] | login, tokens, the per-request principal |
//! | [`property`] | buildings → floors → shops |
//! | [`field`] | gateways, buses, meters, their history, registrations, fleet, reading rules |
//! | [`commands`] | the typed command queue meters are driven through |
//! | [`tariff`] | tariff plans, rating, consumption profiles |
//! | [`import`] | spreadsheet import of shops, gateways and meters |
//! | [`secure`] | the 3DES secure command (SECURE-COMMAND.md): keys, frames, acknowledgements |
//! | [`notify`] | notification channels (sandbox, Aliyun/Tencent SMS, WeChat), sending, delivery reports, operator alerts |
//! | [`billing`], [`payments`], [`reports`] | prepaid money (homes fixed, filled by their issues) |
//!
//! Without features this crate holds only plain types that also compile to WebAssembly for the
//! frontend (money, names, roles, tariff model and rating, reading rules, command vocabulary).
//! The `db` feature adds storage and the services built on it; server and ingest turn it on, and
//! so does the frontend's server-side build.

pub mod billing;
pub mod commands;
pub mod field;
pub mod kernel;
pub mod payments;
pub mod power;
pub mod reports;
pub mod tariff;
pub mod tenancy;

#[cfg(feature = "db")]
pub mod auth;
#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "db")]
pub mod import;
#[cfg(feature = "db")]
pub mod notify;
#[cfg(feature = "db")]
pub mod property;
#[cfg(feature = "db")]
pub mod secure;
#[cfg(feature = "db")]
pub mod selfservice;

pub use kernel::error::{CoreError, CoreResult};
