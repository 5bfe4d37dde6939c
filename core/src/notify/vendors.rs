//! The channels: the sandbox (the message is stored and shown on the log page: that is its
//! delivery), Aliyun SMS (`SendSms` / `QuerySendDetails`, RPC signature), Tencent Cloud SMS
//! (`SendSms` / `PullSmsSendStatus`, 2021-01-11, TC3 signature) and WeChat official-account
//! template messages (access token fetched, cached by the caller, refreshed when WeChat says it
//! expired). Base URLs come from server configuration — never from a company — so tests and
//! staging point them at loopback fakes and no tenant can aim the server at an internal host.

use super::sign;
use super::{Accepted, Channel, ChannelFuture, Outgoing, Pending, Report, SendError};
use crate::kernel::secrets::SecretBytes;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::sync::Mutex;

/// How long one vendor call may take.
pub const VENDOR_TIMEOUT_S: i64 = 10;

/// An HTTP client for vendor calls: bounded time, no redirects (a vendor never redirects an API
/// call; following one would leave the configured host).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(
            VENDOR_TIMEOUT_S.unsigned_abs(),
        ))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client with a timeout builds")
}

fn transient(e: reqwest::Error) -> SendError {
    SendError::Transient(format!("vendor unreachable: {e}"))
}

/// The answer's JSON, or a transient error for a 5xx or a body that is not JSON.
async fn json_of(response: reqwest::Response) -> Result<Value, SendError> {
    let status = response.status();
    let text = response.text().await.map_err(transient)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if !status.is_server_error() => Ok(v),
        _ => Err(SendError::Transient(format!(
            "vendor answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))),
    }
}

fn text_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str().unwrap_or_default()
}

/// The sandbox: nothing leaves the building; the stored message is what the demo page shows.
pub struct Sandbox;

impl Channel for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> ChannelFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            Ok(Accepted {
                vendor_ref: format!("sandbox:{}", message.id),
                delivered: true,
            })
        })
    }

    fn reports<'a>(
        &'a self,
        _: &'a [Pending],
    ) -> ChannelFuture<'a, Result<Vec<Report>, SendError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// An Aliyun SMS account (阿里云短信).
pub struct AliyunSms {
    pub http: reqwest::Client,
    /// `https://dysmsapi.aliyuncs.com`
    pub base_url: String,
    pub access_key_id: String,
    pub access_key_secret: SecretBytes,
    pub sign_name: String,
    pub now: DateTime<Utc>,
}

/// Aliyun error codes that mean the credentials themselves are refused.
const ALIYUN_AUTH_CODES: [&str; 7] = [
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "Forbidden.RAM",
    "isv.ACCOUNT_NOT_EXISTS",
];

fn aliyun_error(code: &str, message: &str) -> SendError {
    let text = format!("{code}: {message}");
    if ALIYUN_AUTH_CODES.contains(&code) {
        SendError::Auth(text)
    } else if code == "isv.BUSINESS_LIMIT_CONTROL"
        || code.starts_with("Throttling")
        || code == "ServiceUnavailable"
        || code == "InternalError"
    {
        SendError::Transient(text)
    } else {
        SendError::Rejected(text)
    }
}

impl AliyunSms {
    fn common(&self, action: &str) -> Vec<(String, String)> {
        [
            ("AccessKeyId", self.access_key_id.as_str()),
            ("Action", action),
            ("Format", "JSON"),
            ("RegionId", "cn-hangzhou"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("Version", "2017-05-25"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("SignatureNonce".into(), uuid::Uuid::new_v4().to_string()),
            (
                "Timestamp".into(),
                self.now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
        ])
        .collect()
    }

    async fn call(&self, params: Vec<(String, String)>) -> Result<Value, SendError> {
        let signature = sign::aliyun_signature(self.access_key_secret.expose(), &params);
        let url = format!(
            "{}/?Signature={}&{}",
            self.base_url.trim_end_matches('/'),
            sign::aliyun_encode(&signature),
            sign::aliyun_canonical_query(&params)
        );
        let answer = json_of(self.http.get(url).send().await.map_err(transient)?).await?;
        match text_at(&answer, &["Code"]) {
            "OK" => Ok(answer),
            code => Err(aliyun_error(code, text_at(&answer, &["Message"]))),
        }
    }

    async fn report(&self, pending: &Pending) -> Result<Option<Report>, SendError> {
        // Aliyun keeps the send date in China time.
        let day = pending
            .sent_at
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y%m%d")
            .to_string();
        let mut params = self.common("QuerySendDetails");
        params.extend([
            (
                "PhoneNumber".into(),
                pending.to.trim_start_matches("+86").to_owned(),
            ),
            ("BizId".into(), pending.vendor_ref.clone()),
            ("SendDate".into(), day),
            ("PageSize".into(), "10".into()),
            ("CurrentPage".into(), "1".into()),
        ]);
        let answer = self.call(params).await?;
        let first = &answer["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0];
        Ok(match first["SendStatus"].as_i64() {
            Some(3) => Some(Report {
                vendor_ref: pending.vendor_ref.clone(),
                delivered: true,
                detail: text_at(first, &["ErrCode"]).to_owned(),
            }),
            Some(2) => Some(Report {
                vendor_ref: pending.vendor_ref.clone(),
                delivered: false,
                detail: text_at(first, &["ErrCode"]).to_owned(),
            }),
            _ => None,
        })
    }
}

impl Channel for AliyunSms {
    fn name(&self) -> &'static str {
        "aliyun"
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> ChannelFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let template_param: serde_json::Map<String, Value> = message
                .params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut params = self.common("SendSms");
            params.extend([
                (
                    "PhoneNumbers".into(),
                    message.to.trim_start_matches("+86").to_owned(),
                ),
                ("SignName".into(), self.sign_name.clone()),
                ("TemplateCode".into(), message.template.clone()),
                (
                    "TemplateParam".into(),
                    Value::Object(template_param).to_string(),
                ),
                ("OutId".into(), message.id.to_string()),
            ]);
            let answer = self.call(params).await?;
            Ok(Accepted {
                vendor_ref: text_at(&answer, &["BizId"]).to_owned(),
                delivered: false,
            })
        })
    }

    fn reports<'a>(
        &'a self,
        pending: &'a [Pending],
    ) -> ChannelFuture<'a, Result<Vec<Report>, SendError>> {
        Box::pin(async move {
            let mut reports = Vec::new();
            for one in pending {
                if let Some(report) = self.report(one).await? {
                    reports.push(report);
                }
            }
            Ok(reports)
        })
    }
}

/// A Tencent Cloud SMS application (腾讯云短信).
pub struct TencentSms {
    pub http: reqwest::Client,
    /// `https://sms.tencentcloudapi.com`
    pub base_url: String,
    pub secret_id: String,
    pub secret_key: SecretBytes,
    pub sdk_app_id: String,
    pub sign_name: String,
    pub region: String,
    pub now: DateTime<Utc>,
}

const TENCENT_CONTENT_TYPE: &str = "application/json; charset=utf-8";

fn tencent_error(code: &str, message: &str) -> SendError {
    let text = format!("{code}: {message}");
    if code.starts_with("AuthFailure") || code == "UnauthorizedOperation.SmsSdkAppIdVerifyFail" {
        SendError::Auth(text)
    } else if code.starts_with("LimitExceeded")
        || code.starts_with("RequestLimitExceeded")
        || code.starts_with("InternalError")
    {
        SendError::Transient(text)
    } else {
        SendError::Rejected(text)
    }
}

impl TencentSms {
    /// `Host` as the request carries it: the base URL's host, with its port when not the default.
    fn host(&self) -> Result<String, SendError> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| SendError::Rejected(format!("tencent base url: {e}")))?;
        let host = url.host_str().unwrap_or_default();
        Ok(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
    }

    async fn call(&self, action: &str, payload: Value) -> Result<Value, SendError> {
        let body = payload.to_string();
        let host = self.host()?;
        let timestamp = self.now.timestamp();
        let request = sign::Tc3Request {
            host: &host,
            content_type: TENCENT_CONTENT_TYPE,
            service: "sms",
            timestamp,
            payload: body.as_bytes(),
        };
        let authorization =
            sign::tc3_authorization(&self.secret_id, self.secret_key.expose(), &request);
        let response = self
            .http
            .post(&self.base_url)
            .header("Authorization", authorization)
            .header("Content-Type", TENCENT_CONTENT_TYPE)
            .header("Host", &host)
            .header("X-TC-Action", action)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Version", "2021-01-11")
            .header("X-TC-Region", &self.region)
            .body(body)
            .send()
            .await
            .map_err(transient)?;
        let answer = json_of(response).await?;
        let error = &answer["Response"]["Error"];
        if error.is_object() {
            return Err(tencent_error(
                text_at(error, &["Code"]),
                text_at(error, &["Message"]),
            ));
        }
        Ok(answer)
    }
}

impl Channel for TencentSms {
    fn name(&self) -> &'static str {
        "tencent"
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> ChannelFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let values: Vec<&str> = message.params.iter().map(|(_, v)| v.as_str()).collect();
            let answer = self
                .call(
                    "SendSms",
                    json!({
                        "PhoneNumberSet": [super::e164(&message.to)],
                        "SmsSdkAppId": self.sdk_app_id,
                        "SignName": self.sign_name,
                        "TemplateId": message.template,
                        "TemplateParamSet": values,
                        "SessionContext": message.id.to_string(),
                    }),
                )
                .await?;
            let status = &answer["Response"]["SendStatusSet"][0];
            match text_at(status, &["Code"]) {
                "Ok" => Ok(Accepted {
                    vendor_ref: text_at(status, &["SerialNo"]).to_owned(),
                    delivered: false,
                }),
                code => Err(tencent_error(code, text_at(status, &["Message"]))),
            }
        })
    }

    fn reports<'a>(
        &'a self,
        _: &'a [Pending],
    ) -> ChannelFuture<'a, Result<Vec<Report>, SendError>> {
        Box::pin(async move {
            // Tencent hands each report out once, for the whole application.
            let answer = self
                .call(
                    "PullSmsSendStatus",
                    json!({"Limit": 100, "SmsSdkAppId": self.sdk_app_id}),
                )
                .await?;
            let set = answer["Response"]["PullSmsSendStatusSet"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(set
                .iter()
                .map(|r| Report {
                    vendor_ref: text_at(r, &["SerialNo"]).to_owned(),
                    delivered: text_at(r, &["ReportStatus"]) == "SUCCESS",
                    detail: text_at(r, &["Description"]).to_owned(),
                })
                .collect())
        })
    }
}

/// A WeChat access token and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A token is used until a minute before WeChat says it expires.
const TOKEN_MARGIN_S: i64 = 60;

/// A WeChat official account's template messages (公众号模板消息).
pub struct WechatTemplate {
    pub http: reqwest::Client,
    /// `https://api.weixin.qq.com`
    pub base_url: String,
    pub app_id: String,
    pub app_secret: SecretBytes,
    /// The cached token (loaded from and saved to the company's secrets by the sender); a new
    /// one is fetched when this is empty, near its end, or refused.
    pub token: Mutex<Option<AccessToken>>,
    /// Whether this channel fetched a new token (the caller keeps it then).
    pub fetched: std::sync::atomic::AtomicBool,
    pub now: DateTime<Utc>,
}

/// WeChat's answers that mean the token is no longer good.
const WECHAT_TOKEN_ERRORS: [i64; 3] = [40001, 40014, 42001];
/// WeChat's answers that mean the app id or secret is wrong (or this server is not allowed).
const WECHAT_AUTH_ERRORS: [i64; 4] = [40013, 40125, 40164, 41004];

fn wechat_error(errcode: i64, errmsg: &str) -> SendError {
    let text = format!("{errcode}: {errmsg}");
    if WECHAT_AUTH_ERRORS.contains(&errcode) {
        SendError::Auth(text)
    } else if errcode == -1 || errcode == 45009 {
        SendError::Transient(text)
    } else {
        SendError::Rejected(text)
    }
}

impl WechatTemplate {
    fn cached(&self) -> Option<String> {
        let guard = self.token.lock().ok()?;
        guard
            .as_ref()
            .filter(|t| t.expires_at > self.now + Duration::seconds(TOKEN_MARGIN_S))
            .map(|t| t.token.clone())
    }

    async fn fresh_token(&self) -> Result<String, SendError> {
        let secret = String::from_utf8_lossy(self.app_secret.expose()).into_owned();
        let response = self
            .http
            .get(format!(
                "{}/cgi-bin/token",
                self.base_url.trim_end_matches('/')
            ))
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", self.app_id.as_str()),
                ("secret", secret.as_str()),
            ])
            .send()
            .await
            .map_err(transient)?;
        let answer = json_of(response).await?;
        let token = text_at(&answer, &["access_token"]);
        if token.is_empty() {
            let code = answer["errcode"].as_i64().unwrap_or(-1);
            // A refused token request is a credential problem whatever the code says.
            return Err(match wechat_error(code, text_at(&answer, &["errmsg"])) {
                SendError::Rejected(m) => SendError::Auth(m),
                other => other,
            });
        }
        let expires_in = answer["expires_in"]
            .as_i64()
            .unwrap_or(7200)
            .clamp(60, 86_400);
        self.fetched
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut guard) = self.token.lock() {
            *guard = Some(AccessToken {
                token: token.to_owned(),
                expires_at: self.now + Duration::seconds(expires_in),
            });
        }
        Ok(token.to_owned())
    }

    async fn send_with(&self, token: &str, message: &Outgoing) -> Result<Value, SendError> {
        let mut data: serde_json::Map<String, Value> = message
            .params
            .iter()
            .map(|(k, v)| (k.clone(), json!({ "value": v })))
            .collect();
        data.insert("text".into(), json!({ "value": message.body }));
        let response = self
            .http
            .post(format!(
                "{}/cgi-bin/message/template/send",
                self.base_url.trim_end_matches('/')
            ))
            .query(&[("access_token", token)])
            .json(&json!({
                "touser": message.to,
                "template_id": message.template,
                "data": data,
            }))
            .send()
            .await
            .map_err(transient)?;
        json_of(response).await
    }
}

impl Channel for WechatTemplate {
    fn name(&self) -> &'static str {
        "wechat"
    }

    fn send<'a>(&'a self, message: &'a Outgoing) -> ChannelFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let mut token = match self.cached() {
                Some(token) => token,
                None => self.fresh_token().await?,
            };
            let mut answer = self.send_with(&token, message).await?;
            let code = |a: &Value| a["errcode"].as_i64().unwrap_or(0);
            if WECHAT_TOKEN_ERRORS.contains(&code(&answer)) {
                // Expired early (another holder fetched a new one): once more with a fresh one.
                token = self.fresh_token().await?;
                answer = self.send_with(&token, message).await?;
            }
            match code(&answer) {
                0 => Ok(Accepted {
                    vendor_ref: answer["msgid"]
                        .as_i64()
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| text_at(&answer, &["msgid"]).to_owned()),
                    delivered: false,
                }),
                c if WECHAT_TOKEN_ERRORS.contains(&c) => {
                    Err(SendError::Auth(format!("{c}: token refused twice")))
                }
                c => Err(wechat_error(c, text_at(&answer, &["errmsg"]))),
            }
        })
    }

    fn token_to_keep(&self) -> Option<AccessToken> {
        if !self.fetched.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.token.lock().ok().and_then(|t| t.clone())
    }

    fn reports<'a>(
        &'a self,
        _: &'a [Pending],
    ) -> ChannelFuture<'a, Result<Vec<Report>, SendError>> {
        // WeChat pushes TEMPLATESENDJOBFINISH to the account's callback instead.
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The `MsgID` and `Status` of a WeChat `TEMPLATESENDJOBFINISH` event (XML), if it is one.
pub fn wechat_job_finished(xml: &str) -> Option<Report> {
    fn field<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = xml.find(&open)? + open.len();
        let end = start + xml[start..].find(&close)?;
        let value = xml[start..end].trim();
        Some(
            value
                .strip_prefix("<![CDATA[")
                .and_then(|v| v.strip_suffix("]]>"))
                .unwrap_or(value),
        )
    }
    if field(xml, "Event")? != "TEMPLATESENDJOBFINISH" {
        return None;
    }
    let status = field(xml, "Status")?;
    Some(Report {
        vendor_ref: field(xml, "MsgID")?.to_owned(),
        delivered: status == "success",
        detail: status.chars().take(100).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_codes_sort_into_refused_credentials_retry_and_reject() {
        assert!(matches!(
            aliyun_error("SignatureDoesNotMatch", ""),
            SendError::Auth(_)
        ));
        assert!(matches!(
            aliyun_error("isv.BUSINESS_LIMIT_CONTROL", ""),
            SendError::Transient(_)
        ));
        assert!(matches!(
            aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", ""),
            SendError::Rejected(_)
        ));
        assert!(matches!(
            tencent_error("AuthFailure.SignatureFailure", ""),
            SendError::Auth(_)
        ));
        assert!(matches!(
            tencent_error("LimitExceeded.PhoneNumberDailyLimit", ""),
            SendError::Transient(_)
        ));
        assert!(matches!(wechat_error(40125, ""), SendError::Auth(_)));
        assert!(matches!(wechat_error(43004, ""), SendError::Rejected(_)));
    }

    #[test]
    fn a_wechat_job_report_is_read_from_its_xml() {
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU1]]>\
                   </FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]>\
                   </MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836\
                   </MsgID><Status><![CDATA[failed:user block]]></Status></xml>";
        assert_eq!(
            wechat_job_finished(xml),
            Some(Report {
                vendor_ref: "200163836".into(),
                delivered: false,
                detail: "failed:user block".into()
            })
        );
        assert!(
            wechat_job_finished(&xml.replace("failed:user block", "success"))
                .unwrap()
                .delivered
        );
        assert_eq!(
            wechat_job_finished("<xml><Event>subscribe</Event></xml>"),
            None
        );
        assert_eq!(wechat_job_finished("<xml><MsgID>"), None);
    }
}
