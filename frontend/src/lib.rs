//! PowerTab's web app (Leptos 0.8): server-rendered pages that hydrate with WebAssembly and
//! keep working with JavaScript off (every change is a plain HTML form posted to a server
//! function, which answers with a redirect). Built twice: with `ssr` into the server, and with
//! `hydrate` into the wasm bundle (`infra/build-wasm.sh`).

// Leptos view types nest deeply; the wasm build needs more room to compute their layout.
#![recursion_limit = "256"]

pub mod app;
pub mod chart;
pub mod components;
pub mod i18n;
pub mod web;

// One module per context, as in core: views, server functions, their bodies, pages.
pub mod billing;
pub mod field;
pub mod import;
pub mod power;
pub mod property;
pub mod selfservice;
pub mod tariff;
pub mod tenancy;

/// The WebAssembly entry point: attaches the app to the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // A marker for browser tests (and curious humans) that the page is interactive now.
    if let Some(body) = leptos::prelude::document().body() {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}
