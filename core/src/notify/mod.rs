//! Notifications on their way out (issue: Notifications): the [`Channel`] trait every way of
//! reaching a person implements, and the pieces around it.
//!
//! | module | owns |
//! |---|---|
//! | [`sign`] | the vendors' request signing (Aliyun RPC HMAC-SHA1, Tencent TC3, WeChat callbacks) |
//! | [`vendors`] | the channels: sandbox, Aliyun SMS, Tencent Cloud SMS, WeChat template messages |
//! | [`accounts`] | a company's vendor accounts: public settings, templates, sealed secrets |
//! | [`sender`] | the passes: send what is due (rate limit, retries), pull delivery reports |
//! | [`alerts`] | operators' messages: field alarms and stuck commands, escalated when unacknowledged |
//! | [`preferences`] | which kinds of message a user does not want |
//!
//! A message is written once (`notifications`, by `power::tell` or [`alerts`]) with its
//! recipient, kind, text and template parameters, and its channel chosen then (the company's SMS
//! vendor for a phone, WeChat for a user who linked an account, the sandbox otherwise). The
//! sender claims due messages under a lease (several server processes may run it), sends each
//! once, and records the vendor's id; "delivered" comes only from the vendor's delivery report
//! (pulled for the SMS vendors, pushed by WeChat to its callback), never from the send answer.
//! A refused credential (wrong secret) fails the message, marks the vendor account broken and
//! is reported — never retried until someone enters the secret again.

pub mod accounts;
pub mod alerts;
pub mod oauth;
pub mod preferences;
pub mod sender;
pub mod sign;
pub mod vendors;

use chrono::{DateTime, Utc};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// A future a channel returns (the trait is used as `dyn Channel`).
pub type ChannelFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message as a channel sends it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: Uuid,
    /// A phone number (`13800000000` or `+8613800000000`) or a WeChat openid.
    pub to: String,
    pub kind: String,
    /// The vendor's template for `kind` (empty for the sandbox).
    pub template: String,
    /// The template's parameters, in order (Tencent's are positional).
    pub params: Vec<(String, String)>,
    /// The whole text, as the log and the sandbox show it.
    pub body: String,
}

/// A message the vendor took; `delivered` only for the sandbox, which is its own report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub vendor_ref: String,
    pub delivered: bool,
}

/// Why a send did not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The vendor refused the credentials (wrong secret, unknown key, disabled account): no
    /// message gets through until someone fixes them, so nothing is retried.
    Auth(String),
    /// This message cannot go (bad number, unknown template, unsubscribed user).
    Rejected(String),
    /// Worth trying again later (network, vendor busy, throttled).
    Transient(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Auth(m) => write!(f, "credentials refused: {m}"),
            SendError::Rejected(m) => write!(f, "rejected: {m}"),
            SendError::Transient(m) => write!(f, "not sent yet: {m}"),
        }
    }
}

/// A sent message whose delivery report is still awaited.
#[derive(Debug, Clone)]
pub struct Pending {
    pub vendor_ref: String,
    pub to: String,
    pub sent_at: DateTime<Utc>,
}

/// A vendor's delivery report for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub vendor_ref: String,
    pub delivered: bool,
    /// The vendor's words (`DELIVRD`, an error code).
    pub detail: String,
}

/// A way of reaching people.
pub trait Channel: Send + Sync {
    /// `sandbox`, `aliyun`, `tencent`, `wechat` (as stored in `notifications.channel`).
    fn name(&self) -> &'static str;
    /// Sends one message.
    fn send<'a>(&'a self, message: &'a Outgoing) -> ChannelFuture<'a, Result<Accepted, SendError>>;
    /// Delivery reports the vendor has for `pending` (a vendor that pushes its reports returns
    /// none here).
    fn reports<'a>(
        &'a self,
        pending: &'a [Pending],
    ) -> ChannelFuture<'a, Result<Vec<Report>, SendError>>;
    /// An access token the channel fetched and the caller should keep for the next pass
    /// (WeChat's); none for the others.
    fn token_to_keep(&self) -> Option<vendors::AccessToken> {
        None
    }
}

/// The channels a message may be written for.
pub const CHANNELS: [&str; 4] = ["sandbox", "aliyun", "tencent", "wechat"];

/// Whether `text` is a phone number a Chinese SMS vendor takes: 11 digits starting with 1, or
/// `+` and 8 to 15 digits.
pub fn is_phone(text: &str) -> bool {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match text.strip_prefix('+') {
        Some(rest) => (8..=15).contains(&rest.len()) && digits(rest),
        None => text.len() == 11 && text.starts_with('1') && digits(text),
    }
}

/// `phone` in E.164 (`+86…` for a mainland number).
pub fn e164(phone: &str) -> String {
    if phone.starts_with('+') {
        phone.to_owned()
    } else {
        format!("+86{phone}")
    }
}

/// Queues one text message to `phone` that belongs to no account (a login code, an
/// invitation), through the company's SMS channel, to go at once: the night window is for
/// balance news, and a person waiting for a code is awake.
pub async fn queue_to_phone(
    conn: &mut sqlx::PgConnection,
    kind: &str,
    phone: &str,
    body: &str,
    params: &[(&str, &str)],
    now: DateTime<Utc>,
) -> crate::CoreResult<Uuid> {
    let channel = accounts::delivery(conn).await?.sms_channel;
    let params: Vec<[&str; 2]> = params.iter().map(|(k, v)| [*k, *v]).collect();
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into notifications (id, kind, recipient, channel, body, created_at, deliver_after, params)
         values ($1, $2, $3, $4, $5, $6, $6, $7)",
    )
    .bind(id)
    .bind(kind)
    .bind(phone)
    .bind(channel)
    .bind(body)
    .bind(now)
    .bind(serde_json::to_value(params).unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(id)
}

/// Kinds that neither wait for nor count toward the per-phone hourly limit: a trip notice (the
/// trip is on its way) and a login code (limited where it is asked for, and useless later).
pub const UNLIMITED_KINDS: [&str; 2] = ["trip_notice", "login_code"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_mainland_mobiles_or_e164() {
        assert!(is_phone("13800000000"));
        assert!(is_phone("+8613800000000"));
        assert!(!is_phone("1380000000"));
        assert!(!is_phone("23800000000"));
        assert!(!is_phone("138000000a0"));
        assert!(!is_phone("boss"));
        assert!(!is_phone("+"));
        assert_eq!(e164("13800000000"), "+8613800000000");
        assert_eq!(e164("+85212345678"), "+85212345678");
    }
}
