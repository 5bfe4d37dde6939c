//! A company's vendor accounts (Aliyun SMS, Tencent Cloud SMS, WeChat official account) and how
//! its messages go: which SMS vendor phones are sent through, the per-phone limit, when operator
//! alerts escalate. Public settings and the template per message kind are in `notify_accounts`;
//! each secret is sealed in `secrets` (`notify.<channel>.secret`, WeChat's
//! `notify.wechat.callback_token` and its cached `notify.wechat.access_token`) and is never
//! shown again — the page says only whether it is set. Changes need the settings right and are
//! audited without the secrets.

use super::vendors::{AccessToken, AliyunSms, Sandbox, TencentSms, WechatTemplate};
use super::{Channel, SendError};
use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets::{self, Keyring};
use crate::tenancy::audit;
use crate::tenancy::roles::{Need, Right};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;

/// The vendor accounts a company may have.
pub const VENDOR_CHANNELS: [&str; 3] = ["aliyun", "tencent", "wechat"];

/// The message kinds a template can be set for: the tenants' and the operators'.
pub const KINDS: [&str; 14] = [
    "login_code",
    "invitation",
    "alarm1",
    "alarm2",
    "trip_notice",
    "tripped",
    "restored",
    "top_up",
    "alert_meter_stale",
    "alert_gateway_offline",
    "alert_reading_held",
    "alert_relay_mismatch",
    "alert_command_stuck",
    "alert_ledger_check",
];

/// The public settings each vendor needs (all required but Tencent's region).
pub fn config_keys(channel: &str) -> &'static [&'static str] {
    match channel {
        "aliyun" => &["access_key_id", "sign_name"],
        "tencent" => &["secret_id", "sdk_app_id", "sign_name", "region"],
        _ => &["app_id"],
    }
}

/// Where the server sends vendor calls (server configuration, never a company's).
#[derive(Debug, Clone)]
pub struct VendorUrls {
    pub aliyun: String,
    pub tencent: String,
    pub wechat: String,
    /// WeChat's web authorisation page (`https://open.weixin.qq.com`), where a tenant's phone
    /// is sent to link their WeChat (`notify::oauth`).
    pub wechat_open: String,
}

impl Default for VendorUrls {
    fn default() -> Self {
        VendorUrls {
            aliyun: "https://dysmsapi.aliyuncs.com".into(),
            tencent: "https://sms.tencentcloudapi.com".into(),
            wechat: "https://api.weixin.qq.com".into(),
            wechat_open: "https://open.weixin.qq.com".into(),
        }
    }
}

/// What the server needs to reach vendors: their URLs, an HTTP client, the keyring.
#[derive(Clone)]
pub struct Vendors {
    pub urls: VendorUrls,
    pub http: reqwest::Client,
    pub keyring: Option<std::sync::Arc<Keyring>>,
}

impl Vendors {
    pub fn new(urls: VendorUrls, keyring: Option<std::sync::Arc<Keyring>>) -> Vendors {
        Vendors {
            urls,
            http: super::vendors::http_client(),
            keyring,
        }
    }
}

/// A vendor account as the settings page shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccountView {
    pub channel: String,
    pub enabled: bool,
    pub config: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
    /// Whether the secret is stored (it is never shown).
    pub secret_set: bool,
    /// WeChat: whether the callback token is stored.
    pub callback_token_set: bool,
    /// The vendor refused the credentials then; cleared by entering them again.
    pub broken_at: Option<DateTime<Utc>>,
    pub broken_reason: String,
}

/// A vendor account as entered; an empty or missing secret keeps the stored one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountInput {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub callback_token: Option<String>,
}

fn yes() -> bool {
    true
}

/// How messages go.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// `sandbox`, `aliyun` or `tencent`.
    pub sms_channel: String,
    /// Messages per phone number per hour (1–1,000); trip notices are never held.
    pub per_phone_hour: i32,
    /// Minutes before an unacknowledged operator alert goes to the admins (1–10,080).
    pub escalate_after_min: i32,
}

fn secret_name(channel: &str) -> String {
    format!("notify.{channel}.secret")
}

pub(crate) const WECHAT_CALLBACK_TOKEN: &str = "notify.wechat.callback_token";
const WECHAT_ACCESS_TOKEN: &str = "notify.wechat.access_token";

fn check_channel(channel: &str) -> CoreResult<()> {
    if VENDOR_CHANNELS.contains(&channel) {
        Ok(())
    } else {
        Err(CoreError::NotFound("notification channel"))
    }
}

fn printable(text: &str, max: usize) -> bool {
    text.chars().count() <= max && !text.chars().any(char::is_control)
}

fn check_input(channel: &str, input: &AccountInput) -> CoreResult<()> {
    let mut fields = BTreeMap::new();
    let keys = config_keys(channel);
    for (key, value) in &input.config {
        if !keys.contains(&key.as_str()) {
            fields.insert(
                format!("config.{key}"),
                "not a setting of this vendor".into(),
            );
        } else if !printable(value, 100) {
            fields.insert(
                format!("config.{key}"),
                "at most 100 printable characters".into(),
            );
        }
    }
    if input.enabled {
        for key in keys.iter().filter(|k| **k != "region") {
            if input.config.get(*key).is_none_or(|v| v.trim().is_empty()) {
                fields.insert(format!("config.{key}"), "required".into());
            }
        }
    }
    for (kind, template) in &input.templates {
        let ok = template.len() <= 64
            && template
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !KINDS.contains(&kind.as_str()) {
            fields.insert(format!("templates.{kind}"), "not a message kind".into());
        } else if !ok {
            fields.insert(
                format!("templates.{kind}"),
                "at most 64 of A-Z a-z 0-9 _ -".into(),
            );
        }
    }
    for (name, value) in [
        ("secret", &input.secret),
        ("callback_token", &input.callback_token),
    ] {
        if value.as_deref().is_some_and(|v| !printable(v, 200)) {
            fields.insert(name.into(), "at most 200 printable characters".into());
        }
    }
    CoreError::check_fields(fields)
}

/// The company's vendor accounts, one per channel (absent ones as empty and disabled).
#[tracing::instrument(skip_all)]
pub async fn list(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<AccountView>> {
    principal.require(Need::Act(Right::Settings))?;
    let mut views = Vec::new();
    for channel in VENDOR_CHANNELS {
        views.push(view(conn, channel).await?);
    }
    Ok(views)
}

async fn view(conn: &mut PgConnection, channel: &str) -> CoreResult<AccountView> {
    let row = sqlx::query(
        "select enabled, config, templates, broken_at, broken_reason from notify_accounts
         where channel = $1",
    )
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await?;
    let secret_set = secrets::exists(conn, &secret_name(channel)).await?;
    let callback_token_set =
        channel == "wechat" && secrets::exists(conn, WECHAT_CALLBACK_TOKEN).await?;
    let map = |v: serde_json::Value| serde_json::from_value(v).unwrap_or_default();
    Ok(match row {
        Some(r) => AccountView {
            channel: channel.to_owned(),
            enabled: r.try_get("enabled")?,
            config: map(r.try_get("config")?),
            templates: map(r.try_get("templates")?),
            secret_set,
            callback_token_set,
            broken_at: r.try_get("broken_at")?,
            broken_reason: r.try_get("broken_reason")?,
        },
        None => AccountView {
            channel: channel.to_owned(),
            enabled: false,
            config: BTreeMap::new(),
            templates: BTreeMap::new(),
            secret_set,
            callback_token_set,
            broken_at: None,
            broken_reason: String::new(),
        },
    })
}

/// Stores `channel`'s account; a new secret is sealed and clears a refused-credentials mark.
#[tracing::instrument(skip_all)]
pub async fn put(
    conn: &mut PgConnection,
    principal: &Principal,
    keyring: Option<&Keyring>,
    channel: &str,
    input: &AccountInput,
) -> CoreResult<AccountView> {
    principal.require(Need::Act(Right::Settings))?;
    check_channel(channel)?;
    check_input(channel, input)?;
    let before = view(conn, channel).await?;
    let new_secret = input.secret.as_deref().filter(|s| !s.is_empty());
    let new_token = input.callback_token.as_deref().filter(|s| !s.is_empty());
    if new_secret.is_some() || new_token.is_some() {
        let keyring = keyring.ok_or_else(|| {
            CoreError::Conflict("no secret keys are configured on this server".into())
        })?;
        if let Some(secret) = new_secret {
            secrets::put(conn, keyring, &secret_name(channel), secret.as_bytes()).await?;
            if channel == "wechat" {
                // A token from the old secret's account must not be used with the new one.
                sqlx::query("delete from secrets where name = $1")
                    .bind(WECHAT_ACCESS_TOKEN)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        if let (Some(token), true) = (new_token, channel == "wechat") {
            secrets::put(conn, keyring, WECHAT_CALLBACK_TOKEN, token.as_bytes()).await?;
        }
    }
    let trimmed: BTreeMap<&String, &str> =
        input.config.iter().map(|(k, v)| (k, v.trim())).collect();
    sqlx::query(
        "insert into notify_accounts (channel, enabled, config, templates, updated_at, updated_by)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (channel) do update set enabled = excluded.enabled, config = excluded.config,
             templates = excluded.templates, updated_at = excluded.updated_at,
             updated_by = excluded.updated_by,
             broken_at = case when $7 then null else notify_accounts.broken_at end,
             broken_reason = case when $7 then '' else notify_accounts.broken_reason end",
    )
    .bind(channel)
    .bind(input.enabled)
    .bind(serde_json::to_value(&trimmed).unwrap_or_default())
    .bind(serde_json::to_value(&input.templates).unwrap_or_default())
    .bind(principal.now())
    .bind(&principal.username)
    .bind(new_secret.is_some())
    .execute(&mut *conn)
    .await?;
    let after = view(conn, channel).await?;
    audit::record(
        conn,
        principal,
        "notify.account",
        "notify_account",
        Some(channel.to_owned()),
        Some(serde_json::to_value(&before).unwrap_or_default()),
        Some(serde_json::to_value(&after).unwrap_or_default()),
    )
    .await?;
    Ok(after)
}

/// How the company's messages go.
#[tracing::instrument(skip_all)]
pub async fn delivery(conn: &mut PgConnection) -> CoreResult<Delivery> {
    let r =
        sqlx::query("select sms_channel, per_phone_hour, escalate_after_min from notify_settings")
            .fetch_one(conn)
            .await?;
    Ok(Delivery {
        sms_channel: r.try_get("sms_channel")?,
        per_phone_hour: r.try_get("per_phone_hour")?,
        escalate_after_min: r.try_get("escalate_after_min")?,
    })
}

/// Changes how the company's messages go (settings right, audited).
#[tracing::instrument(skip_all)]
pub async fn set_delivery(
    conn: &mut PgConnection,
    principal: &Principal,
    wanted: &Delivery,
) -> CoreResult<Delivery> {
    principal.require(Need::Act(Right::Settings))?;
    let mut fields = BTreeMap::new();
    if !["sandbox", "aliyun", "tencent"].contains(&wanted.sms_channel.as_str()) {
        fields.insert("sms_channel".into(), "sandbox, aliyun or tencent".into());
    }
    if !(1..=1000).contains(&wanted.per_phone_hour) {
        fields.insert("per_phone_hour".into(), "1 to 1000".into());
    }
    if !(1..=10_080).contains(&wanted.escalate_after_min) {
        fields.insert("escalate_after_min".into(), "1 minute to 7 days".into());
    }
    CoreError::check_fields(fields)?;
    let before = delivery(conn).await?;
    sqlx::query(
        "update notify_settings set sms_channel = $1, per_phone_hour = $2,
             escalate_after_min = $3, updated_at = $4",
    )
    .bind(&wanted.sms_channel)
    .bind(wanted.per_phone_hour)
    .bind(wanted.escalate_after_min)
    .bind(principal.now())
    .execute(&mut *conn)
    .await?;
    audit::record(
        conn,
        principal,
        "notify.delivery",
        "notify_settings",
        None,
        Some(serde_json::to_value(&before).unwrap_or_default()),
        Some(serde_json::to_value(wanted).unwrap_or_default()),
    )
    .await?;
    Ok(wanted.clone())
}

/// Marks `channel`'s account refused (a wrong secret): reported on the settings page and in the
/// log, and nothing is sent through it until the secret is entered again.
pub(crate) async fn mark_broken(
    conn: &mut PgConnection,
    channel: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> CoreResult<()> {
    sqlx::query(
        "update notify_accounts set broken_at = coalesce(broken_at, $2), broken_reason = $3
         where channel = $1",
    )
    .bind(channel)
    .bind(now)
    .bind(reason.chars().take(300).collect::<String>())
    .execute(conn)
    .await?;
    Ok(())
}

/// A channel ready to send, with the template per kind.
pub struct Ready {
    pub channel: Box<dyn Channel>,
    pub templates: BTreeMap<String, String>,
}

impl Ready {
    /// The template for `kind`; the sandbox needs none.
    pub fn template(&self, kind: &str) -> Result<String, SendError> {
        if self.channel.name() == "sandbox" {
            return Ok(String::new());
        }
        self.templates
            .get(kind)
            .filter(|t| !t.is_empty())
            .cloned()
            .ok_or_else(|| {
                SendError::Rejected(format!("no {} template for {kind}", self.channel.name()))
            })
    }
}

/// `channel` for this company now, or why it cannot send (not set up, disabled, refused).
pub async fn open(
    conn: &mut PgConnection,
    vendors: &Vendors,
    channel: &str,
    now: DateTime<Utc>,
) -> CoreResult<Result<Ready, SendError>> {
    if channel == "sandbox" {
        return Ok(Ok(Ready {
            channel: Box::new(Sandbox),
            templates: BTreeMap::new(),
        }));
    }
    let row = sqlx::query(
        "select enabled, config, templates, broken_at, broken_reason, token_expires_at
         from notify_accounts where channel = $1",
    )
    .bind(channel)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Err(SendError::Rejected(format!(
            "no {channel} account is set up"
        ))));
    };
    if !row.try_get::<bool, _>("enabled")? {
        return Ok(Err(SendError::Rejected(format!(
            "the {channel} account is off"
        ))));
    }
    if row
        .try_get::<Option<DateTime<Utc>>, _>("broken_at")?
        .is_some()
    {
        let reason: String = row.try_get("broken_reason")?;
        return Ok(Err(SendError::Auth(format!(
            "account refused earlier: {reason}"
        ))));
    }
    let Some(keyring) = vendors.keyring.as_deref() else {
        return Ok(Err(SendError::Rejected(
            "no secret keys on this server".into(),
        )));
    };
    let Some(secret) = secrets::get(conn, keyring, &secret_name(channel)).await? else {
        return Ok(Err(SendError::Rejected(format!(
            "the {channel} secret is not set"
        ))));
    };
    let config: BTreeMap<String, String> =
        serde_json::from_value(row.try_get("config")?).unwrap_or_default();
    let templates: BTreeMap<String, String> =
        serde_json::from_value(row.try_get("templates")?).unwrap_or_default();
    let get = |key: &str| config.get(key).cloned().unwrap_or_default();
    let http = vendors.http.clone();
    let channel: Box<dyn Channel> = match channel {
        "aliyun" => Box::new(AliyunSms {
            http,
            base_url: vendors.urls.aliyun.clone(),
            access_key_id: get("access_key_id"),
            access_key_secret: secret,
            sign_name: get("sign_name"),
            now,
        }),
        "tencent" => Box::new(TencentSms {
            http,
            base_url: vendors.urls.tencent.clone(),
            secret_id: get("secret_id"),
            secret_key: secret,
            sdk_app_id: get("sdk_app_id"),
            sign_name: get("sign_name"),
            region: Some(get("region"))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "ap-guangzhou".into()),
            now,
        }),
        _ => {
            let expires_at: Option<DateTime<Utc>> = row.try_get("token_expires_at")?;
            let token = match expires_at {
                Some(expires_at) => secrets::get(conn, keyring, WECHAT_ACCESS_TOKEN)
                    .await
                    .ok()
                    .flatten()
                    .map(|t| AccessToken {
                        token: String::from_utf8_lossy(t.expose()).into_owned(),
                        expires_at,
                    }),
                None => None,
            };
            Box::new(WechatTemplate {
                http,
                base_url: vendors.urls.wechat.clone(),
                app_id: get("app_id"),
                app_secret: secret,
                token: std::sync::Mutex::new(token),
                fetched: Default::default(),
                now,
            })
        }
    };
    Ok(Ok(Ready { channel, templates }))
}

/// Keeps a WeChat access token the channel fetched, sealed, for every server process (two
/// processes fetching at once is harmless: WeChat keeps the previous token valid for five
/// minutes after issuing a new one).
pub(crate) async fn save_token(
    conn: &mut PgConnection,
    keyring: &Keyring,
    token: &AccessToken,
) -> CoreResult<()> {
    secrets::put(conn, keyring, WECHAT_ACCESS_TOKEN, token.token.as_bytes()).await?;
    sqlx::query("update notify_accounts set token_expires_at = $1 where channel = 'wechat'")
        .bind(token.expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The WeChat callback token of the transaction's company.
pub(crate) async fn callback_token(
    conn: &mut PgConnection,
    keyring: &Keyring,
) -> CoreResult<Option<String>> {
    Ok(secrets::get(conn, keyring, WECHAT_CALLBACK_TOKEN)
        .await?
        .map(|t| String::from_utf8_lossy(t.expose()).into_owned()))
}
