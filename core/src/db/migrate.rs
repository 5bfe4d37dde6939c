//! Schema migrations, tracked per schema. The `control` schema has one migration set and every
//! company schema another (both in `migrations/`, embedded at compile time). Each schema keeps a
//! `schema_migrations` table of what it has applied, so companies can be at different versions
//! while an upgrade rolls through them. Applying is idempotent and serialised by an advisory
//! lock, so two processes starting at once do not race.

use crate::kernel::error::CoreResult;
use crate::kernel::names::SchemaName;
use sqlx::PgPool;

/// One embedded migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Migrations of the `control` schema, in order. Never edit one once applied; add a new one.
pub const CONTROL: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/control/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "gateway_directory",
        sql: include_str!("../../../migrations/control/0002_gateway_directory.sql"),
    },
    Migration {
        version: 3,
        name: "unclaimed_registrations",
        sql: include_str!("../../../migrations/control/0003_unclaimed_registrations.sql"),
    },
    Migration {
        version: 4,
        name: "mqtt_credentials",
        sql: include_str!("../../../migrations/control/0004_mqtt_credentials.sql"),
    },
    Migration {
        version: 5,
        name: "registration_rule",
        sql: include_str!("../../../migrations/control/0005_registration_rule.sql"),
    },
    Migration {
        version: 6,
        name: "secrets",
        sql: include_str!("../../../migrations/control/0006_secrets.sql"),
    },
    Migration {
        version: 7,
        name: "ledger_checks",
        sql: include_str!("../../../migrations/control/0007_ledger_checks.sql"),
    },
    Migration {
        version: 8,
        name: "payments",
        sql: include_str!("../../../migrations/control/0008_payments.sql"),
    },
    Migration {
        version: 9,
        name: "sandbox_trades",
        sql: include_str!("../../../migrations/control/0009_sandbox_trades.sql"),
    },
];

/// Migrations of every company schema, in order. Never edit one once applied; add a new one.
pub const COMPANY: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/company/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "property",
        sql: include_str!("../../../migrations/company/0002_property.sql"),
    },
    Migration {
        version: 3,
        name: "field",
        sql: include_str!("../../../migrations/company/0003_field.sql"),
    },
    Migration {
        version: 4,
        name: "import_uploads",
        sql: include_str!("../../../migrations/company/0004_import_uploads.sql"),
    },
    Migration {
        version: 5,
        name: "field_history",
        sql: include_str!("../../../migrations/company/0005_field_history.sql"),
    },
    Migration {
        version: 6,
        name: "readings",
        sql: include_str!("../../../migrations/company/0006_readings.sql"),
    },
    Migration {
        version: 7,
        name: "field_status",
        sql: include_str!("../../../migrations/company/0007_field_status.sql"),
    },
    Migration {
        version: 8,
        name: "commands",
        sql: include_str!("../../../migrations/company/0008_commands.sql"),
    },
    Migration {
        version: 9,
        name: "field_alarms",
        sql: include_str!("../../../migrations/company/0009_field_alarms.sql"),
    },
    Migration {
        version: 10,
        name: "mqtt_credentials",
        sql: include_str!("../../../migrations/company/0010_mqtt_credentials.sql"),
    },
    Migration {
        version: 11,
        name: "reading_baselines",
        sql: include_str!("../../../migrations/company/0011_reading_baselines.sql"),
    },
    Migration {
        version: 12,
        name: "command_queue",
        sql: include_str!("../../../migrations/company/0012_command_queue.sql"),
    },
    Migration {
        version: 13,
        name: "secrets",
        sql: include_str!("../../../migrations/company/0013_secrets.sql"),
    },
    Migration {
        version: 14,
        name: "tou_registers_match",
        sql: include_str!("../../../migrations/company/0014_tou_registers_match.sql"),
    },
    Migration {
        version: 15,
        name: "ledger",
        sql: include_str!("../../../migrations/company/0015_ledger.sql"),
    },
    Migration {
        version: 16,
        name: "rating",
        sql: include_str!("../../../migrations/company/0016_rating.sql"),
    },
    Migration {
        version: 17,
        name: "reversals",
        sql: include_str!("../../../migrations/company/0017_reversals.sql"),
    },
    Migration {
        version: 18,
        name: "account_closing",
        sql: include_str!("../../../migrations/company/0018_account_closing.sql"),
    },
    Migration {
        version: 19,
        name: "money_operations",
        sql: include_str!("../../../migrations/company/0019_money_operations.sql"),
    },
    Migration {
        version: 20,
        name: "account_users",
        sql: include_str!("../../../migrations/company/0020_account_users.sql"),
    },
    Migration {
        version: 21,
        name: "receipt_prints",
        sql: include_str!("../../../migrations/company/0021_receipt_prints.sql"),
    },
    Migration {
        version: 22,
        name: "client_keys",
        sql: include_str!("../../../migrations/company/0022_client_keys.sql"),
    },
    Migration {
        version: 23,
        name: "power",
        sql: include_str!("../../../migrations/company/0023_power.sql"),
    },
    Migration {
        version: 24,
        name: "command_centre",
        sql: include_str!("../../../migrations/company/0024_command_centre.sql"),
    },
    Migration {
        version: 25,
        name: "notify",
        sql: include_str!("../../../migrations/company/0025_notify.sql"),
    },
    Migration {
        version: 26,
        name: "secure",
        sql: include_str!("../../../migrations/company/0026_secure.sql"),
    },
    Migration {
        version: 27,
        name: "secure_commands",
        sql: include_str!("../../../migrations/company/0027_secure_commands.sql"),
    },
    Migration {
        version: 28,
        name: "secure_settle",
        sql: include_str!("../../../migrations/company/0028_secure_settle.sql"),
    },
    Migration {
        version: 29,
        name: "secure_rekey",
        sql: include_str!("../../../migrations/company/0029_secure_rekey.sql"),
    },
    Migration {
        version: 30,
        name: "command_messages",
        sql: include_str!("../../../migrations/company/0030_command_messages.sql"),
    },
    Migration {
        version: 31,
        name: "payment_orders",
        sql: include_str!("../../../migrations/company/0031_payment_orders.sql"),
    },
    Migration {
        version: 32,
        name: "tenant_self_service",
        sql: include_str!("../../../migrations/company/0032_tenant_self_service.sql"),
    },
    Migration {
        version: 33,
        name: "order_query",
        sql: include_str!("../../../migrations/company/0033_order_query.sql"),
    },
];

/// Arbitrary constant for `pg_advisory_xact_lock`: "PT" migrations.
const MIGRATION_LOCK_KEY: i64 = 0x5054_4d49_4752;

/// What `migrate_schema` did to one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    pub schema: String,
    pub applied: Vec<i32>,
    pub version: i32,
}

/// Creates `schema` if needed and applies the migrations it lacks, all in one transaction.
pub async fn migrate_schema(
    pool: &PgPool,
    schema: &SchemaName,
    set: &[Migration],
) -> CoreResult<SchemaReport> {
    let mut tx = pool.begin().await?;
    let report = migrate_schema_in(&mut tx, schema, set).await?;
    tx.commit().await?;
    Ok(report)
}

/// Like [`migrate_schema`] inside the caller's transaction (onboarding a company creates its row
/// and its schema atomically). Leaves `search_path` set to `schema` for the rest of the
/// transaction.
pub async fn migrate_schema_in(
    tx: &mut sqlx::PgConnection,
    schema: &SchemaName,
    set: &[Migration],
) -> CoreResult<SchemaReport> {
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    // The schema name is a checked SchemaName, never request text.
    sqlx::query(&format!("create schema if not exists {schema}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "create table if not exists {schema}.schema_migrations (
             version integer primary key,
             name text not null,
             applied_at timestamptz not null default now())"
    ))
    .execute(&mut *tx)
    .await?;
    let done: Vec<i32> = sqlx::query_scalar(&format!(
        "select version from {schema}.schema_migrations order by version"
    ))
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("select set_config('search_path', $1, true)")
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await?;
    let mut applied = Vec::new();
    // Collected first: an iterator adapter held across `.await` makes the future !Send.
    let pending: Vec<Migration> = set
        .iter()
        .filter(|m| !done.contains(&m.version))
        .copied()
        .collect();
    for migration in pending {
        // A plain &str has no arguments, so sqlx sends it with the simple-query protocol, which
        // runs multi-statement files. (`sqlx::raw_sql` does too, but its future is not Send.)
        sqlx::Executor::execute(&mut *tx, migration.sql).await?;
        sqlx::query("insert into schema_migrations (version, name) values ($1, $2)")
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await?;
        applied.push(migration.version);
    }
    let version = set.last().map_or(0, |m| m.version);
    Ok(SchemaReport {
        schema: schema.to_string(),
        applied,
        version,
    })
}

/// Upgrades `control` and then every company schema. Returns one report per schema.
pub async fn migrate_all(pool: &PgPool) -> CoreResult<Vec<SchemaReport>> {
    let mut reports = vec![migrate_schema(pool, &SchemaName::control(), CONTROL).await?];
    let schemas: Vec<String> =
        sqlx::query_scalar("select schema_name from control.company order by id")
            .fetch_all(pool)
            .await?;
    for stored in schemas {
        let schema = SchemaName::from_stored(&stored)
            .map_err(|e| crate::CoreError::Internal(format!("{stored}: {e}")))?;
        reports.push(migrate_schema(pool, &schema, COMPANY).await?);
    }
    Ok(reports)
}
