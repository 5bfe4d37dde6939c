//! Simulating a company's whole configured field: every enabled DTU bus becomes a simulated DTU
//! with the configured registration (and port number), every enabled MQTT gateway a simulated
//! MQTT gateway logging in with its derived credential, every active Acrel or DL/T 645 meter on
//! them a simulated meter with a shop type picked from its address; DTUs dial `target` again
//! after any disconnect. Used by `powertab simulate` and the Quick start demo.

use super::dtu::{DtuFaults, SimBus, SimDtu};
use super::meter::{SimMeter, SimModel};
use super::mqtt_gateway::{SimMqttGateway, SimMqttMeter};
use crate::framing::dlt645;
use powertab_core::auth::Secret;
use powertab_core::field::credentials;
use powertab_core::kernel::names::SchemaName;
use powertab_core::tariff::profile::ShopType;
use sqlx::{PgPool, Row};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Pause before a simulated DTU dials again.
pub const REDIAL: Duration = Duration::from_secs(2);

/// A simulated meter for a configured one, or `None` for models the simulator lacks.
fn sim_meter(model: &str, address: &str, seed: usize) -> Option<SimMeter> {
    let sim_model = match model {
        "dtsy1352" => SimModel::Dtsy1352 {
            address: address.parse().ok()?,
        },
        "ddsy1352" => SimModel::Ddsy1352 {
            address: address.parse().ok()?,
        },
        "dlt645" => SimModel::Dlt645 {
            address: dlt645::address_bytes(address)?,
        },
        _ => return None,
    };
    let shop_type = ShopType::ALL[seed % ShopType::ALL.len()];
    // 20–140 kWh a day, and a register that has been running for a while.
    let daily_wh = 20_000 + (seed as i64 * 7_919 % 120_000);
    let energy_wh = 1_000_000 + seed as i64 * 123_450;
    Some(SimMeter::new(
        sim_model,
        shop_type,
        daily_wh,
        energy_wh / 10 * 10,
    ))
}

/// Where simulated MQTT gateways connect, and the platform secret their credentials are
/// derived from (as ingest provisions them).
#[derive(Debug, Clone)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    pub secret: Secret,
}

/// Starts simulated DTUs for every DTU bus of company `company_id`, dialling `target`, and,
/// with `mqtt`, simulated MQTT gateways for its MQTT gateways; returns how many meters are
/// simulated. They run until the process ends.
pub async fn simulate_company(
    pool: &PgPool,
    company_id: i64,
    target: SocketAddr,
    mqtt: Option<&MqttTarget>,
) -> anyhow::Result<usize> {
    let mut simulated = simulate_dtus(pool, company_id, target).await?;
    if let Some(mqtt) = mqtt {
        simulated += simulate_mqtt_gateways(pool, company_id, mqtt).await?;
    }
    Ok(simulated)
}

/// The MQTT gateways of company `company_id` as simulated gateways; how many meters they carry.
async fn simulate_mqtt_gateways(
    pool: &PgPool,
    company_id: i64,
    target: &MqttTarget,
) -> anyhow::Result<usize> {
    let schema = SchemaName::for_company(company_id);
    let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
    let gateways = sqlx::query(
        "select g.id, g.identity, d.mqtt_credential_gen from gateways g
         join control.gateway_directory d on d.gateway_id = g.id
         where g.kind = 'mqtt' and g.status = 'enabled' order by g.identity",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut simulated = 0;
    for gateway in gateways {
        let id: uuid::Uuid = gateway.try_get("id")?;
        let identity: String = gateway.try_get("identity")?;
        let rows = sqlx::query(
            "select b.number, m.model, m.address from meters m join buses b on b.id = m.bus_id
             where b.gateway_id = $1 and b.removed_at is null and m.status = 'active' order by b.number, m.address",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let mut meters = Vec::new();
        for row in rows {
            let address: String = row.try_get("address")?;
            let model: String = row.try_get("model")?;
            if let Some(meter) = sim_meter(&model, &address, simulated + meters.len()) {
                meters.push(SimMqttMeter {
                    bus: row.try_get("number")?,
                    addr: address,
                    meter,
                });
            }
        }
        simulated += meters.len();
        let gateway = SimMqttGateway {
            password: credentials::derive(
                &target.secret,
                id,
                &identity,
                gateway.try_get("mqtt_credential_gen")?,
            ),
            identity,
            meters,
            interval: Duration::from_secs(15),
        };
        tokio::spawn(gateway.run(target.host.clone(), target.port));
    }
    tx.commit().await?;
    Ok(simulated)
}

/// Simulated DTUs for every DTU bus of company `company_id`; how many meters they carry.
async fn simulate_dtus(
    pool: &PgPool,
    company_id: i64,
    target: SocketAddr,
) -> anyhow::Result<usize> {
    let schema = SchemaName::for_company(company_id);
    let mut tx = powertab_core::db::begin_in(pool, &schema).await?;
    let buses = sqlx::query(
        "select b.id, b.number, b.protocol, b.baud, b.parity, b.stop_bits, g.registration_hex, g.heartbeat_hex,
                (select count(*) from buses o where o.gateway_id = g.id and o.removed_at is null) as ports
         from buses b join gateways g on g.id = b.gateway_id
         where g.kind = 'dtu' and g.status = 'enabled' and b.removed_at is null order by g.identity, b.number",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut simulated = 0;
    for bus in buses {
        let meters = sqlx::query(
            "select model, address from meters where bus_id = $1 and status = 'active' order by address",
        )
        .bind(bus.try_get::<uuid::Uuid, _>("id")?)
        .fetch_all(&mut *tx)
        .await?;
        let sims: Vec<SimMeter> = meters
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                sim_meter(
                    m.try_get::<String, _>("model").ok()?.as_str(),
                    m.try_get::<String, _>("address").ok()?.as_str(),
                    simulated + i,
                )
            })
            .collect();
        simulated += sims.len();
        let mut registration = crate::framing::unhex(
            &bus.try_get::<Option<String>, _>("registration_hex")?
                .unwrap_or_default(),
        );
        let number: i32 = bus.try_get("number")?;
        // Multi-port DTUs name the port after the registration (see ingest::dtu).
        if bus.try_get::<i64, _>("ports")? > 1 || number != 1 {
            registration.extend_from_slice(number.to_string().as_bytes());
        }
        let parity_bits = u32::from(bus.try_get::<String, _>("parity")? != "N");
        let stop_bits = u32::try_from(bus.try_get::<i32, _>("stop_bits")?).unwrap_or(1);
        let sim_bus = SimBus {
            meters: sims,
            baud: u32::try_from(bus.try_get::<i32, _>("baud")?).unwrap_or(9600),
            bits_per_char: 9 + parity_bits + stop_bits,
            dlt645: bus.try_get::<String, _>("protocol")? == "dlt645",
        };
        let dtu = SimDtu {
            registration,
            heartbeat: crate::framing::unhex(
                &bus.try_get::<Option<String>, _>("heartbeat_hex")?
                    .unwrap_or_default(),
            ),
            heartbeat_every: Duration::from_secs(60),
            bus: Arc::new(Mutex::new(sim_bus)),
            faults: DtuFaults::default(),
        };
        tokio::spawn(dial_forever(dtu, target));
    }
    tx.commit().await?;
    Ok(simulated)
}

/// Keeps a simulated DTU connected to `target`.
pub async fn dial_forever(dtu: SimDtu, target: SocketAddr) {
    loop {
        match dtu.run(target).await {
            Ok(_) => tracing::debug!("simulated DTU disconnected; dialling again"),
            Err(e) => {
                tracing::debug!(error = %e, "simulated DTU could not connect; dialling again")
            }
        }
        tokio::time::sleep(REDIAL).await;
    }
}
