//! The vendors' request-signing schemes, as pure functions over bytes and strings, checked in the
//! tests against each vendor's documented worked example:
//! - Aliyun RPC (阿里云短信, `SignatureVersion=1.0`, HMAC-SHA1): the sorted, RFC 3986-encoded
//!   query, string to sign `GET&%2F&<encoded query>`, key `secret + "&"`, base64.
//! - Tencent Cloud API 3.0 (腾讯云短信, `TC3-HMAC-SHA256`): canonical request, string to sign,
//!   the key derived from `"TC3" + secret` over date → service → `tc3_request`, hex.
//! - WeChat official-account server callbacks: `sha1(sorted(token, timestamp, nonce))`, hex.
//!
//! The loopback fakes the tests run (server/tests) verify requests with these same functions.

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// RFC 3986: everything but `A-Z a-z 0-9 - _ . ~` is percent-encoded (Aliyun's
/// "specialUrlEncode": space is `%20`, `*` is `%2A`, `~` stays).
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` percent-encoded as Aliyun signs it.
pub fn aliyun_encode(text: &str) -> String {
    utf8_percent_encode(text, RFC3986).to_string()
}

/// The canonical query of `params` (sorted by name, each name and value encoded), without the
/// signature.
pub fn aliyun_canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", aliyun_encode(k), aliyun_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Aliyun's RPC signature (base64, not yet URL-encoded) of a GET with `params`.
pub fn aliyun_signature(access_key_secret: &[u8], params: &[(String, String)]) -> String {
    use base64::Engine;
    let string_to_sign = format!(
        "GET&{}&{}",
        aliyun_encode("/"),
        aliyun_encode(&aliyun_canonical_query(params))
    );
    let mut key = access_key_secret.to_vec();
    key.push(b'&');
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// What a TC3 signature covers: a POST of `payload` to `/` with the two signed headers.
#[derive(Debug, Clone, Copy)]
pub struct Tc3Request<'a> {
    /// The `Host` header as sent (`sms.tencentcloudapi.com`, or `127.0.0.1:port` for a fake).
    pub host: &'a str,
    /// The `Content-Type` header as sent.
    pub content_type: &'a str,
    /// The product, `sms` (`cvm` in the vendor's example).
    pub service: &'a str,
    /// `X-TC-Timestamp`, Unix seconds.
    pub timestamp: i64,
    pub payload: &'a [u8],
}

/// The credential scope `YYYY-MM-DD/<service>/tc3_request`, the date in UTC.
pub fn tc3_scope(request: &Tc3Request<'_>) -> String {
    let date = chrono::DateTime::from_timestamp(request.timestamp, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    format!("{date}/{}/tc3_request", request.service)
}

/// The hex `TC3-HMAC-SHA256` signature of `request` under `secret_key`.
pub fn tc3_signature(secret_key: &[u8], request: &Tc3Request<'_>) -> String {
    let canonical = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{}",
        request.content_type.trim().to_ascii_lowercase(),
        request.host.trim().to_ascii_lowercase(),
        sha256_hex(request.payload)
    );
    let scope = tc3_scope(request);
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{}\n{scope}\n{}",
        request.timestamp,
        sha256_hex(canonical.as_bytes())
    );
    let date = scope.split('/').next().unwrap_or_default();
    let mut key = b"TC3".to_vec();
    key.extend_from_slice(secret_key);
    let secret_date = hmac_sha256(&key, date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, request.service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    hex::encode(hmac_sha256(&secret_signing, string_to_sign.as_bytes()))
}

/// The `Authorization` header for `request`.
pub fn tc3_authorization(secret_id: &str, secret_key: &[u8], request: &Tc3Request<'_>) -> String {
    format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{}, SignedHeaders=content-type;host, Signature={}",
        tc3_scope(request),
        tc3_signature(secret_key, request)
    )
}

/// The parts of a TC3 `Authorization` header: secret id, scope, signed headers, signature.
pub fn tc3_parse_authorization(header: &str) -> Option<(String, String, String, String)> {
    let rest = header.strip_prefix("TC3-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (id, scope) = credential?.split_once('/')?;
    Some((
        id.to_owned(),
        scope.to_owned(),
        signed?.to_owned(),
        signature?.to_owned(),
    ))
}

/// The signature WeChat puts on a callback to the official account's server:
/// `sha1(sorted([token, timestamp, nonce]).concat())`, lowercase hex.
pub fn wechat_callback_signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Aliyun's documented SMS example ("HTTP协议及签名"): AccessKeyId `testId`, secret
    /// `testSecret`, SendSms to 15300000001 at 2017-07-12T02:42:19Z.
    #[test]
    fn aliyun_matches_the_documented_example() {
        let params = pairs(&[
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", "{\"customer\":\"test\"}"),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]);
        assert_eq!(
            aliyun_canonical_query(&params),
            "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001\
             &RegionId=cn-hangzhou&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B\
             %E8%AF%95%E4%B8%93%E7%94%A8&SignatureMethod=HMAC-SHA1&SignatureNonce=45e25e9b-0a6f-\
             4070-8c85-2956eda1b466&SignatureVersion=1.0&TemplateCode=SMS_71390007&TemplateParam=\
             %7B%22customer%22%3A%22test%22%7D&Timestamp=2017-07-12T02%3A42%3A19Z&Version=2017-05-25"
        );
        let signature = aliyun_signature(b"testSecret", &params);
        assert_eq!(signature, "zJDF+Lrzhj/ThnlvIToysFRq6t4=");
        assert_eq!(
            aliyun_encode(&signature),
            "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D"
        );
        assert_ne!(aliyun_signature(b"testSecreT", &params), signature);
    }

    #[test]
    fn aliyun_encodes_space_star_and_tilde_as_rfc3986() {
        assert_eq!(aliyun_encode("a b*c~d+e"), "a%20b%2Ac~d%2Be");
    }

    /// Tencent Cloud's documented TC3 example ("签名方法 v3"): CVM DescribeInstances at
    /// 1551113065, secret key `Gu5t9xGARNpq86cd98joQYCN3EXAMPLE`.
    #[test]
    fn tencent_matches_the_documented_example() {
        let payload = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let request = Tc3Request {
            host: "cvm.tencentcloudapi.com",
            content_type: "application/json; charset=utf-8",
            service: "cvm",
            timestamp: 1551113065,
            payload,
        };
        assert_eq!(
            sha256_hex(payload),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(tc3_scope(&request), "2019-02-25/cvm/tc3_request");
        let secret = b"Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
        assert_eq!(
            tc3_signature(secret, &request),
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        let header = tc3_authorization("AKIDEXAMPLE", secret, &request);
        assert_eq!(
            header,
            "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        let (id, scope, signed, signature) = tc3_parse_authorization(&header).unwrap();
        assert_eq!(
            (id.as_str(), scope.as_str(), signed.as_str()),
            (
                "AKIDEXAMPLE",
                "2019-02-25/cvm/tc3_request",
                "content-type;host"
            )
        );
        assert_eq!(signature, tc3_signature(secret, &request));
        assert_ne!(signature, tc3_signature(b"wrong", &request));
    }

    #[test]
    fn the_wechat_callback_signature_sorts_before_hashing() {
        let a = wechat_callback_signature("token", "1700000000", "nonce");
        assert_eq!(a, wechat_callback_signature("token", "1700000000", "nonce"));
        // sha1("1700000000noncetoken"), sorted order.
        assert_eq!(a, hex::encode(Sha1::digest(b"1700000000noncetoken")));
        assert_ne!(a, wechat_callback_signature("tokeN", "1700000000", "nonce"));
    }
}
