//! Notifications on their way out (core::notify) against loopback fakes of Aliyun SMS, Tencent
//! Cloud SMS and WeChat's official-account API. Each fake checks the vendor's signature scheme
//! with the secret it was given (the signing itself is checked against the vendors' documented
//! worked examples in core::notify::sign) and answers as the vendor does — including refusing a
//! wrong secret. Messages come from the real power rules; the sender and report passes run at an
//! injected clock.

use crate::helpers::{spawn_app, Caller, TestApp};
use crate::money::{open_account, shop_with_meter};
use crate::power::{evaluate, money, worker};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, Utc};
use powertab_core::kernel::clock::{Clock, ManualClock};
use powertab_core::notify::accounts::{VendorUrls, Vendors};
use powertab_core::notify::{alerts, sender, sign};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// What a fake vendor saw and holds.
#[derive(Default)]
struct Fake {
    secret: String,
    /// (vendor id, phone or openid, template, parameters) of every accepted message.
    sent: Vec<(String, String, String, Value)>,
    /// Requests refused for their signature or credentials.
    refused: usize,
    /// Delivery reports already handed out (Tencent hands each out once).
    reported: usize,
    token_fetches: usize,
    /// Tokens WeChat still takes.
    tokens: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn fake(secret: &str) -> Shared {
    Arc::new(Mutex::new(Fake {
        secret: secret.into(),
        ..Fake::default()
    }))
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Aliyun's RPC endpoint: the signature is recomputed over every parameter but `Signature`.
async fn aliyun(
    State(fake): State<Shared>,
    RawQuery(query): RawQuery,
) -> (StatusCode, Json<Value>) {
    let pairs = query_pairs(&query.unwrap_or_default());
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let unsigned: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    let mut fake = fake.lock().unwrap();
    let expected = sign::aliyun_signature(fake.secret.as_bytes(), &unsigned);
    if expected != param("Signature") {
        fake.refused += 1;
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"Code": "SignatureDoesNotMatch", "RequestId": "r",
                        "Message": "Specified signature is not matched with our calculation."})),
        );
    }
    match param("Action").as_str() {
        "SendSms" => {
            let biz = format!("biz-{}", fake.sent.len() + 1);
            let template_param: Value = serde_json::from_str(&param("TemplateParam")).unwrap();
            fake.sent.push((
                biz.clone(),
                param("PhoneNumbers"),
                param("TemplateCode"),
                template_param,
            ));
            (
                StatusCode::OK,
                Json(json!({"Code": "OK", "Message": "OK", "BizId": biz, "RequestId": "r"})),
            )
        }
        "QuerySendDetails" => {
            let known = fake
                .sent
                .iter()
                .any(|(b, phone, ..)| *b == param("BizId") && *phone == param("PhoneNumber"));
            let dto = if known {
                json!([{"SendStatus": 3, "ErrCode": "DELIVERED", "PhoneNum": param("PhoneNumber")}])
            } else {
                json!([])
            };
            (
                StatusCode::OK,
                Json(json!({"Code": "OK", "Message": "OK", "TotalCount": 1,
                            "SmsSendDetailDTOs": {"SmsSendDetailDTO": dto}})),
            )
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"Code": "InvalidAction"})),
        ),
    }
}

/// Tencent's API 3.0 endpoint: the TC3 signature is recomputed from the headers and body.
async fn tencent(State(fake): State<Shared>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut fake = fake.lock().unwrap();
    let timestamp: i64 = header("x-tc-timestamp").parse().unwrap_or(0);
    let request = sign::Tc3Request {
        host: &header("host"),
        content_type: &header("content-type"),
        service: "sms",
        timestamp,
        payload: &body,
    };
    let expected = sign::tc3_signature(fake.secret.as_bytes(), &request);
    let given = sign::tc3_parse_authorization(&header("authorization"));
    let signed = given
        .as_ref()
        .is_some_and(|(_, scope, headers, signature)| {
            *scope == sign::tc3_scope(&request)
                && headers == "content-type;host"
                && *signature == expected
        });
    if !signed {
        fake.refused += 1;
        return Json(json!({"Response": {"RequestId": "r", "Error": {
            "Code": "AuthFailure.SignatureFailure",
            "Message": "The provided credentials could not be validated."}}}));
    }
    let payload: Value = serde_json::from_slice(&body).unwrap();
    match header("x-tc-action").as_str() {
        "SendSms" => {
            let serial = format!("2640:{}", fake.sent.len() + 1);
            let phone = payload["PhoneNumberSet"][0].as_str().unwrap().to_owned();
            fake.sent.push((
                serial.clone(),
                phone.clone(),
                payload["TemplateId"].as_str().unwrap().to_owned(),
                payload["TemplateParamSet"].clone(),
            ));
            Json(json!({"Response": {"RequestId": "r", "SendStatusSet": [{
                "SerialNo": serial, "PhoneNumber": phone, "Fee": 1, "Code": "Ok",
                "Message": "send success", "SessionContext": payload["SessionContext"]}]}}))
        }
        "PullSmsSendStatus" => {
            let reports: Vec<Value> = fake.sent[fake.reported..]
                .iter()
                .map(|(serial, phone, ..)| {
                    json!({"SerialNo": serial, "PhoneNumber": phone, "ReportStatus": "SUCCESS",
                           "Description": "DELIVRD", "UserReceiveTime": "2026-12-02 10:00:01"})
                })
                .collect();
            fake.reported = fake.sent.len();
            Json(json!({"Response": {"RequestId": "r", "PullSmsSendStatusSet": reports}}))
        }
        _ => Json(json!({"Response": {"Error": {"Code": "InvalidAction"}}})),
    }
}

async fn wechat_token(State(fake): State<Shared>, RawQuery(query): RawQuery) -> Json<Value> {
    let pairs = query_pairs(&query.unwrap_or_default());
    let mut fake = fake.lock().unwrap();
    let secret_ok = pairs
        .iter()
        .any(|(k, v)| k == "secret" && *v == fake.secret);
    if !secret_ok {
        fake.refused += 1;
        return Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
    }
    fake.token_fetches += 1;
    let token = format!("token-{}", fake.token_fetches);
    fake.tokens.push(token.clone());
    Json(json!({"access_token": token, "expires_in": 7200}))
}

async fn wechat_send(
    State(fake): State<Shared>,
    RawQuery(query): RawQuery,
    Json(body): Json<Value>,
) -> Json<Value> {
    let pairs = query_pairs(&query.unwrap_or_default());
    let mut fake = fake.lock().unwrap();
    let token_ok = pairs
        .iter()
        .any(|(k, v)| k == "access_token" && fake.tokens.contains(v));
    if !token_ok {
        return Json(json!({"errcode": 40001, "errmsg": "invalid credential"}));
    }
    let msgid = 200_000 + fake.sent.len() as i64;
    fake.sent.push((
        msgid.to_string(),
        body["touser"].as_str().unwrap().to_owned(),
        body["template_id"].as_str().unwrap().to_owned(),
        body["data"].clone(),
    ));
    Json(json!({"errcode": 0, "errmsg": "ok", "msgid": msgid}))
}

/// The three fakes on loopback, and vendors for the app pointed at them.
async fn fakes(
    app: &TestApp,
    aliyun_secret: &str,
    tencent_secret: &str,
    wechat_secret: &str,
) -> (Vendors, Shared, Shared, Shared) {
    let (a, t, w) = (
        fake(aliyun_secret),
        fake(tencent_secret),
        fake(wechat_secret),
    );
    let urls = VendorUrls {
        aliyun: serve(Router::new().route("/", get(aliyun)).with_state(a.clone())).await,
        tencent: serve(
            Router::new()
                .route("/", post(tencent))
                .with_state(t.clone()),
        )
        .await,
        wechat: serve(
            Router::new()
                .route("/cgi-bin/token", get(wechat_token))
                .route("/cgi-bin/message/template/send", post(wechat_send))
                .with_state(w.clone()),
        )
        .await,
        wechat_open: "http://127.0.0.1:9".into(),
    };
    let vendors = Vendors {
        urls,
        ..app.vendors.clone()
    };
    (vendors, a, t, w)
}

async fn send(app: &TestApp, clock: &Arc<ManualClock>, vendors: &Vendors) -> sender::SendReport {
    sender::send_due(&app.db.pool, &worker(app, clock).await, vendors)
        .await
        .unwrap()
}

async fn reports(app: &TestApp, clock: &Arc<ManualClock>, vendors: &Vendors) -> u64 {
    sender::pull_reports(&app.db.pool, &worker(app, clock).await, vendors)
        .await
        .unwrap()
}

/// (kind, recipient, channel, state, error) of company 1's messages, oldest first.
async fn messages(app: &TestApp) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as(
        "select kind, recipient, channel, state, error from c_1.notifications
         where kind <> 'top_up' order by created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

async fn put(app: &TestApp, caller: &Caller, path: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::PUT, path, Some(caller), Some(body)).await
}

/// A shop whose account sits at ¥45 after a top-up and a refund: alarm 1 is due.
async fn account_at_alarm1(app: &TestApp, admin: &Caller, clock: &Arc<ManualClock>) -> String {
    let (shop, meter) = shop_with_meter(app, admin, "501").await;
    let id = open_account(app, admin, &shop, &meter).await;
    money(app, admin, &id, "top-up", "t1", 6_000).await;
    money(app, admin, &id, "refund", "r1", 1_500).await;
    assert_eq!(
        evaluate(app, clock, &id).await,
        vec![powertab_core::power::Action::Alarm1]
    );
    id
}

/// Daytime in Shanghai on a weekday: nothing waits for the morning.
fn daytime() -> Arc<ManualClock> {
    ManualClock::at("2026-12-02T02:00:00Z".parse().unwrap())
}

#[tokio::test]
async fn aliyun_sms_goes_signed_and_delivered_comes_from_the_report() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (vendors, aliyun_fake, ..) = fakes(&app, "ali-secret", "-", "-").await;
    let (status, view) = put(
        &app,
        &admin,
        "/api/v1/notify/accounts/aliyun",
        json!({
        "config": {"access_key_id": "LTAItest", "sign_name": "华庭物业"},
        "templates": {"alarm1": "SMS_100001"}, "secret": "ali-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["secret_set"], true);
    let (status, _) = put(
        &app,
        &admin,
        "/api/v1/notify/delivery",
        json!({
        "sms_channel": "aliyun", "per_phone_hour": 10, "escalate_after_min": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The secret is never shown again, nor written to the audit log.
    let (_, list) = app.get("/api/v1/notify/accounts", &admin).await;
    let (_, audit) = app.get("/api/v1/audit-log", &admin).await;
    assert!(!list.to_string().contains("ali-secret") && !audit.to_string().contains("ali-secret"));
    // Someone without the settings right sees none of it.
    let (_, clerk) = app
        .user(&admin, "acme", "clerk", "operator", &["top_up"])
        .await;
    let (status, _) = app.get("/api/v1/notify/accounts", &clerk).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let clock = daytime();
    account_at_alarm1(&app, &admin, &clock).await;
    let report = send(&app, &clock, &vendors).await;
    assert_eq!((report.sent, report.failed), (1, 0), "{report:?}");
    {
        let fake = aliyun_fake.lock().unwrap();
        assert_eq!(fake.refused, 0);
        let (_, phone, template, params) = &fake.sent[0];
        assert_eq!(
            (phone.as_str(), template.as_str()),
            ("13800138000", "SMS_100001")
        );
        assert_eq!(params["shop"], "501 奶茶店");
        assert_eq!(params["amount"], "¥45.00");
    }
    assert_eq!(
        messages(&app).await[0].3,
        "sent",
        "the send answer is not delivery"
    );
    assert_eq!(
        send(&app, &clock, &vendors).await,
        Default::default(),
        "sent once"
    );
    assert_eq!(reports(&app, &clock, &vendors).await, 1);
    assert_eq!(messages(&app).await[0].3, "delivered");
    let (_, log) = app.get("/api/v1/notifications?kind=alarm1", &admin).await;
    assert_eq!(log[0]["state"], "delivered");
    assert_eq!(log[0]["channel"], "aliyun");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_wrong_tencent_secret_is_refused_reported_and_not_retried_until_entered_again() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (vendors, _, tencent_fake, _) = fakes(&app, "-", "tc-right", "-").await;
    let account = |secret: &str| {
        json!({
        "config": {"secret_id": "AKIDtest", "sdk_app_id": "1400000001", "sign_name": "华庭物业"},
        "templates": {"alarm1": "100001", "alarm2": "100002"}, "secret": secret})
    };
    let (status, _) = put(
        &app,
        &admin,
        "/api/v1/notify/accounts/tencent",
        account("tc-wrong"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    put(
        &app,
        &admin,
        "/api/v1/notify/delivery",
        json!({
        "sms_channel": "tencent", "per_phone_hour": 10, "escalate_after_min": 30}),
    )
    .await;
    let clock = daytime();
    let id = account_at_alarm1(&app, &admin, &clock).await;
    let report = send(&app, &clock, &vendors).await;
    assert_eq!(report.failed, 1);
    assert_eq!(tencent_fake.lock().unwrap().refused, 1);
    let (kind, _, channel, state, error) = messages(&app).await.remove(0);
    assert_eq!(
        (kind.as_str(), channel.as_str(), state.as_str()),
        ("alarm1", "tencent", "failed")
    );
    assert!(error.contains("AuthFailure.SignatureFailure"), "{error}");
    let (_, list) = app.get("/api/v1/notify/accounts", &admin).await;
    let tencent = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["channel"] == "tencent")
        .unwrap();
    assert!(
        tencent["broken_at"].is_string(),
        "reported on the settings page: {tencent}"
    );
    // Not retried: later passes leave it, and the next message fails without a call.
    clock.advance(Duration::minutes(10));
    assert_eq!(send(&app, &clock, &vendors).await, Default::default());
    money(&app, &admin, &id, "refund", "r2", 2_500).await;
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![powertab_core::power::Action::Alarm2]
    );
    assert_eq!(send(&app, &clock, &vendors).await.failed, 1);
    assert_eq!(
        tencent_fake.lock().unwrap().refused,
        1,
        "no call through a refused account"
    );

    // The right secret clears the mark; the next message goes, positional parameters in order.
    put(
        &app,
        &admin,
        "/api/v1/notify/accounts/tencent",
        account("tc-right"),
    )
    .await;
    money(&app, &admin, &id, "top-up", "t2", 10_000).await;
    evaluate(&app, &clock, &id).await;
    money(&app, &admin, &id, "refund", "r3", 8_000).await;
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![powertab_core::power::Action::Alarm1]
    );
    assert_eq!(send(&app, &clock, &vendors).await.sent, 1);
    {
        let fake = tencent_fake.lock().unwrap();
        let (_, phone, template, params) = &fake.sent[0];
        assert_eq!(
            (phone.as_str(), template.as_str()),
            ("+8613800138000", "100001")
        );
        assert_eq!(params, &json!(["501 奶茶店", "¥40.00"]));
    }
    assert_eq!(reports(&app, &clock, &vendors).await, 1);
    let states: Vec<String> = messages(&app).await.into_iter().map(|m| m.3).collect();
    assert_eq!(states, ["failed", "failed", "delivered"]);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn wechat_template_messages_reuse_their_token_and_delivery_arrives_by_the_signed_callback() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (vendors, _, _, wechat_fake) = fakes(&app, "-", "-", "wx-secret").await;
    let (status, view) = put(
        &app,
        &admin,
        "/api/v1/notify/accounts/wechat",
        json!({
        "config": {"app_id": "wx0001"}, "templates": {"alarm1": "TPL-A1", "alarm2": "TPL-A2"},
        "secret": "wx-secret", "callback_token": "cb-token"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["callback_token_set"], true);
    let clock = daytime();
    let (shop, meter) = shop_with_meter(&app, &admin, "502").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    // A tenant user of the account who linked WeChat (the self-service issue does the linking).
    let tenant = Uuid::now_v7();
    sqlx::query(
        "insert into c_1.users (id, username, password_hash, role, wechat_openid)
         values ($1, '13900139000', 'x', 'shop_tenant', 'oOPENID1')",
    )
    .bind(tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into c_1.account_users (account_id, user_id, linked_at) values ($1, $2, now())",
    )
    .bind(id.parse::<Uuid>().unwrap())
    .bind(tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    money(&app, &admin, &id, "refund", "r1", 1_500).await;
    evaluate(&app, &clock, &id).await;
    let report = send(&app, &clock, &vendors).await;
    // The holder's phone through the sandbox (its own report), the tenant through WeChat.
    assert_eq!((report.delivered, report.sent), (1, 1), "{report:?}");
    money(&app, &admin, &id, "refund", "r2", 2_500).await;
    evaluate(&app, &clock, &id).await;
    clock.advance(Duration::seconds(5));
    send(&app, &clock, &vendors).await;
    {
        let fake = wechat_fake.lock().unwrap();
        assert_eq!(fake.token_fetches, 1, "the token is kept between passes");
        assert_eq!(fake.sent.len(), 2);
        assert_eq!(fake.sent[0].1, "oOPENID1");
        assert_eq!(fake.sent[1].2, "TPL-A2");
        assert_eq!(fake.sent[0].3["shop"]["value"], "502 奶茶店");
    }
    // WeChat dropped the token early: one fresh token, and the message still goes.
    wechat_fake.lock().unwrap().tokens.clear();
    sqlx::query(
        "insert into c_1.notifications (id, account_id, kind, recipient, channel, body, created_at, deliver_after)
         values ($1, $2, 'alarm1', 'oOPENID1', 'wechat', '测试', $3, $3)",
    )
    .bind(Uuid::now_v7())
    .bind(id.parse::<Uuid>().unwrap())
    .bind(clock.now())
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(send(&app, &clock, &vendors).await.sent, 1);
    assert_eq!(wechat_fake.lock().unwrap().token_fetches, 2);

    // The delivery report, signed with the callback token.
    let msgid = wechat_fake.lock().unwrap().sent[0].0.clone();
    let xml = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oOPENID1]]></FromUserName>\
         <CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>\
         <Status><![CDATA[success]]></Status></xml>"
    );
    let callback = |token: &str, at: i64| {
        let ts = at.to_string();
        let signature = sign::wechat_callback_signature(token, &ts, "n1");
        app.url(&format!(
            "/api/v1/hooks/wechat/1?signature={signature}&timestamp={ts}&nonce=n1&echostr=hello"
        ))
    };
    let now = Utc::now().timestamp();
    let forged = app
        .http
        .post(callback("guess", now))
        .body(xml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let replayed = app
        .http
        .post(callback("cb-token", now - 3600))
        .body(xml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let unknown = app
        .http
        .post(callback("cb-token", now).replace("/wechat/1?", "/wechat/99?"))
        .body(xml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let verify = app
        .http
        .get(callback("cb-token", now))
        .send()
        .await
        .unwrap();
    assert_eq!(
        verify.text().await.unwrap(),
        "hello",
        "the server-address check"
    );
    let pushed = app
        .http
        .post(callback("cb-token", now))
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::OK);
    assert_eq!(pushed.text().await.unwrap(), "success");
    let wechat: Vec<String> = messages(&app)
        .await
        .into_iter()
        .filter(|m| m.2 == "wechat")
        .map(|m| m.3)
        .collect();
    assert_eq!(wechat, ["delivered", "sent", "sent"]);
    app.assert_ledger_clean().await;
}

/// Inserts a due message of `kind` to `to` through `channel`.
async fn queue(app: &TestApp, clock: &Arc<ManualClock>, kind: &str, to: &str, channel: &str) {
    sqlx::query(
        "insert into c_1.notifications (id, kind, recipient, channel, body, created_at, deliver_after)
         values ($1, $2, $3, $4, '测试', $5, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(kind)
    .bind(to)
    .bind(channel)
    .bind(clock.now())
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_phone_gets_at_most_its_hourly_share_and_an_unreachable_vendor_is_tried_five_times() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    put(
        &app,
        &admin,
        "/api/v1/notify/delivery",
        json!({
        "sms_channel": "sandbox", "per_phone_hour": 2, "escalate_after_min": 30}),
    )
    .await;
    let clock = daytime();
    for _ in 0..3 {
        queue(&app, &clock, "alarm1", "13800000001", "sandbox").await;
    }
    queue(&app, &clock, "trip_notice", "13800000001", "sandbox").await;
    let (vendors, ..) = fakes(&app, "-", "-", "-").await;
    let report = send(&app, &clock, &vendors).await;
    assert_eq!(
        (report.delivered, report.held),
        (3, 1),
        "two, and the trip notice is never held"
    );
    assert_eq!(
        send(&app, &clock, &vendors).await,
        Default::default(),
        "held for the hour"
    );
    clock.advance(Duration::minutes(61));
    assert_eq!(send(&app, &clock, &vendors).await.delivered, 1);

    // Aliyun unreachable (nothing listens): 30 s, 2, 10, 30 min, then failed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let vendors = Vendors {
        urls: VendorUrls {
            aliyun: dead,
            ..vendors.urls.clone()
        },
        ..vendors
    };
    put(
        &app,
        &admin,
        "/api/v1/notify/accounts/aliyun",
        json!({
        "config": {"access_key_id": "LTAItest", "sign_name": "华庭物业"},
        "templates": {"alarm2": "SMS_2"}, "secret": "s"}),
    )
    .await;
    queue(&app, &clock, "alarm2", "13800000002", "aliyun").await;
    let mut tries = 0;
    for wait_s in [0, 30, 120, 600, 1800] {
        if wait_s > 0 {
            clock.advance(Duration::seconds(wait_s - 1));
            assert_eq!(
                send(&app, &clock, &vendors).await,
                Default::default(),
                "not due yet"
            );
            clock.advance(Duration::seconds(1));
        }
        let report = send(&app, &clock, &vendors).await;
        tries += report.retried + report.failed;
        if report.failed == 1 {
            break;
        }
    }
    assert_eq!(tries, 5);
    let last = messages(&app).await.pop().unwrap();
    assert_eq!(last.3, "failed");
    assert!(last.4.contains("unreachable"), "{}", last.4);
    let attempts: i32 =
        sqlx::query_scalar("select attempts from c_1.notifications where kind = 'alarm2'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 5);
}

#[tokio::test]
async fn operator_alerts_go_once_escalate_to_admins_unless_acknowledged_and_respect_preferences() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, meter) = shop_with_meter(&app, &admin, "503").await;
    let (operator_id, operator) = app.user(&admin, "acme", "duty", "operator", &[]).await;
    sqlx::query("update c_1.users set phone = '13700000001' where id = $1")
        .bind(operator_id.parse::<Uuid>().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let clock = ManualClock::at(Utc::now());
    let raise = |kind: &'static str| {
        let pool = app.db.pool.clone();
        let meter = meter.clone();
        let at = clock.now();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "insert into c_1.field_alarms (id, kind, target_id, detail, raised_at)
                 values (gen_random_uuid(), $1, $2, '', $3) returning id",
            )
            .bind(kind)
            .bind(meter.parse::<Uuid>().unwrap())
            .bind(at)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let sweep = || async {
        let principal = worker(&app, &clock).await;
        let mut tx =
            powertab_core::db::begin_in(&app.db.pool, &principal.company().unwrap().schema)
                .await
                .unwrap();
        let n = alerts::sweep(&mut tx, &principal).await.unwrap();
        tx.commit().await.unwrap();
        n
    };
    let stale = raise("meter_stale").await;
    assert_eq!(sweep().await, 1);
    assert_eq!(sweep().await, 0, "once per alarm");
    let first = messages(&app).await.remove(0);
    assert_eq!(
        (first.0.as_str(), first.1.as_str()),
        ("alert_meter_stale", "13700000001")
    );
    // Nobody acknowledged it for 30 minutes: the admins hear of it.
    clock.advance(Duration::minutes(31));
    assert_eq!(sweep().await, 1);
    let escalated = messages(&app).await.pop().unwrap();
    assert_eq!(
        escalated.1, "boss",
        "an admin without a phone reads it in the log"
    );
    assert_eq!(escalated.2, "sandbox");
    // An acknowledged alarm does not escalate.
    let (status, _) = app
        .post(
            &format!("/api/v1/field-alarms/{stale}/acknowledge"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let held = raise("reading_held").await;
    assert_eq!(sweep().await, 1);
    app.post(
        &format!("/api/v1/field-alarms/{held}/acknowledge"),
        &admin,
        json!({}),
    )
    .await;
    clock.advance(Duration::minutes(31));
    assert_eq!(sweep().await, 0, "acknowledged: no escalation");

    // The operator turns off offline-gateway alerts; trip notices cannot be turned off.
    let (status, body) = put(
        &app,
        &operator,
        "/api/v1/notify/preferences",
        json!({"muted": ["trip_notice"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, prefs) = put(
        &app,
        &operator,
        "/api/v1/notify/preferences",
        json!({"muted": ["alert_relay_mismatch"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prefs["muted"], json!(["alert_relay_mismatch"]));
    raise("relay_mismatch").await;
    let before = messages(&app).await.len();
    let written = sweep().await;
    let new: Vec<String> = messages(&app).await[before..]
        .iter()
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(
        (written, new),
        (1, vec!["boss".to_owned()]),
        "only the admin, standing in"
    );
    let (_, mine) = app.get("/api/v1/notify/preferences", &operator).await;
    assert_eq!(mine["muted"], json!(["alert_relay_mismatch"]));
}

#[tokio::test]
async fn the_settings_page_takes_a_vendor_account_without_javascript_and_never_shows_its_secret() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, "/settings/notifications").await;
    assert!(html.contains("id=\"notify-aliyun\"") && html.contains("id=\"notify-wechat\""));
    assert!(
        html.contains("/api/v1/hooks/wechat/1"),
        "where WeChat should push"
    );
    let csrf = csrf_of(&html);
    let (status, location) = post_form(
        &app,
        &boss,
        "/settings/notifications",
        "/sfn/notify_account",
        &[
            ("csrf", &csrf),
            ("channel", "aliyun"),
            ("enabled", "on"),
            ("access_key_id", "LTAIweb"),
            ("sign_name", "华庭物业"),
            ("secret", "web-secret-123"),
            ("t_alarm1", "SMS_9001"),
            ("t_trip_notice", "SMS_9003"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(location.contains("ok=common.saved"), "{location}");
    let (_, accounts) = app.get("/api/v1/notify/accounts", &admin).await;
    let aliyun = &accounts[0];
    assert_eq!(aliyun["config"]["access_key_id"], "LTAIweb");
    assert_eq!(aliyun["templates"]["trip_notice"], "SMS_9003");
    assert_eq!(aliyun["secret_set"], true);
    let html = page(&app, &boss, "/settings/notifications").await;
    assert!(
        !html.contains("web-secret-123"),
        "the secret is never shown again"
    );
    assert!(html.contains("SMS_9001"));
    // A bad template id is refused with the form's error, nothing stored.
    let (_, location) = post_form(
        &app,
        &boss,
        "/settings/notifications",
        "/sfn/notify_account",
        &[
            ("csrf", &csrf),
            ("channel", "aliyun"),
            ("enabled", "on"),
            ("access_key_id", "LTAIweb"),
            ("sign_name", "华庭物业"),
            ("t_alarm1", "SMS 1; drop"),
        ],
    )
    .await;
    assert!(location.contains("error"), "{location}");
    let (_, accounts) = app.get("/api/v1/notify/accounts", &admin).await;
    assert_eq!(accounts[0]["templates"]["alarm1"], "SMS_9001");
    // The delivery form, and the person's own choices (unticked = off).
    let (status, _) = post_form(
        &app,
        &boss,
        "/settings/notifications",
        "/sfn/notify_delivery",
        &[
            ("csrf", &csrf),
            ("sms_channel", "aliyun"),
            ("per_phone_hour", "5"),
            ("escalate_after_min", "15"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let (_, delivery) = app.get("/api/v1/notify/delivery", &admin).await;
    assert_eq!(
        delivery,
        json!({"sms_channel": "aliyun", "per_phone_hour": 5, "escalate_after_min": 15})
    );
    post_form(
        &app,
        &boss,
        "/settings/notifications",
        "/sfn/notify_preferences",
        &[("csrf", &csrf), ("w_alarm1", "on"), ("w_alarm2", "on")],
    )
    .await;
    let (_, mine) = app.get("/api/v1/notify/preferences", &admin).await;
    let muted = mine["muted"].as_array().unwrap();
    assert_eq!(muted.len(), 8, "{mine}");
    assert!(!muted.contains(&json!("alarm1")) && !muted.contains(&json!("trip_notice")));
    // Operators without the settings right see their own choices only.
    app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let clerk = logged_in_as(&app, "acme", "clerk").await;
    let html = page(&app, &clerk, "/settings/notifications").await;
    assert!(html.contains("id=\"notify-mine\"") && !html.contains("id=\"notify-aliyun\""));
}
