//! A company's secure-command keys against a real PostgreSQL: the master key is made once even
//! when two first uses race, stored sealed; a rotation (platform admins only) gives new meters
//! the new version while commissioned meters keep theirs; a meter key export is for the
//! company's admins only, gives the KM the frames are built from, and is audited without it.

use powertab_core::auth::Principal;
use powertab_core::db::{self, migrate};
use powertab_core::kernel::names::SchemaName;
use powertab_core::kernel::secrets::Keyring;
use powertab_core::secure::frame::MeterKeys;
use powertab_core::secure::keys;
use powertab_core::tenancy::companies::{self, NewCompany};
use powertab_core::tenancy::roles::Role;
use powertab_testkit::TestDb;
use uuid::Uuid;

struct Company {
    test: TestDb,
    schema: SchemaName,
    scope: powertab_core::auth::CompanyScope,
    keyring: Keyring,
}

async fn company() -> Company {
    let test = TestDb::new().await;
    migrate::migrate_all(&test.pool).await.unwrap();
    let company = companies::create(
        &test.pool,
        &Principal::system("test", powertab_core::kernel::clock::system()),
        &NewCompany {
            slug: "acme".into(),
            name: "acme".into(),
            ..NewCompany::default()
        },
    )
    .await
    .unwrap();
    let schema = SchemaName::for_company(company.id);
    let mut conn = test.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, company.id)
        .await
        .unwrap()
        .unwrap();
    drop(conn);
    let keyring = Keyring::parse(&Keyring::new_key_entry("k1"), None).unwrap();
    Company {
        test,
        schema,
        scope,
        keyring,
    }
}

impl Company {
    fn person(&self, role: Role) -> Principal {
        let mut p = Principal::system("test", powertab_core::kernel::clock::system())
            .in_company(self.scope.clone());
        p.role = role;
        p.username = format!("{role:?}").to_lowercase();
        p
    }

    async fn meter(&self, number: &str) -> Uuid {
        let s = self.schema.as_str();
        let (gateway, bus, meter) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        sqlx::query(&format!(
            "insert into {s}.gateways (id, identity, kind, registration_hex, heartbeat_hex)
             values ($1, $2, 'dtu', $3, 'fe')"
        ))
        .bind(gateway)
        .bind(format!("gw-{number}"))
        .bind(format!("{number}ab"))
        .execute(&self.test.pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "insert into {s}.buses (id, gateway_id, number, protocol, baud, parity, stop_bits, gap_ms, timeout_ms)
             values ($1, $2, 1, 'modbus_rtu', 9600, 'N', 1, 20, 300)"
        ))
        .bind(bus)
        .bind(gateway)
        .execute(&self.test.pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "insert into {s}.meters (id, bus_id, model, address, meter_number, prepayment_mode)
             values ($1, $2, 'dtsy1352', '1', $3, 'meter')"
        ))
        .bind(meter)
        .bind(bus)
        .bind(number)
        .execute(&self.test.pool)
        .await
        .unwrap();
        meter
    }

    async fn keys_of(&self, meter: Uuid) -> MeterKeys {
        let mut tx = db::begin_in(&self.test.pool, &self.schema).await.unwrap();
        let (_, keys) = keys::meter_keys(&mut tx, &self.keyring, meter, "test")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        keys
    }
}

#[tokio::test]
async fn two_first_uses_at_once_make_one_master_key_stored_sealed() {
    let c = company().await;
    let meter = c.meter("202611250001").await;
    let (a, b) = tokio::join!(c.keys_of(meter), c.keys_of(meter));
    assert_eq!(a, b, "one key, one meter version");
    let s = c.schema.as_str();
    let versions: Vec<i32> =
        sqlx::query_scalar(&format!("select version from {s}.secure_master_keys"))
            .fetch_all(&c.test.pool)
            .await
            .unwrap();
    assert_eq!(versions, [1]);
    let (key_id, sealed): (String, String) = sqlx::query_as(&format!(
        "select key_id, sealed from {s}.secrets where name = 'secure.master.v1'"
    ))
    .fetch_one(&c.test.pool)
    .await
    .unwrap();
    assert_eq!(key_id, "k1");
    assert!(sealed.starts_with("v1.k1."), "sealed, naming its key");
}

#[tokio::test]
async fn a_rotation_gives_new_meters_the_new_key_and_old_ones_keep_theirs() {
    let c = company().await;
    let old_meter = c.meter("202611250001").await;
    let before = c.keys_of(old_meter).await;
    let mut tx = db::begin_in(&c.test.pool, &c.schema).await.unwrap();
    let refused = keys::rotate_master(&mut tx, &c.keyring, &c.person(Role::CompanyAdmin)).await;
    assert!(matches!(
        refused,
        Err(powertab_core::CoreError::Forbidden(_))
    ));
    let version = keys::rotate_master(&mut tx, &c.keyring, &c.person(Role::PlatformAdmin))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(c.keys_of(old_meter).await, before, "commissioned: keeps v1");
    // A new meter with the very same number elsewhere would get v2: different keys.
    let new_meter = c.meter("202611250002").await;
    let new_keys = c.keys_of(new_meter).await;
    let held: Vec<(Uuid, i32)> = sqlx::query_as(&format!(
        "select meter_id, key_version from {}.meter_secure order by key_version",
        c.schema.as_str()
    ))
    .fetch_all(&c.test.pool)
    .await
    .unwrap();
    assert_eq!(held, [(old_meter, 1), (new_meter, 2)]);
    assert_ne!(new_keys, before);
    let audited: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {}.audit_log where action = 'secure.master_key.rotate'",
        c.schema.as_str()
    ))
    .fetch_one(&c.test.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn only_the_company_admin_exports_a_meter_key_and_it_is_audited_without_the_key() {
    let c = company().await;
    let meter = c.meter("202611250001").await;
    let mut tx = db::begin_in(&c.test.pool, &c.schema).await.unwrap();
    for role in [Role::Operator, Role::PlatformAdmin, Role::Auditor] {
        let refused = keys::export_meter_key(&mut tx, &c.keyring, &c.person(role), meter).await;
        assert!(
            matches!(refused, Err(powertab_core::CoreError::Forbidden(_))),
            "{role:?}"
        );
    }
    let (version, km_hex) =
        keys::export_meter_key(&mut tx, &c.keyring, &c.person(Role::CompanyAdmin), meter)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(km_hex.len(), 32);
    let km: Vec<u8> = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&km_hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        MeterKeys::from_meter_key(&km.try_into().unwrap()),
        c.keys_of(meter).await,
        "the exported KM is the one the frames are built from"
    );
    let entries: Vec<String> = sqlx::query_scalar(&format!(
        "select coalesce(after::text, '') from {}.audit_log where action = 'secure.meter_key.export'",
        c.schema.as_str()
    ))
    .fetch_all(&c.test.pool)
    .await
    .unwrap();
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].contains(km_hex.as_str()), "{}", entries[0]);
    // Another company's meter id: not found here.
    let mut tx = db::begin_in(&c.test.pool, &c.schema).await.unwrap();
    let unknown = keys::export_meter_key(
        &mut tx,
        &c.keyring,
        &c.person(Role::CompanyAdmin),
        Uuid::now_v7(),
    )
    .await;
    assert!(matches!(
        unknown,
        Err(powertab_core::CoreError::NotFound(_))
    ));
}
