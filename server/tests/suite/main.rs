//! The server's tests: one binary for the whole crate (faster to link). Every test starts the real
//! app on 127.0.0.1:0 against its own fresh database.

mod helpers;
mod import;
mod money;
mod money_books;
mod money_changes;
mod money_review;
mod money_tenants;

mod auth;
mod browser;
mod cli;
mod companies;
mod control;
mod crash;
mod field;
mod field_changes;
mod field_web;
mod fleet;
mod isolation;
mod meter_side;
mod notify;
mod ops;
mod payments;
mod power;
mod power_e2e;
mod property;
mod roles;
mod setup;
mod tenant;
mod users;
mod web;
