//! The `powertab` binary's administrative subcommands, run as a person would on a fresh
//! database: migrate (twice: idempotent), onboard a company, create platform staff and a company
//! admin, list companies.

use powertab_core::auth::Secret;
use powertab_testkit::TestDb;
use std::process::Command;

pub(crate) fn powertab(db: &TestDb, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_powertab"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("POWERTAB_NEW_PASSWORD", "cli-pass-2026")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the powertab binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn administrators_set_up_a_platform_from_the_command_line() {
    let db = TestDb::new().await;
    let (ok, out) = powertab(&db, &["migrate"]);
    let all_control: Vec<String> = powertab_core::db::migrate::CONTROL
        .iter()
        .map(|m| m.version.to_string())
        .collect();
    let applied = format!("control: applied [{}]", all_control.join(", "));
    assert!(ok && out.contains(&applied), "{out}");
    let (ok, out) = powertab(&db, &["migrate"]);
    assert!(ok && out.contains("control: up to date"), "{out}");

    let (ok, out) = powertab(
        &db,
        &[
            "company",
            "create",
            "--slug",
            "wanda",
            "--name",
            "万达广场",
            "--max-operators",
            "3",
        ],
    );
    assert!(ok && out.contains("created company wanda"), "{out}");
    let (ok, out) = powertab(
        &db,
        &["company", "create", "--slug", "Bad Slug", "--name", "x"],
    );
    assert!(!ok && out.contains("slug"), "a clear error: {out}");

    let (ok, out) = powertab(
        &db,
        &[
            "user",
            "create",
            "--username",
            "ops",
            "--role",
            "platform_admin",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = powertab(
        &db,
        &[
            "user",
            "create",
            "--company",
            "wanda",
            "--username",
            "boss",
            "--role",
            "company_admin",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = powertab(
        &db,
        &[
            "user",
            "create",
            "--company",
            "nope",
            "--username",
            "boss",
            "--role",
            "company_admin",
        ],
    );
    assert!(!ok && out.contains("no company nope"), "{out}");

    let (ok, out) = powertab(&db, &["company", "list"]);
    assert!(
        ok && out.contains("wanda") && out.contains("active"),
        "{out}"
    );
    let (ok, out) = powertab(&db, &["migrate"]);
    assert!(
        ok && out.contains("c_1: up to date"),
        "company schemas are migrated too: {out}"
    );

    // The admin created from the command line must change the initial password first.
    let must_change: bool =
        sqlx::query_scalar("select must_change_password from c_1.users where username = 'boss'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(must_change);
}

#[tokio::test]
async fn the_demo_prepares_a_property_with_every_role_and_can_run_again() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("first run");
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("second run reuses what exists");
    let shops: i64 = sqlx::query_scalar("select count(*) from c_1.shops")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let meters: i64 = sqlx::query_scalar(
        "select count(*) from c_1.meters where tariff_plan_id is not null and shop_id is not null",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((shops, meters), (6, 6));
    let config = crate::helpers::test_config(Default::default());
    let auth = config.auth().unwrap();
    for login in powertab_server::demo::DEMO_LOGINS {
        let input = powertab_core::auth::LoginInput {
            company: login.company.into(),
            username: login.username.into(),
            password: powertab_server::demo::DEMO_PASSWORD.into(),
        };
        let outcome = powertab_core::auth::login(&db.pool, &auth, &input, None)
            .await
            .expect(login.username);
        assert_eq!(outcome.role, login.role);
        assert!(!outcome.must_change_password);
    }
}

/// The demo's field (`demo::prepare` first, and whatever a test adds) simulated: its DTU buses
/// dial in to our DTU port (polled every `poll`), Modbus-TCP gateways on loopback are dialled,
/// its MQTT gateway (publishing every 15 s) logs in to a broker with dynamic security, as infra/services.sh starts it, with the
/// credential ingest provisioned there. The broker lives as long as the value returned, with
/// how many meters the DTUs and the MQTT gateway simulate.
pub(crate) async fn simulate_demo(
    db: &TestDb,
    poll: std::time::Duration,
) -> (powertab_testkit::broker::Broker, usize) {
    let broker = powertab_testkit::broker::Broker::with_dynamic_security().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (writer, _task) = powertab_ingest::writer::Writer::start(db.pool.clone());
    let config = powertab_ingest::dtu::DtuConfig {
        poll_interval: poll,
        ..Default::default()
    };
    // Commands reach the session that polls their meter's bus, as `powertab ingest` wires it.
    let dispatch = powertab_ingest::commands::Dispatch::default();
    tokio::spawn(powertab_ingest::commands::listen(
        db.pool.clone(),
        dispatch.clone(),
    ));
    tokio::spawn(powertab_ingest::dtu::serve_with(
        listener,
        db.pool.clone(),
        writer.clone(),
        config,
        dispatch.clone(),
    ));
    tokio::spawn(powertab_ingest::modbus_tcp::serve(
        db.pool.clone(),
        writer.clone(),
        poll,
        dispatch.clone(),
        powertab_ingest::dial_policy::DialPolicy::new(&["127.0.0.0/8".to_owned()]).unwrap(),
    ));
    let (username, password) = broker.admin.clone().unwrap();
    let admin = powertab_ingest::mqtt::client::MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        client_id: "powertab-demo-test".into(),
        username,
        password,
    };
    // Readings come in through a least-privilege login that provisioning creates.
    let ingest = powertab_ingest::mqtt::provision::IngestLogin {
        username: "powertab-ingest".into(),
        password: "demo-test-ingest-password".into(),
    };
    let mqtt = powertab_ingest::mqtt::client::MqttConfig {
        username: ingest.username.clone(),
        password: ingest.password.clone(),
        ..admin.clone()
    };
    let secret = Secret::new(crate::helpers::TEST_GATEWAY_SECRET);
    tokio::spawn(powertab_ingest::mqtt::provision::run(
        admin,
        ingest,
        db.pool.clone(),
        secret.clone(),
    ));
    tokio::spawn(powertab_ingest::mqtt::client::serve(
        mqtt,
        db.pool.clone(),
        writer,
        dispatch,
    ));
    let mqtt_target = powertab_ingest::sim::field::MqttTarget {
        host: "127.0.0.1".into(),
        port: broker.port,
        secret,
    };
    let simulated =
        powertab_ingest::sim::field::simulate_company(&db.pool, 1, target, Some(&mqtt_target))
            .await
            .expect("simulated field");
    (broker, simulated)
}

#[tokio::test]
async fn the_demo_building_is_simulated_and_every_meter_is_read() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let (_broker, simulated) = simulate_demo(&db, std::time::Duration::from_millis(500)).await;
    assert_eq!(simulated, 6);
    let read_by = |kind: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from c_1.meter_latest l join c_1.meters m on m.id = l.meter_id
                 join c_1.buses b on b.id = m.bus_id join c_1.gateways g on g.id = b.gateway_id
                 where g.kind = $1",
            )
            .bind(kind)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let all_read = powertab_testkit::wait_until(std::time::Duration::from_secs(40), || async {
        read_by("dtu").await == 3 && read_by("mqtt").await == 3
    })
    .await;
    assert!(
        all_read,
        "every demo meter has a reading: {} by the DTU, {} by MQTT",
        read_by("dtu").await,
        read_by("mqtt").await
    );
}

/// The demo shows the tenant's side: its company takes sandbox payments, and once shop 101's
/// meter is read the shop's account is open for the demo tenant (linked, ¥30 on it) — once,
/// however often the demo starts.
#[tokio::test]
async fn the_demo_opens_the_tenants_account_once_its_meter_is_read() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    powertab_server::demo::show_tenant_features(&db.pool, 1)
        .await
        .unwrap();
    let sandbox: bool =
        sqlx::query_scalar("select sandbox_payments from control.company where id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(sandbox);
    let _field = simulate_demo(&db, std::time::Duration::from_millis(500)).await;
    for _ in 0..2 {
        powertab_server::demo::try_open_tenant_account(&db.pool, 1)
            .await
            .unwrap();
    }
    let accounts: Vec<(String, String, i64)> = sqlx::query_as(
        "select a.holder_phone, u.username,
                (select coalesce(sum(e.amount_fen), 0)::bigint from c_1.ledger_entries e
                 where e.account_key = 'wallet:' || a.id)
         from c_1.shop_accounts a join c_1.account_users au on au.account_id = a.id
         join c_1.users u on u.id = au.user_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        accounts,
        vec![("13800138000".to_owned(), "13800138000".to_owned(), 3_000)]
    );
    let (ok, out) = powertab(&db, &["ledger", "check"]);
    assert!(ok, "{out}");
}

/// `powertab readings rebuild` re-classifies stored readings of every company (here: a meter
/// stuck behind a reset under the older rule) and says what it did.
#[tokio::test]
async fn readings_rebuild_repairs_every_company_from_the_command_line() {
    let db = TestDb::new().await;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let meter: uuid::Uuid = sqlx::query_scalar("select id from c_1.meters order by id limit 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
    for (s, wh, flag) in [
        (0, 1_000, None),
        (30, 0, Some("reset")),
        (60, 10, Some("reset")),
    ] {
        sqlx::query(
            "insert into c_1.readings (meter_id, read_at, energy_wh, flag) values ($1, $2, $3, $4)",
        )
        .bind(meter)
        .bind(t0 + chrono::Duration::seconds(s))
        .bind(wh)
        .bind(flag)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let (ok, out) = powertab(&db, &["readings", "rebuild"]);
    assert!(ok && out.contains("readings re-classified"), "{out}");
    let counted: Option<i64> = sqlx::query_scalar(
        "select counted_wh from c_1.readings where meter_id = $1 and energy_wh = 10",
    )
    .bind(meter)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        counted,
        Some(10),
        "the reading after the reset counts again"
    );
}

/// Key rotation as an operator runs it: make a key, seal with the old one, rotate under the
/// new one; an unconfigured ring is a clear error.
#[tokio::test]
async fn secrets_are_rotated_from_the_command_line() {
    let db = TestDb::new().await;
    let run = |keys: Option<&str>, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_powertab"));
        command
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .env_remove("POWERTAB_SECRET_KEYS");
        if let Some(keys) = keys {
            command.env("POWERTAB_SECRET_KEYS", keys);
        }
        let output = command.output().expect("the powertab binary runs");
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (ok, k1) = run(None, &["secrets", "new-key", "2026-11"]);
    assert!(ok && k1.starts_with("2026-11:"), "{k1}");
    let (_, k2) = run(None, &["secrets", "new-key", "2026-12"]);
    assert!(!run(None, &["secrets", "new-key", "bad id"]).0);
    let (ok, out) = run(None, &["secrets", "rotate"]);
    assert!(!ok && out.contains("POWERTAB_SECRET_KEYS"), "{out}");

    powertab_core::db::migrate::migrate_all(&db.pool)
        .await
        .unwrap();
    let old = powertab_core::kernel::secrets::Keyring::parse(&k1, None).unwrap();
    let mut tx = powertab_core::db::begin_in(
        &db.pool,
        &powertab_core::kernel::names::SchemaName::control(),
    )
    .await
    .unwrap();
    powertab_core::kernel::secrets::put(&mut tx, &old, "sms.account", b"s3cret")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (ok, out) = run(Some(&format!("{k1},{k2}")), &["secrets", "rotate"]);
    assert!(
        ok && out.contains("re-wrapped 1 secrets under key 2026-12"),
        "{out}"
    );
    let key_id: String =
        sqlx::query_scalar("select key_id from control.secrets where name = 'sms.account'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(key_id, "2026-12");
}

#[tokio::test]
async fn the_ledger_check_reports_every_company_and_fails_on_a_violation() {
    let db = TestDb::new().await;
    let (ok, out) = powertab(
        &db,
        &["company", "create", "--slug", "mall", "--name", "Mall"],
    );
    assert!(ok, "{out}");
    let (ok, out) = powertab(&db, &["ledger", "check"]);
    assert!(
        ok && out.contains("c_1: 0 transactions, 0 accounts, clean"),
        "{out}"
    );

    // One balanced cash adjustment, with cached balances that match.
    let shift = uuid::Uuid::now_v7();
    let drawer = format!("clearing:cash:{shift}");
    let mut tx = db.pool.begin().await.unwrap();
    for (key, class, balance) in [
        (drawer.as_str(), "clearing_cash", -100i64),
        ("adjustments", "adjustments", 100),
    ] {
        sqlx::query("insert into c_1.ledger_accounts (key, class, balance_fen, entry_count) values ($1, $2, $3, 1)")
            .bind(key)
            .bind(class)
            .bind(balance)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let txn = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into c_1.ledger_transactions (id, kind, idempotency_key, request_hash, event_at, booked_on, actor)
         values ($1, 'adjustment', 'cli-test', '', now(), current_date, 'test')",
    )
    .bind(txn)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into c_1.ledger_entries (txn_id, seq, account_key, amount_fen) values ($1, 0, $2, -100), ($1, 1, 'adjustments', 100)",
    )
    .bind(txn)
    .bind(&drawer)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (ok, out) = powertab(&db, &["ledger", "check", "--company", "mall"]);
    assert!(
        ok && out.contains("c_1: 1 transactions, 2 accounts, clean"),
        "{out}"
    );

    // A cached balance that no longer matches its entries fails the check, naming the account.
    sqlx::query("update c_1.ledger_accounts set balance_fen = 50 where key = $1")
        .bind(&drawer)
        .execute(&db.pool)
        .await
        .unwrap();
    let (ok, out) = powertab(&db, &["ledger", "check"]);
    assert!(
        !ok && out.contains("1 violations") && out.contains(&format!("account {drawer}")),
        "{out}"
    );
    let (ok, out) = powertab(&db, &["ledger", "check", "--company", "nosuch"]);
    assert!(!ok && out.contains("no company nosuch"), "{out}");
}
