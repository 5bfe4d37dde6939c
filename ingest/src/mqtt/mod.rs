//! MQTT gateways (MQTT-GATEWAY.md): gateways poll their meters themselves and publish readings,
//! status and acknowledgements under `pt/{gw}/up/…`; PowerTab publishes commands under
//! `pt/{gw}/down/command`. [`payload`] validates what gateways send, [`client`] is PowerTab's
//! side of the conversation, and [`provision`] gives each gateway its broker login and topic ACL.

pub mod client;
pub mod payload;
pub mod provision;
