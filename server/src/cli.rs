//! The `powertab` command line: one binary with subcommands (clap). `main` only parses, sets up
//! logging and calls [`run`].

use crate::app::{self, AppState};
use crate::config::Config;
use crate::demo;
use clap::{Args, Parser, Subcommand};
use powertab_core::auth::Principal;
use powertab_core::tenancy::companies::{self, NewCompany};
use powertab_core::tenancy::roles::Role;
use powertab_core::{db, db::migrate};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "powertab",
    version,
    about = "PowerTab: remote prepaid electricity for commercial buildings"
)]
pub struct Cli {
    /// Configuration file (TOML); defaults to ./powertab.toml when present.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API, the web app and the workers.
    Serve,
    /// Run the field side (gateway sessions, polling).
    Ingest,
    /// Run everything in one process.
    All,
    /// Prepare the database, create a demo company with a login for each role, and run everything.
    Demo,
    /// Upgrade the control schema and every company schema (idempotent).
    Migrate,
    /// Simulate a company's configured DTUs and meters, dialling in to an ingest DTU port.
    Simulate(SimulateArgs),
    /// Manage property companies.
    #[command(subcommand)]
    Company(CompanyCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Stored readings.
    #[command(subcommand)]
    Readings(ReadingsCommand),
    /// Secrets at rest.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The money ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Verify every ledger invariant (balanced transactions matching their templates, cached
    /// balances equal to their entries, closed accounts empty) for every company, or one; prints
    /// a report and exits non-zero on any violation.
    Check {
        /// Only this company (login slug).
        #[arg(long)]
        company: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a new random key-encryption key as `secret_keys` takes it (`id:base64`).
    NewKey {
        /// The key's id (1 to 32 letters, digits, - or _), e.g. 2026-12.
        id: String,
    },
    /// Re-wrap every stored secret (platform and companies) under the current key. Add the new
    /// key to `secret_keys`, make it current, restart, run this; then drop the old key. Safe to
    /// run while serving and to run again.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum ReadingsCommand {
    /// Re-classify every meter's stored readings with today's rules (every stored reading is the
    /// next one's baseline) and rebuild daily energy; repairs what the older rule wrote.
    /// Idempotent; run it once after upgrading.
    Rebuild,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The company (login slug) whose field is simulated.
    #[arg(long)]
    pub company: String,
    /// Ingest's DTU port to dial.
    #[arg(long, default_value = "127.0.0.1:9502")]
    pub target: std::net::SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum CompanyCommand {
    /// Onboard a company (its record and schema).
    Create(CompanyCreate),
    /// List companies.
    List,
}

#[derive(Debug, Args)]
pub struct CompanyCreate {
    /// Login slug, e.g. `wanda-plaza`.
    #[arg(long)]
    pub slug: String,
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "Asia/Shanghai")]
    pub time_zone: String,
    #[arg(long)]
    pub max_meters: Option<i32>,
    #[arg(long)]
    pub max_gateways: Option<i32>,
    #[arg(long)]
    pub max_operators: Option<i32>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a platform staff user, or a company admin with `--company`.
    Create(UserCreate),
}

#[derive(Debug, Args)]
pub struct UserCreate {
    /// Company slug; leave out for platform staff.
    #[arg(long)]
    pub company: Option<String>,
    #[arg(long)]
    pub username: String,
    #[arg(long, default_value = "")]
    pub display_name: String,
    /// platform_admin or platform_support without --company; company_admin with it.
    #[arg(long)]
    pub role: String,
    /// Initial password; read from POWERTAB_NEW_PASSWORD when not given.
    #[arg(long, env = "POWERTAB_NEW_PASSWORD", hide_env_values = true)]
    pub password: String,
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Where simulated MQTT gateways connect (the configured broker) with credentials derived from
/// the configured gateway secret; `None` without either.
pub fn mqtt_target(config: &Config) -> Option<powertab_ingest::sim::field::MqttTarget> {
    let mqtt = config.ingest.mqtt()?;
    let secret =
        powertab_core::field::credentials::check_secret(config.ingest.gateway_secret.as_ref())
            .ok()?;
    Some(powertab_ingest::sim::field::MqttTarget {
        host: mqtt.host,
        port: mqtt.port,
        secret: secret.clone(),
    })
}

/// Runs one subcommand.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => demo::run(config).await,
        Command::Serve => serve(config, false).await,
        Command::All => serve(config, true).await,
        Command::Ingest => {
            let pool = db::connect(config.database_url()?, 5).await?;
            powertab_ingest::run(pool, config.ingest.clone(), shutdown_signal()).await
        }
        Command::Simulate(args) => {
            let pool = db::connect(config.database_url()?, 2).await?;
            let company = powertab_core::tenancy::companies::find_by_slug(&pool, &args.company)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no company {}", args.company))?;
            let mqtt = mqtt_target(&config);
            let meters = powertab_ingest::sim::field::simulate_company(
                &pool,
                company.id,
                args.target,
                mqtt.as_ref(),
            )
            .await?;
            println!(
                "simulating {meters} meters of {}, dialling {}",
                args.company, args.target
            );
            shutdown_signal().await;
            Ok(())
        }
        Command::Migrate => {
            let pool = db::connect(config.database_url()?, 2).await?;
            for report in migrate::migrate_all(&pool).await? {
                if report.applied.is_empty() {
                    println!(
                        "{}: up to date at version {}",
                        report.schema, report.version
                    );
                } else {
                    println!(
                        "{}: applied {:?}, now at version {}",
                        report.schema, report.applied, report.version
                    );
                }
            }
            Ok(())
        }
        Command::Secrets(SecretsCommand::NewKey { id }) => {
            anyhow::ensure!(
                (1..=32).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "a key id is 1 to 32 letters, digits, - or _"
            );
            println!(
                "{}",
                powertab_core::kernel::secrets::Keyring::new_key_entry(&id)
            );
            Ok(())
        }
        Command::Secrets(SecretsCommand::Rotate) => {
            let keyring = config
                .keyring()?
                .ok_or_else(|| anyhow::anyhow!("set POWERTAB_SECRET_KEYS first"))?;
            let pool = db::connect(config.database_url()?, 2).await?;
            migrate::migrate_all(&pool).await?;
            let report = powertab_core::kernel::secrets::rotate(&pool, &keyring).await?;
            println!(
                "re-wrapped {} secrets under key {} ({} schemas)",
                report.rewrapped,
                keyring.current(),
                report.schemas
            );
            Ok(())
        }
        Command::Ledger(LedgerCommand::Check { company }) => {
            let pool = db::connect(config.database_url()?, 2).await?;
            let reports =
                powertab_core::billing::ledger::check::check_all(&pool, company.as_deref())
                    .await
                    .map_err(describe)?;
            let mut violations = 0;
            for report in &reports {
                println!(
                    "{}: {} transactions, {} accounts, {}",
                    report.schema,
                    report.transactions,
                    report.accounts,
                    if report.is_clean() {
                        "clean".to_owned()
                    } else {
                        format!("{} violations", report.violations.len())
                    }
                );
                for violation in &report.violations {
                    println!("  {violation}");
                }
                violations += report.violations.len();
            }
            anyhow::ensure!(violations == 0, "{violations} ledger violations");
            Ok(())
        }
        Command::Readings(ReadingsCommand::Rebuild) => {
            let pool = db::connect(config.database_url()?, 2).await?;
            migrate::migrate_all(&pool).await?;
            let (meters, changed) = powertab_ingest::store::rebuild_all(&pool).await?;
            println!("rebuilt {meters} meters; {changed} readings re-classified");
            Ok(())
        }
        Command::Company(CompanyCommand::Create(args)) => {
            let pool = db::connect(config.database_url()?, 2).await?;
            migrate::migrate_schema(
                &pool,
                &powertab_core::kernel::names::SchemaName::control(),
                migrate::CONTROL,
            )
            .await?;
            let company = companies::create(
                &pool,
                &Principal::system("cli", powertab_core::kernel::clock::system()),
                &NewCompany {
                    slug: args.slug,
                    name: args.name,
                    time_zone: Some(args.time_zone),
                    max_meters: args.max_meters,
                    max_gateways: args.max_gateways,
                    max_operators: args.max_operators,
                    contact_name: None,
                    contact_phone: None,
                },
            )
            .await
            .map_err(describe)?;
            println!(
                "created company {} (id {}, schema c_{})",
                company.slug, company.id, company.id
            );
            Ok(())
        }
        Command::Company(CompanyCommand::List) => {
            let pool = db::connect(config.database_url()?, 2).await?;
            for c in companies::list(
                &pool,
                &Principal::system("cli", powertab_core::kernel::clock::system()),
                &Default::default(),
            )
            .await?
            {
                println!("{}\t{}\t{}\t{}", c.id, c.slug, c.status, c.name);
            }
            Ok(())
        }
        Command::User(UserCommand::Create(args)) => create_user(config, args).await,
    }
}

/// A core error as a one-line CLI message, with field messages.
fn describe(err: powertab_core::CoreError) -> anyhow::Error {
    match &err {
        powertab_core::CoreError::Validation { fields, .. } => {
            let detail: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            anyhow::anyhow!("{err} ({})", detail.join("; "))
        }
        _ => anyhow::anyhow!("{err}"),
    }
}

async fn create_user(config: Config, args: UserCreate) -> anyhow::Result<()> {
    let pool = db::connect(config.database_url()?, 2).await?;
    let role: Role = args.role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    match args.company {
        None => {
            companies::create_platform_user(
                &pool,
                &args.username,
                &args.display_name,
                &args.password,
                role,
                true,
            )
            .await
            .map_err(describe)?;
            println!(
                "created platform user {} ({role}); the password must be changed at first login",
                args.username
            );
        }
        Some(slug) => {
            anyhow::ensure!(
                role == Role::CompanyAdmin,
                "with --company the role is company_admin; admins create the rest"
            );
            let company = companies::find_by_slug(&pool, &slug)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no company {slug}"))?;
            let input = companies::NewAdmin {
                username: args.username.clone(),
                display_name: args.display_name,
                password: args.password,
            };
            companies::create_admin(
                &pool,
                &Principal::system("cli", powertab_core::kernel::clock::system()),
                company.id,
                &input,
            )
            .await
            .map_err(describe)?;
            println!(
                "created company admin {} in {slug}; the password must be changed at first login",
                args.username
            );
        }
    }
    Ok(())
}

/// Runs the HTTP server (and the field side when `with_ingest`).
pub async fn serve(config: Config, with_ingest: bool) -> anyhow::Result<()> {
    let pool = db::connect(config.database_url()?, config.db_connections_max).await?;
    migrate::migrate_all(&pool).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let ingest = config.ingest.clone();
    let state = AppState::new(pool.clone(), config)?;
    crate::workers::spawn(
        pool.clone(),
        state.auth.clock.clone(),
        state.vendors.clone(),
        state.keyring.clone(),
    );
    if with_ingest {
        tokio::spawn(async move {
            if let Err(e) = powertab_ingest::run(pool, ingest, shutdown_signal()).await {
                tracing::error!(error = %e, "the field side stopped");
            }
        });
    }
    app::run(listener, state, shutdown_signal()).await
}
