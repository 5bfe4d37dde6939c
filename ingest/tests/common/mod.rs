//! A company with a DTU, its buses and meters (and MQTT gateways), written straight into a fresh
//! test database; and the CPU-time reader the benchmarks print.
// Each test binary uses part of this helper.
#![allow(dead_code)]

use powertab_core::db::migrate;
use powertab_core::kernel::names::SchemaName;
use powertab_core::tenancy::companies::{self, NewCompany};
use powertab_testkit::TestDb;
use uuid::Uuid;

pub struct Field {
    pub db: TestDb,
    pub company_id: i64,
    pub schema: SchemaName,
    pub gateway_id: Uuid,
    /// (bus id, protocol) per bus number 1, 2, …
    pub buses: Vec<Uuid>,
}

impl Field {
    /// A company `slug` with DTU `identity` registering as `registration`, one bus per protocol.
    pub async fn new(slug: &str, identity: &str, registration: &[u8], protocols: &[&str]) -> Field {
        let db = TestDb::new().await;
        migrate::migrate_all(&db.pool).await.expect("migrations");
        let company = companies::create(
            &db.pool,
            &powertab_core::auth::Principal::system("test", powertab_core::kernel::clock::system()),
            &NewCompany {
                slug: slug.into(),
                name: slug.into(),
                ..NewCompany::default()
            },
        )
        .await
        .expect("company");
        let schema = SchemaName::for_company(company.id);
        let gateway_id = Uuid::now_v7();
        let hex: String = registration.iter().map(|b| format!("{b:02x}")).collect();
        sqlx::query(&format!(
            "insert into {s}.gateways (id, identity, kind, registration_hex, heartbeat_hex) values ($1, $2, 'dtu', $3, 'fe')",
            s = schema.as_str()
        ))
        .bind(gateway_id)
        .bind(identity)
        .bind(&hex)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
             values ($1, $2, $3, $4, 'dtu', 'enabled')",
        )
        .bind(identity)
        .bind(&hex)
        .bind(company.id)
        .bind(gateway_id)
        .execute(&db.pool)
        .await
        .unwrap();
        let mut buses = Vec::new();
        for (i, protocol) in protocols.iter().enumerate() {
            let id = Uuid::now_v7();
            let (baud, parity) = if *protocol == "dlt645" {
                (2400, "E")
            } else {
                (9600, "N")
            };
            sqlx::query(&format!(
                "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
                 values ($1, $2, $3, $4, $5, $6, 1, 20, 300)",
                s = schema.as_str()
            ))
            .bind(id)
            .bind(gateway_id)
            .bind(i as i32 + 1)
            .bind(protocol)
            .bind(baud)
            .bind(parity)
            .execute(&db.pool)
            .await
            .unwrap();
            buses.push(id);
        }
        Field {
            db,
            company_id: company.id,
            schema,
            gateway_id,
            buses,
        }
    }

    /// Adds a meter to bus `bus` (index); returns its id.
    pub async fn meter(&self, bus: usize, model: &str, address: &str, number: &str) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(&format!(
            "insert into {s}.meters (id, bus_id, model, address, meter_number) values ($1, $2, $3, $4, $5)",
            s = self.schema.as_str()
        ))
        .bind(id)
        .bind(self.buses[bus])
        .bind(model)
        .bind(address)
        .bind(number)
        .execute(&self.db.pool)
        .await
        .unwrap();
        id
    }

    /// An MQTT gateway `identity` (credential generation 1) with one Modbus bus and a DTSY-1352
    /// at each of `addresses`; its id and the meters' ids.
    pub async fn add_mqtt_gateway(&self, identity: &str, addresses: &[&str]) -> (Uuid, Vec<Uuid>) {
        let s = self.schema.as_str();
        let (gateway, bus) = (Uuid::now_v7(), Uuid::now_v7());
        sqlx::query(&format!(
            "insert into {s}.gateways (id, identity, kind) values ($1, $2, 'mqtt')"
        ))
        .bind(gateway)
        .bind(identity)
        .execute(&self.db.pool)
        .await
        .unwrap();
        sqlx::query(
            "insert into control.gateway_directory (identity, company_id, gateway_id, kind, status, mqtt_credential_gen)
             values ($1, $2, $3, 'mqtt', 'enabled', 1)",
        )
        .bind(identity)
        .bind(self.company_id)
        .bind(gateway)
        .execute(&self.db.pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
             values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 10, 400)"
        ))
        .bind(bus)
        .bind(gateway)
        .execute(&self.db.pool)
        .await
        .unwrap();
        let mut meters = vec![];
        for addr in addresses {
            let id = Uuid::now_v7();
            sqlx::query(&format!(
                "insert into {s}.meters (id, bus_id, model, address, meter_number) values ($1, $2, 'dtsy1352', $3, $4)"
            ))
            .bind(id)
            .bind(bus)
            .bind(addr)
            .bind(format!("{identity}-{addr}"))
            .execute(&self.db.pool)
            .await
            .unwrap();
            meters.push(id);
        }
        (gateway, meters)
    }
}

/// User + system CPU seconds of this process (for the benchmarks' figures).
pub fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
