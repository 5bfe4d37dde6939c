//! A company's secure-command keys (SECURE-COMMAND.md: Keys in operation). The master key MK is
//! 16 random bytes made on first use (or at onboarding), sealed in `secrets` under the platform's
//! key-encryption key (`kernel::secrets`: the platform key rotates without downtime with
//! `powertab secrets rotate`) as `secure.master.v<N>`; `secure_master_keys` lists the versions.
//! A rotation makes version N+1 for meters commissioned from then on; a meter keeps the version
//! it was loaded with (`meter_secure.key_version`) until it is re-keyed. A company admin may
//! export one meter's KM for commissioning, audited; nothing here logs a key.

use super::frame::{MeterKeys, MeterNumber};
use super::primitives::Key16;
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets::Keyring;
use crate::tenancy::audit;
use crate::tenancy::roles::Role;
use rand::RngCore;
use sqlx::PgConnection;
use uuid::Uuid;

fn secret_name(version: i32) -> String {
    format!("secure.master.v{version}")
}

/// Serialises key creation within one company (two first uses at once make one key).
async fn lock_keys(conn: &mut PgConnection) -> CoreResult<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtext(current_schema() || '/secure.master'))")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn open_master(
    conn: &mut PgConnection,
    keyring: &Keyring,
    version: i32,
) -> CoreResult<Key16> {
    let sealed = crate::kernel::secrets::get(conn, keyring, &secret_name(version))
        .await?
        .ok_or_else(|| CoreError::Internal(format!("master key v{version} is missing")))?;
    sealed
        .expose()
        .try_into()
        .map_err(|_| CoreError::Internal(format!("master key v{version} is not 16 bytes")))
}

async fn make_master(
    conn: &mut PgConnection,
    keyring: &Keyring,
    version: i32,
    by: &str,
) -> CoreResult<()> {
    let mut key = zeroize::Zeroizing::new([0u8; 16]);
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    crate::kernel::secrets::put(conn, keyring, &secret_name(version), key.as_ref()).await?;
    sqlx::query("insert into secure_master_keys (version, created_by) values ($1, $2)")
        .bind(version)
        .bind(by)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The current master key version, made (version 1) when the company has none yet.
pub async fn current_version(
    conn: &mut PgConnection,
    keyring: &Keyring,
    by: &str,
) -> CoreResult<i32> {
    let found: Option<i32> = sqlx::query_scalar("select max(version) from secure_master_keys")
        .fetch_one(&mut *conn)
        .await?;
    if let Some(version) = found {
        return Ok(version);
    }
    lock_keys(conn).await?;
    let found: Option<i32> = sqlx::query_scalar("select max(version) from secure_master_keys")
        .fetch_one(&mut *conn)
        .await?;
    match found {
        Some(version) => Ok(version),
        None => {
            make_master(conn, keyring, 1, by).await?;
            Ok(1)
        }
    }
}

/// Makes the next master key version (platform admins): meters commissioned from now on get
/// it; existing meters keep theirs. Audited (the version, never the key).
pub async fn rotate_master(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
) -> CoreResult<i32> {
    if principal.role != Role::PlatformAdmin {
        return Err(CoreError::Forbidden(
            "only platform admins rotate a company's master key".into(),
        ));
    }
    let by = principal.username.clone();
    let before = current_version(conn, keyring, &by).await?;
    lock_keys(conn).await?;
    let latest: i32 = sqlx::query_scalar("select max(version) from secure_master_keys")
        .fetch_one(&mut *conn)
        .await?;
    let next = latest
        .checked_add(1)
        .ok_or_else(|| CoreError::Internal("master key versions exhausted".into()))?;
    make_master(conn, keyring, next, &by).await?;
    audit::record(
        conn,
        principal,
        "secure.master_key.rotate",
        "company",
        None,
        Some(serde_json::json!({ "version": before })),
        Some(serde_json::json!({ "version": next })),
    )
    .await?;
    Ok(next)
}

/// [`rotate_master`] of company `company_id` by platform staff (the API's and the company page's
/// action): company staff are told no such company exists, platform support may not.
pub async fn rotate_company_master(
    pool: &sqlx::PgPool,
    keyring: Option<&Keyring>,
    principal: &Principal,
    company_id: i64,
) -> CoreResult<i32> {
    match principal.role {
        Role::PlatformAdmin => {}
        Role::PlatformSupport => {
            return Err(CoreError::Forbidden(
                "only platform admins rotate a company's master key".into(),
            ))
        }
        _ => return Err(CoreError::NotFound("company")),
    }
    let keyring = keyring.ok_or_else(|| {
        CoreError::Conflict(
            "no keyring is configured (POWERTAB_SECRET_KEYS): master keys cannot be made".into(),
        )
    })?;
    let mut conn = pool.acquire().await?;
    let scope = crate::auth::load_company(&mut conn, company_id)
        .await?
        .ok_or(CoreError::NotFound("company"))?;
    drop(conn);
    let mut tx = crate::db::begin_in(pool, &scope.schema).await?;
    let version = rotate_master(&mut tx, keyring, principal).await?;
    tx.commit().await?;
    Ok(version)
}

/// The newest master key version of the company whose schema `conn` is in (`None` before its
/// first use); makes nothing.
pub async fn latest_version(conn: &mut PgConnection) -> CoreResult<Option<i32>> {
    Ok(
        sqlx::query_scalar("select max(version) from secure_master_keys")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// `meter_id`'s number as the secure frames carry it.
async fn meter_number(conn: &mut PgConnection, meter_id: Uuid) -> CoreResult<MeterNumber> {
    let number: Option<String> =
        sqlx::query_scalar("select meter_number from meters where id = $1")
            .bind(meter_id)
            .fetch_optional(&mut *conn)
            .await?;
    let number = number.ok_or(CoreError::NotFound("meter"))?;
    MeterNumber::parse(&number).map_err(|e| {
        CoreError::Conflict(format!(
            "meter number {number:?} cannot take secure commands: {e}"
        ))
    })
}

/// A meter's number as the secure frames carry it, and the key version it holds — recorded
/// with the current version the first time the meter is asked for (commissioning).
pub async fn meter_version(
    conn: &mut PgConnection,
    keyring: &Keyring,
    meter_id: Uuid,
    by: &str,
) -> CoreResult<(MeterNumber, i32)> {
    let number = meter_number(conn, meter_id).await?;
    let held: Option<i32> =
        sqlx::query_scalar("select key_version from meter_secure where meter_id = $1")
            .bind(meter_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(version) = held {
        return Ok((number, version));
    }
    let version = current_version(conn, keyring, by).await?;
    let version: i32 = sqlx::query_scalar(
        "insert into meter_secure (meter_id, key_version) values ($1, $2)
         on conflict (meter_id) do update set meter_id = excluded.meter_id returning key_version",
    )
    .bind(meter_id)
    .bind(version)
    .fetch_one(&mut *conn)
    .await?;
    Ok((number, version))
}

/// The working keys of `meter_id` under master key `version` (a re-key's probe is built under
/// the version the meter is to hold, its acknowledgement checked under the frame's version).
pub async fn meter_keys_at(
    conn: &mut PgConnection,
    keyring: &Keyring,
    meter_id: Uuid,
    version: i32,
) -> CoreResult<(MeterNumber, MeterKeys)> {
    let number = meter_number(conn, meter_id).await?;
    let master = zeroize::Zeroizing::new(open_master(conn, keyring, version).await?);
    Ok((number, MeterKeys::derive(&master, &number)))
}

/// The working keys of `meter_id` (KE, KA under the version it holds).
pub async fn meter_keys(
    conn: &mut PgConnection,
    keyring: &Keyring,
    meter_id: Uuid,
    by: &str,
) -> CoreResult<(MeterNumber, MeterKeys)> {
    let (number, version) = meter_version(conn, keyring, meter_id, by).await?;
    let master = zeroize::Zeroizing::new(open_master(conn, keyring, version).await?);
    Ok((number, MeterKeys::derive(&master, &number)))
}

/// One meter's KM as hex, for loading into the meter or its gateway — during a re-key, the key
/// of the version to come: company admins only, and every export is in the audit log (who,
/// which meter, which version — never the key).
pub async fn export_meter_key(
    conn: &mut PgConnection,
    keyring: &Keyring,
    principal: &Principal,
    meter_id: Uuid,
) -> CoreResult<(i32, zeroize::Zeroizing<String>)> {
    // Another company's meter (or none) is not found, whoever asks; then only the company's own
    // admin, not platform staff, gets the key: it is the company's.
    let exists: bool = sqlx::query_scalar("select exists (select 1 from meters where id = $1)")
        .bind(meter_id)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Err(CoreError::NotFound("meter"));
    }
    if principal.role != Role::CompanyAdmin || principal.company.is_none() {
        return Err(CoreError::Forbidden(
            "only the company's admins export a meter key".into(),
        ));
    }
    let (number, held) = meter_version(conn, keyring, meter_id, &principal.username).await?;
    // During a re-key the field loads the key of the version to come (`super::rekey`).
    let pending: Option<i32> =
        sqlx::query_scalar("select rekey_to_version from meter_secure where meter_id = $1")
            .bind(meter_id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let version = pending.unwrap_or(held);
    let master = zeroize::Zeroizing::new(open_master(conn, keyring, version).await?);
    let km = zeroize::Zeroizing::new(MeterKeys::meter_key(&master, &number));
    let hex: String = km.iter().map(|b| format!("{b:02x}")).collect();
    audit::record(
        conn,
        principal,
        "secure.meter_key.export",
        "meter",
        Some(meter_id.to_string()),
        None,
        Some(serde_json::json!({ "key_version": version })),
    )
    .await?;
    Ok((version, zeroize::Zeroizing::new(hex)))
}
