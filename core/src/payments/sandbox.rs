//! The sandbox provider's notification format (DESIGN.md: Sandbox payments — demos and tests
//! only, switched on per company). It behaves like the real providers where it matters: a paid
//! notice is a JSON body signed with HMAC-SHA256 over `timestamp \n nonce \n body \n` (the shape
//! of WeChat Pay v3's signing string), the timestamp must be within 5 minutes of our clock, and
//! the key is the company's own — derived from the deployment's sandbox key and the company's
//! slug, so a signature made for one company never verifies at another's notify URL.

use super::orders::{PaidNotice, Provider};
use crate::auth::Secret;
use crate::kernel::money::AmountFen;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a notification's timestamp may be from our clock.
pub const TIMESTAMP_WINDOW_S: i64 = 300;
/// Header names.
pub const SIGNATURE_HEADER: &str = "sandbox-signature";
pub const TIMESTAMP_HEADER: &str = "sandbox-timestamp";
pub const NONCE_HEADER: &str = "sandbox-nonce";

/// Company `slug`'s sandbox key.
pub fn company_key(sandbox_key: &Secret, slug: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(sandbox_key.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"powertab-sandbox-payments\n");
    mac.update(slug.as_bytes());
    mac.finalize().into_bytes().into()
}

fn mac_of(key: &[u8; 32], timestamp: &str, nonce: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac
}

/// The signature (base64) of `body` sent at `timestamp` (Unix seconds) with `nonce`.
pub fn sign(key: &[u8; 32], timestamp: &str, nonce: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac_of(key, timestamp, nonce, body).finalize().into_bytes())
}

/// Why a notification is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the signature headers are missing")]
    Unsigned,
    #[error("the timestamp is not within 5 minutes of ours")]
    Stale,
    #[error("the signature does not check out")]
    BadSignature,
    #[error("the body is not a sandbox paid notice: {0}")]
    Malformed(String),
}

/// Checks a notification's signature (constant time) and timestamp window at `now`.
pub fn verify(
    key: &[u8; 32],
    signature: Option<&str>,
    timestamp: Option<&str>,
    nonce: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let (Some(signature), Some(timestamp), Some(nonce)) = (signature, timestamp, nonce) else {
        return Err(Refusal::Unsigned);
    };
    let at: i64 = timestamp.trim().parse().map_err(|_| Refusal::Stale)?;
    if (now.timestamp() - at).abs() > TIMESTAMP_WINDOW_S {
        return Err(Refusal::Stale);
    }
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    mac_of(key, timestamp, nonce, body)
        .verify_slice(&given)
        .map_err(|_| Refusal::BadSignature)
}

/// The body of a sandbox paid notice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeBody {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub amount_fen: i64,
    /// Unix milliseconds.
    pub paid_at_ms: i64,
    /// `SUCCESS` for a payment (other states are not credited).
    pub trade_state: String,
}

/// The paid notice a verified body carries.
pub fn parse(body: &[u8]) -> Result<PaidNotice, Refusal> {
    let n: NoticeBody =
        serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if n.trade_state != "SUCCESS" {
        return Err(Refusal::Malformed(format!(
            "trade_state {:?} is not a payment",
            n.trade_state
        )));
    }
    let fits = |t: &str| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !fits(&n.out_trade_no) || !fits(&n.transaction_id) {
        return Err(Refusal::Malformed("order and transaction numbers".into()));
    }
    if n.amount_fen <= 0 {
        return Err(Refusal::Malformed("the amount is not positive".into()));
    }
    let paid_at = DateTime::<Utc>::from_timestamp_millis(n.paid_at_ms)
        .ok_or_else(|| Refusal::Malformed("paid_at_ms".into()))?;
    Ok(PaidNotice {
        provider: Provider::Sandbox,
        out_trade_no: n.out_trade_no,
        transaction_id: n.transaction_id,
        amount_fen: AmountFen::from_fen(n.amount_fen),
        paid_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 32] {
        company_key(&Secret::new("a-sandbox-key-for-tests"), "acme")
    }

    #[test]
    fn a_signed_notice_verifies_and_any_change_or_another_company_is_refused() {
        let now = DateTime::<Utc>::from_timestamp(1_764_000_000, 0).unwrap();
        let ts = now.timestamp().to_string();
        let body = br#"{"out_trade_no":"PT1","transaction_id":"T1","amount_fen":100,"paid_at_ms":0,"trade_state":"SUCCESS"}"#;
        let sig = sign(&key(), &ts, "n1", body);
        assert_eq!(
            verify(&key(), Some(&sig), Some(&ts), Some("n1"), body, now),
            Ok(())
        );
        let mut changed = body.to_vec();
        changed[40] ^= 1;
        assert_eq!(
            verify(&key(), Some(&sig), Some(&ts), Some("n1"), &changed, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(&key(), Some(&sig), Some(&ts), Some("n2"), body, now),
            Err(Refusal::BadSignature)
        );
        let other = company_key(&Secret::new("a-sandbox-key-for-tests"), "acme2");
        assert_eq!(
            verify(&other, Some(&sig), Some(&ts), Some("n1"), body, now),
            Err(Refusal::BadSignature)
        );
        let later = now + chrono::Duration::seconds(TIMESTAMP_WINDOW_S + 1);
        assert_eq!(
            verify(&key(), Some(&sig), Some(&ts), Some("n1"), body, later),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify(&key(), None, Some(&ts), Some("n1"), body, now),
            Err(Refusal::Unsigned)
        );
    }

    #[test]
    fn only_a_successful_payment_with_sane_numbers_is_a_notice() {
        let ok = br#"{"out_trade_no":"PT1","transaction_id":"T-1","amount_fen":100,"paid_at_ms":1764000000000,"trade_state":"SUCCESS"}"#;
        assert_eq!(parse(ok).unwrap().amount_fen, AmountFen::from_fen(100));
        for bad in [
            &br#"{"out_trade_no":"PT1","transaction_id":"T1","amount_fen":100,"paid_at_ms":0,"trade_state":"CLOSED"}"#[..],
            br#"{"out_trade_no":"PT1","transaction_id":"T1","amount_fen":0,"paid_at_ms":0,"trade_state":"SUCCESS"}"#,
            br#"{"out_trade_no":"../x","transaction_id":"T1","amount_fen":1,"paid_at_ms":0,"trade_state":"SUCCESS"}"#,
            br#"{"out_trade_no":"PT1","transaction_id":"T1","amount_fen":1,"paid_at_ms":0,"trade_state":"SUCCESS","extra":1}"#,
            b"not json",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
