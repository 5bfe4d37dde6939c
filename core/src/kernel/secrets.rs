//! Secrets at rest (DESIGN.md: Server): company master keys, merchant credentials, SMS and
//! WeChat account secrets are stored only through here, sealed in an AES-256-GCM envelope that
//! names the key-encryption key it was sealed with.
//!
//! - Keys come from configuration as a [`Keyring`]: ids and 32-byte keys, one of them current.
//!   New secrets are sealed with the current key; any key of the ring opens.
//! - The envelope is `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, with a random 96-bit
//!   nonce. The associated data binds it to the schema and name it is stored under, so a sealed
//!   value copied into another company's row (or under another name) does not open.
//! - [`rotate`] re-wraps every secret not under the current key, one row at a time under a row
//!   lock: readers keep working throughout (the old key stays in the ring until it is done), and
//!   it can be run again after an interruption (`powertab secrets rotate`).
//! - Plaintext is a [`SecretBytes`]: zeroed when dropped, never printed, never logged.

use crate::kernel::error::{CoreError, CoreResult};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

const ENVELOPE_VERSION: &str = "v1";
const NONCE_BYTES: usize = 12;
const KEY_BYTES: usize = 32;

/// A secret's plaintext: zeroed on drop, redacted in `Debug`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The bytes, for the one use that needs them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(***)")
    }
}

/// The key-encryption keys, by id, and which one seals.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, Zeroizing<[u8; KEY_BYTES]>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&String> = self.keys.keys().collect();
        write!(f, "Keyring {{ current: {}, ids: {ids:?} }}", self.current)
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Keyring {
    /// Reads `id:base64-key` entries separated by commas (configuration `secret_keys`); the
    /// current key is `current`, or the last entry when `None`.
    pub fn parse(text: &str, current: Option<&str>) -> Result<Keyring, String> {
        let mut keys = BTreeMap::new();
        let mut last = None;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry
                .split_once(':')
                .ok_or("each secret key is id:base64")?;
            if !valid_key_id(id) {
                return Err(format!(
                    "secret key id {id:?}: 1 to 32 letters, digits, - or _"
                ));
            }
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|_| format!("secret key {id}: not base64"))?,
            );
            let key: [u8; KEY_BYTES] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("secret key {id}: must be {KEY_BYTES} bytes"))?;
            if keys.insert(id.to_owned(), Zeroizing::new(key)).is_some() {
                return Err(format!("secret key id {id} given twice"));
            }
            last = Some(id.to_owned());
        }
        let current = match current {
            Some(id) => id.to_owned(),
            None => last.ok_or("no secret keys given")?,
        };
        if !keys.contains_key(&current) {
            return Err(format!(
                "the current secret key {current} is not in the ring"
            ));
        }
        Ok(Keyring { current, keys })
    }

    /// A ring of one fresh random key (tests, a throw-away demo).
    pub fn random(id: &str) -> Keyring {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Keyring {
            current: id.to_owned(),
            keys: BTreeMap::from([(id.to_owned(), key)]),
        }
    }

    /// A new random key as configuration writes it (`id:base64`).
    pub fn new_key_entry(id: &str) -> String {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key.as_ref())
        )
    }

    pub fn current(&self) -> &str {
        &self.current
    }

    fn cipher(&self, id: &str) -> CoreResult<Aes256Gcm> {
        let key = self.keys.get(id).ok_or_else(|| {
            CoreError::Internal(format!(
                "secret sealed with key {id}, which is not configured"
            ))
        })?;
        Ok(Aes256Gcm::new(key.as_ref().into()))
    }

    /// Seals `plaintext` for storage under `context` (schema and name).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> CoreResult<String> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher(&self.current)?
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CoreError::Internal("sealing a secret failed".into()))?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        Ok(format!(
            "{ENVELOPE_VERSION}.{}.{}",
            self.current,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
        ))
    }

    /// Opens an envelope sealed under `context`; fails on any change to it.
    pub fn open(&self, envelope: &str, context: &str) -> CoreResult<SecretBytes> {
        let broken = || CoreError::Internal("a stored secret does not open".into());
        let (key_id, body) = envelope_parts(envelope).ok_or_else(broken)?;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| broken())?;
        if body.len() < NONCE_BYTES + 16 {
            return Err(broken());
        }
        let (nonce, sealed) = body.split_at(NONCE_BYTES);
        let plain = self
            .cipher(key_id)?
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| broken())?;
        Ok(SecretBytes::new(plain))
    }
}

/// The key id and body of an envelope.
fn envelope_parts(envelope: &str) -> Option<(&str, &str)> {
    let rest = envelope.strip_prefix(ENVELOPE_VERSION)?.strip_prefix('.')?;
    let (id, body) = rest.split_once('.')?;
    valid_key_id(id).then_some((id, body))
}

/// The associated data of a secret: where it is stored.
async fn context(conn: &mut PgConnection, name: &str) -> CoreResult<String> {
    let schema: String = sqlx::query_scalar("select current_schema()")
        .fetch_one(conn)
        .await?;
    Ok(format!("{schema}/{name}"))
}

fn check_name(name: &str) -> CoreResult<()> {
    let ok = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CoreError::field("name", "1 to 100 of a-z 0-9 _ . : -"))
    }
}

/// Stores (or replaces) secret `name` in the transaction's schema (a company's, or `control`
/// for the platform's own), sealed with the current key.
#[tracing::instrument(skip_all)]
pub async fn put(
    conn: &mut PgConnection,
    keyring: &Keyring,
    name: &str,
    plaintext: &[u8],
) -> CoreResult<()> {
    check_name(name)?;
    let sealed = keyring.seal(plaintext, &context(conn, name).await?)?;
    sqlx::query(
        "insert into secrets (name, key_id, sealed) values ($1, $2, $3)
         on conflict (name) do update set key_id = excluded.key_id, sealed = excluded.sealed, updated_at = now()",
    )
    .bind(name)
    .bind(keyring.current())
    .bind(sealed)
    .execute(conn)
    .await?;
    Ok(())
}

/// Secret `name` of the transaction's schema, opened; `None` when there is none.
#[tracing::instrument(skip_all)]
pub async fn get(
    conn: &mut PgConnection,
    keyring: &Keyring,
    name: &str,
) -> CoreResult<Option<SecretBytes>> {
    let sealed: Option<String> = sqlx::query_scalar("select sealed from secrets where name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    match sealed {
        Some(sealed) => {
            let context = context(conn, name).await?;
            keyring.open(&sealed, &context).map(Some)
        }
        None => Ok(None),
    }
}

/// Whether secret `name` is set (pages say "set", never show it).
#[tracing::instrument(skip_all)]
pub async fn exists(conn: &mut PgConnection, name: &str) -> CoreResult<bool> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from secrets where name = $1)")
            .bind(name)
            .fetch_one(conn)
            .await?,
    )
}

/// What [`rotate`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotateReport {
    /// Secrets re-wrapped under the current key.
    pub rewrapped: u64,
    /// Schemas visited (control and every company).
    pub schemas: u64,
}

/// Re-wraps every secret of the platform (control) and of every company that is not under
/// the keyring's current key. Each secret is its own short transaction with a row lock, so
/// nothing waits for the whole run; a secret whose key is missing from the ring stops the run
/// with an error naming the key (nothing is lost: it stays as it was).
#[tracing::instrument(skip_all)]
pub async fn rotate(pool: &PgPool, keyring: &Keyring) -> CoreResult<RotateReport> {
    let mut report = RotateReport::default();
    let mut schemas = vec![crate::kernel::names::SchemaName::control()];
    let stored: Vec<String> =
        sqlx::query_scalar("select schema_name from control.company order by id")
            .fetch_all(pool)
            .await?;
    for s in stored {
        schemas.push(
            crate::kernel::names::SchemaName::from_stored(&s)
                .map_err(|e| CoreError::Internal(format!("stored schema {s:?}: {e}")))?,
        );
    }
    for schema in schemas {
        report.schemas += 1;
        loop {
            let mut tx = crate::db::begin_in(pool, &schema).await?;
            let row: Option<(String, String)> = sqlx::query_as(
                "select name, sealed from secrets where key_id <> $1 limit 1 for update skip locked",
            )
            .bind(keyring.current())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((name, sealed)) = row else { break };
            let context = context(&mut tx, &name).await?;
            let plain = keyring.open(&sealed, &context)?;
            let resealed = keyring.seal(plain.expose(), &context)?;
            sqlx::query(
                "update secrets set key_id = $2, sealed = $3, updated_at = now() where name = $1",
            )
            .bind(&name)
            .bind(keyring.current())
            .bind(resealed)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            report.rewrapped += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_only_unchanged_and_where_it_was_sealed() {
        let ring = Keyring::random("k1");
        let sealed = ring.seal(b"master key", "c_1/master").unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert_eq!(
            ring.open(&sealed, "c_1/master").unwrap().expose(),
            b"master key"
        );
        // Another company's row, another name, a flipped byte, another ring: none opens.
        assert!(ring.open(&sealed, "c_2/master").is_err());
        assert!(ring.open(&sealed, "c_1/other").is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(ring
            .open(std::str::from_utf8(&tampered).unwrap(), "c_1/master")
            .is_err());
        assert!(Keyring::random("k1").open(&sealed, "c_1/master").is_err());
        assert!(ring.open("v1.k1.", "c_1/master").is_err());
        assert!(ring.open("garbage", "c_1/master").is_err());
        // The same plaintext seals differently each time (random nonce).
        assert_ne!(ring.seal(b"x", "c").unwrap(), ring.seal(b"x", "c").unwrap());
    }

    #[test]
    fn keyrings_come_from_configuration_strictly() {
        let (k1, k2) = (Keyring::new_key_entry("k1"), Keyring::new_key_entry("k2"));
        let ring = Keyring::parse(&format!("{k1}, {k2}"), None).unwrap();
        assert_eq!(ring.current(), "k2");
        assert_eq!(
            Keyring::parse(&format!("{k1},{k2}"), Some("k1"))
                .unwrap()
                .current(),
            "k1"
        );
        assert!(Keyring::parse(&format!("{k1},{k2}"), Some("k3")).is_err());
        assert!(Keyring::parse(&format!("{k1},{k1}"), None).is_err());
        assert!(Keyring::parse("k1:c2hvcnQ=", None).is_err(), "short key");
        assert!(Keyring::parse("k 1:AAAA", None).is_err());
        assert!(Keyring::parse("", None).is_err());
        // Nothing of a key prints.
        let printed = format!("{ring:?} {:?}", SecretBytes::new(b"pw".to_vec()));
        assert!(!printed.contains(k1.split(':').nth(1).unwrap()) && !printed.contains("pw"));
    }

    #[test]
    fn an_older_key_of_the_ring_still_opens() {
        let (k1, k2) = (Keyring::new_key_entry("k1"), Keyring::new_key_entry("k2"));
        let old = Keyring::parse(&k1, None).unwrap();
        let sealed = old.seal(b"merchant", "c_1/m").unwrap();
        let both = Keyring::parse(&format!("{k1},{k2}"), None).unwrap();
        assert_eq!(both.open(&sealed, "c_1/m").unwrap().expose(), b"merchant");
        assert!(both
            .seal(b"merchant", "c_1/m")
            .unwrap()
            .starts_with("v1.k2."));
    }
}
