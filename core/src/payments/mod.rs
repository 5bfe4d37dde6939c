//! Online payments (the shop-tenant issue): payment orders and their reconciliation with the
//! ledger. Provider HTTP clients and signature crypto do not live in core (no HTTP here): they go
//! in the server-side `providers` crate (README: Architecture); this module owns the order states
//! and how a verified paid notice becomes a ledger transaction ([`orders`]), the notification
//! inbox ([`inbox`]), the query of orders without a notice ([`query`]) and the sandbox provider's
//! signed notices ([`sandbox`]).

#[cfg(feature = "db")]
pub mod inbox;
#[cfg(feature = "db")]
pub mod orders;
#[cfg(feature = "db")]
pub mod query;
#[cfg(feature = "db")]
pub mod sandbox;
