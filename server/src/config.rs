//! Configuration in layers: built-in defaults, then a TOML file (`--config`, or `powertab.toml`
//! in the working directory when present), then environment variables `POWERTAB_*` (nested keys
//! with `__`, e.g. `POWERTAB_THROTTLE__ACCOUNT_FAILURES_MAX`), and `DATABASE_URL`. Secrets are
//! `Secret`s, so printing the configuration never shows them.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use powertab_core::auth::{AuthConfig, Secret, ThrottleConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The one configuration struct: its [`Default`] is the built-in layer (every key the files and
/// variables do not set keeps its default, `#[serde(default)]`), and tests start from it too.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PostgreSQL URL; `DATABASE_URL` also sets it.
    pub database_url: Option<Secret>,
    /// Address of the HTTP server (API and web).
    pub listen: SocketAddr,
    /// HS256 key for access tokens, at least 32 bytes. Required by `serve` and `all`; `demo`
    /// makes a random one when absent.
    pub jwt_secret: Option<Secret>,
    pub access_ttl_s: i64,
    pub refresh_ttl_s: i64,
    pub throttle: ThrottleConfig,
    /// Mark cookies `Secure` (set when served over HTTPS).
    pub cookie_secure: bool,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Folder holding `pkg/` with the hydration script and WebAssembly.
    pub site_root: PathBuf,
    /// Connections of the server's pool.
    pub db_connections_max: u32,
    /// `text` or `json` logs.
    pub log_format: String,
    /// The field side (DTU port, poll interval).
    pub ingest: powertab_ingest::IngestConfig,
    /// Bearer token a Prometheus scraper sends to `/metrics`; without one `/metrics` answers
    /// 404 (the figures say how busy each company's routes are).
    pub metrics_token: Option<Secret>,
    /// Key-encryption keys for secrets at rest, `id:base64(32 bytes)` separated by commas
    /// (core::kernel::secrets). Keep old ids listed until `powertab secrets rotate` has run.
    pub secret_keys: Option<Secret>,
    /// The id new secrets are sealed with; the last of `secret_keys` when absent.
    pub secret_key_current: Option<String>,
    /// The sandbox payment provider's key (demos and tests only). Without it no company can be
    /// switched to sandbox payments; each company signs with a key derived from it and its slug.
    pub sandbox_payment_key: Option<Secret>,
    /// Where notification vendors are reached (tests and staging point these at fakes).
    pub notify: NotifyConfig,
    /// The site's address as phones reach it (`https://pt.example.com`): where WeChat sends a
    /// tenant back after linking. Without it the request's `Host` is used.
    pub public_url: Option<String>,
}

/// The notification vendors' base URLs (platform configuration: a company never chooses the host
/// the server calls).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {
    pub aliyun_url: String,
    pub tencent_url: String,
    pub wechat_url: String,
    /// WeChat's web authorisation page (tenants linking their WeChat).
    pub wechat_open_url: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        let urls = powertab_core::notify::accounts::VendorUrls::default();
        NotifyConfig {
            aliyun_url: urls.aliyun,
            tencent_url: urls.tencent,
            wechat_url: urls.wechat,
            wechat_open_url: urls.wechat_open,
        }
    }
}

impl NotifyConfig {
    pub fn urls(&self) -> powertab_core::notify::accounts::VendorUrls {
        powertab_core::notify::accounts::VendorUrls {
            aliyun: self.aliyun_url.clone(),
            tencent: self.tencent_url.clone(),
            wechat: self.wechat_url.clone(),
            wechat_open: self.wechat_open_url.clone(),
        }
    }
}

impl Default for Config {
    /// The built-in layer: what every key is when no file or variable sets it. Secrets and
    /// the database have none.
    fn default() -> Self {
        Config {
            database_url: None,
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            jwt_secret: None,
            access_ttl_s: AuthConfig::ACCESS_TTL_S_DEFAULT,
            refresh_ttl_s: AuthConfig::REFRESH_TTL_S_DEFAULT,
            throttle: ThrottleConfig::default(),
            cookie_secure: false,
            trust_forwarded_for: false,
            site_root: PathBuf::from("target/site"),
            db_connections_max: 20,
            log_format: "text".into(),
            ingest: powertab_ingest::IngestConfig::default(),
            metrics_token: None,
            secret_keys: None,
            secret_key_current: None,
            sandbox_payment_key: None,
            notify: NotifyConfig::default(),
            public_url: None,
        }
    }
}

impl Config {
    /// Loads the layers; `file` is the `--config` path.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::new();
        match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} not found", path.display());
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("powertab.toml")),
        }
        figment = figment.merge(Env::prefixed("POWERTAB_").split("__"));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        // infra/services.sh exports the broker it found or started, and PowerTab's login there
        // when it started a broker with dynamic security.
        for (var, key) in [
            ("MQTT_URL", "ingest.mqtt_url"),
            ("MQTT_USERNAME", "ingest.mqtt_username"),
            ("MQTT_PASSWORD", "ingest.mqtt_password"),
            ("MQTT_ADMIN_USERNAME", "ingest.mqtt_admin_username"),
            ("MQTT_ADMIN_PASSWORD", "ingest.mqtt_admin_password"),
        ] {
            if let Ok(value) = std::env::var(var) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        Ok(figment.extract()?)
    }

    /// The keyring for secrets at rest; `None` when no keys are configured (storing a secret
    /// is then refused with a message saying so). Malformed keys fail start-up.
    pub fn keyring(&self) -> anyhow::Result<Option<powertab_core::kernel::secrets::Keyring>> {
        self.secret_keys
            .as_ref()
            .map(|keys| {
                powertab_core::kernel::secrets::Keyring::parse(
                    keys.expose(),
                    self.secret_key_current.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("POWERTAB_SECRET_KEYS: {e}"))
            })
            .transpose()
    }

    pub fn database_url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no database: set DATABASE_URL (infra/services.sh finds or starts one)"
                )
            })
    }

    /// The auth settings; fails when the JWT secret is missing or short.
    pub fn auth(&self) -> anyhow::Result<AuthConfig> {
        let secret = self
            .jwt_secret
            .clone()
            .ok_or_else(|| anyhow::anyhow!("set POWERTAB_JWT_SECRET (at least 32 bytes)"))?;
        anyhow::ensure!(
            secret.expose().len() >= 32,
            "POWERTAB_JWT_SECRET must be at least 32 bytes"
        );
        Ok(AuthConfig {
            jwt_secret: secret,
            access_ttl_s: self.access_ttl_s,
            refresh_ttl_s: self.refresh_ttl_s,
            throttle: self.throttle.clone(),
            clock: powertab_core::kernel::clock::system(),
        })
    }
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_when_the_config_is_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "POWERTAB_JWT_SECRET",
                "a-very-secret-value-of-32-bytes-or-more",
            );
            jail.set_env("DATABASE_URL", "postgres://user:pw-secret@host/db");
            jail.set_env("POWERTAB_THROTTLE__ACCOUNT_FAILURES_MAX", "3");
            jail.set_env(
                "POWERTAB_INGEST__GATEWAY_SECRET",
                "a-gateway-secret-value-of-32-bytes-or-more",
            );
            jail.set_env("MQTT_USERNAME", "powertab-ingest");
            jail.set_env("MQTT_PASSWORD", "broker-pw-secret");
            jail.set_env("MQTT_ADMIN_USERNAME", "powertab-admin");
            jail.set_env("MQTT_ADMIN_PASSWORD", "admin-pw-secret");
            let config = Config::load(None).expect("loads");
            let printed = format!("{config:?}");
            assert!(!printed.contains("a-very-secret"));
            assert!(!printed.contains("pw-secret"));
            assert!(!printed.contains("a-gateway-secret"));
            assert!(!printed.contains("admin-pw-secret"));
            assert_eq!(config.ingest.mqtt_username, "powertab-ingest");
            assert_eq!(config.ingest.mqtt_password.expose(), "broker-pw-secret");
            assert_eq!(config.ingest.mqtt_admin_username, "powertab-admin");
            assert_eq!(
                config.ingest.mqtt_admin_password.expose(),
                "admin-pw-secret"
            );
            assert_eq!(
                config
                    .ingest
                    .gateway_secret
                    .as_ref()
                    .map(|s| s.expose().len()),
                Some(42)
            );
            assert_eq!(config.throttle.account_failures_max, 3);
            assert_eq!(
                config.database_url().unwrap(),
                "postgres://user:pw-secret@host/db"
            );
            Ok(())
        });
    }

    #[test]
    fn a_key_left_out_keeps_its_default_even_inside_a_table() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "powertab.toml",
                "[ingest]\npoll_interval_s = 7\n[throttle]\nwindow_s = 60\n",
            )?;
            jail.set_env("POWERTAB_INGEST__DTU_CONNECTIONS_MAX", "10");
            let config = Config::load(None).expect("loads");
            let defaults = Config::default();
            assert_eq!(config.ingest.poll_interval_s, 7);
            assert_eq!(config.ingest.dtu_connections_max, 10);
            assert_eq!(config.ingest.dtu_listen, defaults.ingest.dtu_listen);
            assert_eq!(config.throttle.window_s, 60);
            assert_eq!(
                config.throttle.account_failures_max,
                defaults.throttle.account_failures_max
            );
            assert_eq!(config.listen, defaults.listen);
            Ok(())
        });
    }

    #[test]
    fn short_jwt_secrets_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("POWERTAB_JWT_SECRET", "short");
            let config = Config::load(None).expect("loads");
            assert!(config.auth().is_err());
            Ok(())
        });
    }
}
