//! Remote control at scale (core::power::batch, core::power::centre): batch control previews a
//! selection, refuses a start whose confirmed count no longer holds, skips keep-power meters on a
//! trip and follows its commands; the command centre lists open, stuck and failed commands, sends
//! a failed one again (linked, under the same rights) and cancels a queued one — never another
//! company's, never a purchase.

use crate::helpers::spawn_app;
use crate::money::shop_with_meter;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

async fn state_of(app: &crate::helpers::TestApp, id: &str) -> (String, Option<Uuid>) {
    sqlx::query_as("select state, batch_id from c_1.commands where id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// How many audit records of `action` company 1 has.
async fn audited(app: &crate::helpers::TestApp, action: &str) -> i64 {
    sqlx::query_scalar("select count(*) from c_1.audit_log where action = $1")
        .bind(action)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// `path` answers `caller` with an `.xlsx` (zip) file.
async fn assert_xlsx(app: &crate::helpers::TestApp, caller: &crate::helpers::Caller, path: &str) {
    let response = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(&caller.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert!(response.bytes().await.unwrap().starts_with(b"PK"), "{path}");
}

#[tokio::test]
async fn a_batch_trips_the_confirmed_shops_skips_keep_power_and_reports_progress() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let mut meters = Vec::new();
    for number in ["801", "802", "803"] {
        meters.push(shop_with_meter(&app, &admin, number).await.1);
    }
    // A shop outside the text: "90" matches meter numbers 9801…9803 but not shop 901.
    let (_, elsewhere) = shop_with_meter(&app, &admin, "901").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/meters/{}/control", meters[1]),
            &admin,
            json!({"op": "keep_power_on"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let selection = json!({"op": "trip", "q": "80"});
    let (status, preview) = app
        .post("/api/v1/control-batches/preview", &admin, selection.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["meters"], 2, "{preview}");
    assert_eq!(preview["skipped_keep_power"], 1);
    assert_eq!(preview["shops"], json!(["801 奶茶店", "803 奶茶店"]));
    // A wildcard typed in the text is a character: nothing has a `%` in it.
    let (_, wild) = app
        .post(
            "/api/v1/control-batches/preview",
            &admin,
            json!({"op": "trip", "q": "%"}),
        )
        .await;
    assert_eq!(wild["meters"], 0, "{wild}");

    let (_, clerk) = app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let (status, _) = app
        .post("/api/v1/control-batches/preview", &clerk, selection.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "trip_close is a right");

    let mut start = selection.clone();
    start["confirm_meters"] = json!(3);
    let (status, body) = app.post("/api/v1/control-batches", &admin, start).await;
    assert_eq!(status, StatusCode::CONFLICT, "not the count shown: {body}");
    let none: i64 = sqlx::query_scalar("select count(*) from c_1.commands where op = 'trip'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(none, 0, "nothing sent on a refused start");

    let mut start = selection.clone();
    start["confirm_meters"] = json!(2);
    let (status, batch) = app.post("/api/v1/control-batches", &admin, start).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    assert_eq!(batch["meters"], 2);
    assert_eq!(batch["skipped"], 1);
    assert_eq!(batch["states"], json!({"queued": 2}));
    assert_eq!(batch["finished"], false);
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let tripped: Vec<(Uuid, Option<Uuid>, String)> = sqlx::query_as(
        "select meter_id, batch_id, source from c_1.commands where op = 'trip' order by meter_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut expected = vec![
        meters[0].parse::<Uuid>().unwrap(),
        meters[2].parse().unwrap(),
    ];
    expected.sort();
    assert_eq!(
        tripped.iter().map(|t| t.0).collect::<Vec<_>>(),
        expected,
        "the two confirmed meters, not the keep-power one nor shop 901's"
    );
    assert!(tripped
        .iter()
        .all(|t| t.1.map(|b| b.to_string()) == Some(batch_id.clone())
            && t.2.starts_with("operator:")));
    let overrides: Vec<Option<String>> =
        sqlx::query_scalar("select relay_override from c_1.meters where id = any($1) order by id")
            .bind(&expected)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(overrides, vec![Some("open".to_owned()); 2]);
    assert!(!elsewhere.is_empty());

    // Progress: one verified, one failed; sending the failed one again counts as its retry.
    sqlx::query("update c_1.commands set state = 'verified' where meter_id = $1 and op = 'trip'")
        .bind(expected[0])
        .execute(&app.db.pool)
        .await
        .unwrap();
    let failed: Uuid = sqlx::query_scalar(
        "update c_1.commands set state = 'failed', detail = 'no answer'
         where meter_id = $1 and op = 'trip' returning id",
    )
    .bind(expected[1])
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let (_, progress) = app
        .get(&format!("/api/v1/control-batches/{batch_id}"), &admin)
        .await;
    assert_eq!(progress["states"], json!({"verified": 1, "failed": 1}));
    assert_eq!(progress["finished"], true);
    let (status, again) = app
        .post(
            &format!("/api/v1/commands/{failed}/retry"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["retry_of"], json!(failed.to_string()));
    assert_eq!(again["batch_id"], json!(batch_id));
    let (status, _) = app
        .post(
            &format!("/api/v1/commands/{failed}/retry"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "one retry at a time");
    let (_, progress) = app
        .get(&format!("/api/v1/control-batches/{batch_id}"), &admin)
        .await;
    assert_eq!(progress["states"], json!({"verified": 1, "queued": 1}));
    assert_eq!(progress["finished"], false);

    let (_, other) = app.company_with_admin("bravo").await;
    let (status, _) = app
        .get(&format!("/api/v1/control-batches/{batch_id}"), &other)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(audited(&app, "meter.control_batch").await, 1);
}

#[tokio::test]
async fn the_command_centre_lists_stuck_and_failed_commands_and_retries_and_cancels_them() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, meter) = shop_with_meter(&app, &admin, "811").await;
    let control = format!("/api/v1/meters/{meter}/control");
    let (_, trip) = app.post(&control, &admin, json!({"op": "trip"})).await;
    let trip = trip["id"].as_str().unwrap().to_owned();

    let (status, open) = app.get("/api/v1/commands", &admin).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["meter_number"], "9811");
    assert_eq!(open[0]["shop"], "811 奶茶店");
    assert_eq!(open[0]["stuck"], false);
    let (_, stuck) = app.get("/api/v1/commands?view=stuck", &admin).await;
    assert!(stuck.as_array().unwrap().is_empty(), "{stuck}");
    // Ten minutes queued: nobody carried it.
    sqlx::query("update c_1.commands set created_at = now() - interval '10 minutes'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (_, stuck) = app.get("/api/v1/commands?view=stuck", &admin).await;
    assert_eq!(stuck[0]["id"], json!(trip), "{stuck}");
    assert_eq!(stuck[0]["stuck"], true);
    let (status, _) = app.get("/api/v1/commands?view=bogus", &admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Another company sees none of it and can change none of it.
    let (_, other) = app.company_with_admin("bravo").await;
    let (_, theirs) = app.get("/api/v1/commands?view=all", &other).await;
    assert!(theirs.as_array().unwrap().is_empty());
    for action in ["retry", "cancel"] {
        let (status, _) = app
            .post(
                &format!("/api/v1/commands/{trip}/{action}"),
                &other,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}");
    }
    let (_, clerk) = app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let (status, _) = app
        .post(
            &format!("/api/v1/commands/{trip}/cancel"),
            &clerk,
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "cancelling a trip needs trip_close"
    );

    let (status, retry) = app
        .post(&format!("/api/v1/commands/{trip}/retry"), &admin, json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a queued one is not sent again: {retry}"
    );
    let (status, cancelled) = app
        .post(
            &format!("/api/v1/commands/{trip}/cancel"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(state_of(&app, &trip).await.0, "cancelled");
    let (status, _) = app
        .post(
            &format!("/api/v1/commands/{trip}/cancel"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "cancelled already");
    let (_, failed) = app.get("/api/v1/commands?view=failed", &admin).await;
    assert!(
        failed.as_array().unwrap().is_empty(),
        "cancelled is not failed"
    );
    let (status, again) = app
        .post(&format!("/api/v1/commands/{trip}/retry"), &admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["op"], "trip");
    assert_eq!(again["retry_of"], json!(trip));

    // One its bus holds for a retry after no answer is ended as failed, not cancelled.
    let held: Uuid = again["id"].as_str().unwrap().parse().unwrap();
    sqlx::query(
        "update c_1.commands set state = 'sent', sent_at = now(), lease_holder = 'ingest-x',
             lease_until = now() + interval '2 minutes', next_try_at = now() + interval '1 minute'
         where id = $1",
    )
    .bind(held)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (status, ended) = app
        .post(
            &format!("/api/v1/commands/{held}/cancel"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["state"], "failed");
    let (_, failed) = app.get("/api/v1/commands?view=failed", &admin).await;
    assert_eq!(failed[0]["id"], json!(held.to_string()));

    // A purchase is never cancelled or sent anew from here.
    let purchase: Uuid = sqlx::query_scalar(
        "insert into c_1.commands (id, meter_id, op, source) values (gen_random_uuid(), $1, 'purchase', 'rule:test')
         returning id",
    )
    .bind(meter.parse::<Uuid>().unwrap())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let (status, _) = app
        .post(
            &format!("/api/v1/commands/{purchase}/cancel"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    assert_xlsx(&app, &admin, "/api/v1/commands.xlsx?view=all").await;
    assert_eq!(audited(&app, "command.cancel").await, 2);
}

#[tokio::test]
async fn the_batch_page_shows_the_count_and_shops_before_the_start_and_then_the_progress() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    for number in ["821", "822"] {
        shop_with_meter(&app, &admin, number).await;
    }
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, "/control?op=close&q=82").await;
    let preview = html
        .split("id=\"batch-preview\"")
        .nth(1)
        .expect("the preview");
    assert!(preview.contains("data-meters=\"2\"") || html.contains("data-meters=\"2\""));
    assert!(preview.contains("821 奶茶店") && preview.contains("822 奶茶店"));
    let csrf = csrf_of(&html);
    let start = |confirm: &'static str, count: &'static str| {
        let (app, boss, csrf) = (&app, &boss, &csrf);
        async move {
            post_form(
                app,
                boss,
                "/control?op=close&q=82",
                "/sfn/batch_start",
                &[
                    ("csrf", csrf),
                    ("op", "close"),
                    ("q", "82"),
                    ("confirm_meters", count),
                    ("confirm", confirm),
                ],
            )
            .await
            .1
        }
    };
    assert!(start("", "2").await.contains("fields=confirm"));
    assert!(start("yes", "5").await.contains("error=batch_changed"));
    let done = start("yes", "2").await;
    assert!(
        done.starts_with("/control/batches/") && done.ends_with("?ok=control.batch_started"),
        "{done}"
    );
    let progress = page(&app, &boss, &done).await;
    assert!(progress.contains("id=\"batch-progress\""), "{progress}");
    assert!(progress.contains("data-state=\"queued\">2<"), "two queued");
    let centre = page(&app, &boss, "/commands").await;
    assert_eq!(centre.matches("data-op=\"close\"").count(), 2);
}

#[tokio::test]
async fn operators_acknowledge_alarms_which_stay_listed_until_their_cause_clears() {
    use crate::web::{csrf_of, logged_in_as, page, post_form};
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, meter) = shop_with_meter(&app, &admin, "831").await;
    let alarm: Uuid = sqlx::query_scalar(
        "insert into c_1.field_alarms (id, kind, target_id, detail)
         values (gen_random_uuid(), 'relay_mismatch', $1, 'the relay stays open') returning id",
    )
    .bind(meter.parse::<Uuid>().unwrap())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let (_, open) = app.get("/api/v1/field-alarms", &admin).await;
    assert_eq!(
        open[0]["target"], "9831",
        "a relay alarm names its meter: {open}"
    );
    assert_eq!(open[0]["acknowledged_at"], json!(null));

    let (_, clerk) = app.user(&admin, "acme", "clerk", "operator", &[]).await;
    let ack = format!("/api/v1/field-alarms/{alarm}/acknowledge");
    let (status, _) = app.post(&ack, &clerk, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, other) = app.company_with_admin("bravo").await;
    let (status, _) = app.post(&ack, &other, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // On the page: the open alarm with its button; acknowledged, it stays listed, without one.
    let boss = logged_in_as(&app, "acme", "boss").await;
    let html = page(&app, &boss, "/alarms").await;
    assert!(html.contains("data-kind=\"relay_mismatch\""), "{html}");
    assert!(html.contains("/sfn/alarm_acknowledge"));
    let csrf = csrf_of(&html);
    let id = alarm.to_string();
    let (_, to) = post_form(
        &app,
        &boss,
        "/alarms",
        "/sfn/alarm_acknowledge",
        &[("csrf", &csrf), ("id", &id)],
    )
    .await;
    assert_eq!(to, "/alarms?ok=alarms.acknowledged");
    let (_, open) = app.get("/api/v1/field-alarms", &admin).await;
    assert!(open[0]["acknowledged_at"].is_string(), "{open}");
    assert!(open[0]["acknowledged_by"]
        .as_str()
        .unwrap()
        .starts_with("user:"));
    let html = page(&app, &boss, "/alarms").await;
    assert!(
        html.contains("data-kind=\"relay_mismatch\"") && !html.contains("/sfn/alarm_acknowledge")
    );
    let (status, _) = app.post(&ack, &admin, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "once");

    // Cleared: gone from the open list, in the history and its Excel twin.
    sqlx::query("update c_1.field_alarms set cleared_at = now()")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (_, open) = app.get("/api/v1/field-alarms", &admin).await;
    assert!(open.as_array().unwrap().is_empty());
    let history = page(&app, &boss, "/alarms?all=1").await;
    assert!(history.contains("data-kind=\"relay_mismatch\""));
    assert_xlsx(&app, &admin, "/api/v1/field-alarms.xlsx?all=true").await;
    assert_eq!(audited(&app, "alarm.acknowledge").await, 1);
}

#[tokio::test]
async fn a_person_limited_to_a_building_batches_and_sees_only_its_meters() {
    use reqwest::Method;
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (shop_a, meter_a) = shop_with_meter(&app, &admin, "841").await;
    let (_, meter_b) = shop_with_meter(&app, &admin, "842").await;
    let (_, shop) = app.get(&format!("/api/v1/shops/{shop_a}"), &admin).await;
    let (limited_id, _) = app
        .user(&admin, "acme", "limited", "operator", &["trip_close"])
        .await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{limited_id}"),
            Some(&admin),
            Some(json!({"building_ids": [shop["building_id"]]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let limited = app.login("acme", "limited").await;
    // "84" matches both shops; only the one in the person's building is theirs to switch.
    let (_, preview) = app
        .post(
            "/api/v1/control-batches/preview",
            &limited,
            json!({"op": "trip", "q": "84"}),
        )
        .await;
    assert_eq!(preview["meters"], 1, "{preview}");
    assert_eq!(preview["shops"], json!(["841 奶茶店"]));
    let (status, batch) = app
        .post(
            "/api/v1/control-batches",
            &limited,
            json!({"op": "trip", "q": "84", "confirm_meters": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let (status, _) = app
        .get(
            &format!("/api/v1/control-batches/{}", batch["id"].as_str().unwrap()),
            &limited,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "their own batch");
    // Another operator's command on the other building's meter does not exist for them.
    let (_, other) = app
        .post(
            &format!("/api/v1/meters/{meter_b}/control"),
            &admin,
            json!({"op": "trip"}),
        )
        .await;
    let (_, listed) = app.get("/api/v1/commands?view=all", &limited).await;
    let meters: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["meter_id"].as_str().unwrap())
        .collect();
    assert_eq!(meters, [meter_a.as_str()]);
    let (status, _) = app
        .post(
            &format!("/api/v1/commands/{}/cancel", other["id"].as_str().unwrap()),
            &limited,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
