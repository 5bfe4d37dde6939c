//! Power follows money (core::power): the rules run against real accounts, real postings and
//! the real command queue, with an injected clock — alarms once per crossing, the trip notice,
//! the trip after `trip_notice_s` as a `rule:balance` command for every meter, keep-power
//! honoured, the restore after a top-up, messages to the holder in the sandbox channel.

use crate::helpers::{spawn_app, Caller, TestApp};
use crate::money::{fen, open_account, shop_with_meter};
use chrono::{Duration, Utc};
use powertab_core::kernel::clock::{Clock, ManualClock};
use powertab_core::power::Action;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// The power worker inside company 1, on `clock`.
pub(crate) async fn worker(
    app: &TestApp,
    clock: &Arc<ManualClock>,
) -> powertab_core::auth::Principal {
    let mut conn = app.db.pool.acquire().await.unwrap();
    let scope = powertab_core::auth::load_company(&mut conn, 1)
        .await
        .unwrap()
        .unwrap();
    powertab_core::auth::Principal::system("power", clock.clone()).in_company(scope)
}

/// Runs the rules for `account` of company 1 at the clock's instant.
pub(crate) async fn evaluate(
    app: &TestApp,
    clock: &Arc<ManualClock>,
    account: &str,
) -> Vec<Action> {
    let principal = worker(app, clock).await;
    let mut tx = powertab_core::db::begin_in(&app.db.pool, &principal.company().unwrap().schema)
        .await
        .unwrap();
    let actions = powertab_core::power::evaluate(&mut tx, &principal, account.parse().unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    actions
}

/// The sweep of company 1 at the clock's instant.
async fn sweep(app: &TestApp, clock: &Arc<ManualClock>) -> powertab_core::power::SweepReport {
    let principal = worker(app, clock).await;
    powertab_core::power::sweep(&app.db.pool, &principal)
        .await
        .unwrap()
}

pub(crate) async fn money(
    app: &TestApp,
    admin: &Caller,
    account: &str,
    what: &str,
    key: &str,
    amount: i64,
) {
    let body = if what == "refund" {
        json!({"amount_fen": amount, "method": "card", "reason": "测试"})
    } else {
        json!({"amount_fen": amount, "method": "card"})
    };
    let (status, r) = app
        .post_keyed(
            &format!("/api/v1/accounts/{account}/{what}"),
            admin,
            key,
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
}

/// The kinds of company 1's messages, oldest first.
async fn kinds(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "select kind from c_1.notifications where kind <> 'top_up' order by created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

/// (op, state, source) of a meter's commands, oldest first.
async fn commands(app: &TestApp, meter: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select op, state, source from c_1.commands where meter_id = $1 order by created_at, id",
    )
    .bind(meter.parse::<uuid::Uuid>().unwrap())
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_balance_falls_through_the_alarms_to_a_trip_and_a_top_up_restores_it() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "701").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    // Daytime in Shanghai, a weekday: no quiet hours, messages go at once.
    let clock = ManualClock::at("2026-12-02T02:00:00Z".parse().unwrap());
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![],
        "¥60 is above alarm 1 (¥50)"
    );
    money(&app, &admin, &id, "refund", "r1", 1_500).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Alarm1]);
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![],
        "once per crossing"
    );
    money(&app, &admin, &id, "refund", "r2", 2_600).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Alarm2]);
    // Down to ¥0: the trip level of a company without overdraft. The notice first.
    money(&app, &admin, &id, "refund", "r3", 1_900).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::TripNotice]);
    assert!(
        commands(&app, &meter).await.is_empty(),
        "no trip during the notice"
    );
    clock.advance(Duration::seconds(599));
    assert_eq!(sweep(&app, &clock).await.actions, 0);
    clock.advance(Duration::seconds(1));
    let report = sweep(&app, &clock).await;
    assert_eq!((report.actions, report.errors), (1, 0), "{report:?}");
    assert_eq!(
        commands(&app, &meter).await,
        vec![("trip".into(), "queued".into(), "rule:balance".into())]
    );
    // The tenant hears of the cut once the meter is seen open, not when the trip is queued.
    assert_eq!(kinds(&app).await, ["alarm1", "alarm2", "trip_notice"]);
    assert_eq!(sweep(&app, &clock).await.told, 0, "not seen yet");
    store_relay(&app, &meter, clock.now(), false).await;
    assert_eq!(sweep(&app, &clock).await.told, 1);
    assert_eq!(sweep(&app, &clock).await.told, 0, "told once");
    // Paying ¥0.50 is below the restore level (¥1): still off. ¥5 more restores.
    money(&app, &admin, &id, "top-up", "t2", 50).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![]);
    money(&app, &admin, &id, "top-up", "t3", 500).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Restore]);
    assert_eq!(
        commands(&app, &meter).await,
        vec![
            ("trip".into(), "cancelled".into(), "rule:balance".into()),
            ("close".into(), "queued".into(), "rule:balance".into())
        ],
        "the queued trip is superseded by the close"
    );
    assert_eq!(
        sweep(&app, &clock).await.told,
        0,
        "the relay still reads open"
    );
    clock.advance(Duration::seconds(5));
    store_relay(&app, &meter, clock.now(), true).await;
    assert_eq!(
        sweep(&app, &clock).await.told,
        1,
        "seen closed: power is back"
    );
    // The holder's phone got every message, arrears never written with a minus sign.
    let sent: Vec<(String, String, String)> = sqlx::query_as(
        "select kind, recipient, body from c_1.notifications where kind <> 'top_up' order by created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = sent.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["alarm1", "alarm2", "trip_notice", "tripped", "restored"]
    );
    assert!(sent
        .iter()
        .all(|(_, to, body)| to == "13800138000" && !body.contains('-')));
    assert!(
        sent[2].2.contains("10 分钟"),
        "the notice says when: {:?}",
        sent[2]
    );
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "available_fen"), 550);
    // The notification log: every message, newest first; nobody else's.
    let (_, log) = app.get("/api/v1/notifications", &admin).await;
    let logged: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .filter(|k| *k != "top_up")
        .collect();
    assert_eq!(
        logged,
        ["restored", "tripped", "trip_notice", "alarm2", "alarm1"]
    );
    assert_eq!(log[0]["shop"], "701 奶茶店");
    // Each of the three top-ups got its receipt, with the amount and the balance after it.
    let receipts: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "top_up")
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(receipts.len(), 3, "{receipts:?}");
    assert!(
        receipts
            .iter()
            .any(|b| b.contains("充值 ¥5.00") && b.contains("可用余额 ¥5.50")),
        "{receipts:?}"
    );
    let (_, other) = app.company_with_admin("bravo").await;
    let (_, theirs) = app.get("/api/v1/notifications", &other).await;
    assert!(theirs.as_array().unwrap().is_empty());
    let html = crate::web::page(
        &app,
        &crate::web::logged_in_as(&app, "acme", "boss").await,
        "/notifications",
    )
    .await;
    assert_eq!(html.matches("data-kind=").count(), 8, "the log page");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn keep_power_prevents_the_trip_and_quiet_hours_postpone_it() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "702").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    // Quiet from 22:00 to 06:00 local; 23:00 Shanghai is 15:00 UTC (a Wednesday).
    sqlx::query("update c_1.settings set quiet_start_minute = 1320, quiet_end_minute = 360, arrears_cap_fen = 10000")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let clock = ManualClock::at("2026-12-02T15:00:00Z".parse().unwrap());
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![Action::Alarm2, Action::TripNotice],
        "an account opened without credit sits at the trip level"
    );
    clock.advance(Duration::seconds(600));
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![],
        "quiet hours postpone"
    );
    // At 06:00 local the window is over: the trip goes ahead — unless the meter keeps power.
    sqlx::query("update c_1.meters set keep_power = true where id = $1")
        .bind(meter.parse::<uuid::Uuid>().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    clock.advance(Duration::hours(7));
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Trip]);
    assert!(
        commands(&app, &meter).await.is_empty(),
        "keep-power: no trip is sent"
    );
    // The notice waited for nobody, the other messages wait for 08:00 local.
    let waits: Vec<(String, chrono::DateTime<Utc>)> =
        sqlx::query_as("select kind, deliver_after from c_1.notifications where kind <> 'top_up' order by created_at, id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let morning: chrono::DateTime<Utc> = "2026-12-03T00:00:00Z".parse().unwrap();
    assert_eq!(waits[0], ("alarm2".into(), morning));
    assert_eq!(waits[1].0, "trip_notice");
    assert_eq!(
        waits[1].1,
        "2026-12-02T15:00:00Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_server_worker_hears_a_posting_and_runs_the_rules_at_once() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "703").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    let clock = ManualClock::at("2026-12-02T02:00:00Z".parse().unwrap());
    powertab_server::workers::spawn(
        app.db.pool.clone(),
        clock.clone(),
        app.vendors.clone(),
        None,
    );
    // Time for the listener to LISTEN. The sweep ran at start (¥60: nothing to do) and runs
    // again only after 10 s, so an alarm within the wait below is the listener's.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    money(&app, &admin, &id, "refund", "r1", 1_500).await;
    let heard = powertab_testkit::wait_until(std::time::Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from c_1.notifications where kind = 'alarm1'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    assert!(heard, "the refund's NOTIFY ran the rules: alarm 1 went out");
    app.assert_ledger_clean().await;
}

/// Stores a reading of `meter` at `at` whose relay reads `closed`.
async fn store_relay(app: &TestApp, meter: &str, at: chrono::DateTime<Utc>, closed: bool) {
    crate::crash::store_with_relay(&app.db.pool, meter.parse().unwrap(), at, 1_000_000, closed)
        .await;
}

#[tokio::test]
async fn a_paid_shop_left_dark_gets_its_close_again_and_a_stubborn_relay_an_alarm() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "704").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    let t0 = Utc::now() - Duration::minutes(10);
    let clock = ManualClock::at(t0);
    let open_alarms = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from c_1.field_alarms where kind = 'relay_mismatch' and cleared_at is null",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
    };
    // Paid, but the relay reads open (a close that expired on the way, say): sent again, and
    // not again while that one is open.
    for round in 0..3 {
        let at = t0 + Duration::seconds(61 * round);
        clock.set(at);
        store_relay(&app, &meter, at, false).await;
        let report = sweep(&app, &clock).await;
        assert_eq!(report.relay.resent, 1, "round {round}: {report:?}");
        assert_eq!(sweep(&app, &clock).await.relay.resent, 0, "one at a time");
        // That close is lost too.
        sqlx::query(
            "update c_1.commands set state = 'expired', updated_at = $1 where state = 'queued'",
        )
        .bind(at)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    let sent = commands(&app, &meter).await;
    assert_eq!(sent.len(), 3);
    assert!(sent
        .iter()
        .all(|(op, _, source)| op == "close" && source == "rule:relay_state"));
    // A fourth mismatch within the hour asks a person instead.
    let at = t0 + Duration::seconds(61 * 3);
    clock.set(at);
    store_relay(&app, &meter, at, false).await;
    let report = sweep(&app, &clock).await;
    assert_eq!(
        (report.relay.resent, report.relay.alarms),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(open_alarms().await, 1);
    // The relay closes at last: the alarm clears.
    let at = at + Duration::seconds(30);
    clock.set(at);
    store_relay(&app, &meter, at, true).await;
    assert_eq!(sweep(&app, &clock).await.relay.cleared, 1);
    assert_eq!(open_alarms().await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn operators_trip_close_and_keep_power_with_the_rights_and_the_rules_keep_their_wish() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "705").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    let control = format!("/api/v1/meters/{meter}/control");
    let (_, clerk) = app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let (status, _) = app.post(&control, &clerk, json!({"op": "trip"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "trip_close is a right");
    let (status, body) = app.post(&control, &admin, json!({"op": "purchase"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, other) = app.company_with_admin("bravo").await;
    let (status, _) = app.post(&control, &other, json!({"op": "trip"})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another company's meter does not exist"
    );

    // An operator's trip of a paying shop sticks: the comparison sends the trip again, never a
    // close, and a top-up's restore leaves it alone.
    let (status, trip) = app.post(&control, &admin, json!({"op": "trip"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{trip}");
    assert!(
        trip["source"].as_str().unwrap().starts_with("operator:"),
        "{trip}"
    );
    sqlx::query(
        "update c_1.commands set state = 'expired', updated_at = now() - interval '5 minutes'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let clock = ManualClock::at(Utc::now());
    store_relay(&app, &meter, Utc::now(), true).await;
    assert_eq!(sweep(&app, &clock).await.relay.resent, 1);
    let last = commands(&app, &meter).await.pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.2.as_str()),
        ("trip", "rule:relay_state")
    );
    sqlx::query("insert into c_1.account_power (account_id, tripped_at) values ($1, now())")
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Restore]);
    let last = commands(&app, &meter).await.pop().unwrap();
    assert_eq!(
        last.0, "trip",
        "the rules' restore does not undo an operator's trip"
    );

    // Keep-power: on, and no trip passes it; off on a tripped account gives a fresh notice.
    let (status, _) = app.post(&control, &admin, json!({"op": "release"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = app
        .post(&control, &admin, json!({"op": "keep_power_on"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = app.post(&control, &admin, json!({"op": "trip"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    sqlx::query("update c_1.account_power set tripped_at = now() where account_id = $1")
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, _) = app
        .post(&control, &admin, json!({"op": "keep_power_off"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (tripped, noticed): (Option<chrono::DateTime<Utc>>, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as(
            "select tripped_at, noticed_at from c_1.account_power where account_id = $1",
        )
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(
        tripped.is_none() && noticed.is_some(),
        "the notice starts again"
    );
    let notices: i64 =
        sqlx::query_scalar("select count(*) from c_1.notifications where kind = 'trip_notice'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(notices, 1);
    let audited: i64 =
        sqlx::query_scalar("select count(*) from c_1.audit_log where action = 'meter.control'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 4, "trip, release, keep-power on and off");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_meter_page_switches_a_meter_only_after_the_confirmation_naming_the_shop() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, meter) = shop_with_meter(&app, &admin, "706").await;
    app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let path = format!("/meters/{meter}");
    let clerk = logged_in_as(&app, "acme", "clerk").await;
    assert!(
        !page(&app, &clerk, &path)
            .await
            .contains("id=\"meter-control\""),
        "no control without the right"
    );
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, &path).await;
    let form = html
        .split("id=\"meter-control\"")
        .nth(1)
        .expect("the control form");
    assert!(form.contains("706"), "the confirmation names the shop");
    let csrf = csrf_of(&html);
    let send = |confirm: &'static str| {
        let (app, boss, path, csrf, meter) = (&app, &boss, &path, &csrf, &meter);
        async move {
            post_form(
                app,
                boss,
                path,
                "/sfn/meter_control",
                &[
                    ("csrf", csrf),
                    ("id", meter),
                    ("op", "trip"),
                    ("confirm", confirm),
                ],
            )
            .await
            .1
        }
    };
    let refused = send("").await;
    assert!(refused.contains("fields=confirm"), "{refused}");
    assert!(
        commands(&app, &meter).await.is_empty(),
        "nothing sent unconfirmed"
    );
    assert_eq!(send("yes").await, format!("{path}?ok=control.sent"));
    let sent = commands(&app, &meter).await;
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0.as_str(), sent[0].1.as_str()), ("trip", "queued"));
    assert!(sent[0].2.starts_with("operator:"));
}

#[tokio::test]
async fn emergency_credit_closes_a_tripped_shop_once_a_month_until_it_expires() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "707").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    let clock = ManualClock::at(Utc::now());
    assert_eq!(
        evaluate(&app, &clock, &id).await,
        vec![Action::Alarm2, Action::TripNotice]
    );
    clock.advance(Duration::seconds(600));
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Trip]);
    let path = format!("/api/v1/accounts/{id}/emergency-credit");
    let (_, clerk) = app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let (status, _) = app
        .post(&path, &clerk, json!({"amount_fen": 1_000, "hours": 24}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "emergency_credit is a right");
    let (status, body) = app
        .post(&path, &admin, json!({"amount_fen": 1_000, "hours": 99}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, credit) = app
        .post(&path, &admin, json!({"amount_fen": 1_000, "hours": 24}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{credit}");
    // No money moved; the rules closed the meter at once (the levels dropped by ¥10).
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(fen(&account, "wallet_fen"), 0);
    // (The rules ran on the test's clock, the grant on the server's: compare without order.)
    let mut sent = commands(&app, &meter).await;
    sent.sort();
    assert_eq!(
        sent.iter()
            .map(|(op, state, _)| (op.as_str(), state.as_str()))
            .collect::<Vec<_>>(),
        vec![("close", "queued"), ("trip", "cancelled")]
    );
    let (status, _) = app
        .post(&path, &admin, json!({"amount_fen": 500, "hours": 1}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "once per local month");
    // A day later it has expired: the trip rule applies again, with a fresh notice.
    clock.set(Utc::now() + Duration::hours(25));
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::TripNotice]);
    let ended: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("select ended_at from c_1.emergency_credits")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(ended.is_some());
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_accounts_own_levels_replace_the_defaults_in_order_and_take_effect_at_once() {
    use reqwest::Method;
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "708").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    let path = format!("/api/v1/accounts/{id}/levels");
    let (status, levels) = app.get(&path, &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            levels["alarm1_fen"].as_i64(),
            levels["own"]["alarm1_fen"].is_null()
        ),
        (Some(5_000), true),
        "the company default: {levels}"
    );
    let set = |body: serde_json::Value| {
        let (app, admin, path) = (&app, &admin, &path);
        async move { app.call(Method::PUT, path, Some(admin), Some(body)).await }
    };
    let (_, clerk) = app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let (status, _) = app
        .call(
            Method::PUT,
            &path,
            Some(&clerk),
            Some(json!({"alarm1_fen": 1})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the accounts right sets levels"
    );
    let (status, body) = set(json!({"alarm1_fen": 1_000, "alarm2_fen": 3_000})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["alarm2_fen"].is_string(), "{body}");
    let (status, body) =
        set(json!({"overdraft_limit_fen": 2_000, "restore_level_fen": -2_000})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["restore_level_fen"].is_string());
    // ¥100 for alarm 1: the ¥60 wallet is below it now, and the rules say so at once.
    let (status, levels) = set(json!({"alarm1_fen": 10_000})).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    assert_eq!(levels["alarm1_fen"], 10_000);
    let alarms: i64 =
        sqlx::query_scalar("select count(*) from c_1.notifications where kind = 'alarm1'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(alarms, 1);
    let (_, other) = app.company_with_admin("bravo").await;
    let (status, _) = app.get(&path, &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn at_night_only_the_latest_message_of_each_kind_waits_for_the_morning() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "709").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    // 23:30 in Shanghai: messages other than trip notices wait for 08:00.
    let clock = ManualClock::at("2026-12-02T15:30:00Z".parse().unwrap());
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    money(&app, &admin, &id, "refund", "r1", 2_000).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Alarm1]);
    // Back above alarm 1 (re-armed), and below again: a second alarm 1 the same night.
    money(&app, &admin, &id, "top-up", "t2", 2_000).await;
    assert_eq!(evaluate(&app, &clock, &id).await, vec![]);
    money(&app, &admin, &id, "refund", "r2", 2_000).await;
    clock.advance(Duration::minutes(10));
    assert_eq!(evaluate(&app, &clock, &id).await, vec![Action::Alarm1]);
    let kept: Vec<(String, String, chrono::DateTime<Utc>)> = sqlx::query_as(
        "select kind, state, deliver_after from c_1.notifications where kind <> 'top_up' order by created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let morning: chrono::DateTime<Utc> = "2026-12-03T00:00:00Z".parse().unwrap();
    assert_eq!(
        kept,
        vec![
            ("alarm1".into(), "superseded".into(), morning),
            ("alarm1".into(), "queued".into(), morning)
        ]
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_dlt645_relay_waiting_for_the_tenants_button_agrees_with_closed() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop, meter) = shop_with_meter(&app, &admin, "711").await;
    let id = open_account(&app, &admin, &shop, &meter).await;
    money(&app, &admin, &id, "top-up", "t1", 6_000).await;
    let clock = ManualClock::at(Utc::now());
    // Paid; the relay reads open, but the meter says "close allowed" (1B): nothing to resend.
    store_relay(&app, &meter, clock.now() - Duration::seconds(5), false).await;
    sqlx::query("update c_1.meter_latest set alarms = '{close_allowed}' where meter_id = $1")
        .bind(meter.parse::<uuid::Uuid>().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(sweep(&app, &clock).await.relay.resent, 0);
    // Without the status the same reading is a shop left dark: the close goes again.
    sqlx::query("update c_1.meter_latest set alarms = '{}' where meter_id = $1")
        .bind(meter.parse::<uuid::Uuid>().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(sweep(&app, &clock).await.relay.resent, 1);
    app.assert_ledger_clean().await;
}
