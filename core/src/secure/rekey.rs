//! Re-keying a meter-side meter onto a newer master key version (SECURE-COMMAND.md: Keys in
//! operation — "existing meters keep theirs until re-keyed"). The spec's v1 frame has no command
//! that loads a key over the air, so the key travels the way commissioning loads it: a company
//! admin starts the re-key (the meter's `rekey_to_version` is set, and from then on no purchase or
//! deduct is built for it), exports the new meter key (audited) and loads it in the field; then
//! asks the platform to verify. The proof is a set-price frame built under the new version, at the
//! price the meter already counts at: only a meter holding the new key accepts it, and when its
//! counters verify it the settle worker switches the meter's `key_version` (`switched`). A meter
//! that answers under its old key fails the probe without a key alarm — the re-key simply stays
//! pending. An admin may abandon a re-key (the meter keeps its version and takes money again).

use super::commands::enqueue_under;
use super::frame::SecureOp;
use super::keys;
use crate::auth::Principal;
use crate::commands::Command;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets::Keyring;
use crate::tenancy::audit;
use crate::tenancy::roles::Role;
use sqlx::PgConnection;
use uuid::Uuid;

/// A meter's key versions: the one it holds and the one a re-key is taking it to.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KeyVersions {
    pub held: i32,
    pub rekey_to: Option<i32>,
}

/// The meter (404 for one the caller may not see), for its company's admins only.
async fn admin_meter(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<KeyVersions> {
    crate::field::meter(conn, principal, meter).await?;
    if principal.role != Role::CompanyAdmin {
        return Err(CoreError::Forbidden(
            "only the company's admins re-key a meter".into(),
        ));
    }
    let row: Option<(i32, Option<i32>, Option<i64>)> = sqlx::query_as(
        "select key_version, rekey_to_version, purchase_count from meter_secure
         where meter_id = $1 for update",
    )
    .bind(meter)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((held, rekey_to, Some(_))) => Ok(KeyVersions { held, rekey_to }),
        _ => Err(CoreError::Conflict(
            "the meter is not commissioned yet: it is loaded with the current key then".into(),
        )),
    }
}

/// Starts re-keying `meter` onto the company's newest master key version; returns the versions.
pub async fn start(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<KeyVersions> {
    let versions = admin_meter(conn, principal, meter).await?;
    let newest = keys::current_version(conn, keyring, &principal.username).await?;
    if versions.held >= newest {
        return Err(CoreError::Conflict(format!(
            "the meter holds key version {}, the newest: rotate the master key first",
            versions.held
        )));
    }
    let money: bool = sqlx::query_scalar(
        "select exists (select 1 from commands where meter_id = $1 and op in ('purchase', 'deduct')
             and state in ('queued', 'sent', 'acknowledged'))",
    )
    .bind(meter)
    .fetch_one(&mut *conn)
    .await?;
    if money {
        return Err(CoreError::Conflict(
            "a purchase or deduct is unfinished on the meter: re-key it after that".into(),
        ));
    }
    sqlx::query("update meter_secure set rekey_to_version = $2 where meter_id = $1")
        .bind(meter)
        .bind(newest)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "secure.rekey.start",
        "meter",
        Some(meter.to_string()),
        Some(serde_json::json!({ "key_version": versions.held })),
        Some(serde_json::json!({ "rekey_to_version": newest })),
    )
    .await?;
    Ok(KeyVersions {
        held: versions.held,
        rekey_to: Some(newest),
    })
}

/// Sends the probe that proves the field loaded the new key: set price, at the price the meter
/// counts at, built under the version to come.
pub async fn verify(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<Command> {
    let versions = admin_meter(conn, principal, meter).await?;
    let Some(target) = versions.rekey_to else {
        return Err(CoreError::Conflict(
            "no re-key is waiting on this meter".into(),
        ));
    };
    let price: Option<i64> =
        sqlx::query_scalar("select price_units from meter_secure where meter_id = $1")
            .bind(meter)
            .fetch_one(&mut *conn)
            .await?;
    let price = price
        .filter(|p| (1..=100_000).contains(p))
        .ok_or_else(|| CoreError::Conflict("the meter's price has not been verified yet".into()))?;
    let source = format!("operator:{}", principal.user_id);
    let command = enqueue_under(
        conn,
        keyring,
        principal,
        meter,
        SecureOp::SetPrice,
        price,
        &source,
        Some(target),
    )
    .await?;
    audit::record(
        conn,
        principal,
        "secure.rekey.verify",
        "meter",
        Some(meter.to_string()),
        None,
        Some(serde_json::json!({ "rekey_to_version": target, "command": command.id })),
    )
    .await?;
    Ok(command)
}

/// Abandons a waiting re-key: the meter keeps the version it holds and takes money again.
pub async fn abandon(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
) -> CoreResult<KeyVersions> {
    let versions = admin_meter(conn, principal, meter).await?;
    if versions.rekey_to.is_none() {
        return Err(CoreError::Conflict(
            "no re-key is waiting on this meter".into(),
        ));
    }
    sqlx::query("update meter_secure set rekey_to_version = null where meter_id = $1")
        .bind(meter)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "secure.rekey.abandon",
        "meter",
        Some(meter.to_string()),
        Some(serde_json::json!({ "rekey_to_version": versions.rekey_to })),
        None,
    )
    .await?;
    Ok(KeyVersions {
        held: versions.held,
        rekey_to: None,
    })
}

/// The probe under `version` verified: the meter holds it now (the settle worker).
pub(crate) async fn switched(
    conn: &mut PgConnection,
    principal: &Principal,
    meter: Uuid,
    version: i32,
) -> CoreResult<()> {
    let before: Option<i32> = sqlx::query_scalar(
        "update meter_secure s set key_version = $2, rekey_to_version = null
         from (select key_version from meter_secure where meter_id = $1) old
         where s.meter_id = $1 returning old.key_version",
    )
    .bind(meter)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?;
    audit::record(
        conn,
        principal,
        "secure.rekey.done",
        "meter",
        Some(meter.to_string()),
        Some(serde_json::json!({ "key_version": before })),
        Some(serde_json::json!({ "key_version": version })),
    )
    .await?;
    tracing::info!(%meter, version, "a meter-side meter holds its new key");
    Ok(())
}
