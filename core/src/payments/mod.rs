//! Online payments (the shop-tenant issue): payment orders and their reconciliation with the
//! ledger. Provider HTTP clients and signature crypto do not live in core (no HTTP here): they go
//! in the server-side `providers` crate (README: Architecture); this module owns the order states
//! and how a confirmed payment becomes a ledger transaction. Empty until that issue lands.
