//! Importing shops, gateways and meters: templates, dry runs with every row's errors,
//! all-or-nothing imports, CSV and Excel.

use crate::helpers::{spawn_app, Caller, TestApp};
use calamine::{Reader, Xlsx};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Cursor;

async fn upload(
    app: &TestApp,
    caller: &Caller,
    kind: &str,
    filename: &str,
    bytes: Vec<u8>,
    dry_run: bool,
) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url(&format!(
            "/api/v1/import?kind={kind}&filename={filename}&dry_run={dry_run}"
        )))
        .bearer_auth(&caller.token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

const SHOPS_CSV: &str =
    "建筑 building,楼层 floor,商铺号 number,名称 name,面积 area_m2,电话 contact_phone\n\
A座,1F,101,奶茶店,85.5,13800138000\n\
A座,1F,102,书店,40,\n\
A座,2F,201,,,\n";

const GATEWAYS_CSV: &str = "identity,kind,registration,bus,protocol,baud\n\
dtu-0001,dtu,REG-0001,1,modbus_rtu,9600\n\
dtu-0001,dtu,REG-0001,2,dlt645,\n\
dtu-0002,dtu,REG-0002,1,modbus_rtu,\n";

#[tokio::test]
async fn templates_download_for_each_kind() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    for kind in ["shops", "gateways", "meters"] {
        let response = app
            .http
            .get(app.url(&format!("/api/v1/import/template.xlsx?kind={kind}")))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{kind}");
        let mut book = Xlsx::new(Cursor::new(response.bytes().await.unwrap().to_vec())).unwrap();
        let sheet = book.worksheet_range_at(0).unwrap().unwrap();
        assert!(sheet.height() == 2, "header and an example row");
    }
}

#[tokio::test]
async fn a_dry_run_lists_every_rows_errors_and_keeps_nothing() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let bad = format!("{SHOPS_CSV}A座,1F,101,duplicate,,\nA座,1F,103,,12.345,12345\n");
    let (status, report) = upload(&app, &admin, "shops", "shops.csv", bad.into_bytes(), true).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["rows"], 5);
    let errors: Vec<(u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["column"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (5, "number".into()),
            (6, "area_m2".into()),
            (6, "contact_phone".into())
        ]
    );
    assert_eq!(report["committed"], false);
    let (_, tree) = app.get("/api/v1/buildings", &admin).await;
    assert!(
        tree["items"].as_array().unwrap().is_empty(),
        "a dry run creates nothing, not even buildings"
    );
}

#[tokio::test]
async fn an_import_with_any_error_keeps_nothing_and_a_clean_one_keeps_everything() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let bad = format!("{SHOPS_CSV}A座,1F,101,duplicate,,\n");
    let (_, report) = upload(&app, &admin, "shops", "shops.csv", bad.into_bytes(), false).await;
    assert_eq!(
        (
            report["committed"].clone(),
            report["errors"].as_array().unwrap().len()
        ),
        (json!(false), 1)
    );
    let (_, shops) = app.get("/api/v1/shops", &admin).await;
    assert!(shops["items"].as_array().unwrap().is_empty());

    let (_, report) = upload(
        &app,
        &admin,
        "shops",
        "shops.csv",
        SHOPS_CSV.as_bytes().to_vec(),
        false,
    )
    .await;
    assert_eq!(
        (report["committed"].clone(), report["created"].clone()),
        (json!(true), json!(3)),
        "{report}"
    );
    let (_, tree) = app.get("/api/v1/buildings", &admin).await;
    assert_eq!(
        tree["items"][0]["floors"].as_array().unwrap().len(),
        2,
        "buildings and floors made as needed"
    );

    let (_, report) = upload(
        &app,
        &admin,
        "gateways",
        "gateways.csv",
        GATEWAYS_CSV.as_bytes().to_vec(),
        false,
    )
    .await;
    assert_eq!(report["created"], 2, "{report}");
    let (_, gateways) = app.get("/api/v1/gateways", &admin).await;
    let dtu1 = gateways["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["identity"] == "dtu-0001")
        .expect("dtu-0001");
    assert_eq!(dtu1["buses"].as_array().unwrap().len(), 2);

    app.post("/api/v1/tariff-plans", &admin, json!({"name": "商铺电价", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}})).await;
    let meters =
        "gateway,bus,model,address,meter_number,building,shop_number,tariff_plan,install_date\n\
dtu-0001,1,dtsy1352,1,202611250001,A座,101,商铺电价,2026-11-25\n\
dtu-0001,2,dlt645,202611250002,202611250002,A座,102,,\n\
dtu-0002,1,ddsy1352,1,202611250003,,,,\n";
    let (_, report) = upload(
        &app,
        &admin,
        "meters",
        "meters.csv",
        meters.as_bytes().to_vec(),
        false,
    )
    .await;
    assert_eq!(report["created"], 3, "{report}");
    let (_, list) = app.get("/api/v1/meters", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let (_, log) = app.get("/api/v1/audit-log?action=import", &admin).await;
    assert_eq!(
        log["items"].as_array().unwrap().len(),
        3,
        "one summary entry per confirmed import"
    );
}

#[tokio::test]
async fn meter_rows_name_unknown_references_by_column() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    upload(
        &app,
        &admin,
        "gateways",
        "gateways.csv",
        GATEWAYS_CSV.as_bytes().to_vec(),
        false,
    )
    .await;
    let meters =
        "gateway,bus,model,address,meter_number,building,shop_number,tariff_plan,install_date\n\
dtu-9999,1,dtsy1352,1,1,,,,\n\
dtu-0001,1,dtsy1352,1,2,A座,999,nope,25/11/2026\n";
    let (_, report) = upload(
        &app,
        &admin,
        "meters",
        "meters.csv",
        meters.as_bytes().to_vec(),
        true,
    )
    .await;
    let errors: Vec<(u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["column"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, "bus".into()),
            (3, "shop_number".into()),
            (3, "tariff_plan".into()),
            (3, "install_date".into())
        ]
    );
}

#[tokio::test]
async fn unreadable_files_and_missing_columns_are_refused_clearly() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    let (status, body) = upload(
        &app,
        &admin,
        "meters",
        "meters.xlsx",
        b"not a workbook".to_vec(),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["file"]
        .as_str()
        .unwrap()
        .contains("spreadsheet"));
    let (status, body) = upload(
        &app,
        &admin,
        "meters",
        "m.csv",
        b"gateway,bus\n".to_vec(),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["fields"]["file"]
        .as_str()
        .unwrap()
        .contains("meter_number"));
    let (_, operator) = app.user(&admin, "acme", "op", "operator", &[]).await;
    let (status, _) = upload(
        &app,
        &operator,
        "shops",
        "shops.csv",
        SHOPS_CSV.as_bytes().to_vec(),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn download(app: &TestApp, caller: &Caller, path: &str) -> Vec<u8> {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(&caller.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.bytes().await.unwrap().to_vec()
}

/// A list without ids (they differ between companies), as comparable JSON.
async fn list_without_ids(app: &TestApp, caller: &Caller, path: &str, keep: &[&str]) -> Vec<Value> {
    let (_, list) = app.get(path, caller).await;
    let mut items: Vec<Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            Value::Object(
                keep.iter()
                    .map(|k| ((*k).to_owned(), item[*k].clone()))
                    .collect(),
            )
        })
        .collect();
    items.sort_by_key(|v| v.to_string());
    items
}

#[tokio::test]
async fn exported_lists_import_into_an_empty_company_unchanged() {
    // Two platforms: gateway identities are unique platform-wide, so the copy goes to another.
    let source = spawn_app().await;
    let (_, alpha) = source.company_with_admin("alpha").await;
    upload(
        &source,
        &alpha,
        "shops",
        "shops.csv",
        SHOPS_CSV.as_bytes().to_vec(),
        false,
    )
    .await;
    upload(
        &source,
        &alpha,
        "gateways",
        "gateways.csv",
        GATEWAYS_CSV.as_bytes().to_vec(),
        false,
    )
    .await;
    let (status, _) = source
        .post("/api/v1/gateways", &alpha, json!({"identity": "mb-1", "kind": "modbus_tcp", "host": "10.0.0.5", "buses": [{"number": 3, "protocol": "modbus_rtu", "tcp_port": 502, "gap_ms": 80}]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let plan = json!({"name": "商铺电价", "version": {"effective": "2020-01-01", "prices": {"flat": 8123}}});
    source
        .post("/api/v1/tariff-plans", &alpha, plan.clone())
        .await;
    let meters = "gateway,bus,model,address,meter_number,ct_ratio,building,shop_number,tariff_plan,alarm1_fen,install_date,initial_energy_wh\n\
dtu-0001,1,dtsy1352,1,202611250001,40,A座,101,商铺电价,3000,2026-11-25,123450\n\
dtu-0001,2,dlt645,202611250002,202611250002,,A座,102,,,,\n\
mb-1,3,modbus_generic,9,9,,,,,,,\n";
    let (_, report) = upload(
        &source,
        &alpha,
        "meters",
        "meters.csv",
        meters.as_bytes().to_vec(),
        false,
    )
    .await;
    assert_eq!(report["created"], 3, "{report}");

    let shops_file = download(&source, &alpha, "/api/v1/shops.xlsx").await;
    let gateways_file = download(&source, &alpha, "/api/v1/gateways.xlsx").await;
    let meters_file = download(&source, &alpha, "/api/v1/meters.xlsx").await;

    let target = spawn_app().await;
    let (_, bravo) = target.company_with_admin("bravo").await;
    target.post("/api/v1/tariff-plans", &bravo, plan).await;
    let (_, report) = upload(&target, &bravo, "shops", "export.xlsx", shops_file, false).await;
    assert_eq!(report["committed"], true, "shops: {report}");
    // Registration bytes are credentials and never leave in an export: the DTU rows of the
    // gateway list come back asking for them, and nothing else.
    let (_, report) = upload(
        &target,
        &bravo,
        "gateways",
        "export.xlsx",
        gateways_file,
        false,
    )
    .await;
    assert_eq!(report["committed"], false, "{report}");
    let columns: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["column"].as_str().unwrap())
        .collect();
    assert!(
        !columns.is_empty() && columns.iter().all(|c| *c == "registration"),
        "{report}"
    );
    // With the bytes typed in again (here: the source's file), the gateways come over.
    let (_, report) = upload(
        &target,
        &bravo,
        "gateways",
        "gateways.csv",
        GATEWAYS_CSV.as_bytes().to_vec(),
        false,
    )
    .await;
    assert_eq!(report["committed"], true, "{report}");
    target
        .post("/api/v1/gateways", &bravo, json!({"identity": "mb-1", "kind": "modbus_tcp", "host": "10.0.0.5", "buses": [{"number": 3, "protocol": "modbus_rtu", "tcp_port": 502, "gap_ms": 80}]}))
        .await;
    let (_, report) = upload(&target, &bravo, "meters", "export.xlsx", meters_file, false).await;
    assert_eq!(report["committed"], true, "meters: {report}");

    let shop_keys = [
        "building_name",
        "floor_name",
        "number",
        "name",
        "area_centi_m2",
        "contact_name",
        "contact_phone",
        "status",
    ];
    let gateway_keys = [
        "identity",
        "name",
        "kind",
        "status",
        "registration_hex",
        "registration_repeats",
        "heartbeat_hex",
        "host",
    ];
    let meter_keys = [
        "gateway_identity",
        "bus_number",
        "model",
        "address",
        "meter_number",
        "ct_ratio",
        "pt_ratio",
        "prepayment_mode",
        "role",
        "alarm1_fen",
        "alarm2_fen",
        "install_date",
        "initial_energy_wh",
        "status",
    ];
    for (path, keys) in [
        ("/api/v1/shops", &shop_keys[..]),
        ("/api/v1/gateways", &gateway_keys[..]),
        ("/api/v1/meters", &meter_keys[..]),
    ] {
        let before = list_without_ids(&source, &alpha, path, keys).await;
        let after = list_without_ids(&target, &bravo, path, keys).await;
        assert!(!before.is_empty());
        assert_eq!(before, after, "{path}");
    }
    // Buses (with their settings) and the meters' shops and plans came along too.
    let buses = |list: Value| {
        let mut v: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| {
                g["buses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        format!(
                            "{}:{}:{}:{}:{}:{}",
                            b["number"],
                            b["protocol"],
                            b["baud"],
                            b["parity"],
                            b["gap_ms"],
                            b["tcp_port"]
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        buses(source.get("/api/v1/gateways", &alpha).await.1),
        buses(target.get("/api/v1/gateways", &bravo).await.1)
    );
    let (_, copied) = target.get("/api/v1/meters?q=202611250001", &bravo).await;
    let shop_id = copied["items"][0]["shop_id"]
        .as_str()
        .expect("the meter kept its shop");
    let (_, shop) = target
        .get(&format!("/api/v1/shops/{shop_id}"), &bravo)
        .await;
    assert_eq!(shop["number"], "101");
    assert!(copied["items"][0]["tariff_plan_id"].is_string());
}

/// A 1.5 KB workbook whose only cells are A1 and XFD1048576 (tests/fixtures/xlsx-bomb.xlsx):
/// read as a dense grid it would ask for ~17 billion cells and abort the whole process.
const XLSX_BOMB: &[u8] = include_bytes!("../fixtures/xlsx-bomb.xlsx");

#[tokio::test]
async fn a_workbook_with_one_far_cell_is_refused_and_the_server_keeps_answering() {
    let app = spawn_app().await;
    let (_, admin) = app.company_with_admin("acme").await;
    assert!(XLSX_BOMB.len() < 2048);
    for dry_run in [true, false] {
        let (status, body) = upload(
            &app,
            &admin,
            "shops",
            "bomb.xlsx",
            XLSX_BOMB.to_vec(),
            dry_run,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["error"]["fields"]["file"].as_str().unwrap_or_default();
        assert!(message.contains("rows"), "{body}");
    }
    // The process is still there and still serves the company.
    let response = app
        .http
        .get(app.url("/api/v1/buildings"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A legacy .xls is refused with a hint rather than parsed.
    let (status, body) = upload(
        &app,
        &admin,
        "shops",
        "old.xls",
        b"\xd0\xcf\x11\xe0".to_vec(),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["file"]
        .as_str()
        .unwrap()
        .contains(".xlsx"));
}
