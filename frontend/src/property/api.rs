//! Server functions of the property page: the building tree and the forms that add buildings,
//! floors and shops.

use super::views::*;
use crate::web::WebError;
use leptos::prelude::*;

#[server(prefix = "/sfn", endpoint = "property")]
pub async fn get_property(q: String, building: String) -> Result<PropertyView, WebError> {
    super::server::get_property(q, building).await
}

// ---------------------------------------------------------------------------------------------
// Changes (HTML form posts)

#[server(prefix = "/sfn", endpoint = "building_create")]
pub async fn create_building(csrf: String, name: String, address: String) -> Result<(), WebError> {
    super::server::create_building(csrf, name, address).await
}

#[server(prefix = "/sfn", endpoint = "floor_create")]
pub async fn create_floor(csrf: String, building_id: String, name: String) -> Result<(), WebError> {
    super::server::create_floor(csrf, building_id, name).await
}

#[server(prefix = "/sfn", endpoint = "shop_create")]
pub async fn create_shop(
    csrf: String,
    floor_id: String,
    number: String,
    name: String,
    area_m2: String,
    contact_name: String,
    contact_phone: String,
) -> Result<(), WebError> {
    super::server::create_shop(
        csrf,
        floor_id,
        number,
        name,
        area_m2,
        contact_name,
        contact_phone,
    )
    .await
}
