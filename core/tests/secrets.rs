//! Secrets at rest against a real PostgreSQL: stored sealed (never in plain), bound to the
//! company and name they were stored under, and re-wrapped under a new key by rotation while
//! the old key still opens what is not yet rotated.

use powertab_core::auth::Principal;
use powertab_core::db::{self, migrate};
use powertab_core::kernel::names::SchemaName;
use powertab_core::kernel::secrets::{self, Keyring};
use powertab_core::tenancy::companies::{self, NewCompany};
use powertab_testkit::TestDb;

async fn company(test: &TestDb, slug: &str) -> SchemaName {
    let company = companies::create(
        &test.pool,
        &Principal::system("test", powertab_core::kernel::clock::system()),
        &NewCompany {
            slug: slug.into(),
            name: slug.into(),
            ..NewCompany::default()
        },
    )
    .await
    .unwrap();
    SchemaName::for_company(company.id)
}

#[tokio::test]
async fn secrets_are_sealed_bound_to_their_place_and_rotated() {
    let test = TestDb::new().await;
    migrate::migrate_all(&test.pool).await.unwrap();
    let (acme, other) = (company(&test, "acme").await, company(&test, "other").await);
    let (k1, k2) = (Keyring::new_key_entry("k1"), Keyring::new_key_entry("k2"));
    let old = Keyring::parse(&k1, None).unwrap();

    let mut tx = db::begin_in(&test.pool, &acme).await.unwrap();
    secrets::put(&mut tx, &old, "master_key", b"0123456789abcdef")
        .await
        .unwrap();
    assert!(secrets::put(&mut tx, &old, "Bad Name", b"x").await.is_err());
    tx.commit().await.unwrap();
    let mut tx = db::begin_in(&test.pool, &SchemaName::control())
        .await
        .unwrap();
    secrets::put(&mut tx, &old, "sms.account", b"sms-secret")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // What is stored says which key, and nothing of the plaintext.
    let (key_id, sealed): (String, String) = sqlx::query_as(&format!(
        "select key_id, sealed from {}.secrets where name = 'master_key'",
        acme.as_str()
    ))
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!(key_id, "k1");
    assert!(sealed.starts_with("v1.k1.") && !sealed.contains("0123456789"));

    // Copied into another company's table, it does not open there.
    sqlx::query(&format!(
        "insert into {}.secrets (name, key_id, sealed) values ('master_key', 'k1', $1)",
        other.as_str()
    ))
    .bind(&sealed)
    .execute(&test.pool)
    .await
    .unwrap();
    let mut tx = db::begin_in(&test.pool, &other).await.unwrap();
    assert!(secrets::get(&mut tx, &old, "master_key").await.is_err());
    sqlx::query("delete from secrets")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Rotation: k2 is current, k1 still in the ring; afterwards everything is under k2 and
    // opens with k2 alone. Running it again finds nothing to do.
    let both = Keyring::parse(&format!("{k1},{k2}"), Some("k2")).unwrap();
    let report = secrets::rotate(&test.pool, &both).await.unwrap();
    assert_eq!((report.rewrapped, report.schemas), (2, 3));
    assert_eq!(
        secrets::rotate(&test.pool, &both).await.unwrap().rewrapped,
        0
    );
    let new = Keyring::parse(&k2, None).unwrap();
    let mut tx = db::begin_in(&test.pool, &acme).await.unwrap();
    let opened = secrets::get(&mut tx, &new, "master_key")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.expose(), b"0123456789abcdef");
    assert!(secrets::exists(&mut tx, "master_key").await.unwrap());
    assert!(secrets::get(&mut tx, &new, "missing")
        .await
        .unwrap()
        .is_none());
    // The old ring alone no longer opens it.
    assert!(secrets::get(&mut tx, &old, "master_key").await.is_err());
    drop(tx);
    let mut tx = db::begin_in(&test.pool, &SchemaName::control())
        .await
        .unwrap();
    assert_eq!(
        secrets::get(&mut tx, &new, "sms.account")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"sms-secret"
    );
}
