//! The remote-control pages (power follows money): the command centre (open, failed and stuck
//! commands, send again, cancel), batch control (preview a selection, confirm with its count,
//! live progress), a meter's command history on its page, and the notification settings.
//!
//! `views` holds the view types, `api` the server functions, `server` their server-side bodies
//! (`ssr` only), `pages` the pages; the direction is pages → api → server → views.

pub mod api;
pub mod meter_side_page;
pub mod notify_page;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;
pub mod views;

pub use api::*;
pub use views::*;
