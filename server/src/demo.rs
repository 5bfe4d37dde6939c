//! `powertab demo`: the Quick start. Migrates the database, makes sure a demo company exists with
//! one login for each role (and platform staff), prints the URL and the logins, and runs
//! everything in one process. Re-running it reuses what exists.

use crate::cli;
use crate::config::Config;
use powertab_core::auth::Secret;
use powertab_core::companies::{self, NewAdmin, NewCompany};
use powertab_core::names::SchemaName;
use powertab_core::roles::{Right, Role};
use powertab_core::users::{self, NewUser};
use powertab_core::{db, migrate};
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
    let actor = companies::system_actor();
    let company = match companies::find_by_slug(pool, DEMO_COMPANY).await? {
        Some(company) => company,
        None => {
            let input = NewCompany {
                slug: DEMO_COMPANY.into(),
                name: "演示廣場(chǎng) Demo Plaza".into(),
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
        display_name: "物業(yè)管理員".into(),
        password: DEMO_PASSWORD.into(),
    };
    companies::create_admin(pool, &actor, company.id, &admin).await?;
    let mut tx = db::begin_in(pool, &schema).await?;
    let mut admin_actor = actor.clone();
    admin_actor.company = powertab_core::auth::load_company(&mut tx, company.id).await?;
    for (username, display_name, role, rights) in [
        (
            "operator",
            "收費(fèi)員",
            Role::Operator,
            vec![Right::TopUp, Right::Refund, Right::TripClose, Right::Export],
        ),
        ("auditor", "審計(jì)", Role::Auditor, vec![]),
        ("13800138000", "一樓101 奶茶店", Role::ShopTenant, vec![]),
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
    tx.commit().await?;
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
    let pool = db::connect(config.database_url()?, 5).await?;
    prepare(&pool).await?;
    pool.close().await;
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
    println!("\nStop with Ctrl-C.\n");
    cli::serve(config, true).await
}
