//! API tests: one binary for the whole server crate (faster to link). Every test starts the real
//! app on 127.0.0.1:0 against its own fresh database.

mod helpers;

mod auth;
mod companies;
mod isolation;
mod ops;
mod roles;
mod users;
