//! `spawn_app()`: the real application on a free port with its own database, plus helpers that
//! log in and create companies and users through the API as a person would.

use powertab_core::auth::{Secret, ThrottleConfig};
use powertab_core::db::migrate;
use powertab_core::tenancy::companies;
use powertab_core::tenancy::roles::Role;
use powertab_server::app::{self, AppState};
use powertab_server::config::Config;
use powertab_testkit::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::oneshot;

pub const PASSWORD: &str = "test-pass-2026";

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub http: reqwest::Client,
    /// The app's notification vendors (its keyring); tests point copies at their fakes.
    pub vendors: powertab_core::notify::accounts::Vendors,
    _shutdown: oneshot::Sender<()>,
}

/// A logged-in caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: String,
    pub refresh: String,
}

/// The platform gateway secret of test apps (MQTT credentials are derived from it).
pub const TEST_GATEWAY_SECRET: &str = "test-gateway-secret-test-gateway-secret";

pub fn test_config(throttle: ThrottleConfig) -> Config {
    // The defaults, with what tests need different: free ports, short polls, known secrets.
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: Some(Secret::new(TEST_JWT_SECRET)),
        refresh_ttl_s: 3600,
        throttle,
        trust_forwarded_for: true,
        site_root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/site"),
        db_connections_max: 5,
        ingest: powertab_ingest::IngestConfig {
            dtu_listen: "127.0.0.1:0".parse().unwrap(),
            poll_interval_s: 1,
            gateway_secret: Some(Secret::new(TEST_GATEWAY_SECRET)),
            dial_allow: vec!["127.0.0.0/8".into()],
            ..Default::default()
        },
        metrics_token: Some(Secret::new(TEST_METRICS_TOKEN)),
        secret_keys: Some(Secret::new(
            powertab_core::kernel::secrets::Keyring::new_key_entry("test-1"),
        )),
        sandbox_payment_key: Some(Secret::new(TEST_SANDBOX_PAYMENT_KEY)),
        ..Config::default()
    }
}

/// The sandbox payment provider's key of test apps.
pub const TEST_SANDBOX_PAYMENT_KEY: &str = "test-sandbox-payment-key";

/// The token key of test apps.
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-0123";

/// The bearer token test apps take at `/metrics`.
pub const TEST_METRICS_TOKEN: &str = "test-metrics-token";

pub async fn spawn_app() -> TestApp {
    // Generous thresholds so tests that log in often are never throttled by accident.
    spawn_app_with(ThrottleConfig {
        account_failures_max: 1000,
        address_failures_max: 1000,
        window_s: 900,
        lockout_s: 900,
    })
    .await
}

pub async fn spawn_app_with(throttle: ThrottleConfig) -> TestApp {
    spawn_app_configured(test_config(throttle)).await
}

/// A test app with the configuration `change` makes of the default test one.
pub async fn spawn_app_changed(change: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(ThrottleConfig {
        account_failures_max: 1000,
        address_failures_max: 1000,
        window_s: 900,
        lockout_s: 900,
    });
    change(&mut config);
    spawn_app_configured(config).await
}

async fn spawn_app_configured(config: Config) -> TestApp {
    let db = TestDb::new().await;
    migrate::migrate_all(&db.pool)
        .await
        .expect("migrations apply");
    companies::create_platform_user(
        &db.pool,
        "root",
        "Root",
        PASSWORD,
        Role::PlatformAdmin,
        false,
    )
    .await
    .expect("platform admin");
    companies::create_platform_user(
        &db.pool,
        "helpdesk",
        "Helpdesk",
        PASSWORD,
        Role::PlatformSupport,
        false,
    )
    .await
    .expect("platform support");
    let state = AppState::new(db.pool.clone(), config).expect("state");
    let vendors = state.vendors.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app::run(listener, state, async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        db,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        vendors,
        _shutdown: tx,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        caller: Option<&Caller>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(caller) = caller {
            request = request.bearer_auth(&caller.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, caller: &Caller) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(caller), None).await
    }

    pub async fn post(&self, path: &str, caller: &Caller, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(caller), Some(body))
            .await
    }

    /// A money-moving POST with its `Idempotency-Key`.
    pub async fn post_keyed(
        &self,
        path: &str,
        caller: &Caller,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(&caller.token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `powertab ledger check` over every company of this test's database: panics with the
    /// report unless every invariant holds. Every money test ends with it.
    pub async fn assert_ledger_clean(&self) {
        let reports = powertab_core::billing::ledger::check::check_all(&self.db.pool, None)
            .await
            .expect("the ledger check runs");
        for report in &reports {
            assert!(
                report.is_clean(),
                "ledger check of {}: {:#?}",
                report.schema,
                report.violations
            );
        }
    }

    pub async fn try_login(
        &self,
        company: &str,
        username: &str,
        password: &str,
    ) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"company": company, "username": username, "password": password})),
        )
        .await
    }

    pub async fn login(&self, company: &str, username: &str) -> Caller {
        let (status, body) = self.try_login(company, username, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "login {company}/{username}: {body}");
        Caller {
            token: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn root(&self) -> Caller {
        self.login("", "root").await
    }

    /// Onboards a company with an admin whose initial password is already changed; returns the
    /// company id and the admin's session.
    pub async fn company_with_admin(&self, slug: &str) -> (i64, Caller) {
        let root = self.root().await;
        let (status, company) = self
            .post(
                "/api/v1/platform/companies",
                &root,
                json!({"slug": slug, "name": format!("{slug} plaza")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{company}");
        let id = company["id"].as_i64().unwrap();
        let (status, body) = self
            .post(
                &format!("/api/v1/platform/companies/{id}/admins"),
                &root,
                json!({"username": "boss", "password": "initial-pass-1"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (id, self.first_login(slug, "boss").await)
    }

    /// Logs in with the initial password `initial-pass-1`, changes it to [`PASSWORD`] as the
    /// app demands, and logs in again.
    pub async fn first_login(&self, slug: &str, username: &str) -> Caller {
        let (status, body) = self.try_login(slug, username, "initial-pass-1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["must_change_password"], true);
        let first = Caller {
            token: body["access_token"].as_str().unwrap().into(),
            refresh: String::new(),
        };
        let (status, body) = self
            .post(
                "/api/v1/me/password",
                &first,
                json!({"current_password": "initial-pass-1", "new_password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        self.login(slug, username).await
    }

    /// Creates a user through the API (as `admin`) with an initial password changed to
    /// [`PASSWORD`]; returns its id and session.
    pub async fn user(
        &self,
        admin: &Caller,
        slug: &str,
        username: &str,
        role: &str,
        rights: &[&str],
    ) -> (String, Caller) {
        let (status, body) = self
            .post(
                "/api/v1/users",
                admin,
                json!({"username": username, "role": role, "password": "initial-pass-1", "rights": rights}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        (id, self.first_login(slug, username).await)
    }
}
