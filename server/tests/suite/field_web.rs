//! The field and setup pages used as a person without JavaScript uses them: plain form posts
//! with the CSRF field, answered by redirects. Covers the nested form names (`buses[0][number]`,
//! `meter_ids[3]`, `seasons[1][from]`) that the server function decoder must read.

use crate::helpers::{spawn_app, TestApp, PASSWORD};
use crate::web::{browser_like, csrf_of, page, post_form};
use reqwest::StatusCode;
use serde_json::Value;

async fn logged_in(app: &TestApp) -> (reqwest::Client, String) {
    app.company_with_admin("acme").await;
    let client = browser_like();
    let (status, _) = post_form(
        app,
        &client,
        "/login",
        "/sfn/login",
        &[
            ("company", "acme"),
            ("username", "boss"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let csrf = csrf_of(&page(app, &client, "/gateways").await);
    (client, csrf)
}

/// (port, baud, parity) of the buses in use.
async fn buses(app: &TestApp) -> Vec<(i32, i32, String)> {
    sqlx::query_as(
        "select number, baud, parity from c_1.buses where removed_at is null order by number",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

/// The id in a redirect like `/meters/<id>?ok=…`.
fn id_in(location: &str, prefix: &str) -> String {
    location
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('?').next())
        .unwrap_or_else(|| panic!("{location} does not start with {prefix}"))
        .to_owned()
}

#[tokio::test]
async fn gateways_buses_and_meters_are_managed_with_plain_forms() {
    let app = spawn_app().await;
    let (client, csrf) = logged_in(&app).await;
    let (status, location) = post_form(
        &app,
        &client,
        "/gateways",
        "/sfn/gateway_create",
        &[
            ("csrf", &csrf),
            ("identity", "dtu-web-1"),
            ("kind", "dtu"),
            ("name", "B1 配电房"),
            ("registration", "PT-0001"),
            ("heartbeat", "fe"),
            ("heartbeat_is_hex", "on"),
            ("buses[0][number]", "1"),
            ("buses[0][protocol]", "modbus_rtu"),
            ("buses[0][baud]", ""),
            ("buses[1][number]", ""),
            ("buses[1][protocol]", "dlt645"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let gateway_id = id_in(&location, "/gateways/");
    let detail = page(&app, &client, &location).await;
    assert!(detail.contains("dtu-web-1") && detail.contains("buses-form"));
    assert_eq!(
        buses(&app).await,
        vec![(1, 9600, "N".into())],
        "one bus, Modbus defaults"
    );

    // Add port 2 (DL/T 645) in the bus editor.
    let (_, location) = post_form(
        &app,
        &client,
        &format!("/gateways/{gateway_id}"),
        "/sfn/gateway_buses",
        &[
            ("csrf", &csrf),
            ("id", &gateway_id),
            ("buses[0][number]", "1"),
            ("buses[0][protocol]", "modbus_rtu"),
            ("buses[1][number]", "2"),
            ("buses[1][protocol]", "dlt645"),
        ],
    )
    .await;
    assert!(location.contains("ok="), "{location}");
    assert_eq!(
        buses(&app).await,
        vec![(1, 9600, "N".into()), (2, 2400, "E".into())]
    );

    // Two meters on port 1; the meter form takes kWh and yuan.
    let meters = page(&app, &client, "/meters").await;
    let bus_id = meters
        .split("name=\"bus_id\"")
        .nth(1)
        .and_then(|rest| rest.split("value=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("the add-meter form offers the bus")
        .to_owned();
    let mut meter_ids = vec![];
    for (address, number) in [("1", "7001"), ("2", "7002")] {
        let (_, location) = post_form(
            &app,
            &client,
            "/meters",
            "/sfn/meter_create",
            &[
                ("csrf", &csrf),
                ("bus_id", &bus_id),
                ("model", "dtsy1352"),
                ("address", address),
                ("meter_number", number),
                ("initial_kwh", "12.5"),
                ("prepayment_mode", "platform"),
                ("role", "shop"),
            ],
        )
        .await;
        meter_ids.push(id_in(&location, "/meters/"));
    }
    // A bad alarm pair names its fields and keeps nothing.
    let (_, location) = post_form(
        &app,
        &client,
        "/meters",
        "/sfn/meter_bulk",
        &[
            ("csrf", &csrf),
            ("meter_ids[0]", &meter_ids[0]),
            ("alarm1", "1"),
            ("alarm2", "5"),
        ],
    )
    .await;
    assert!(
        location.contains("error=validation_failed") && location.contains("alarm1_fen"),
        "{location}"
    );
    // Ticked boxes arrive with gaps in their indexes (unticked rows send nothing).
    let (_, location) = post_form(
        &app,
        &client,
        "/meters",
        "/sfn/meter_bulk",
        &[
            ("csrf", &csrf),
            ("meter_ids[0]", &meter_ids[0]),
            ("meter_ids[3]", &meter_ids[1]),
            ("alarm1", "50"),
            ("alarm2", "10.5"),
        ],
    )
    .await;
    assert!(location.contains("ok=meters.bulk_done"), "{location}");
    let alarms: Vec<(Option<i64>, Option<i64>, i64)> = sqlx::query_as(
        "select alarm1_fen, alarm2_fen, initial_energy_wh from c_1.meters order by meter_number",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        alarms,
        vec![
            (Some(5000), Some(1050), 12_500),
            (Some(5000), Some(1050), 12_500)
        ]
    );

    // Swap the first meter; the new meter's page shows the history.
    let (_, location) = post_form(
        &app,
        &client,
        &format!("/meters/{}", meter_ids[0]),
        "/sfn/meter_swap",
        &[
            ("csrf", &csrf),
            ("id", &meter_ids[0]),
            ("meter_number", "7101"),
            ("old_final_kwh", "345.67"),
            ("new_initial_kwh", "0.01"),
            ("reason", "烧坏"),
        ],
    )
    .await;
    assert!(location.contains("ok=meters.swapped"), "{location}");
    let new_page = page(&app, &client, &location).await;
    let history = new_page
        .split("id=\"swap-history\"")
        .nth(1)
        .expect("a history table");
    assert!(
        history.contains("7001")
            && history.contains("345.67")
            && history.contains("0.01")
            && history.contains("烧坏")
    );

    // The gateway cannot go while it carries meters; the flash says why.
    let (_, location) = post_form(
        &app,
        &client,
        &format!("/gateways/{gateway_id}"),
        "/sfn/gateway_status",
        &[("csrf", &csrf), ("id", &gateway_id), ("action", "remove")],
    )
    .await;
    assert!(
        location.contains("error=conflict") && !location.contains("detail="),
        "{location}"
    );
}

#[tokio::test]
async fn settings_calendar_seasonal_tiered_plans_and_the_preview() {
    let app = spawn_app().await;
    let (client, csrf) = logged_in(&app).await;
    let (_, location) = post_form(
        &app,
        &client,
        "/settings",
        "/sfn/settings_save",
        &[
            ("csrf", &csrf),
            ("alarm1", "30"),
            ("alarm2", "10"),
            ("overdraft_limit", "5"),
            ("restore_level", "1"),
            ("quiet_start", "22:00"),
            ("quiet_end", "07:30"),
            ("no_trip_on_holidays", "on"),
            ("arrears_cap", "200"),
            ("reversal_window_days", "14"),
            ("reversal_approval_above", "200"),
            ("correction_approval_above_kwh", "50.5"),
        ],
    )
    .await;
    assert!(location.contains("ok="), "{location}");
    let saved: (i32, i64, i64) = sqlx::query_as(
        "select reversal_window_days, reversal_approval_above_fen, correction_approval_above_wh from c_1.settings",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(saved, (14, 20_000, 50_500), "the money rules are saved");
    let (_, location) = post_form(
        &app,
        &client,
        "/settings",
        "/sfn/settings_save",
        &[
            ("csrf", &csrf),
            ("alarm1", "5"),
            ("alarm2", "10"),
            ("overdraft_limit", "5"),
            ("restore_level", "1"),
            ("arrears_cap", "200"),
        ],
    )
    .await;
    // The form's own field name, so the field the person typed in is marked.
    assert!(
        location.contains("fields=alarm1"),
        "alarm 1 below alarm 2 is refused: {location}"
    );
    let (_, location) = post_form(
        &app,
        &client,
        "/settings",
        "/sfn/calendar_set",
        &[
            ("csrf", &csrf),
            ("day", "2027-10-01"),
            ("kind", "holiday"),
            ("name", "国庆节"),
        ],
    )
    .await;
    assert_eq!(location, "/settings?year=2027&ok=common.saved");
    let settings = page(&app, &client, &location).await;
    assert!(
        settings.contains("07:30")
            && settings.contains("2027-10-01")
            && settings.contains("国庆节")
    );

    // A plan with a summer season, monthly tiers and a monthly fee.
    let (_, location) = post_form(
        &app,
        &client,
        "/tariffs",
        "/sfn/plan_create",
        &[
            ("csrf", &csrf),
            ("name", "夏季尖峰"),
            ("description", ""),
            ("effective", "2020-01-01"),
            ("price_sharp", "1.6"),
            ("price_peak", "1.2"),
            ("price_flat", "0.8"),
            ("price_valley", "0.4"),
            ("seasons[0][from]", "07-01"),
            ("seasons[0][to]", "08-31"),
            (
                "seasons[0][schedule]",
                "00:00 谷, 08:00 平, 12:00 尖, 14:00 峰, 22:00 谷",
            ),
            ("seasons[1][from]", "09-01"),
            ("seasons[1][to]", "06-30"),
            (
                "seasons[1][schedule]",
                "00:00 谷, 08:00 平, 18:00 峰, 22:00 谷",
            ),
            ("tier_basis", "monthly"),
            ("tiers[0][from_kwh]", "0"),
            ("tiers[0][kind]", "add_on"),
            ("tiers[0][price]", "0"),
            ("tiers[1][from_kwh]", "240"),
            ("tiers[1][kind]", "add_on"),
            ("tiers[1][price]", "0.05"),
            ("fees[0][amount]", "20"),
            ("fees[0][per]", "month"),
        ],
    )
    .await;
    assert!(location.contains("ok="), "{location}");
    let (_, flat_location) = post_form(
        &app,
        &client,
        "/tariffs",
        "/sfn/plan_create",
        &[
            ("csrf", &csrf),
            ("name", "平价"),
            ("description", ""),
            ("effective", "2020-01-01"),
            ("price_flat", "0.9"),
        ],
    )
    .await;
    assert!(flat_location.contains("ok="), "{flat_location}");
    let plans: Vec<(String, Value)> = sqlx::query_as(
        "select p.name, v.body from c_1.tariff_plans p join c_1.tariff_versions v on v.plan_id = p.id order by p.name",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let seasonal = &plans.iter().find(|(n, _)| n == "夏季尖峰").unwrap().1;
    assert_eq!(seasonal["seasons"].as_array().unwrap().len(), 2);
    assert_eq!(seasonal["tiers"]["tiers"][1]["from_wh"], 240_000);
    assert_eq!(seasonal["fees"][0]["amount_fen"], 2000);
    let tariffs = page(&app, &client, "/tariffs").await;
    assert!(
        tariffs.contains("240 kWh") && tariffs.contains("20.00"),
        "tiers and fees are shown"
    );

    // Preview: 10 days of a restaurant at 100 kWh a day under both plans.
    let ids: Vec<(String, String)> =
        sqlx::query_as("select id::text, name from c_1.tariff_plans order by name")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let id_of = |name: &str| ids.iter().find(|(_, n)| n == name).unwrap().0.clone();
    let preview = page(&app, &client, &format!(
        "/tariffs/preview?plan_a={}&plan_b={}&profile=restaurant&daily_kwh=100&start=2026-07-01&days=10",
        id_of("平价"), id_of("夏季尖峰"),
    ))
    .await;
    let results = preview
        .split("id=\"preview-results\"")
        .nth(1)
        .expect("results");
    // Flat: 1,000 kWh at 0.90 = 900.00 yuan exactly.
    assert!(results.contains("900.00"), "{results}");
    assert!(results.contains("1000"), "{results}");
    assert!(
        results.contains("+"),
        "the seasonal plan's difference is shown: {results}"
    );
}

#[tokio::test]
async fn the_meter_page_shows_live_values_and_energy_bars() {
    let app = spawn_app().await;
    let (client, csrf) = logged_in(&app).await;
    let (_, location) = post_form(
        &app,
        &client,
        "/gateways",
        "/sfn/gateway_create",
        &[
            ("csrf", &csrf),
            ("identity", "dtu-live"),
            ("kind", "dtu"),
            ("registration", "LIVE-DTU"),
            ("buses[0][number]", "1"),
            ("buses[0][protocol]", "modbus_rtu"),
        ],
    )
    .await;
    assert!(location.starts_with("/gateways/"), "{location}");
    let bus: uuid::Uuid = sqlx::query_scalar("select id from c_1.buses")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    // A refused form comes back as it was typed, the wrong field marked, no secret kept.
    let (_, location) = post_form(
        &app,
        &client,
        "/meters",
        "/sfn/meter_create",
        &[
            ("csrf", &csrf),
            ("bus_id", &bus.to_string()),
            ("model", "dtsy1352"),
            ("address", "17"),
            ("meter_number", "12ab"),
            ("ct_ratio", "40"),
            ("role", "common"),
            ("dlt645_password", "a1b2c3d4"),
        ],
    )
    .await;
    assert!(location.contains("fields=meter_number"), "{location}");
    let html = page(&app, &client, &location).await;
    let form = html
        .split("id=\"meter-form\"")
        .nth(1)
        .unwrap()
        .split("</form>")
        .next()
        .unwrap();
    assert!(
        form.contains("value=\"17\"")
            && form.contains("value=\"12ab\"")
            && form.contains("value=\"40\""),
        "typed values kept: {form}"
    );
    assert!(form.contains("value=\"common\" selected"), "{form}");
    assert!(!form.contains("a1b2c3d4"), "a password is never kept");
    let flash = html
        .split("class=\"flash error\"")
        .nth(1)
        .unwrap()
        .split("</p>")
        .next()
        .unwrap();
    assert!(
        flash.contains("表号") && !flash.contains("meter_number"),
        "a readable field name: {flash}"
    );
    let marked = form.split("aria-invalid=\"true\"").count() - 1;
    assert_eq!(marked, 1, "only the meter number is marked: {form}");
    assert!(form.contains("name=\"meter_number\" required inputmode=\"numeric\" maxlength=\"16\" value=\"12ab\" aria-invalid=\"true\""), "{form}");
    let (_, location) = post_form(
        &app,
        &client,
        "/meters",
        "/sfn/meter_create",
        &[
            ("csrf", &csrf),
            ("bus_id", &bus.to_string()),
            ("model", "dtsy1352"),
            ("address", "1"),
            ("meter_number", "5151"),
        ],
    )
    .await;
    let meter: uuid::Uuid = id_in(&location, "/meters/").parse().unwrap();
    // After a success the form is empty again.
    let html = page(&app, &client, "/meters").await;
    let form = html
        .split("id=\"meter-form\"")
        .nth(1)
        .unwrap()
        .split("</form>")
        .next()
        .unwrap();
    assert!(!form.contains("value=\"12ab\""), "{form}");
    let now = chrono::Utc::now();
    let reading = |seconds: i64, wh: i64| powertab_ingest::store::NewReading {
        meter_id: meter,
        read_at: now - chrono::Duration::seconds(seconds),
        values: powertab_ingest::driver::MeterValues {
            energy_wh: wh,
            power_w: Some(1800),
            voltage_dv: vec![2201],
            relay_closed: Some(true),
            ..Default::default()
        },
        raw: vec![],
        ratio_mismatch: false,
    };
    let schema = powertab_core::kernel::names::SchemaName::for_company(1);
    powertab_ingest::store::store_batch(
        &app.db.pool,
        &schema,
        &[reading(60, 100_000), reading(30, 100_500)],
    )
    .await
    .unwrap();
    let html = page(&app, &client, &format!("/meters/{meter}")).await;
    let live = html
        .split("id=\"meter-live\"")
        .nth(1)
        .expect("the live values");
    assert!(
        live.contains("100.5 kWh") && live.contains("1800 W") && live.contains("220.1 V"),
        "{live}"
    );
    // The charts: a fixed slot per hour (24) and per day (14), a bar where energy was counted
    // (0.5 kWh in one hour), a marked gap elsewhere — no invented zeros — and a labelled axis.
    let chart = |id: &str| {
        let svg = html
            .split(&format!("id=\"{id}\""))
            .nth(1)
            .expect("the chart")
            .split("</svg>")
            .next()
            .unwrap()
            .to_owned();
        (
            svg.matches("class=\"bar\"").count(),
            svg.matches("class=\"gap\"").count(),
            svg,
        )
    };
    let (bars, gaps, hourly) = chart("hourly-bars");
    assert_eq!((bars, gaps), (1, 23), "{hourly}");
    assert!(
        hourly.contains("0.5 kWh") && hourly.contains("无数据"),
        "{hourly}"
    );
    assert!(hourly.contains("kWh</text>"), "the unit on the axis");
    let (bars, gaps, _) = chart("daily-bars");
    assert_eq!((bars, gaps), (1, 13));
    assert!(html.contains("id=\"read-now\""), "the read-now button");
}

#[tokio::test]
async fn the_readings_page_filters_by_date_and_flag() {
    let app = spawn_app().await;
    let (client, csrf) = logged_in(&app).await;
    post_form(
        &app,
        &client,
        "/gateways",
        "/sfn/gateway_create",
        &[
            ("csrf", &csrf),
            ("identity", "dtu-h"),
            ("kind", "dtu"),
            ("registration", "HIST-DTU"),
            ("buses[0][number]", "1"),
            ("buses[0][protocol]", "modbus_rtu"),
        ],
    )
    .await;
    let bus: uuid::Uuid = sqlx::query_scalar("select id from c_1.buses")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let (_, location) = post_form(
        &app,
        &client,
        "/meters",
        "/sfn/meter_create",
        &[
            ("csrf", &csrf),
            ("bus_id", &bus.to_string()),
            ("model", "dtsy1352"),
            ("address", "1"),
            ("meter_number", "6161"),
        ],
    )
    .await;
    let meter: uuid::Uuid = id_in(&location, "/meters/").parse().unwrap();
    let now = chrono::Utc::now();
    let reading = |seconds: i64, wh: i64| powertab_ingest::store::NewReading {
        meter_id: meter,
        read_at: now - chrono::Duration::seconds(seconds),
        values: powertab_ingest::driver::MeterValues {
            energy_wh: wh,
            ..Default::default()
        },
        raw: vec![],
        ratio_mismatch: false,
    };
    let schema = powertab_core::kernel::names::SchemaName::for_company(1);
    powertab_ingest::store::store_batch(
        &app.db.pool,
        &schema,
        &[reading(90, 50_000), reading(60, 50_100), reading(30, 7)],
    )
    .await
    .unwrap();
    let all = page(&app, &client, &format!("/meters/{meter}/readings")).await;
    let table = all.split("id=\"readings\"").nth(1).expect("a table");
    assert_eq!(table.matches("<tr>").count(), 4, "header + 3 readings");
    assert!(table.contains("50.1") && table.contains("0.007"));
    let flagged = page(
        &app,
        &client,
        &format!("/meters/{meter}/readings?flagged=on"),
    )
    .await;
    let table = flagged.split("id=\"readings\"").nth(1).unwrap();
    assert_eq!(table.matches("<tr>").count(), 2, "only the reset");
    assert!(
        flagged.contains("readings.xlsx?from="),
        "the export keeps the filter"
    );
    let long_ago = page(
        &app,
        &client,
        &format!("/meters/{meter}/readings?from=2020-01-01&to=2020-01-31"),
    )
    .await;
    assert_eq!(
        long_ago
            .split("id=\"readings\"")
            .nth(1)
            .unwrap()
            .matches("<tr>")
            .count(),
        1
    );
}

#[tokio::test]
async fn an_mqtt_gateway_page_shows_its_login_on_request_and_issues_a_new_one() {
    let app = spawn_app().await;
    let (client, csrf) = logged_in(&app).await;
    let (status, location) = post_form(
        &app,
        &client,
        "/gateways",
        "/sfn/gateway_create",
        &[
            ("csrf", &csrf),
            ("identity", "mqtt-web-1"),
            ("kind", "mqtt"),
            ("buses[0][number]", "1"),
            ("buses[0][protocol]", "modbus_rtu"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(location.contains("credential=show"), "{location}");
    let gateway_id = id_in(&location, "/gateways/");
    let expected = powertab_core::field::credentials::derive(
        &powertab_core::auth::Secret::new(crate::helpers::TEST_GATEWAY_SECRET),
        gateway_id.parse().unwrap(),
        "mqtt-web-1",
        1,
    );
    // Right after saving, the installer sees the login to configure the gateway with.
    let shown = page(&app, &client, &location).await;
    assert!(shown.contains("mqtt-login") && shown.contains(&expected));
    // Otherwise the page offers it without showing it.
    let plain = page(&app, &client, &format!("/gateways/{gateway_id}")).await;
    assert!(plain.contains("mqtt-show") && !plain.contains(&expected));

    let (status, location) = post_form(
        &app,
        &client,
        &format!("/gateways/{gateway_id}"),
        "/sfn/gateway_credential_rotate",
        &[("csrf", &csrf), ("id", &gateway_id)],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(location.contains("credential_rotated"), "{location}");
    let rotated = page(&app, &client, &location).await;
    let second = powertab_core::field::credentials::derive(
        &powertab_core::auth::Secret::new(crate::helpers::TEST_GATEWAY_SECRET),
        gateway_id.parse().unwrap(),
        "mqtt-web-1",
        2,
    );
    assert!(rotated.contains(&second) && !rotated.contains(&expected));
    let looks: i64 = sqlx::query_scalar(
        "select count(*) from c_1.audit_log where action like 'gateway.credential%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(looks, 3, "two looks and a rotation are audited");

    // An auditor sees the login's name and version, and is offered neither password nor rotation.
    let admin = app.login("acme", "boss").await;
    app.user(&admin, "acme", "aud", "auditor", &[]).await;
    let auditor = browser_like();
    let (status, _) = post_form(
        &app,
        &auditor,
        "/login",
        "/sfn/login",
        &[
            ("company", "acme"),
            ("username", "aud"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let seen = page(&app, &auditor, &format!("/gateways/{gateway_id}")).await;
    assert!(seen.contains("mqtt-login") && seen.contains("mqtt-web-1"));
    assert!(!seen.contains("mqtt-show") && !seen.contains("mqtt-rotate"));
}

#[tokio::test]
async fn open_field_alarms_show_in_the_header_of_every_staff_page() {
    let app = spawn_app().await;
    let (client, _) = logged_in(&app).await;
    let before = page(&app, &client, "/property").await;
    assert!(!before.contains("field-alarm-badge"), "no alarms, no badge");
    for kind in ["meter_stale", "gateway_offline"] {
        sqlx::query("insert into c_1.field_alarms (id, kind, target_id) values ($1, $2, $3)")
            .bind(uuid::Uuid::now_v7())
            .bind(kind)
            .bind(uuid::Uuid::now_v7())
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    let after = page(&app, &client, "/property").await;
    let badge = after
        .split("id=\"field-alarm-badge\"")
        .nth(1)
        .expect("the badge is shown");
    let text: String = badge.split("</a>").next().unwrap().to_owned();
    assert!(
        text.contains(">2<") || text.contains(" 2 ") || text.contains("2<!"),
        "{text}"
    );
    assert!(badge.contains("现场告警"), "{text}");
    assert!(after.contains("/fleet?problems=1"));
}
