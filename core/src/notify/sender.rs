//! The sender's passes over one company, run by the server's notification worker:
//! - [`send_due`] claims due `queued` messages under a lease (`claimed_until`, `for update skip
//!   locked`: any number of server processes), holds a phone's messages over the company's
//!   per-hour limit (trip notices are never held), sends each through its channel and records
//!   the vendor's id (`sent`); the sandbox is its own delivery report (`delivered`). A transient
//!   failure is tried again after 30 s, 2, 10 and 30 min, then `failed`; a refused credential
//!   fails the message and marks the vendor account broken (never retried until fixed).
//! - [`pull_reports`] asks the SMS vendors for delivery reports of `sent` messages and moves them
//!   to `delivered` or `failed`; WeChat pushes its reports to [`wechat_callback`].
//!
//! A process that dies between the vendor's answer and the update leaves the claim to run out:
//! the message is sent again after the lease (at least once — a vendor cannot be asked whether
//! it already took a message it never answered for).

use super::accounts::{self, Ready, Vendors};
use super::{sign, Outgoing, Pending, Report, SendError};
use crate::auth::Principal;
use crate::db;
use crate::kernel::error::{CoreError, CoreResult};
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Messages one pass claims at most (sent one after another).
pub const CLAIM_MAX: i64 = 20;
/// How long a claim holds its messages: long enough for every one of them to take the longest
/// vendor call, so no other sender takes one while this one is still on its way.
pub const CLAIM_S: i64 = CLAIM_MAX * super::vendors::VENDOR_TIMEOUT_S + 30;
/// Sends of one message at most (transient failures).
pub const SEND_ATTEMPTS_MAX: i32 = 5;
/// Seconds before the next try after the n-th transient failure.
const RETRY_AFTER_S: [i64; 4] = [30, 120, 600, 1800];
/// Delivery reports are asked for this long after the send, at most this often per message.
const REPORT_WINDOW_H: i64 = 72;
const REPORT_EVERY_S: i64 = 20;
/// How far a WeChat callback's timestamp may be from now (replays are refused).
const CALLBACK_SKEW_S: i64 = 300;

/// What one [`send_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: u64,
    pub delivered: u64,
    pub retried: u64,
    pub held: u64,
    pub failed: u64,
}

struct Claimed {
    id: Uuid,
    recipient: String,
    kind: String,
    channel: String,
    body: String,
    params: Vec<(String, String)>,
    attempts: i32,
}

/// Seconds before try `attempts + 1` after a transient failure, or `None` when it was the last.
pub fn retry_after_s(attempts: i32) -> Option<i64> {
    if attempts >= SEND_ATTEMPTS_MAX {
        return None;
    }
    let at = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
    RETRY_AFTER_S.get(at).copied()
}

async fn claim(
    pool: &PgPool,
    principal: &Principal,
    until: DateTime<Utc>,
) -> CoreResult<Vec<Claimed>> {
    let now = principal.now();
    let mut tx = db::begin_in(pool, &principal.company()?.schema).await?;
    let rows = sqlx::query(
        "update notifications set claimed_until = $2 where id in (
             select id from notifications
             where state = 'queued' and deliver_after <= $1
               and coalesce(next_try_at, '-infinity') <= $1
               and coalesce(claimed_until, '-infinity') < $1
             order by deliver_after, id limit $3 for update skip locked)
         returning id, recipient, kind, channel, body, params, attempts",
    )
    .bind(now)
    .bind(until)
    .bind(CLAIM_MAX)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // `returning` keeps no order: oldest first, as the subquery chose them.
    let mut claimed = rows
        .iter()
        .map(|r| {
            let params: Vec<(String, String)> =
                serde_json::from_value(r.try_get("params")?).unwrap_or_default();
            Ok(Claimed {
                id: r.try_get("id")?,
                recipient: r.try_get("recipient")?,
                kind: r.try_get("kind")?,
                channel: r.try_get("channel")?,
                body: r.try_get("body")?,
                params,
                attempts: r.try_get("attempts")?,
            })
        })
        .collect::<CoreResult<Vec<Claimed>>>()?;
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

/// When `recipient` may get its next message under `per_hour`, or `None` when it may now
/// (trip notices neither wait nor count).
async fn held_until(
    conn: &mut PgConnection,
    recipient: &str,
    per_hour: i32,
    now: DateTime<Utc>,
) -> CoreResult<Option<DateTime<Utc>>> {
    let sent: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "select sent_at from notifications
         where recipient = $1 and sent_at > $2 and kind <> all($4)
         order by sent_at desc limit $3",
    )
    .bind(recipient)
    .bind(now - Duration::hours(1))
    .bind(i64::from(per_hour))
    .bind(&super::UNLIMITED_KINDS[..])
    .fetch_all(conn)
    .await?;
    Ok(match sent.last() {
        Some(oldest) if sent.len() >= usize::try_from(per_hour).unwrap_or(usize::MAX) => {
            Some(*oldest + Duration::hours(1))
        }
        _ => None,
    })
}

/// Sends the company's due messages: different phones at once (up to [`SEND_CONCURRENCY`]), one
/// phone's messages one after another (so the per-phone limit holds).
#[tracing::instrument(skip_all)]
pub async fn send_due(
    pool: &PgPool,
    principal: &Principal,
    vendors: &Vendors,
) -> CoreResult<SendReport> {
    use futures_util::StreamExt;
    let now = principal.now();
    let until = now + Duration::seconds(CLAIM_S);
    let claimed = claim(pool, principal, until).await?;
    let mut report = SendReport::default();
    if claimed.is_empty() {
        return Ok(report);
    }
    let schema = principal.company()?.schema.clone();
    let mut tx = db::begin_in(pool, &schema).await?;
    let delivery = accounts::delivery(&mut tx).await?;
    // Each channel is opened once per pass.
    let mut ready: BTreeMap<String, Result<Ready, SendError>> = BTreeMap::new();
    for message in &claimed {
        if !ready.contains_key(&message.channel) {
            let opened = accounts::open(&mut tx, vendors, &message.channel, now).await?;
            ready.insert(message.channel.clone(), opened);
        }
    }
    tx.commit().await?;
    let mut by_phone: BTreeMap<&str, Vec<&Claimed>> = BTreeMap::new();
    for message in &claimed {
        by_phone
            .entry(&message.recipient)
            .or_default()
            .push(message);
    }
    let pass = Pass {
        pool,
        schema: &schema,
        ready: &ready,
        refused: std::sync::Mutex::new(BTreeMap::new()),
        per_phone_hour: delivery.per_phone_hour,
        claim: (until, now),
    };
    let mut groups = by_phone.into_values();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut tallies = Vec::new();
    loop {
        while running.len() < SEND_CONCURRENCY {
            match groups.next() {
                Some(messages) => running.push(pass.phone(messages)),
                None => break,
            }
        }
        match running.next().await {
            Some(tally) => tallies.push(tally),
            None => break,
        }
    }
    for tally in tallies {
        for t in tally? {
            match t {
                Tally::Sent => report.sent += 1,
                Tally::Delivered => report.delivered += 1,
                Tally::Retried => report.retried += 1,
                Tally::Held => report.held += 1,
                Tally::Failed => report.failed += 1,
            }
        }
    }
    keep_tokens(pool, &schema, vendors, &ready).await?;
    Ok(report)
}

/// Phones sent to at once.
pub const SEND_CONCURRENCY: usize = 8;

/// What became of one message, for the report.
enum Tally {
    Sent,
    Delivered,
    Retried,
    Held,
    Failed,
}

/// One pass's shared state.
struct Pass<'a> {
    pool: &'a PgPool,
    schema: &'a crate::kernel::names::SchemaName,
    ready: &'a BTreeMap<String, Result<Ready, SendError>>,
    /// Channels whose credentials were refused during this pass, and why.
    refused: std::sync::Mutex<BTreeMap<String, String>>,
    per_phone_hour: i32,
    /// (the claim, now)
    claim: (DateTime<Utc>, DateTime<Utc>),
}

impl Pass<'_> {
    /// One phone's messages, in order.
    async fn phone(&self, messages: Vec<&Claimed>) -> CoreResult<Vec<Tally>> {
        let mut tallies = Vec::new();
        for message in messages {
            tallies.push(self.one(message).await?);
        }
        Ok(tallies)
    }

    async fn one(&self, message: &Claimed) -> CoreResult<Tally> {
        let now = self.claim.1;
        let mut tx = db::begin_in(self.pool, self.schema).await?;
        if !super::UNLIMITED_KINDS.contains(&message.kind.as_str()) {
            let held = held_until(&mut tx, &message.recipient, self.per_phone_hour, now).await?;
            if let Some(at) = held {
                let later = Settle::Later(at, "held: per-phone limit");
                settle(&mut tx, message, self.claim, later).await?;
                tx.commit().await?;
                return Ok(Tally::Held);
            }
        }
        let refused_before = self
            .refused
            .lock()
            .ok()
            .and_then(|r| r.get(&message.channel).cloned());
        let outcome = match (refused_before, self.ready.get(&message.channel)) {
            (Some(why), _) => Err(SendError::Auth(why)),
            (None, Some(Ok(ready))) => send_one(ready, message).await,
            (None, Some(Err(e))) => Err(e.clone()),
            (None, None) => Err(SendError::Rejected("no channel".into())),
        };
        let (tally, settled) = match outcome {
            Ok(accepted) if accepted.delivered => {
                (Tally::Delivered, Settle::Delivered(accepted.vendor_ref))
            }
            Ok(accepted) => (Tally::Sent, Settle::Sent(accepted.vendor_ref)),
            Err(SendError::Transient(why)) => match retry_after_s(message.attempts + 1) {
                Some(after_s) => (
                    Tally::Retried,
                    Settle::Retry(now + Duration::seconds(after_s), why),
                ),
                None => (Tally::Failed, Settle::Failed(why)),
            },
            Err(SendError::Auth(why)) => {
                let first = self
                    .refused
                    .lock()
                    .map(|mut r| r.insert(message.channel.clone(), why.clone()).is_none())
                    .unwrap_or(false);
                if first {
                    refused(&mut tx, &message.channel, &why, now).await?;
                }
                (
                    Tally::Failed,
                    Settle::Failed(format!("credentials refused: {why}")),
                )
            }
            Err(SendError::Rejected(why)) => (Tally::Failed, Settle::Failed(why)),
        };
        settle(&mut tx, message, self.claim, settled).await?;
        tx.commit().await?;
        Ok(tally)
    }
}

async fn send_one(ready: &Ready, message: &Claimed) -> Result<super::Accepted, SendError> {
    let template = ready.template(&message.kind)?;
    let sms = matches!(ready.channel.name(), "aliyun" | "tencent");
    if sms && !super::is_phone(&message.recipient) {
        return Err(SendError::Rejected(format!(
            "{} is not a phone number",
            message.recipient
        )));
    }
    let outgoing = Outgoing {
        id: message.id,
        to: message.recipient.clone(),
        kind: message.kind.clone(),
        template,
        params: message.params.clone(),
        body: message.body.clone(),
    };
    ready.channel.send(&outgoing).await
}

/// A refused credential: reported (log, counter, the account's mark), never retried.
async fn refused(
    conn: &mut PgConnection,
    channel: &str,
    why: &str,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    tracing::error!(
        channel,
        reason = why,
        "a notification vendor refused the credentials"
    );
    metrics::counter!("notify_credentials_refused_total", "channel" => channel.to_owned())
        .increment(1);
    accounts::mark_broken(conn, channel, why, now).await
}

async fn keep_tokens(
    pool: &PgPool,
    schema: &crate::kernel::names::SchemaName,
    vendors: &Vendors,
    ready: &BTreeMap<String, Result<Ready, SendError>>,
) -> CoreResult<()> {
    let Some(keyring) = vendors.keyring.as_deref() else {
        return Ok(());
    };
    for one in ready.values().flatten() {
        if let Some(token) = one.channel.token_to_keep() {
            let mut tx = db::begin_in(pool, schema).await?;
            accounts::save_token(&mut tx, keyring, &token).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

enum Settle {
    Sent(String),
    Delivered(String),
    Retry(DateTime<Utc>, String),
    Later(DateTime<Utc>, &'static str),
    Failed(String),
}

/// Records what became of a claimed message — only while the claim is still ours.
async fn settle(
    conn: &mut PgConnection,
    message: &Claimed,
    (claim, now): (DateTime<Utc>, DateTime<Utc>),
    outcome: Settle,
) -> CoreResult<()> {
    let (state, vendor_ref, next_try, error, attempt, reported) = match outcome {
        Settle::Sent(r) => ("sent", Some(r), None, String::new(), 1, None),
        Settle::Delivered(r) => ("delivered", Some(r), None, String::new(), 1, Some(now)),
        Settle::Retry(at, why) => ("queued", None, Some(at), why, 1, None),
        Settle::Later(at, why) => ("queued", None, Some(at), why.to_owned(), 0, None),
        Settle::Failed(why) => ("failed", None, None, why, 1, None),
    };
    let sent = matches!(state, "sent" | "delivered").then_some(now);
    sqlx::query(
        "update notifications set state = $3, vendor_ref = coalesce($4, vendor_ref),
             next_try_at = $5, error = $6, attempts = attempts + $7, sent_at = coalesce($8, sent_at),
             reported_at = $9, claimed_until = null
         where id = $1 and claimed_until = $2 and state = 'queued'",
    )
    .bind(message.id)
    .bind(claim)
    .bind(state)
    .bind(vendor_ref)
    .bind(next_try)
    .bind(error.chars().take(500).collect::<String>())
    .bind(attempt)
    .bind(sent)
    .bind(reported)
    .execute(conn)
    .await?;
    Ok(())
}

/// Asks the SMS vendors for delivery reports of the company's sent messages; how many were
/// settled.
#[tracing::instrument(skip_all)]
pub async fn pull_reports(
    pool: &PgPool,
    principal: &Principal,
    vendors: &Vendors,
) -> CoreResult<u64> {
    let now = principal.now();
    let schema = principal.company()?.schema.clone();
    let mut settled = 0;
    for channel in ["aliyun", "tencent"] {
        let mut tx = db::begin_in(pool, &schema).await?;
        let rows = sqlx::query(
            "update notifications set report_checked_at = $2 where id in (
                 select id from notifications
                 where channel = $1 and state = 'sent' and vendor_ref is not null
                   and sent_at > $3 and coalesce(report_checked_at, '-infinity') < $4
                 order by sent_at limit 50 for update skip locked)
             returning recipient, vendor_ref, sent_at",
        )
        .bind(channel)
        .bind(now)
        .bind(now - Duration::hours(REPORT_WINDOW_H))
        .bind(now - Duration::seconds(REPORT_EVERY_S))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if rows.is_empty() {
            continue;
        }
        let pending: Vec<Pending> = rows
            .iter()
            .map(|r| {
                Ok(Pending {
                    to: r.try_get("recipient")?,
                    vendor_ref: r.try_get("vendor_ref")?,
                    sent_at: r.try_get("sent_at")?,
                })
            })
            .collect::<CoreResult<_>>()?;
        let mut tx = db::begin_in(pool, &schema).await?;
        let Ok(ready) = accounts::open(&mut tx, vendors, channel, now).await? else {
            continue;
        };
        match ready.channel.reports(&pending).await {
            Ok(reports) => {
                for report in &reports {
                    settled += record_report(&mut tx, channel, report, now).await?;
                }
            }
            Err(SendError::Auth(why)) => refused(&mut tx, channel, &why, now).await?,
            Err(e) => tracing::warn!(channel, error = %e, "delivery reports not pulled"),
        }
        tx.commit().await?;
    }
    Ok(settled)
}

/// Applies one delivery report; 1 when it settled a sent message.
pub(crate) async fn record_report(
    conn: &mut PgConnection,
    channel: &str,
    report: &Report,
    now: DateTime<Utc>,
) -> CoreResult<u64> {
    let state = if report.delivered {
        "delivered"
    } else {
        "failed"
    };
    let error = if report.delivered {
        String::new()
    } else {
        format!("delivery failed: {}", report.detail)
    };
    let done = sqlx::query(
        "update notifications set state = $3, reported_at = $4, error = $5
         where channel = $1 and vendor_ref = $2 and state = 'sent'",
    )
    .bind(channel)
    .bind(&report.vendor_ref)
    .bind(state)
    .bind(now)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The query WeChat signs a callback with.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub signature: String,
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub nonce: String,
    /// URL verification: echoed back when the signature holds.
    #[serde(default)]
    pub echostr: Option<String>,
}

/// Checks a WeChat callback's signature against the company's callback token; an event that
/// reports a template message's delivery is recorded. `Unauthorized` for a bad signature or a
/// timestamp more than five minutes off.
#[tracing::instrument(skip_all)]
pub async fn wechat_callback(
    conn: &mut PgConnection,
    vendors: &Vendors,
    query: &CallbackQuery,
    body: &str,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    let refused = || CoreError::Unauthorized("bad callback signature".into());
    let keyring = vendors.keyring.as_deref().ok_or_else(refused)?;
    let token = accounts::callback_token(conn, keyring)
        .await?
        .ok_or_else(refused)?;
    let expected = sign::wechat_callback_signature(&token, &query.timestamp, &query.nonce);
    if !crate::auth::constant_time_eq(&expected, &query.signature) {
        metrics::counter!("notify_callback_refused_total").increment(1);
        return Err(refused());
    }
    let at = query.timestamp.parse::<i64>().map_err(|_| refused())?;
    if (now.timestamp() - at).abs() > CALLBACK_SKEW_S {
        return Err(refused());
    }
    if let Some(report) = super::vendors::wechat_job_finished(body) {
        record_report(conn, "wechat", &report, now).await?;
    }
    Ok(())
}
