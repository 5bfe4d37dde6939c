//! MQTT gateways' broker credentials (MQTT-GATEWAY.md: Connection). A credential is never
//! stored: it is derived as HMAC-SHA256(platform gateway secret, gateway id ‖ identity ‖
//! generation). So a company admin can look it up again when configuring a gateway, ingest can
//! provision it at the broker again after a broker reset, and a copy of the database reveals
//! nothing. The gateway id is in the input because identities are reused after a gateway is
//! removed, and a new gateway must not get the old one's credential. Rotating bumps the
//! generation (kept in `control.gateway_directory`, which ingest provisions from).

use crate::auth::{Principal, Secret};
use crate::kernel::error::{CoreError, CoreResult};
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Shortest platform gateway secret accepted, in bytes.
pub const SECRET_BYTES_MIN: usize = 32;

/// A gateway's login at the broker.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MqttCredential {
    pub gateway_id: Uuid,
    /// MQTT username and client id: both are the gateway's identity.
    pub username: String,
    pub client_id: String,
    pub password: String,
    /// Goes up by one on every rotation; the previous password stops working.
    pub generation: i32,
}

/// The platform secret, checked: `None` or a short one is refused with a message saying what
/// to configure.
pub fn check_secret(secret: Option<&Secret>) -> CoreResult<&Secret> {
    match secret {
        Some(s) if s.expose().len() >= SECRET_BYTES_MIN => Ok(s),
        _ => Err(CoreError::Conflict(format!(
            "MQTT gateway credentials need a platform gateway secret of at least {SECRET_BYTES_MIN} bytes (POWERTAB_INGEST__GATEWAY_SECRET)"
        ))),
    }
}

/// The password of gateway `gateway_id` with `identity` at `generation`: 32 lowercase hex
/// digits (128 bits), easy to type into a gateway's configuration page.
pub fn derive(secret: &Secret, gateway_id: Uuid, identity: &str, generation: i32) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    // Length-prefixed parts, so no two (identity, generation) pairs give the same input.
    mac.update(b"powertab/mqtt-gateway/v1");
    mac.update(gateway_id.as_bytes());
    mac.update(&(identity.len() as u64).to_be_bytes());
    mac.update(identity.as_bytes());
    mac.update(&generation.to_be_bytes());
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn credential(
    secret: &Secret,
    gateway_id: Uuid,
    identity: String,
    generation: i32,
) -> MqttCredential {
    MqttCredential {
        gateway_id,
        password: derive(secret, gateway_id, &identity, generation),
        client_id: identity.clone(),
        username: identity,
        generation,
    }
}

/// The identity and credential generation of MQTT gateway `id` of the current company.
async fn generation_of(conn: &mut PgConnection, id: Uuid) -> CoreResult<(String, i32)> {
    let row = sqlx::query(
        "select g.identity, g.kind, d.mqtt_credential_gen from gateways g
         left join control.gateway_directory d on d.gateway_id = g.id
         where g.id = $1 and g.status <> 'removed'",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(CoreError::NotFound("gateway"))?;
    let generation: Option<i32> = row.try_get("mqtt_credential_gen")?;
    match generation {
        Some(generation) => Ok((row.try_get("identity")?, generation)),
        None => Err(CoreError::Conflict(
            "only MQTT gateways log in to the broker with a credential".into(),
        )),
    }
}

/// What both `show` and `rotate` check first: the gateway exists for the caller (404 before
/// 403), is an MQTT gateway, the caller may change settings, and the platform has a secret.
/// The gateway's identity and credential generation, and the secret.
async fn allowed<'s>(
    conn: &mut PgConnection,
    principal: &Principal,
    secret: Option<&'s Secret>,
    id: Uuid,
) -> CoreResult<(String, i32, &'s Secret)> {
    principal.require_read_company()?;
    // Outside an operator's building limit the gateway does not exist for them.
    crate::field::gateway(conn, principal, id).await?;
    let (identity, generation) = generation_of(conn, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    principal.require_unlimited()?;
    Ok((identity, generation, check_secret(secret)?))
}

/// Shows gateway `id`'s credential to someone who may change settings; looks are audited (one
/// entry per person and credential within five minutes).
#[tracing::instrument(skip_all)]
pub async fn show(
    conn: &mut PgConnection,
    principal: &Principal,
    secret: Option<&Secret>,
    id: Uuid,
) -> CoreResult<MqttCredential> {
    let (identity, generation, secret) = allowed(conn, principal, secret, id).await?;
    let seen = serde_json::json!({ "generation": generation });
    audit::record_look(
        conn,
        principal,
        "gateway.credential_view",
        &id.to_string(),
        Some(seen),
    )
    .await?;
    Ok(credential(secret, id, identity, generation))
}

/// Issues gateway `id` a new credential; ingest replaces it at the broker within seconds and
/// the old one stops working.
#[tracing::instrument(skip_all)]
pub async fn rotate(
    conn: &mut PgConnection,
    principal: &Principal,
    secret: Option<&Secret>,
    id: Uuid,
) -> CoreResult<MqttCredential> {
    let (identity, before, secret) = allowed(conn, principal, secret, id).await?;
    let after: i32 = sqlx::query_scalar(
        "update control.gateway_directory set mqtt_credential_gen = mqtt_credential_gen + 1
         where gateway_id = $1 returning mqtt_credential_gen",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("update gateways set updated_at = now() where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "gateway.credential_rotate",
        "gateway",
        Some(id.to_string()),
        Some(serde_json::json!({ "generation": before })),
        Some(serde_json::json!({ "generation": after })),
    )
    .await?;
    Ok(credential(secret, id, identity, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("a-platform-gateway-secret-of-32-bytes!")
    }

    #[test]
    fn a_credential_is_stable_and_differs_by_every_input() {
        let id = Uuid::from_u128(7);
        let base = derive(&secret(), id, "gw-1", 1);
        assert_eq!(base.len(), 32);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(base, derive(&secret(), id, "gw-1", 1));
        assert_ne!(base, derive(&secret(), id, "gw-1", 2));
        assert_ne!(base, derive(&secret(), id, "gw-2", 1));
        assert_ne!(base, derive(&secret(), Uuid::from_u128(8), "gw-1", 1));
        assert_ne!(
            base,
            derive(
                &Secret::new("another-platform-secret-of-32-bytes!!"),
                id,
                "gw-1",
                1
            )
        );
    }

    #[test]
    fn a_missing_or_short_secret_is_refused_with_the_setting_to_fix() {
        let short = Secret::new("short");
        for s in [None, Some(&short)] {
            let err = check_secret(s).unwrap_err().to_string();
            assert!(err.contains("POWERTAB_INGEST__GATEWAY_SECRET"), "{err}");
        }
        assert!(check_secret(Some(&secret())).is_ok());
    }
}
