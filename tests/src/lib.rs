//! Test harness shared by every crate: each test gets a fresh PostgreSQL database, created from
//! the server named by `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! which `infra/services.sh` provides) and dropped when the guard goes out of scope. Tests run in
//! parallel, so pools stay small (PostgreSQL allows 100 connections in all). [`broker`] starts
//! a private Mosquitto per test; [`postgres`] a private PostgreSQL cluster for a test that
//! restarts the database server.

pub mod broker;
pub mod postgres;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// Connections per test pool.
pub const TEST_POOL_CONNECTIONS_MAX: u32 = 5;

/// The server every test database is created on.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// The server's admin URL (to drop the database again).
    admin_url: String,
}

impl TestDb {
    /// Creates an empty database with a unique name and a small pool on it.
    pub async fn new() -> TestDb {
        TestDb::on(&admin_url()).await
    }

    /// [`TestDb::new`] on the server of `admin_url` (a [`postgres::PrivatePostgres`]).
    pub async fn on(admin_url: &str) -> TestDb {
        let name = format!("pt_test_{}", uuid::Uuid::new_v4().simple());
        let admin = PgConnectOptions::from_str(admin_url).expect("DATABASE_URL is a postgres url");
        let mut conn = admin
            .connect()
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.ok();
        let options = admin.clone().database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(TEST_POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .expect("connect to the test database");
        TestDb {
            name,
            url,
            pool,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop the database on a separate thread: Drop cannot await, and the test's runtime
        // may already be shutting down. The pool is not closed first: `close()` waits for
        // connections the app still holds, and the app's tasks cannot run while this blocks the
        // test's (single-threaded) runtime. `with (force)` ends those backends instead.
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            rt.block_on(async move {
                let admin = PgConnectOptions::from_str(&admin_url).expect("url");
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Polls `condition` until it holds or `timeout` passes (tests wait for conditions, never for
/// fixed sleeps).
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
