//! MQTT gateways (MQTT-GATEWAY.md): gateways poll their meters themselves and publish readings,
//! status and acknowledgements under `pt/{gw}/up/…`; PowerTab publishes commands under
//! `pt/{gw}/down/command`. [`payload`] validates what gateways send.

pub mod client;
pub mod payload;
