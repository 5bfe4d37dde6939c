//! A simulated MQTT gateway (MQTT-GATEWAY.md): it logs in with its identity and credential,
//! leaves a last will, publishes its retained online status, reads its own meters every
//! `interval` and publishes their readings (at most 500 per message), and carries out commands
//! from `pt/{gw}/down/command`: `read_now` publishes a fresh reading, relay commands switch the
//! simulated relay, expired commands are answered `expired`, and what a simulated meter cannot do
//! is `rejected`. rumqttc reconnects by itself; the gateway runs until its task is dropped.

use super::meter::SimMeter;
use crate::mqtt::payload::{self, Ack, CommandMessage, GatewayReading};
use chrono::Utc;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use std::time::Duration;

/// A meter on one of the gateway's buses, with the address the gateway reports it by.
#[derive(Debug, Clone)]
pub struct SimMqttMeter {
    pub bus: i32,
    /// Modbus `"17"` or the 12-digit DL/T 645 address.
    pub addr: String,
    pub meter: SimMeter,
}

#[derive(Debug, Clone)]
pub struct SimMqttGateway {
    pub identity: String,
    pub password: String,
    pub meters: Vec<SimMqttMeter>,
    /// How often the gateway reads its meters and publishes.
    pub interval: Duration,
}

impl SimMqttGateway {
    fn topic(&self, kind: &str) -> String {
        format!("pt/{}/{kind}", self.identity)
    }

    /// Every meter's reading now.
    fn read_all(&mut self) -> Vec<GatewayReading> {
        let now = Utc::now();
        self.meters
            .iter_mut()
            .map(|m| {
                m.meter.advance(now);
                GatewayReading {
                    bus: m.bus,
                    addr: m.addr.clone(),
                    ts: now,
                    values: m.meter.values(),
                }
            })
            .collect()
    }

    /// Carries out `command`; the acknowledgement and, for `read_now`, the fresh reading.
    fn carry_out(&mut self, command: &CommandMessage) -> (Ack, Option<GatewayReading>) {
        let now = Utc::now();
        let mut ack = Ack {
            v: 1,
            id: command.id.clone(),
            status: "done".into(),
            relay: None,
            secure_ack: None,
            detail: String::new(),
        };
        if command.expires_at < now.timestamp_millis() {
            ack.status = "expired".into();
            return (ack, None);
        }
        let Some(m) = self
            .meters
            .iter_mut()
            .find(|m| m.bus == command.bus && m.addr == command.addr)
        else {
            ack.status = "failed".into();
            ack.detail = "no such meter on this gateway".into();
            return (ack, None);
        };
        m.meter.advance(now);
        // A secure frame goes to the meter unchanged and its acknowledgement comes back
        // (MQTT-GATEWAY.md); a reading right after carries the counters that verify it.
        if let Some(text) = command.secure.as_deref() {
            use base64::Engine;
            let engine = base64::engine::general_purpose::STANDARD;
            let (Ok(frame), Some(side)) = (engine.decode(text), m.meter.secure.as_mut()) else {
                ack.status = "failed".into();
                ack.detail = "the meter takes no secure frames".into();
                return (ack, None);
            };
            ack.secure_ack = Some(engine.encode(side.handle(&frame)));
            ack.relay = Some(
                if m.meter.relay_closed() {
                    "closed"
                } else {
                    "open"
                }
                .into(),
            );
            let reading = GatewayReading {
                bus: m.bus,
                addr: m.addr.clone(),
                ts: now,
                values: m.meter.values(),
            };
            return (ack, Some(reading));
        }
        let forced = match command.op.as_str() {
            "read_now" => {
                let reading = GatewayReading {
                    bus: m.bus,
                    addr: m.addr.clone(),
                    ts: now,
                    values: m.meter.values(),
                };
                return (ack, Some(reading));
            }
            "trip" | "keep_power_off" => Some(false),
            "close" | "keep_power_on" => Some(true),
            "release" => None,
            other => {
                ack.status = "rejected".into();
                ack.detail = format!("{other} is not simulated");
                return (ack, None);
            }
        };
        m.meter.forced_closed = forced;
        ack.relay = Some(
            if m.meter.relay_closed() {
                "closed"
            } else {
                "open"
            }
            .into(),
        );
        (ack, None)
    }

    /// Connects to the broker at `host`:`port` and runs until the task is dropped.
    pub async fn run(mut self, host: String, port: u16) {
        let mut options = MqttOptions::new(self.identity.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_credentials(self.identity.clone(), self.password.clone());
        options.set_max_packet_size(
            payload::MESSAGE_BYTES_MAX + 1024,
            payload::MESSAGE_BYTES_MAX + 1024,
        );
        options.set_last_will(LastWill::new(
            self.topic("up/status"),
            r#"{"v":1,"online":false}"#,
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut events) = AsyncClient::new(options, 100);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        loop {
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        let _ = client.try_subscribe(self.topic("down/command"), QoS::AtLeastOnce);
                        let online = r#"{"v":1,"online":true,"firmware":"powertab-sim"}"#;
                        let _ = client.try_publish(self.topic("up/status"), QoS::AtLeastOnce, true, online);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(command) = serde_json::from_slice::<CommandMessage>(&p.payload) else {
                            continue;
                        };
                        let (ack, reading) = self.carry_out(&command);
                        if let Some(reading) = reading {
                            for message in payload::readings_messages(&[reading]) {
                                let _ = client.try_publish(self.topic("up/reading"), QoS::AtLeastOnce, false, message);
                            }
                        }
                        let ack = serde_json::to_vec(&ack).unwrap_or_default();
                        let _ = client.try_publish(self.topic("up/ack"), QoS::AtLeastOnce, false, ack);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            tracing::debug!(gateway = %self.identity, error = %e, "simulated MQTT gateway lost its broker");
                        }
                        connected = false;
                        tokio::time::sleep(super::field::REDIAL).await;
                    }
                },
                _ = tick.tick(), if connected => {
                    let readings = self.read_all();
                    for message in payload::readings_messages(&readings) {
                        // A full queue means the broker is slow: this round is skipped, as a
                        // real gateway would keep it for later.
                        let _ = client.try_publish(self.topic("up/reading"), QoS::AtLeastOnce, false, message);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::meter::SimModel;
    use chrono::DateTime;
    use powertab_core::tariff::profile::ShopType;

    fn gateway() -> SimMqttGateway {
        let meter = SimMeter::new(
            SimModel::Dtsy1352 { address: 17 },
            ShopType::ALL[0],
            50_000,
            1_000_000,
        );
        SimMqttGateway {
            identity: "gw-1".into(),
            password: String::new(),
            meters: vec![SimMqttMeter {
                bus: 1,
                addr: "17".into(),
                meter,
            }],
            interval: Duration::from_secs(15),
        }
    }

    fn command(op: &str, addr: &str, expires_in_ms: i64) -> CommandMessage {
        CommandMessage {
            v: 1,
            id: format!("id-{op}"),
            bus: 1,
            addr: addr.into(),
            op: op.into(),
            expires_at: Utc::now().timestamp_millis() + expires_in_ms,
            secure: None,
        }
    }

    #[test]
    fn commands_are_carried_out_and_acknowledged() {
        let mut gw = gateway();
        let (ack, reading) = gw.carry_out(&command("read_now", "17", 60_000));
        assert_eq!(
            (ack.status.as_str(), ack.id.as_str()),
            ("done", "id-read_now")
        );
        assert_eq!(reading.map(|r| r.values.energy_wh), Some(1_000_000));
        let (ack, _) = gw.carry_out(&command("trip", "17", 60_000));
        assert_eq!(
            (ack.status.as_str(), ack.relay.as_deref()),
            ("done", Some("open"))
        );
        assert!(!gw.meters[0].meter.relay_closed());
        let (ack, _) = gw.carry_out(&command("release", "17", 60_000));
        assert_eq!(ack.relay.as_deref(), Some("closed"));
        assert_eq!(gw.carry_out(&command("trip", "17", -1)).0.status, "expired");
        assert_eq!(
            gw.carry_out(&command("trip", "18", 60_000)).0.status,
            "failed"
        );
        assert_eq!(
            gw.carry_out(&command("purchase", "17", 60_000)).0.status,
            "rejected"
        );
    }

    #[test]
    fn published_readings_parse_back_to_the_meter_values() {
        let mut gw = gateway();
        let readings = gw.read_all();
        let messages = payload::readings_messages(&readings);
        assert_eq!(messages.len(), 1);
        let (parsed, refused) = payload::parse_readings(messages[0].as_bytes()).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        let mut expected = readings[0].clone();
        // Gateways do not report the meter's own ratios, and times travel in milliseconds.
        expected.values.meter_ratios = None;
        expected.ts = DateTime::from_timestamp_millis(expected.ts.timestamp_millis()).unwrap();
        assert_eq!(parsed, vec![expected]);
    }

    #[test]
    fn a_secure_frame_reaches_the_meter_unchanged_and_its_acknowledgement_comes_back() {
        use base64::Engine;
        use powertab_core::secure::frame::{self, MeterKeys, MeterNumber, Order, SecureOp};
        let b64 = base64::engine::general_purpose::STANDARD;
        let km = [7u8; 16];
        let mut gw = gateway();
        gw.meters[0].meter = gw.meters[0]
            .meter
            .clone()
            .with_secure(crate::sim::secure_meter::SecureMeter::new("17", &km).unwrap());
        let keys = MeterKeys::from_meter_key(&km);
        let order = Order {
            op: SecureOp::Purchase,
            meter: MeterNumber::parse("17").unwrap(),
            sequence: 1,
            amount: 500,
            issued_at: 0,
            nonce: [1; 8],
        };
        let mut asked = command("purchase", "17", 60_000);
        asked.secure = Some(b64.encode(frame::build(&keys, &order)));
        let (ack, reading) = gw.carry_out(&asked);
        assert_eq!(ack.status, "done");
        let answer = b64.decode(ack.secure_ack.unwrap()).unwrap();
        let checked = frame::verify_ack(&keys, &order, &answer).unwrap();
        assert_eq!(
            (checked.status, checked.remaining_fen),
            (frame::AckStatus::Accepted, 500)
        );
        let counters = reading.unwrap().values.secure.unwrap();
        assert_eq!((counters.purchase_count, counters.remaining_fen), (1, 500));
        // A platform-side meter takes no frame.
        let mut plain = gateway();
        let (ack, _) = plain.carry_out(&asked);
        assert_eq!(ack.status, "failed");
    }
}
