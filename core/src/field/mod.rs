//! The field (DESIGN.md: Ingest; DOMAIN.md: serial servers, DTUs and gateways): gateways of three
//! kinds, their RS485 buses and the meters on them as a company configures them; the history of
//! those changes; DTU registration rules; MQTT gateway credentials; the live fleet view; and the
//! rules that judge a reading (reset, jump, gap), shared by ingest and billing's review of held
//! readings. Everything but the reading rules needs the `db` feature.

pub mod readings;
pub mod vocabulary;

pub use vocabulary::{
    GatewayKind, GatewayStatus, MeterModel, MeterRole, MeterStatus, PrepaymentMode, Protocol,
};

#[cfg(feature = "db")]
pub mod changes;
#[cfg(feature = "db")]
pub mod credentials;
#[cfg(feature = "db")]
pub mod fleet;
#[cfg(feature = "db")]
mod gateways;
#[cfg(feature = "db")]
mod meters;
#[cfg(feature = "db")]
pub mod registration;

#[cfg(feature = "db")]
pub use gateways::*;
#[cfg(feature = "db")]
pub use meters::*;
