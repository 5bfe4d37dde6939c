//! The server side of the property page: the building tree, and buildings, floors and shops
//! added through its forms (rules in `powertab_core::property`).

use crate::web::server::{
    field_error, finish_keeping, non_empty, read_err, read_session, session_for_change,
};
use crate::web::WebError;
use uuid::Uuid;

pub async fn get_property(
    q: String,
    building: String,
) -> Result<super::views::PropertyView, WebError> {
    use powertab_core::property;
    let (principal, mut tx) = read_session().await?;
    let tree = property::tree(&mut tx, &principal)
        .await
        .map_err(read_err)?;
    let filter = property::ShopFilter {
        building_id: building.parse().ok(),
        floor_id: None,
        status: None,
        q: non_empty(q),
    };
    let shops = property::shops(&mut tx, &principal, &filter)
        .await
        .map_err(read_err)?;
    Ok(super::views::PropertyView {
        buildings: tree
            .into_iter()
            .map(|b| super::views::BuildingView {
                id: b.id.to_string(),
                name: b.name,
                address: b.address,
                shop_count: b.shop_count,
                floors: b
                    .floors
                    .into_iter()
                    .map(|f| (f.id.to_string(), f.name, f.shop_count))
                    .collect(),
            })
            .collect(),
        shops: shops
            .into_iter()
            .map(|s| super::views::ShopView {
                building: s.building_name,
                floor: s.floor_name,
                number: s.number,
                name: s.name,
                area_m2: s
                    .area_centi_m2
                    .map(|a| format!("{}.{:02}", a / 100, a % 100))
                    .unwrap_or_default(),
                contact: [s.contact_name, s.contact_phone]
                    .join(" ")
                    .trim()
                    .to_owned(),
                status: s.status.to_string(),
            })
            .collect(),
    })
}

pub async fn create_building(csrf: String, name: String, address: String) -> Result<(), WebError> {
    let kept = serde_json::json!({ "name": &name, "address": &address });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        powertab_core::property::create_building(
            &mut tx,
            &principal,
            &powertab_core::property::BuildingInput { name, address },
        )
        .await?;
        tx.commit().await?;
        Ok("/property?ok=common.saved".to_owned())
    }
    .await;
    finish_keeping(result, "building-form", &kept)
}

pub async fn create_floor(csrf: String, building_id: String, name: String) -> Result<(), WebError> {
    let kept = serde_json::json!({ "building_id": &building_id, "name": &name });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let id: Uuid = building_id
            .parse()
            .map_err(|_| field_error("building_id"))?;
        let input = powertab_core::property::FloorInput {
            name,
            sort_order: 0,
        };
        powertab_core::property::create_floor(&mut tx, &principal, id, &input).await?;
        tx.commit().await?;
        Ok("/property?ok=common.saved".to_owned())
    }
    .await;
    finish_keeping(result, "floor-form", &kept)
}

pub async fn create_shop(
    csrf: String,
    floor_id: String,
    number: String,
    name: String,
    area_m2: String,
    contact_name: String,
    contact_phone: String,
) -> Result<(), WebError> {
    let typed = serde_json::json!({
        "floor_id": floor_id, "number": number, "name": name, "area_m2": area_m2,
        "contact_name": contact_name, "contact_phone": contact_phone,
    });
    let result = async {
        let (principal, mut tx) = session_for_change(&csrf).await?;
        let floor_id: Uuid = floor_id.parse().map_err(|_| field_error("floor_id"))?;
        let input = powertab_core::property::ShopInput {
            floor_id,
            number,
            name,
            area_m2,
            contact_name,
            contact_phone,
            status: String::new(),
        };
        powertab_core::property::create_shop(&mut tx, &principal, &input).await?;
        tx.commit().await?;
        Ok("/property?ok=common.saved".to_owned())
    }
    .await;
    finish_keeping(result, "shop-form", &typed)
}
