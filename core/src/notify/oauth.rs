//! Linking a shop tenant's WeChat (issue 14: Tenant experience): opened inside WeChat, the
//! tenant's page sends them through the company's official account's web authorisation
//! (`snsapi_base`: silent, no consent screen) and the code WeChat returns is exchanged for their
//! `openid`, stored on their login so the template messages of `notify` reach them.
//!
//! - The authorisation page and the API are platform configuration ([`VendorUrls`]), so tests
//!   point them at a fake on loopback; the company's app id and secret are its WeChat account's
//!   (`notify_accounts`, the secret sealed at rest).
//! - The `state` parameter binds the round trip to the signed-in user and expires after ten
//!   minutes: an HMAC under the token key of `user:issued_at`, so a link made for one person
//!   cannot attach another person's WeChat to them.

use super::accounts::{VendorUrls, Vendors};
use crate::auth::{Principal, Secret};
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::secrets;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// How long a `state` is good for.
pub const STATE_TTL_S: i64 = 600;

/// A company's official account, as the authorisation needs it.
pub struct WechatApp {
    pub app_id: String,
    app_secret: String,
}

/// The company's WeChat account when it is set up, on and has its secret.
pub async fn wechat_app(
    conn: &mut PgConnection,
    vendors: &Vendors,
) -> CoreResult<Option<WechatApp>> {
    let row = sqlx::query(
        "select config->>'app_id' as app_id from notify_accounts
         where channel = 'wechat' and enabled and broken_at is null",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(app_id) = row
        .map(|r| r.try_get::<Option<String>, _>("app_id"))
        .transpose()?
        .flatten()
        .filter(|a| !a.is_empty())
    else {
        return Ok(None);
    };
    let Some(keyring) = vendors.keyring.as_deref() else {
        return Ok(None);
    };
    let Some(secret) = secrets::get(conn, keyring, "notify.wechat.secret").await? else {
        return Ok(None);
    };
    Ok(Some(WechatApp {
        app_id,
        app_secret: String::from_utf8_lossy(secret.expose()).into_owned(),
    }))
}

fn state_mac(key: &Secret, user: Uuid, issued_at: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"wechat-oauth:");
    mac.update(user.as_bytes());
    mac.update(issued_at.to_string().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The `state` for `user`'s round trip started at `now`.
pub fn state_for(key: &Secret, user: Uuid, now: DateTime<Utc>) -> String {
    let issued_at = now.timestamp();
    format!("{issued_at}.{}", state_mac(key, user, issued_at))
}

/// Whether `state` was made for `user` within [`STATE_TTL_S`] before `now`.
pub fn state_ok(key: &Secret, user: Uuid, state: &str, now: DateTime<Utc>) -> bool {
    let Some((issued, mac)) = state.split_once('.') else {
        return false;
    };
    let Ok(issued_at) = issued.parse::<i64>() else {
        return false;
    };
    let age = now.timestamp() - issued_at;
    let expected = state_mac(key, user, issued_at);
    (0..=STATE_TTL_S).contains(&age) && crate::auth::constant_time_eq(&expected, mac)
}

/// WeChat's authorisation page for `app`, coming back to `redirect_uri` with `state`.
pub fn authorize_url(
    urls: &VendorUrls,
    app: &WechatApp,
    redirect_uri: &str,
    state: &str,
) -> String {
    let mut url = reqwest::Url::parse(&format!(
        "{}/connect/oauth2/authorize",
        urls.wechat_open.trim_end_matches('/')
    ))
    .unwrap_or_else(|_| {
        reqwest::Url::parse("https://open.weixin.qq.com/connect/oauth2/authorize")
            .expect("a fixed URL")
    });
    url.query_pairs_mut()
        .append_pair("appid", &app.app_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", "snsapi_base")
        .append_pair("state", state);
    // WeChat requires the fragment on this page's URL.
    format!("{url}#wechat_redirect")
}

/// Exchanges the authorisation `code` for the user's `openid`.
pub async fn openid_for_code(vendors: &Vendors, app: &WechatApp, code: &str) -> CoreResult<String> {
    if code.is_empty() || code.len() > 256 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CoreError::field("code", "not an authorisation code"));
    }
    let response = vendors
        .http
        .get(format!(
            "{}/sns/oauth2/access_token",
            vendors.urls.wechat.trim_end_matches('/')
        ))
        .query(&[
            ("appid", app.app_id.as_str()),
            ("secret", app.app_secret.as_str()),
            ("code", code),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .map_err(|e| CoreError::Internal(format!("WeChat unreachable: {e}")))?;
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|e| CoreError::Internal(format!("WeChat answered no JSON: {e}")))?;
    match answer["openid"].as_str() {
        Some(openid)
            if !openid.is_empty()
                && openid.len() <= 64
                && openid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(openid.to_owned())
        }
        _ => Err(CoreError::field(
            "code",
            format!(
                "WeChat refused the code: {} {}",
                answer["errcode"],
                answer["errmsg"].as_str().unwrap_or_default()
            ),
        )),
    }
}

/// Stores `openid` on the caller's login (taking it off any other login of the company that had
/// it: one WeChat user is one person); audited.
pub async fn link_openid(
    conn: &mut PgConnection,
    principal: &Principal,
    openid: &str,
) -> CoreResult<()> {
    principal.company()?;
    if principal.user_id.is_nil() {
        return Err(CoreError::Forbidden(
            "only a person links a WeChat account".into(),
        ));
    }
    sqlx::query("update users set wechat_openid = null where wechat_openid = $1 and id <> $2")
        .bind(openid)
        .bind(principal.user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update users set wechat_openid = $2, updated_at = $3 where id = $1")
        .bind(principal.user_id)
        .bind(openid)
        .bind(principal.now())
        .execute(&mut *conn)
        .await?;
    crate::tenancy::audit::record(
        conn,
        principal,
        "user.wechat_link",
        "user",
        Some(principal.user_id.to_string()),
        None,
        None,
    )
    .await
}

/// Whether the company has a WeChat official account to link with (set up, on, with an app id).
pub async fn configured(conn: &mut PgConnection) -> CoreResult<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from notify_accounts where channel = 'wechat' and enabled
                        and broken_at is null and coalesce(config->>'app_id', '') <> '')",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether the caller's login has a WeChat openid.
pub async fn linked(conn: &mut PgConnection, principal: &Principal) -> CoreResult<bool> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("select wechat_openid from users where id = $1")
            .bind(principal.user_id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten()
            .is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_good_for_its_user_for_ten_minutes() {
        let key = Secret::new("test-key-test-key-test-key-test-key");
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let now: DateTime<Utc> = "2026-12-04T02:00:00Z".parse().unwrap();
        let state = state_for(&key, alice, now);
        assert!(state_ok(&key, alice, &state, now));
        assert!(state_ok(
            &key,
            alice,
            &state,
            now + chrono::Duration::seconds(STATE_TTL_S)
        ));
        assert!(!state_ok(
            &key,
            alice,
            &state,
            now + chrono::Duration::seconds(STATE_TTL_S + 1)
        ));
        assert!(!state_ok(&key, bob, &state, now), "another user's");
        assert!(!state_ok(
            &Secret::new("another key another key another key"),
            alice,
            &state,
            now
        ));
        assert!(!state_ok(&key, alice, "garbage", now));
        assert!(!state_ok(&key, alice, &state.replace('.', ""), now));
    }

    #[test]
    fn the_authorize_url_carries_the_app_the_return_and_the_state() {
        let urls = VendorUrls::default();
        let app = WechatApp {
            app_id: "wx123".into(),
            app_secret: "s".into(),
        };
        let url = authorize_url(
            &urls,
            &app,
            "https://pt.example/wechat/oauth/callback",
            "1.ab",
        );
        assert!(url.starts_with("https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx123&redirect_uri=https%3A%2F%2Fpt.example%2Fwechat%2Foauth%2Fcallback&response_type=code&scope=snsapi_base&state=1.ab"), "{url}");
        assert!(url.ends_with("#wechat_redirect"));
        assert!(!url.contains("secret"));
    }
}
