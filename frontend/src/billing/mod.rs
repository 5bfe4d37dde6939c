//! The counter (售电、退电): finding a shop's account, topping up and refunding, the cashier's
//! shift, and opening an account (开户).
//!
//! `views` holds the view types, `api` the server functions (what the browser calls), `server`
//! their server-side bodies (built with `ssr` only), `pages` the pages; the direction is
//! pages → api → server → views, so nothing imports back.

pub mod api;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;
pub mod views;

pub use api::*;
pub use views::*;
