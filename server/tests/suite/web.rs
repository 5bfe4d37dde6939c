//! Web forms over plain HTTP, as a browser without JavaScript sends them: cookies, the CSRF
//! field, and the redirects server functions answer with.

use crate::helpers::{spawn_app, TestApp, PASSWORD};
use reqwest::StatusCode;

/// A cookie-keeping client that posts forms like a browser (Accept: text/html, Referer).
pub(crate) fn browser_like() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn post_form(
    app: &TestApp,
    client: &reqwest::Client,
    from: &str,
    action: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let response = client
        .post(app.url(action))
        .header("accept", "text/html")
        .header("referer", app.url(from))
        .form(form)
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status(), location)
}

pub(crate) async fn page(app: &TestApp, client: &reqwest::Client, path: &str) -> String {
    client
        .get(app.url(path))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A browser-like client logged in through the login form as `username` of `company` (empty
/// for platform staff), with the test password.
pub(crate) async fn logged_in_as(app: &TestApp, company: &str, username: &str) -> reqwest::Client {
    let client = browser_like();
    let (status, _) = post_form(
        app,
        &client,
        "/login",
        "/sfn/login",
        &[
            ("company", company),
            ("username", username),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FOUND, "logged in as {username}");
    client
}

/// The CSRF token the page put in its forms.
pub(crate) fn csrf_of(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field")
        + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn platform_staff_enter_a_company_and_leave_it_again() {
    let app = spawn_app().await;
    let (id, _) = app.company_with_admin("acme").await;
    let client = browser_like();
    let (status, location) = post_form(
        &app,
        &client,
        "/login",
        "/sfn/login",
        &[
            ("company", ""),
            ("username", "root"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!((status, location.as_str()), (StatusCode::FOUND, "/"));

    let detail = page(&app, &client, &format!("/platform/companies/{id}")).await;
    let csrf = csrf_of(&detail);
    let id_text = id.to_string();
    let (_, location) = post_form(
        &app,
        &client,
        "/platform/companies",
        "/sfn/company_enter",
        &[("csrf", &csrf), ("id", &id_text)],
    )
    .await;
    assert_eq!(location, "/");
    let home = page(&app, &client, "/").await;
    assert!(
        home.contains("acme plaza") && home.contains("id=\"leave\""),
        "{home}"
    );
    let users = page(&app, &client, "/users").await;
    assert!(
        users.contains("boss"),
        "inside the company the platform admin sees its users"
    );

    let csrf = csrf_of(&home);
    let (_, location) =
        post_form(&app, &client, "/", "/sfn/company_leave", &[("csrf", &csrf)]).await;
    assert_eq!(location, "/platform/companies");
    let companies = page(&app, &client, "/platform/companies").await;
    assert!(
        companies.contains("id=\"companies\""),
        "back on the platform pages"
    );
}

#[tokio::test]
async fn a_form_without_the_right_csrf_field_changes_nothing() {
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let client = logged_in_as(&app, "acme", "boss").await;
    let form = [
        ("csrf", "forged"),
        ("username", "intruder"),
        ("display_name", ""),
        ("phone", ""),
        ("role", "company_admin"),
        ("password", "initial-pass-1"),
    ];
    let (status, location) = post_form(&app, &client, "/users", "/sfn/user_create", &form).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(location, "/users?error=csrf_mismatch");
    assert!(!page(&app, &client, "/users").await.contains("intruder"));
}

#[tokio::test]
async fn the_property_pages_add_buildings_floors_and_shops_with_plain_forms() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let client = logged_in_as(&app, "acme", "boss").await;
    let page_html = page(&app, &client, "/property").await;
    let csrf = csrf_of(&page_html);
    let (_, location) = post_form(
        &app,
        &client,
        "/property",
        "/sfn/building_create",
        &[("csrf", &csrf), ("name", "A座"), ("address", "")],
    )
    .await;
    assert_eq!(location, "/property?ok=common.saved");
    let (_, tree) = app.get("/api/v1/buildings", &admin).await;
    let building_id = tree["items"][0]["id"].as_str().unwrap().to_owned();
    post_form(
        &app,
        &client,
        "/property",
        "/sfn/floor_create",
        &[
            ("csrf", &csrf),
            ("building_id", &building_id),
            ("name", "1F"),
        ],
    )
    .await;
    let (_, tree) = app.get("/api/v1/buildings", &admin).await;
    let floor_id = tree["items"][0]["floors"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shop = [
        ("csrf", csrf.as_str()),
        ("floor_id", &floor_id),
        ("number", "101"),
        ("name", "奶茶店"),
        ("area_m2", "12.5"),
        ("contact_name", ""),
        ("contact_phone", ""),
    ];
    let (_, location) = post_form(&app, &client, "/property", "/sfn/shop_create", &shop).await;
    assert_eq!(location, "/property?ok=common.saved");
    // The same shop number again: the form comes back with the field named.
    let (_, location) = post_form(&app, &client, "/property", "/sfn/shop_create", &shop).await;
    assert!(
        location == "/property?error=validation_failed&fields=number",
        "{location}"
    );
    // It comes back as typed, the number marked.
    let html = page(&app, &client, &location).await;
    let form = html
        .split("id=\"shop-form\"")
        .nth(1)
        .unwrap()
        .split("</form>")
        .next()
        .unwrap();
    assert!(
        form.contains("value=\"奶茶店\"") && form.contains("value=\"12.5\""),
        "{form}"
    );
    assert_eq!(form.matches("aria-invalid=\"true\"").count(), 1, "{form}");
    let html = page(&app, &client, "/property?q=奶茶").await;
    assert!(
        html.contains("奶茶店") && html.contains("12.50"),
        "the shop is listed"
    );
    for path in ["/gateways", "/meters"] {
        let html = page(&app, &client, path).await;
        assert!(
            html.contains(&format!("id=\"{}\"", &path[1..])),
            "{path} renders its table"
        );
    }
}

/// A user who must change the initial password, logged in through the web form, can change the
/// password, log out and read their own session — nothing else, through server functions, the
/// import upload or REST (one boundary decides for all three: core::auth::boundary).
#[tokio::test]
async fn a_user_who_must_change_the_password_can_do_nothing_else_on_the_web() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, _) = app
        .post(
            "/api/v1/users",
            &admin,
            serde_json::json!({"username": "newboss", "role": "company_admin", "password": "initial-pass-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let client = browser_like();
    let (status, location) = post_form(
        &app,
        &client,
        "/login",
        "/sfn/login",
        &[
            ("company", "acme"),
            ("username", "newboss"),
            ("password", "initial-pass-1"),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::FOUND, "/password")
    );
    let csrf = csrf_of(&page(&app, &client, "/password").await);

    // A change through a server function is refused.
    let (_, location) = post_form(
        &app,
        &client,
        "/buildings",
        "/sfn/building_create",
        &[("csrf", &csrf), ("name", "A座"), ("address", "")],
    )
    .await;
    assert!(
        location.contains("error=password_change_required"),
        "{location}"
    );
    // So are reads.
    let response = client
        .post(app.url("/sfn/users"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("q=&role=&status=&cursor=")
        .send()
        .await
        .unwrap();
    assert!(!response.status().is_success());
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("password_change_required"));
    // And the import upload.
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf.clone())
        .text("kind", "shops")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"building,floor,number\nA,1F,101\n".to_vec())
                .file_name("shops.csv"),
        );
    let response = client
        .post(app.url("/web/import"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["location"], "/password");
    // And REST, with the same web session's cookie or with a bearer token of its own.
    let cookie_change = client
        .post(app.url("/api/v1/buildings"))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"name": "B座"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_change.status(), StatusCode::FORBIDDEN);
    let (_, login) = app.try_login("acme", "newboss", "initial-pass-1").await;
    let bearer = crate::helpers::Caller {
        token: login["access_token"].as_str().unwrap().into(),
        refresh: String::new(),
    };
    let (status, body) = app
        .post(
            "/api/v1/buildings",
            &bearer,
            serde_json::json!({"name": "C座"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "password_change_required");
    let (buildings, uploads): (i64, i64) = sqlx::query_as(
        "select (select count(*) from c_1.buildings), (select count(*) from c_1.import_uploads)",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((buildings, uploads), (0, 0));

    // The password change itself works, and then so does everything else.
    let (_, location) = post_form(
        &app,
        &client,
        "/password",
        "/sfn/password",
        &[
            ("csrf", &csrf),
            ("current_password", "initial-pass-1"),
            ("new_password", "a-new-password-2026"),
        ],
    )
    .await;
    assert!(location.starts_with("/login?ok="), "{location}");
}

/// A link's query can name an error code and fields, but no text of its own reaches the page.
#[tokio::test]
async fn a_crafted_error_link_shows_only_translated_messages() {
    let app = spawn_app().await;
    let html = page(
        &app,
        &browser_like(),
        "/login?error=Call%20400-123%20now&fields=Your%20account%20is%20locked,number&detail=Pay%20here",
    )
    .await;
    for planted in ["Call 400-123", "Your account is locked", "Pay here"] {
        assert!(!html.contains(planted), "{planted} was echoed");
    }
    assert!(html.contains("flash error"), "a generic error is shown");
    let ok = page(&app, &browser_like(), "/login?ok=Transfer%20done").await;
    assert!(!ok.contains("Transfer done"));
}

/// A server function answers "not found" as REST does: 404, not 500.
#[tokio::test]
async fn a_server_function_answers_404_for_what_does_not_exist() {
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let client = logged_in_as(&app, "acme", "boss").await;
    for id in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let response = client
            .post(app.url("/sfn/gateway_get"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("id={id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
    }
}

/// Platform staff watch DTU registrations on their own page and hand a refused one to a
/// company with a plain form; the company's gateway list warns about registrations to change.
#[tokio::test]
async fn platform_staff_hand_a_refused_registration_to_a_company_and_companies_see_problems() {
    let app = spawn_app().await;
    let (company_id, _) = app.company_with_admin("acme").await;
    sqlx::query("insert into control.unclaimed_registrations (registration_hex, last_peer) values ('4e45572d445455', '203.0.113.9:4000')")
        .execute(&app.db.pool)
        .await
        .unwrap();
    // A registration from before the prefix rule, too short.
    sqlx::query(
        "insert into control.gateway_directory (identity, registration_hex, company_id, gateway_id, kind, status)
         values ('old-dtu', '4f4c44', $1, gen_random_uuid(), 'dtu', 'enabled')",
    )
    .bind(company_id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let client = logged_in_as(&app, "", "root").await;
    let html = page(&app, &client, "/platform/registrations").await;
    assert!(
        html.contains("NEW-DTU") && html.contains("203.0.113.9"),
        "{html}"
    );
    assert!(
        html.contains("old-dtu"),
        "the registration to change is listed"
    );
    let csrf = csrf_of(&html);
    let (_, location) = post_form(
        &app,
        &client,
        "/platform/registrations",
        "/sfn/registration_claim",
        &[
            ("csrf", &csrf),
            ("registration_hex", "4e45572d445455"),
            ("company_id", &company_id.to_string()),
        ],
    )
    .await;
    assert!(location.contains("ok="), "{location}");
    let claimed: Option<i64> =
        sqlx::query_scalar("select claimed_for from control.unclaimed_registrations")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(claimed, Some(company_id));

    let boss = logged_in_as(&app, "acme", "boss").await;
    let gateways = page(&app, &boss, "/gateways").await;
    assert!(gateways.contains("id=\"registration-problems\"") && gateways.contains("old-dtu"));
    // Companies never reach the platform page's data.
    let response = boss
        .post(app.url("/sfn/platform_registrations"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// The hydration bundle goes out under a content-hashed name, compressed when the browser
/// accepts it, with a year-long immutable cache; other files are revalidated.
#[tokio::test]
async fn the_wasm_bundle_is_hashed_compressed_and_cached_for_good() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let html = client
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let site = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/site");
    let bundle = powertab_server::web::bundle_name(&site);
    assert!(
        bundle.len() > "powertab.".len(),
        "infra/build-wasm.sh wrote pkg/bundle.txt: {bundle}"
    );
    assert!(
        html.contains(&format!("/pkg/{bundle}.js")),
        "the page loads the hashed script"
    );
    let wasm = client
        .get(app.url(&format!("/pkg/{bundle}_bg.wasm")))
        .header("accept-encoding", "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(wasm.status(), StatusCode::OK);
    let headers = wasm.headers().clone();
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], "application/wasm");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let compressed = wasm.bytes().await.unwrap().len();
    let plain = std::fs::metadata(site.join(format!("pkg/{bundle}_bg.wasm")))
        .unwrap()
        .len();
    assert!(
        (compressed as u64) < plain / 2,
        "{compressed} of {plain} bytes"
    );
    // Without an accepted encoding, the plain file; an unhashed name is revalidated.
    let identity = client
        .get(app.url(&format!("/pkg/{bundle}.js")))
        .send()
        .await
        .unwrap();
    assert!(identity.headers().get("content-encoding").is_none());
    let unhashed = client
        .get(app.url("/pkg/powertab.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(unhashed.headers()["cache-control"], "no-cache");
}

/// The part of `html` inside the form `id`.
fn form_of<'a>(html: &'a str, id: &str) -> &'a str {
    html.split(&format!("id=\"{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no form {id}"))
        .split("</form>")
        .next()
        .unwrap()
}

#[tokio::test]
async fn every_form_comes_back_as_typed_with_its_wrong_fields_marked() {
    let app = spawn_app().await;
    app.company_with_admin("acme").await;
    let client = logged_in_as(&app, "acme", "boss").await;
    let csrf = csrf_of(&page(&app, &client, "/users").await);

    // A user with a name that is not allowed: typed values back, the password never.
    let (_, location) = post_form(
        &app,
        &client,
        "/users",
        "/sfn/user_create",
        &[
            ("csrf", &csrf),
            ("username", "no spaces allowed"),
            ("display_name", "王小明"),
            ("phone", "13800000000"),
            ("role", "auditor"),
            ("password", "initial-pass-1"),
        ],
    )
    .await;
    assert!(location.contains("fields=username"), "{location}");
    let html = page(&app, &client, &location).await;
    let form = form_of(&html, "new-user-form");
    assert!(
        form.contains("value=\"王小明\"") && form.contains("value=\"13800000000\""),
        "{form}"
    );
    assert!(form.contains("value=\"auditor\" selected"), "{form}");
    assert!(!html.contains("initial-pass-1"), "a password is never kept");
    assert_eq!(form.matches("aria-invalid=\"true\"").count(), 1, "{form}");
    // Shown once: the next visit starts with an empty form.
    let again = page(&app, &client, "/users").await;
    assert!(!form_of(&again, "new-user-form").contains("王小明"));

    // A tariff plan with a broken day schedule in its second season: every row comes back,
    // the broken field is marked, and the message names it readably.
    let (_, location) = post_form(
        &app,
        &client,
        "/tariffs",
        "/sfn/plan_create",
        &[
            ("csrf", &csrf),
            ("name", "夏季"),
            ("description", "商铺"),
            ("effective", "2030-01-01"),
            ("price_peak", "1.2"),
            ("price_valley", "0.4"),
            ("seasons[0][from]", "07-01"),
            ("seasons[0][to]", "08-31"),
            ("seasons[0][schedule]", "00:00 谷, 08:00 峰"),
            ("seasons[1][from]", "09-01"),
            ("seasons[1][to]", "06-30"),
            ("seasons[1][schedule]", "8 点 峰"),
        ],
    )
    .await;
    assert!(location.contains("seasons.1.schedule"), "{location}");
    let html = page(&app, &client, &location).await;
    let form = form_of(&html, "plan-form");
    for typed in [
        "夏季",
        "商铺",
        "2030-01-01",
        "1.2",
        "07-01",
        "00:00 谷, 08:00 峰",
        "8 点 峰",
    ] {
        assert!(form.contains(typed), "{typed} kept: {form}");
    }
    assert_eq!(form.matches("aria-invalid=\"true\"").count(), 1, "{form}");
    assert!(
        html.contains("日时段表 2"),
        "a readable name for the row's field"
    );

    // A gateway whose identity is taken: the registration bytes are never kept.
    let mut location = String::new();
    for identity in ["dtu-1", "dtu-1"] {
        (_, location) = post_form(
            &app,
            &client,
            "/gateways",
            "/sfn/gateway_create",
            &[
                ("csrf", &csrf),
                ("identity", identity),
                ("kind", "dtu"),
                ("name", "北区网关"),
                ("registration", "SECRET-REG-BYTES"),
            ],
        )
        .await;
    }
    assert!(location.starts_with("/gateways?error="), "{location}");
    let html = page(&app, &client, &location).await;
    let form = form_of(&html, "gateway-form");
    assert!(form.contains("value=\"北区网关\""), "{form}");
    assert!(
        !html.contains("SECRET-REG-BYTES"),
        "registration bytes are never kept"
    );
}
