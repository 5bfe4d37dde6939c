//! `powertab demo`: the Quick start. Migrates the database, makes sure a demo company exists with
//! one login for each role (and platform staff), prints the URL and the logins, and runs
//! everything in one process. Re-running it reuses what exists.

use crate::cli;
use crate::config::Config;
use powertab_core::auth::{Principal, Secret};
use powertab_core::kernel::names::SchemaName;
use powertab_core::tenancy::companies::{self, NewAdmin, NewCompany};
use powertab_core::tenancy::roles::{Right, Role};
use powertab_core::tenancy::users::{self, NewUser};
use powertab_core::{db, db::migrate};
use sqlx::PgPool;

/// The demo company's slug.
pub const DEMO_COMPANY: &str = "demo";
/// The password of every demo login (demo only; never for a real deployment).
pub const DEMO_PASSWORD: &str = "demo-pass-2026";

/// One demo login.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    pub company: &'static str,
    pub username: &'static str,
    pub role: Role,
}

pub const DEMO_LOGINS: [DemoLogin; 6] = [
    DemoLogin {
        company: "",
        username: "platform",
        role: Role::PlatformAdmin,
    },
    DemoLogin {
        company: "",
        username: "support",
        role: Role::PlatformSupport,
    },
    DemoLogin {
        company: DEMO_COMPANY,
        username: "admin",
        role: Role::CompanyAdmin,
    },
    DemoLogin {
        company: DEMO_COMPANY,
        username: "operator",
        role: Role::Operator,
    },
    DemoLogin {
        company: DEMO_COMPANY,
        username: "auditor",
        role: Role::Auditor,
    },
    DemoLogin {
        company: DEMO_COMPANY,
        username: "13800138000",
        role: Role::ShopTenant,
    },
];

/// Creates what the demo needs, idempotently.
pub async fn prepare(pool: &PgPool) -> anyhow::Result<()> {
    migrate::migrate_all(pool).await?;
    for login in DEMO_LOGINS.iter().filter(|l| l.role.is_platform()) {
        // An existing user keeps its password; the error for a taken username is expected.
        let _ = companies::create_platform_user(
            pool,
            login.username,
            login.username,
            DEMO_PASSWORD,
            login.role,
            false,
        )
        .await;
    }
    let actor = Principal::system("demo", powertab_core::kernel::clock::system());
    let company = match companies::find_by_slug(pool, DEMO_COMPANY).await? {
        Some(company) => company,
        None => {
            let input = NewCompany {
                slug: DEMO_COMPANY.into(),
                name: "演示广场 Demo Plaza".into(),
                ..NewCompany::default()
            };
            companies::create(pool, &actor, &input).await?
        }
    };
    let schema = SchemaName::for_company(company.id);
    let exists: bool = {
        let mut tx = db::begin_in(pool, &schema).await?;
        sqlx::query_scalar("select exists (select 1 from users)")
            .fetch_one(&mut *tx)
            .await?
    };
    if exists {
        return Ok(());
    }
    let admin = NewAdmin {
        username: "admin".into(),
        display_name: "物业管理员".into(),
        password: DEMO_PASSWORD.into(),
    };
    companies::create_admin(pool, &actor, company.id, &admin).await?;
    let mut tx = db::begin_in(pool, &schema).await?;
    let mut admin_actor = actor.clone();
    admin_actor.company = powertab_core::auth::load_company(&mut tx, company.id).await?;
    for (username, display_name, role, rights) in [
        (
            "operator",
            "收费员",
            Role::Operator,
            vec![Right::TopUp, Right::Refund, Right::TripClose, Right::Export],
        ),
        ("auditor", "审计", Role::Auditor, vec![]),
        ("13800138000", "一楼101 奶茶店", Role::ShopTenant, vec![]),
    ] {
        let input = NewUser {
            username: username.into(),
            display_name: display_name.into(),
            phone: if role == Role::ShopTenant {
                username.into()
            } else {
                String::new()
            },
            role,
            password: DEMO_PASSWORD.into(),
            rights,
            building_ids: vec![],
        };
        users::create(&mut tx, &admin_actor, &input).await?;
    }
    // Demo logins skip the forced first-login password change.
    sqlx::query("update users set must_change_password = false")
        .execute(&mut *tx)
        .await?;
    seed_property(&mut tx, &admin_actor).await?;
    tx.commit().await?;
    Ok(())
}

/// What the demo company lets its tenants do: sandbox payments (what a platform admin switches on
/// per company; `powertab demo` is that admin here; it moves no real money), and ¥20 of
/// emergency credit for a day granted by the tenant.
pub async fn show_tenant_features(pool: &PgPool, company_id: i64) -> anyhow::Result<()> {
    sqlx::query("update control.company set sandbox_payments = true where id = $1")
        .bind(company_id)
        .execute(pool)
        .await?;
    let mut tx = db::begin_in(pool, &SchemaName::for_company(company_id)).await?;
    sqlx::query("update settings set tenant_emergency_fen = 2000, tenant_emergency_hours = 24")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Once shop 101's simulated meter has been read, opens the shop's account for the demo tenant
/// (registered phone 13800138000, linked to their login) with ¥30 on it, unless the shop has an
/// account already. Runs in the background: the first reading takes a poll cycle.
async fn open_tenant_account(pool: PgPool, company_id: i64) {
    if let Err(e) = try_open_tenant_account(&pool, company_id).await {
        tracing::warn!(error = %e, "the demo tenant's account was not opened");
    }
}

pub async fn try_open_tenant_account(pool: &PgPool, company_id: i64) -> anyhow::Result<()> {
    use powertab_core::billing::accounts::{self, OpenAccount, OpeningMeter};
    use powertab_core::billing::counter::{self, CounterInput, CounterMethod};
    use powertab_core::kernel::money::AmountFen;
    let schema = SchemaName::for_company(company_id);
    let mut actor = Principal::system("demo", powertab_core::kernel::clock::system());
    for _ in 0..120 {
        let mut tx = db::begin_in(pool, &schema).await?;
        let found: Option<(uuid::Uuid, uuid::Uuid, bool)> = sqlx::query_as(
            "select s.id, m.id, exists (select 1 from shop_accounts a where a.shop_id = s.id
                                         and a.state <> 'closed')
             from shops s join meters m on m.shop_id = s.id
             join meter_latest l on l.meter_id = m.id where s.number = '101' limit 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        match found {
            Some((_, _, true)) => return Ok(()),
            Some((shop, meter, false)) => {
                actor.company = powertab_core::auth::load_company(&mut tx, company_id).await?;
                let input = OpenAccount {
                    shop_id: shop,
                    holder_name: "张三".into(),
                    holder_phone: "13800138000".into(),
                    meters: vec![OpeningMeter {
                        meter_id: meter,
                        manual_energy_wh: None,
                        accept_remaining_fen: None,
                    }],
                    deposit_fen: AmountFen::ZERO,
                    deposit_method: None,
                    opening_credit_fen: AmountFen::ZERO,
                };
                let account = accounts::open(&mut tx, &actor, &input, "demo-tenant-open").await?;
                accounts::link_username(&mut tx, &actor, account.id, "13800138000").await?;
                let top_up = CounterInput {
                    amount_fen: AmountFen::from_fen(3_000),
                    method: CounterMethod::Card,
                    reason: String::new(),
                    meter_id: None,
                };
                counter::top_up(&mut tx, &actor, account.id, &top_up, "demo-tenant-top-up").await?;
                tx.commit().await?;
                tracing::info!(account = %account.id, "the demo tenant's account is open");
                return Ok(());
            }
            None => {
                drop(tx);
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
    anyhow::bail!("shop 101's meter was not read within four minutes")
}

/// A small mall: one building, two floors, six shops, a TOU tariff, a DTU with a Modbus bus of
/// Acrel meters for the first floor and an MQTT gateway for the second. Loaded through the same
/// import code a company uses.
async fn seed_property(
    tx: &mut sqlx::PgConnection,
    actor: &powertab_core::auth::Principal,
) -> anyhow::Result<()> {
    use powertab_core::import::{self, ImportKind};
    let csv = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    };
    let shops = "building,floor,number,name,area_m2,status\n\
演示广场,1F,101,奶茶店,35,occupied\n演示广场,1F,102,便利店,60,occupied\n演示广场,1F,103,花店,28,occupied\n\
演示广场,2F,201,服装店,120,occupied\n演示广场,2F,202,书店,90,occupied\n演示广场,2F,203,,75,vacant\n";
    let gateways = "identity,name,kind,registration,heartbeat,heartbeat_is_hex,bus,protocol\n\
demo-dtu-01,演示广场配电房,dtu,DEMO-DTU-01,FE,true,1,modbus_rtu\n\
demo-mqtt-01,演示广场二楼4G网关,mqtt,,,,1,modbus_rtu\n";
    let plan = powertab_core::tariff::plans::NewPlan {
        name: "商铺分时电价".into(),
        description: "峰谷平".into(),
        version: serde_json::from_value(serde_json::json!({
            "effective": "2020-01-01",
            "prices": {"peak": 14800, "flat": 8000, "valley": 3200},
            "seasons": [{"from": [1, 1], "to": [12, 31], "holiday": null, "workday": {"switches": [
                {"minute": 0, "period": "valley"}, {"minute": 480, "period": "flat"},
                {"minute": 1080, "period": "peak"}, {"minute": 1320, "period": "valley"}]}}]
        }))?,
    };
    powertab_core::tariff::plans::create(tx, actor, &plan).await?;
    let mut meters =
        String::from("gateway,bus,model,address,meter_number,building,shop_number,tariff_plan\n");
    for (i, shop) in ["101", "102", "103", "201", "202", "203"]
        .iter()
        .enumerate()
    {
        // The first floor hangs on the DTU, the second on the MQTT gateway.
        let (gateway, address) = if i < 3 {
            ("demo-dtu-01", i + 1)
        } else {
            ("demo-mqtt-01", i - 2)
        };
        let number = i + 1;
        meters.push_str(&format!(
            "{gateway},1,dtsy1352,{address},20261125{number:04},演示广场,{shop},商铺分时电价\n"
        ));
    }
    for (kind, text) in [
        (ImportKind::Shops, shops),
        (ImportKind::Gateways, gateways),
        (ImportKind::Meters, meters.as_str()),
    ] {
        let report = import::import(tx, actor, kind, &csv(text), false).await?;
        anyhow::ensure!(report.committed, "demo {kind:?}: {:?}", report.errors);
    }
    Ok(())
}

/// Runs the demo until stopped.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    if config.jwt_secret.is_none() {
        // A fresh key per run: restarting the demo signs everybody out, which is fine for a demo.
        config.jwt_secret = Some(Secret::new(
            powertab_core::auth::new_csrf_token() + &powertab_core::auth::new_csrf_token(),
        ));
    }
    if config.secret_keys.is_none() {
        // infra/demo.sh keeps one in .local/secret-keys; run by hand, a key per run (secrets
        // stored in an earlier run then no longer open).
        config.secret_keys = Some(Secret::new(
            powertab_core::kernel::secrets::Keyring::new_key_entry("demo"),
        ));
    }
    if config.ingest.gateway_secret.is_none() {
        // Also per run: the demo's MQTT gateways are simulated with whatever it derives, and
        // ingest provisions the broker again at start.
        config.ingest.gateway_secret = Some(Secret::new(
            powertab_core::auth::new_csrf_token() + &powertab_core::auth::new_csrf_token(),
        ));
    }
    if config.sandbox_payment_key.is_none() {
        // The sandbox payment provider, for the demo company only (DESIGN.md: Sandbox payments):
        // a key per run, as above.
        config.sandbox_payment_key = Some(Secret::new(
            powertab_core::auth::new_csrf_token() + &powertab_core::auth::new_csrf_token(),
        ));
    }
    let pool = db::connect(config.database_url()?, 5).await?;
    prepare(&pool).await?;
    // The demo building's DTU and meters, simulated, dial in to our own DTU port.
    let demo = companies::find_by_slug(&pool, DEMO_COMPANY)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo company is missing"))?;
    if config.ingest.dial_allow.is_empty() {
        // The demo's simulated gateways live on this machine.
        config.ingest.dial_allow = vec!["127.0.0.0/8".into()];
    }
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], config.ingest.dtu_listen.port()));
    let mqtt = crate::cli::mqtt_target(&config);
    let meters =
        powertab_ingest::sim::field::simulate_company(&pool, demo.id, target, mqtt.as_ref())
            .await?;
    show_tenant_features(&pool, demo.id).await?;
    tokio::spawn(open_tenant_account(pool.clone(), demo.id));
    let url = format!("http://{}", config.listen);
    println!("\nPowerTab demo is running at {url}\n");
    println!(
        "  {:<10} {:<14} {:<18} password",
        "company", "username", "role"
    );
    for login in DEMO_LOGINS {
        let company = if login.company.is_empty() {
            "(empty)"
        } else {
            login.company
        };
        println!(
            "  {company:<10} {:<14} {:<18} {DEMO_PASSWORD}",
            login.username,
            login.role.as_str()
        );
    }
    let mqtt_note = match &mqtt {
        Some(m) => format!(" or log in to the MQTT broker {}:{}", m.host, m.port),
        None => " (no MQTT broker or gateway secret: the MQTT gateway's meters stay unread)".into(),
    };
    println!(
        "\nShop tenants: open {url}/t/{DEMO_COMPANY}?meter=202611250001 on a phone (the meter's QR \
         code), sign in with 13800138000 and the SMS code (the sandbox channel keeps it: log in \
         as admin and open /notifications), and top up through the sandbox pay page."
    );
    println!(
        "\n{meters} simulated meters dial in to the DTU port {target}{mqtt_note}; their readings \
         appear within a minute (see /fleet).\nStop with Ctrl-C.\n"
    );
    cli::serve(config, true).await
}
