//! End-to-end tests in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver with fantoccini): log in, navigate, switch language and log out with
//! the hydrated app; the same login and a form with JavaScript off; and a 360-px phone screen.
//! The pages need the wasm bundle that `infra/build-wasm.sh` writes to target/site/pkg.

use crate::helpers::{spawn_app, TestApp, PASSWORD};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and a browser session on it; the driver is killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    _profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn browser(javascript: bool, width: u32, height: u32) -> Browser {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian chromium-driver; infra/test.sh installs it)");
    let ready = powertab_testkit::wait_until(Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(ready, "chromedriver did not start");
    let profile = std::env::temp_dir().join(format!("pt-chromium-{}", uuid::Uuid::now_v7()));
    let mut options = json!({
        "binary": "/usr/bin/chromium",
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage",
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if !javascript {
        options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
    }
    if width < 500 {
        // Headless windows are at least 500 px wide; a phone viewport needs device emulation.
        options["mobileEmulation"] =
            json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Browser {
        client,
        driver,
        _profile: profile,
    }
}

fn assert_bundle_built() {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/site/pkg/powertab_bg.wasm");
    assert!(
        wasm.exists(),
        "run infra/build-wasm.sh first (infra/test.sh does): {} missing",
        wasm.display()
    );
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} not found: {e}"))
        .text()
        .await
        .unwrap()
}

async fn login(app: &TestApp, client: &Client, company: &str, username: &str) {
    login_with(app, client, company, username, PASSWORD).await;
}

async fn login_with(app: &TestApp, client: &Client, company: &str, username: &str, password: &str) {
    client.goto(&app.url("/login")).await.unwrap();
    let form = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#login-form"))
        .await
        .unwrap();
    let field = |name: &'static str| {
        let form = form.clone();
        async move {
            form.find(Locator::Css(&format!("input[name={name}]")))
                .await
                .unwrap()
        }
    };
    let company_field = field("company").await;
    company_field.clear().await.unwrap();
    company_field.send_keys(company).await.unwrap();
    field("username").await.send_keys(username).await.unwrap();
    field("password").await.send_keys(password).await.unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn wait_for_hydration(client: &Client) {
    let hydrated = powertab_testkit::wait_until(Duration::from_secs(30), || async {
        let value = client
            .execute("return document.body.getAttribute('data-hydrated')", vec![])
            .await
            .unwrap_or(Value::Null);
        value == json!("true")
    })
    .await;
    assert!(hydrated, "the page never hydrated");
}

#[tokio::test]
async fn a_person_logs_in_navigates_switches_language_and_logs_out() {
    assert_bundle_built();
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let b = browser(true, 1280, 900).await;
    let c = &b.client;

    login(&app, c, "acme", "boss").await;
    assert!(
        text_of(c, "#welcome").await.contains("欢迎"),
        "Chinese by default"
    );
    assert_eq!(text_of(c, "#role").await, "物业管理员");
    wait_for_hydration(c).await;

    // A marker on `window` survives only client-side navigation: proof the router took over.
    c.execute("window.__ptMarker = 42", vec![]).await.unwrap();
    c.find(Locator::Css("a[href='/users']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let users = text_of(c, "#users").await;
    assert!(users.contains("boss"), "{users}");
    assert_eq!(
        c.execute("return window.__ptMarker", vec![]).await.unwrap(),
        json!(42)
    );

    c.find(Locator::Css("#lang-switch"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let switched = powertab_testkit::wait_until(Duration::from_secs(20), || async {
        c.source()
            .await
            .map(|html| html.contains("Operators &amp; users"))
            .unwrap_or(false)
    })
    .await;
    assert!(switched, "the page switched to English");
    assert!(
        c.current_url().await.unwrap().path().starts_with("/users"),
        "language switch stays on the page"
    );

    wait_for_hydration(c).await;
    c.find(Locator::Css("button.link[type=submit]:not(#lang-switch)"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#login-form"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
    // Logged out for real: the app sends us back to login.
    c.goto(&app.url("/users")).await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#login-form"))
        .await
        .unwrap();
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn login_and_forms_work_with_javascript_off() {
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let b = browser(false, 1280, 900).await;
    let c = &b.client;

    // Wrong password first: the message comes back through the redirect.
    login_with(&app, c, "acme", "boss", "wrong-password-1").await;
    assert!(text_of(c, ".flash.error").await.contains("错误"));

    login(&app, c, "acme", "boss").await;
    assert!(text_of(c, "#welcome").await.contains("boss"));
    // The page's own scripts never ran, so it was never hydrated: this is the no-JS path.
    assert!(
        !c.source().await.unwrap().contains("data-hydrated"),
        "no hydration without JavaScript"
    );

    c.goto(&app.url("/users")).await.unwrap();
    let form = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#new-user-form"))
        .await
        .unwrap();
    form.find(Locator::Css("input[name=username]"))
        .await
        .unwrap()
        .send_keys("cashier1")
        .await
        .unwrap();
    form.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("initial-pass-1")
        .await
        .unwrap();
    form.find(Locator::Css("input[name=right_top_up]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // `#user-rights` exists only on the user page: waiting for it waits for the navigation.
    assert_eq!(text_of(c, "#user-rights").await, "售电");
    assert!(text_of(c, "h1").await.contains("cashier1"));
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn pages_fit_a_360_px_phone_screen() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    app.user(
        &admin,
        "acme",
        "a-rather-long-operator-name",
        "operator",
        &["top_up", "refund", "export"],
    )
    .await;
    // JavaScript on: with it off, chromedriver's click under mobile emulation never returns.
    assert_bundle_built();
    let b = browser(true, 360, 800).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;
    for path in [
        "/",
        "/users",
        "/audit",
        "/password",
        "/property",
        "/gateways",
        "/meters",
        "/import",
        "/tariffs",
        "/tariffs/preview",
        "/settings",
        "/fleet",
        "/meter-side",
    ] {
        c.goto(&app.url(path)).await.unwrap();
        text_of(c, "h1").await;
        let widths = c
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                vec![],
            )
            .await
            .unwrap();
        let (page, screen) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
        assert_eq!(screen, 360, "the viewport is a phone's");
        assert!(
            page <= screen,
            "{path} is {page} px wide on a {screen} px screen"
        );
    }
    c.goto(&app.url("/users")).await.unwrap();
    text_of(c, "#users").await;
    let png = c.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users-360.png"), png).unwrap();
    b.client.clone().close().await.unwrap();
}

async fn upload_file(app: &TestApp, c: &Client, path: &std::path::Path) {
    c.goto(&app.url("/import")).await.unwrap();
    let form = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#import-form"))
        .await
        .unwrap();
    let input = form.find(Locator::Css("input[type=file]")).await.unwrap();
    input.send_keys(&path.display().to_string()).await.unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_import_wizard_shows_row_errors_then_imports_a_clean_file() {
    assert_bundle_built();
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let dir = std::env::temp_dir().join(format!("pt-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad-shops.csv");
    std::fs::write(
        &bad,
        "建筑 building,楼层 floor,商铺号 number,电话 contact_phone\nA座,1F,101,12345\n",
    )
    .unwrap();
    let good = dir.join("shops.csv");
    std::fs::write(
        &good,
        "建筑 building,楼层 floor,商铺号 number,名称 name\nA座,1F,101,奶茶店\nA座,2F,201,书店\n",
    )
    .unwrap();
    let b = browser(true, 1280, 900).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;

    upload_file(&app, c, &bad).await;
    let errors = text_of(c, "#import-errors").await;
    assert!(errors.contains("contact_phone"), "{errors}");
    assert!(
        c.find(Locator::Css("#confirm")).await.is_err(),
        "no import button while rows have errors"
    );

    upload_file(&app, c, &good).await;
    assert_eq!(text_of(c, "#import-created").await, "2");
    c.find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(c, "#import-done").await;
    let _ = std::fs::remove_dir_all(&dir);
    b.client.clone().close().await.unwrap();
    let (_, admin_list) = {
        let admin = app.login("acme", "boss").await;
        app.get("/api/v1/shops", &admin).await
    };
    assert_eq!(admin_list["items"].as_array().unwrap().len(), 2);
}

async fn fill_plan_form(app: &TestApp, c: &Client, schedule: &str) {
    c.goto(&app.url("/tariffs")).await.unwrap();
    let form = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#plan-form"))
        .await
        .unwrap();
    for (name, value) in [
        ("name", "商铺分时"),
        ("price_peak", "1.48"),
        ("price_flat", "0.80"),
        ("price_valley", "0.32"),
        ("seasons[0][schedule]", schedule),
    ] {
        let field = form
            .find(Locator::Css(&format!("[name='{name}']")))
            .await
            .unwrap();
        field.send_keys(value).await.unwrap();
    }
    // The date input takes its digits in the browser's locale order; set its value directly.
    c.execute(
        "document.querySelector('#plan-form [name=effective]').value = '2020-01-01'",
        vec![],
    )
    .await
    .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tariff_plan_is_created_in_the_editor_and_its_day_schedule_drawn() {
    assert_bundle_built();
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let b = browser(true, 1280, 900).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;

    fill_plan_form(&app, c, "08:00 平, 18:00 峰").await;
    assert!(
        text_of(c, ".flash.error").await.contains("日时段表 1"),
        "the schedule field is named readably"
    );
    // The refused plan comes back as typed, its schedule marked.
    let kept = c
        .execute(
            "const f = document.querySelector('#plan-form'); \
             return [f.querySelector('[name=name]').value, \
                     f.querySelector('[name=\"seasons[0][schedule]\"]').value, \
                     f.querySelector('[name=\"seasons[0][schedule]\"]').getAttribute('aria-invalid')];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        kept,
        serde_json::json!(["商铺分时", "08:00 平, 18:00 峰", "true"])
    );

    fill_plan_form(&app, c, "00:00 谷, 08:00 平, 18:00 峰, 22:00 谷").await;
    text_of(c, ".flash.ok").await;
    let plan = text_of(c, "#plans").await;
    assert!(
        plan.contains("商铺分时") && plan.contains("1.4800"),
        "{plan}"
    );
    let segments = c
        .find_all(Locator::Css("#plans .tou-segment"))
        .await
        .unwrap();
    assert_eq!(segments.len(), 4);
    let peak_width = segments[2].attr("style").await.unwrap().unwrap_or_default();
    assert!(
        peak_width.contains("16.667%"),
        "18:00–22:00 is a sixth of the day: {peak_width}"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tariffs.png"), c.screenshot().await.unwrap()).unwrap();
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn the_fleet_page_updates_without_a_reload() {
    assert_bundle_built();
    let app = spawn_app().await;
    let (company_id, admin) = app.company_with_admin("acme").await;
    let (_, g) = app
        .post(
            "/api/v1/gateways",
            &admin,
            json!({"identity": "dtu-1", "kind": "dtu", "registration": "REG-0001",
            "buses": [{"number": 1, "protocol": "modbus_rtu"}]}),
        )
        .await;
    let (_, meter) = app
        .post("/api/v1/meters", &admin, json!({"bus_id": g["buses"][0]["id"], "model": "dtsy1352", "address": "1", "meter_number": "7001"}))
        .await;
    let b = browser(true, 1280, 900).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;
    c.goto(&app.url("/fleet")).await.unwrap();
    wait_for_hydration(c).await;
    let before = text_of(c, "#fleet-meters").await;
    assert!(
        before.contains("7001") && before.contains('—'),
        "never read: {before}"
    );
    // A marker that a reload would wipe.
    c.execute("window.__stayed = true", vec![]).await.unwrap();

    let reading = powertab_ingest::store::NewReading {
        meter_id: meter["id"].as_str().unwrap().parse().unwrap(),
        read_at: chrono::Utc::now(),
        values: powertab_ingest::driver::MeterValues {
            energy_wh: 123_450,
            power_w: Some(2_345),
            relay_closed: Some(true),
            ..Default::default()
        },
        raw: vec![],
        ratio_mismatch: false,
    };
    let schema = powertab_core::kernel::names::SchemaName::for_company(company_id);
    powertab_ingest::store::store_batch(&app.db.pool, &schema, &[reading])
        .await
        .unwrap();
    let updated = powertab_testkit::wait_until(Duration::from_secs(25), || async {
        let text = c
            .find(Locator::Css("#fleet-meters"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        text.contains("123.45") && text.contains("2345")
    })
    .await;
    assert!(updated, "the new reading appears on its own");
    let stayed = c
        .execute("return window.__stayed === true", vec![])
        .await
        .unwrap();
    assert_eq!(stayed, json!(true), "the page was not reloaded");
    b.client.clone().close().await.unwrap();
}

/// Types `text` into the field `name` of the form `form` (a CSS selector).
async fn fill(c: &Client, form: &str, name: &str, text: &str) {
    let field = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("{form} [name={name}]")))
        .await
        .unwrap_or_else(|e| panic!("{form} {name}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn submit(c: &Client, form: &str) {
    c.find(Locator::Css(&format!("{form} button[type=submit]")))
        .await
        .unwrap_or_else(|e| panic!("{form}: {e}"))
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_counter_opens_an_account_sells_prints_and_closes_with_javascript_on() {
    assert_bundle_built();
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, meter) = crate::money::shop_with_meter(&app, &admin, "991").await;
    let b = browser(true, 1280, 900).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;
    c.goto(&app.url("/counter")).await.unwrap();
    wait_for_hydration(c).await;

    // Open the shop's account with a typed opening reading.
    fill(c, "#open-form", "holder_name", "王小二").await;
    fill(c, "#open-form", "reading_kwh", "1000").await;
    submit(c, "#open-form").await;
    let card = text_of(c, "#accounts .account").await;
    assert!(card.contains("王小二"), "{card}");

    // Sell ¥88.00 by card: the receipt number comes back with a print link.
    fill(c, "#accounts .top-up", "amount", "88.00").await;
    c.find(Locator::Css(
        "#accounts .top-up select[name=method] option[value=card]",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    submit(c, "#accounts .top-up").await;
    let receipt_no = text_of(c, "#receipt-no").await;
    assert!(receipt_no.starts_with("PT"), "{receipt_no}");
    let balance = text_of(c, "#accounts .available").await;
    assert_eq!(balance, "¥88.00");
    c.find(Locator::Css("#print-receipt"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let printed = powertab_testkit::wait_until(Duration::from_secs(20), || async {
        c.source()
            .await
            .map(|html| html.contains(&receipt_no) && html.contains("88.00"))
            .unwrap_or(false)
    })
    .await;
    assert!(printed, "the receipt page shows the sale");

    // Close the account from its page: the settlement owes the tenant the ¥88.
    let (_, list) = app.get("/api/v1/accounts", &admin).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    c.goto(&app.url(&format!("/accounts/{id}"))).await.unwrap();
    wait_for_hydration(c).await;
    fill(c, "#close-form", "final_kwh", "1000").await;
    submit(c, "#close-form").await;
    assert_eq!(text_of(c, "#settlement-net").await, "88.00");
    assert_eq!(text_of(c, "#account-state").await, "已销户");
    let (_, account) = app.get(&format!("/api/v1/accounts/{id}"), &admin).await;
    assert_eq!(account["state"], "closed", "{account} ({meter})");
    app.assert_ledger_clean().await;
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn remote_control_pages_hydrate_and_a_meters_commands_refresh_in_place() {
    assert_bundle_built();
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (_, meter) = crate::money::shop_with_meter(&app, &admin, "992").await;
    let b = browser(true, 1280, 900).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;
    for path in ["/commands", "/control?op=trip&q=992"] {
        c.goto(&app.url(path)).await.unwrap();
        wait_for_hydration(c).await;
    }
    assert!(text_of(c, "#batch-count").await.contains('1'));
    c.goto(&app.url(&format!("/meters/{meter}"))).await.unwrap();
    wait_for_hydration(c).await;
    assert_eq!(text_of(c, "#meter-keep-power").await, "否");
    // A command sent elsewhere (the API) shows up on the open page without a reload.
    let (status, _) = app
        .post(
            &format!("/api/v1/meters/{meter}/control"),
            &admin,
            json!({"op": "keep_power_on"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let shown = powertab_testkit::wait_until(Duration::from_secs(20), || async {
        c.find(Locator::Css("#meter-commands tr[data-op=keep_power_on]"))
            .await
            .is_ok()
    })
    .await;
    assert!(shown, "the meter's commands refresh in place");
    assert_eq!(text_of(c, "#meter-keep-power").await, "是");
}

#[tokio::test]
async fn a_meter_side_meters_page_hydrates_and_shows_its_key_only_when_asked() {
    assert_bundle_built();
    let app = spawn_app().await;
    let (company, admin) = app.company_with_admin("acme").await;
    let (_, meter) = crate::money::shop_with_meter(&app, &admin, "993").await;
    let meter: uuid::Uuid = meter.parse().unwrap();
    let schema = format!("c_{company}");
    sqlx::query(&format!(
        "update {schema}.meters set prepayment_mode = 'meter', meter_number = '202612030001' where id = $1"
    ))
    .bind(meter)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "insert into {schema}.meter_secure_readback (meter_id, purchase_count, control_count, remaining_fen, price_units, read_at)
         values ($1, 3, 7, 0, 10000, now())"
    ))
    .bind(meter)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let b = browser(true, 1280, 900).await;
    let c = &b.client;
    login(&app, c, "acme", "boss").await;
    text_of(c, "#welcome").await;
    c.goto(&app.url("/meter-side")).await.unwrap();
    wait_for_hydration(c).await;
    c.find(Locator::Css(&format!("a[href='/meter-side/{meter}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "h1").await, "表内费控电表 202612030001");
    wait_for_hydration(c).await;
    assert!(
        c.find(Locator::Css("#meter-key-hex")).await.is_err(),
        "no key unasked"
    );
    c.find(Locator::Css("#key-show"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let hex = text_of(c, "#meter-key-hex").await;
    assert_eq!(hex.len(), 32, "{hex}");
    let (_, exported) = app
        .post(
            &format!("/api/v1/secure/meters/{meter}/key-export"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(
        exported["meter_key_hex"],
        hex.as_str(),
        "the same key as the API's"
    );
    b.client.clone().close().await.unwrap();
}

/// The page is no wider than the phone's screen.
async fn assert_fits_phone(c: &Client, what: &str) {
    let widths = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await
        .unwrap();
    let (page, screen) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
    assert!(
        page <= screen,
        "{what} is {page} px wide on a {screen} px screen"
    );
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// Issue 14's proof: on a 360-px phone, a shop tenant whose power was cut opens the meter's QR
/// link, signs in with the SMS code the sandbox channel carried, tops up through the sandbox pay
/// page, follows the order until it is credited, sees the receipt — and the simulated meter's
/// relay closes again, read back.
#[tokio::test]
async fn a_tenant_scans_the_qr_code_signs_in_by_sms_tops_up_and_the_power_comes_back() {
    assert_bundle_built();
    let app = spawn_app().await;
    let db = &app.db;
    powertab_server::demo::prepare(&db.pool)
        .await
        .expect("demo data");
    let _field = crate::cli::simulate_demo(db, Duration::from_millis(500)).await;
    crate::power_e2e::rules_at_once(db).await;
    let (shop, meter, number): (uuid::Uuid, uuid::Uuid, String) = sqlx::query_as(
        "select s.id, m.id, m.meter_number from c_1.meters m join c_1.shops s on s.id = m.shop_id
         where s.number = '101'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let relay = || async {
        sqlx::query_scalar::<_, Option<bool>>(
            "select relay_closed from c_1.meter_latest where meter_id = $1",
        )
        .bind(meter)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
    };
    assert!(
        powertab_testkit::wait_until(Duration::from_secs(40), || async {
            relay().await.is_some()
        })
        .await,
        "the simulated meter is read"
    );
    // The shop's account (registered phone 13800138000), its balance spent: the power is cut.
    let account = crate::power_e2e::open_and_top_up(db, shop, &[meter]).await;
    crate::power_e2e::to_trip_level(db, account).await;
    assert!(
        powertab_testkit::wait_until(Duration::from_secs(30), || async {
            relay().await == Some(false)
        })
        .await,
        "tripped and read back open"
    );
    let root = app.root().await;
    let (status, _) = app
        .post(
            "/api/v1/platform/companies/1/sandbox-payments",
            &root,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let b = browser(true, 360, 800).await;
    let c = &b.client;
    c.goto(&app.url(&format!("/t/demo?meter={number}")))
        .await
        .unwrap();
    assert!(text_of(c, "#company-name").await.contains("演示广场"));
    assert!(text_of(c, "#qr-meter").await.contains(&number));
    assert_fits_phone(c, "the QR page").await;
    fill(c, "#code-form", "phone", "13800138000").await;
    submit(c, "#code-form").await;
    text_of(c, "#code-sent").await;
    let code: String = sqlx::query_scalar(
        "select p->>1 from c_1.notifications n, jsonb_array_elements(n.params) p
         where n.kind = 'login_code' and n.recipient = '13800138000' and p->>0 = 'code'
         order by n.created_at desc limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("the sandbox SMS channel holds the code");
    fill(c, "#code-login-form", "code", &code).await;
    submit(c, "#code-login-form").await;

    // Home: the cut power and the empty balance, in Chinese.
    let power = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#power-state"))
        .await
        .unwrap();
    assert_eq!(
        power.attr("data-power").await.unwrap().as_deref(),
        Some("off")
    );
    assert_eq!(power.text().await.unwrap(), "已断电");
    assert_eq!(text_of(c, "#available").await, "¥0.00");
    text_of(c, "#usage-days").await;
    assert_fits_phone(c, "/my").await;
    screenshot(c, "tenant-home-360.png").await;

    // Top up ¥50 (the first preset) and pay on the sandbox's page.
    c.find(Locator::Css("#top-up"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(c, "#presets").await;
    assert_fits_phone(c, "/my/top-up").await;
    c.find(Locator::Css("#presets button[data-amount='50.00']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "#sandbox-amount").await, "¥50.00");
    c.find(Locator::Css("#sandbox-pay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Back on our order page, which refreshes itself until the money is credited.
    let credited = powertab_testkit::wait_until(Duration::from_secs(20), || async {
        match c.find(Locator::Css("#order-steps")).await {
            Ok(steps) => {
                steps.attr("data-state").await.ok().flatten().as_deref() == Some("credited")
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(credited, "the order page shows it credited");
    assert_eq!(text_of(c, "#order-message").await, "充值成功");
    assert_eq!(text_of(c, "#order-available").await, "¥50.00");
    assert_fits_phone(c, "the order page").await;
    screenshot(c, "tenant-order-360.png").await;
    c.find(Locator::Css("#receipt"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(c, "#receipt-amount").await, "¥50.00");

    // The relay closes, read back from the simulated meter, and the home says so.
    assert!(
        powertab_testkit::wait_until(Duration::from_secs(30), || async {
            relay().await == Some(true)
        })
        .await,
        "the meter's relay closed again"
    );
    let on = powertab_testkit::wait_until(Duration::from_secs(20), || async {
        c.goto(&app.url("/my")).await.unwrap();
        text_of(c, "#power-state").await == "正常供电"
    })
    .await;
    assert!(on, "the home shows the power back on");
    b.client.clone().close().await.unwrap();
    let (ok, out) = crate::cli::powertab(db, &["ledger", "check"]);
    assert!(ok, "{out}");
}
