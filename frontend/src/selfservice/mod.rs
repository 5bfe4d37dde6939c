//! Shop tenants on their phones (issue 14: Tenant experience): the QR landing page that signs a
//! phone in by SMS code (`/t/{company}`), the account home with balance, power, days left and
//! usage charts (`/my`), online top-up (`/my/top-up`) and the order's progress until it is
//! credited — and, for meter-side meters, delivered (`/my/orders/{id}`), and the tenant's
//! message preferences (`/my/preferences`). Phone first: every page fits a 360-px screen and
//! works with JavaScript off.
//!
//! `views` holds the view types, `api` the server functions, `server` their bodies (`ssr`
//! only), `pages` the pages; pages → api → server → views.

pub mod api;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;
pub mod views;

pub use api::*;
pub use views::*;
