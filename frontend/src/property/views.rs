//! View types of the property page: buildings, floors and shops.

use serde::{Deserialize, Serialize};

/// The property tree for the property page.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BuildingView {
    pub id: String,
    pub name: String,
    pub address: String,
    pub shop_count: i64,
    /// (floor id, name, shop count)
    pub floors: Vec<(String, String, i64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShopView {
    pub building: String,
    pub floor: String,
    pub number: String,
    pub name: String,
    pub area_m2: String,
    pub contact: String,
    pub status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PropertyView {
    pub buildings: Vec<BuildingView>,
    pub shops: Vec<ShopView>,
}
