//! A company's property: buildings → floors → shops. Staff read it; company admins and operators
//! holding the `settings` right change it; an operator limited to some buildings sees and
//! changes only those (anything else is 404 for them). Every change is audited. All functions
//! run in the caller's company-scoped transaction.

use crate::auth::Principal;
use crate::kernel::error::{CoreError, CoreResult};
use crate::kernel::money::parse_hundredths;
use crate::kernel::names::PhoneNumber;
use crate::tenancy::audit;
use crate::tenancy::audit::snapshot as json;
use crate::tenancy::roles::{Need, Right};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, QueryBuilder, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

crate::vocabulary! {
    /// Whether a shop has a tenant (DOMAIN.md). Opening an account makes it occupied.
    pub enum ShopStatus {
        Vacant = "vacant",
        Occupied = "occupied",
        /// Out of use (merged, demolished); kept for its history.
        Closed = "closed",
    }
}

/// A building with its floors, as the property tree shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Building {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    pub floors: Vec<Floor>,
    pub shop_count: i64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Floor {
    pub id: Uuid,
    pub building_id: Uuid,
    pub name: String,
    pub sort_order: i32,
    pub shop_count: i64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shop {
    pub id: Uuid,
    pub building_id: Uuid,
    pub building_name: String,
    pub floor_id: Uuid,
    pub floor_name: String,
    pub number: String,
    pub name: String,
    /// Area in 0.01 m².
    pub area_centi_m2: Option<i64>,
    pub contact_name: String,
    pub contact_phone: String,
    pub status: ShopStatus,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct BuildingInput {
    pub name: String,
    #[serde(default)]
    pub address: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct FloorInput {
    pub name: String,
    #[serde(default)]
    pub sort_order: i32,
}

/// A shop as forms and imports give it. `area_m2` is text like `85.5` (two decimals at most).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ShopInput {
    pub floor_id: Uuid,
    pub number: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub area_m2: String,
    #[serde(default)]
    pub contact_name: String,
    #[serde(default)]
    pub contact_phone: String,
    /// `vacant` (default), `occupied` or `closed`.
    #[serde(default)]
    pub status: String,
}

/// Filters of the shop list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ShopFilter {
    pub building_id: Option<Uuid>,
    pub floor_id: Option<Uuid>,
    pub status: Option<String>,
    /// Matches shop number, name or contact.
    pub q: Option<String>,
}

/// The buildings an operator is limited to; `None` when the caller sees all.
fn limited_to(principal: &Principal) -> Option<&[Uuid]> {
    principal.building_limit()
}

fn can_see_building(principal: &Principal, building_id: Uuid) -> bool {
    limited_to(principal).is_none_or(|ids| ids.contains(&building_id))
}

fn check_name(fields: &mut BTreeMap<String, String>, field: &str, value: &str, max: usize) {
    let len = value.trim().chars().count();
    if len == 0 || len > max {
        fields.insert(field.into(), format!("1–{max} characters"));
    }
}

// ---------------------------------------------------------------------------------------------
// Buildings and floors

/// Every building the caller may see, with floors and shop counts, by name.
#[tracing::instrument(skip_all)]
pub async fn tree(conn: &mut PgConnection, principal: &Principal) -> CoreResult<Vec<Building>> {
    principal.require_read_company()?;
    let rows = sqlx::query(
        "select b.id, b.name, b.address, (select count(*) from shops s where s.building_id = b.id) as shop_count
         from buildings b where ($1::uuid[] is null or b.id = any($1)) order by b.name",
    )
    .bind(limited_to(principal).map(<[Uuid]>::to_vec))
    .fetch_all(&mut *conn)
    .await?;
    let floors = sqlx::query(
        "select f.id, f.building_id, f.name, f.sort_order, (select count(*) from shops s where s.floor_id = f.id) as shop_count
         from floors f order by f.sort_order, f.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut floors_by_building: BTreeMap<Uuid, Vec<Floor>> = BTreeMap::new();
    for r in floors {
        let floor = Floor {
            id: r.try_get("id")?,
            building_id: r.try_get("building_id")?,
            name: r.try_get("name")?,
            sort_order: r.try_get("sort_order")?,
            shop_count: r.try_get("shop_count")?,
        };
        floors_by_building
            .entry(floor.building_id)
            .or_default()
            .push(floor);
    }
    rows.into_iter()
        .map(|r| {
            let id: Uuid = r.try_get("id")?;
            Ok(Building {
                id,
                name: r.try_get("name")?,
                address: r.try_get("address")?,
                floors: floors_by_building.remove(&id).unwrap_or_default(),
                shop_count: r.try_get("shop_count")?,
            })
        })
        .collect()
}

/// One building the caller may see.
#[tracing::instrument(skip_all)]
pub async fn building(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<Building> {
    if !can_see_building(principal, id) {
        return Err(CoreError::NotFound("building"));
    }
    tree(conn, principal)
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or(CoreError::NotFound("building"))
}

async fn name_taken(
    conn: &mut PgConnection,
    sql: &str,
    name: &str,
    except: Option<Uuid>,
) -> CoreResult<bool> {
    Ok(sqlx::query_scalar(sql)
        .bind(name.trim())
        .bind(except)
        .fetch_one(conn)
        .await?)
}

/// Checks a building's fields; `except` is the building being renamed.
async fn check_building(
    conn: &mut PgConnection,
    input: &BuildingInput,
    except: Option<Uuid>,
) -> CoreResult<()> {
    let mut fields = BTreeMap::new();
    check_name(&mut fields, "name", &input.name, 100);
    if fields.is_empty()
        && name_taken(
            conn,
            "select exists (select 1 from buildings where name = $1 and id is distinct from $2)",
            &input.name,
            except,
        )
        .await?
    {
        fields.insert("name".into(), "a building with this name exists".into());
    }
    CoreError::check_fields(fields)
}

#[tracing::instrument(skip_all)]
pub async fn create_building(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &BuildingInput,
) -> CoreResult<Building> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    if limited_to(principal).is_some() {
        return Err(CoreError::Forbidden(
            "an operator limited to buildings cannot add buildings".into(),
        ));
    }
    check_building(conn, input, None).await?;
    let id = Uuid::now_v7();
    sqlx::query("insert into buildings (id, name, address) values ($1, $2, $3)")
        .bind(id)
        .bind(input.name.trim())
        .bind(input.address.trim())
        .execute(&mut *conn)
        .await?;
    let created = building(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "building.create",
        "building",
        Some(id.to_string()),
        None,
        Some(json(&created)),
    )
    .await?;
    Ok(created)
}

#[tracing::instrument(skip_all)]
pub async fn update_building(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    input: &BuildingInput,
) -> CoreResult<Building> {
    let before = building(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    check_building(conn, input, Some(id)).await?;
    sqlx::query("update buildings set name = $2, address = $3, updated_at = now() where id = $1")
        .bind(id)
        .bind(input.name.trim())
        .bind(input.address.trim())
        .execute(&mut *conn)
        .await?;
    let after = building(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "building.update",
        "building",
        Some(id.to_string()),
        Some(json(&before)),
        Some(json(&after)),
    )
    .await?;
    Ok(after)
}

/// Deletes an empty building (its floors go with it); one with shops is a conflict.
#[tracing::instrument(skip_all)]
pub async fn delete_building(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<()> {
    let before = building(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    if before.shop_count > 0 {
        return Err(CoreError::Conflict("the building still has shops".into()));
    }
    sqlx::query("delete from floors where building_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from buildings where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "building.delete",
        "building",
        Some(id.to_string()),
        Some(json(&before)),
        None,
    )
    .await?;
    Ok(())
}

async fn floor(conn: &mut PgConnection, principal: &Principal, id: Uuid) -> CoreResult<Floor> {
    principal.require_read_company()?;
    let row = sqlx::query(
        "select f.id, f.building_id, f.name, f.sort_order, (select count(*) from shops s where s.floor_id = f.id) as shop_count
         from floors f where f.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(CoreError::NotFound("floor"))?;
    let floor = Floor {
        id: row.try_get("id")?,
        building_id: row.try_get("building_id")?,
        name: row.try_get("name")?,
        sort_order: row.try_get("sort_order")?,
        shop_count: row.try_get("shop_count")?,
    };
    if !can_see_building(principal, floor.building_id) {
        return Err(CoreError::NotFound("floor"));
    }
    Ok(floor)
}

/// Checks a floor's fields in its building; `except` is the floor being renamed.
async fn check_floor(
    conn: &mut PgConnection,
    building_id: Uuid,
    input: &FloorInput,
    except: Option<Uuid>,
) -> CoreResult<()> {
    let mut fields = BTreeMap::new();
    check_name(&mut fields, "name", &input.name, 30);
    if !(-100..=1000).contains(&input.sort_order) {
        fields.insert("sort_order".into(), "between -100 and 1000".into());
    }
    let taken: bool = sqlx::query_scalar(
        "select exists (select 1 from floors where building_id = $1 and name = $2 and id is distinct from $3)",
    )
    .bind(building_id)
    .bind(input.name.trim())
    .bind(except)
    .fetch_one(&mut *conn)
    .await?;
    if taken {
        fields.insert(
            "name".into(),
            "this building already has a floor with this name".into(),
        );
    }
    CoreError::check_fields(fields)
}

#[tracing::instrument(skip_all)]
pub async fn create_floor(
    conn: &mut PgConnection,
    principal: &Principal,
    building_id: Uuid,
    input: &FloorInput,
) -> CoreResult<Floor> {
    building(conn, principal, building_id).await?;
    principal.require(Need::Act(Right::Settings))?;
    check_floor(conn, building_id, input, None).await?;
    let id = Uuid::now_v7();
    sqlx::query("insert into floors (id, building_id, name, sort_order) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(building_id)
        .bind(input.name.trim())
        .bind(input.sort_order)
        .execute(&mut *conn)
        .await?;
    let created = floor(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "floor.create",
        "floor",
        Some(id.to_string()),
        None,
        Some(json(&created)),
    )
    .await?;
    Ok(created)
}

#[tracing::instrument(skip_all)]
pub async fn update_floor(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    input: &FloorInput,
) -> CoreResult<Floor> {
    let before = floor(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    check_floor(conn, before.building_id, input, Some(id)).await?;
    sqlx::query("update floors set name = $2, sort_order = $3 where id = $1")
        .bind(id)
        .bind(input.name.trim())
        .bind(input.sort_order)
        .execute(&mut *conn)
        .await?;
    let after = floor(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "floor.update",
        "floor",
        Some(id.to_string()),
        Some(json(&before)),
        Some(json(&after)),
    )
    .await?;
    Ok(after)
}

#[tracing::instrument(skip_all)]
pub async fn delete_floor(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> CoreResult<()> {
    let before = floor(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    if before.shop_count > 0 {
        return Err(CoreError::Conflict("the floor still has shops".into()));
    }
    sqlx::query("delete from floors where id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    audit::record(
        conn,
        principal,
        "floor.delete",
        "floor",
        Some(id.to_string()),
        Some(json(&before)),
        None,
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shops

const SHOP_SELECT: &str =
    "select s.id, s.building_id, b.name as building_name, s.floor_id, f.name as floor_name,
        s.number, s.name, s.area_centi_m2, s.contact_name, s.contact_phone, s.status
     from shops s join buildings b on b.id = s.building_id join floors f on f.id = s.floor_id";

fn shop_from(r: sqlx::postgres::PgRow) -> CoreResult<Shop> {
    Ok(Shop {
        id: r.try_get("id")?,
        building_id: r.try_get("building_id")?,
        building_name: r.try_get("building_name")?,
        floor_id: r.try_get("floor_id")?,
        floor_name: r.try_get("floor_name")?,
        number: r.try_get("number")?,
        name: r.try_get("name")?,
        area_centi_m2: r.try_get("area_centi_m2")?,
        contact_name: r.try_get("contact_name")?,
        contact_phone: r.try_get("contact_phone")?,
        status: r.try_get("status")?,
    })
}

/// Shops the caller may see, by building, floor order and number. Not paginated: a property
/// has a few thousand shops at most, and the tree page wants them all.
#[tracing::instrument(skip_all)]
pub async fn shops(
    conn: &mut PgConnection,
    principal: &Principal,
    filter: &ShopFilter,
) -> CoreResult<Vec<Shop>> {
    principal.require_read_company()?;
    let mut q = QueryBuilder::new(SHOP_SELECT);
    q.push(" where true");
    if let Some(ids) = limited_to(principal) {
        q.push(" and s.building_id = any(")
            .push_bind(ids.to_vec())
            .push(")");
    }
    if let Some(id) = filter.building_id {
        q.push(" and s.building_id = ").push_bind(id);
    }
    if let Some(id) = filter.floor_id {
        q.push(" and s.floor_id = ").push_bind(id);
    }
    if let Some(status) = filter.status.as_deref().filter(|s| !s.is_empty()) {
        q.push(" and s.status = ").push_bind(status.to_owned());
    }
    if let Some(text) = filter.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        q.push(" and (s.number ilike ").push_bind(pattern.clone());
        q.push(" or s.name ilike ").push_bind(pattern.clone());
        q.push(" or s.contact_name ilike ")
            .push_bind(pattern.clone());
        q.push(" or s.contact_phone ilike ")
            .push_bind(pattern)
            .push(")");
    }
    q.push(" order by b.name, f.sort_order, f.name, s.number limit 20000");
    let rows = q.build().fetch_all(conn).await?;
    rows.into_iter().map(shop_from).collect()
}

#[tracing::instrument(skip_all)]
pub async fn shop(conn: &mut PgConnection, principal: &Principal, id: Uuid) -> CoreResult<Shop> {
    principal.require_read_company()?;
    let row = sqlx::query(&format!("{SHOP_SELECT} where s.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(CoreError::NotFound("shop"))?;
    let shop = shop_from(row)?;
    if !can_see_building(principal, shop.building_id) {
        return Err(CoreError::NotFound("shop"));
    }
    Ok(shop)
}

/// A checked shop: its building, area and phone parsed.
struct CheckedShop {
    building_id: Uuid,
    area_centi_m2: Option<i64>,
    contact_phone: String,
    status: ShopStatus,
}

async fn check_shop(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &ShopInput,
    except: Option<Uuid>,
) -> CoreResult<CheckedShop> {
    let mut fields = BTreeMap::new();
    let floor = match floor(conn, principal, input.floor_id).await {
        Ok(floor) => Some(floor),
        Err(CoreError::NotFound(_)) => {
            fields.insert("floor_id".into(), "no such floor".into());
            None
        }
        Err(e) => return Err(e),
    };
    check_name(&mut fields, "number", &input.number, 30);
    if input.name.chars().count() > 100 {
        fields.insert("name".into(), "at most 100 characters".into());
    }
    let area = match input.area_m2.trim() {
        "" => None,
        text => match parse_hundredths(text) {
            Ok(centi) if centi >= 0 => Some(centi),
            _ => {
                fields.insert("area_m2".into(), "square metres, e.g. 85.5".into());
                None
            }
        },
    };
    let phone = match input.contact_phone.trim() {
        "" => String::new(),
        text => PhoneNumber::parse(text)
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|e| {
                fields.insert("contact_phone".into(), e.0.into());
                String::new()
            }),
    };
    let status = match input.status.trim() {
        "" => ShopStatus::Vacant,
        text => text.parse().unwrap_or_else(|_| {
            fields.insert("status".into(), ShopStatus::choices());
            ShopStatus::Vacant
        }),
    };
    if let (Some(floor), true) = (&floor, !fields.contains_key("number")) {
        let taken: bool = sqlx::query_scalar(
            "select exists (select 1 from shops where building_id = $1 and number = $2 and id is distinct from $3)",
        )
        .bind(floor.building_id)
        .bind(input.number.trim())
        .bind(except)
        .fetch_one(&mut *conn)
        .await?;
        if taken {
            fields.insert(
                "number".into(),
                "this building already has a shop with this number".into(),
            );
        }
    }
    CoreError::check_fields(fields)?;
    Ok(CheckedShop {
        building_id: floor.expect("checked above").building_id,
        area_centi_m2: area,
        contact_phone: phone,
        status,
    })
}

#[tracing::instrument(skip_all)]
pub async fn create_shop(
    conn: &mut PgConnection,
    principal: &Principal,
    input: &ShopInput,
) -> CoreResult<Shop> {
    principal.require_read_company()?;
    principal.require(Need::Act(Right::Settings))?;
    let checked = check_shop(conn, principal, input, None).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into shops (id, building_id, floor_id, number, name, area_centi_m2, contact_name, contact_phone, status)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(checked.building_id)
    .bind(input.floor_id)
    .bind(input.number.trim())
    .bind(input.name.trim())
    .bind(checked.area_centi_m2)
    .bind(input.contact_name.trim())
    .bind(&checked.contact_phone)
    .bind(checked.status)
    .execute(&mut *conn)
    .await?;
    let created = shop(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "shop.create",
        "shop",
        Some(id.to_string()),
        None,
        Some(json(&created)),
    )
    .await?;
    Ok(created)
}

#[tracing::instrument(skip_all)]
pub async fn update_shop(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    input: &ShopInput,
) -> CoreResult<Shop> {
    let before = shop(conn, principal, id).await?;
    principal.require(Need::Act(Right::Settings))?;
    let checked = check_shop(conn, principal, input, Some(id)).await?;
    sqlx::query(
        "update shops set building_id = $2, floor_id = $3, number = $4, name = $5, area_centi_m2 = $6,
             contact_name = $7, contact_phone = $8, status = $9, updated_at = now()
         where id = $1",
    )
    .bind(id)
    .bind(checked.building_id)
    .bind(input.floor_id)
    .bind(input.number.trim())
    .bind(input.name.trim())
    .bind(checked.area_centi_m2)
    .bind(input.contact_name.trim())
    .bind(&checked.contact_phone)
    .bind(checked.status)
    .execute(&mut *conn)
    .await?;
    let after = shop(conn, principal, id).await?;
    audit::record(
        conn,
        principal,
        "shop.update",
        "shop",
        Some(id.to_string()),
        Some(json(&before)),
        Some(json(&after)),
    )
    .await?;
    Ok(after)
}
