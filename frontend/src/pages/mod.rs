//! One module per page.

pub mod audit;
pub mod companies;
pub mod home;
pub mod import;
pub mod login;
pub mod password;
pub mod property;
pub mod tariffs;
pub mod users;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// A query parameter of the current URL, empty when absent.
pub fn query_param(name: &'static str) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    let query = use_query_map();
    move || query.read().get(name).unwrap_or_default()
}
