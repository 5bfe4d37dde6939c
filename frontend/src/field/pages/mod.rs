//! The field pages: gateways and meters (`meters`), the live fleet, readings, registrations.

pub mod fleet;
pub mod meters;
pub mod readings;
pub mod registrations;
