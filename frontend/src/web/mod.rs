//! What every context's pages and server functions share: the error a server function answers
//! with, kept form input and list pages, URL query helpers, and (server side) the one request
//! boundary and the redirect/flash plumbing of forms.

pub mod error;
pub mod query;
pub mod views;

#[cfg(feature = "ssr")]
pub mod boundary;
#[cfg(feature = "ssr")]
pub mod server;

pub use error::WebError;
pub use views::{KeptForm, PageView};
