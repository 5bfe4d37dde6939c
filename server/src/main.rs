//! `powertab`: parses the command line, reads configuration, starts logging and runs the
//! subcommand. Everything else lives in the library so tests run the same code.

use clap::Parser;
use powertab_server::cli::{self, Cli};
use powertab_server::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tracing::debug!(?config, "configuration");
    cli::run(cli, config).await
}
