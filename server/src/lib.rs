//! The `powertab` server as a library, so the binary and the tests run the very same code:
//! configuration, the HTTP application (REST API, web pages, operations endpoints) and the
//! command-line subcommands.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod sandbox_pay;
pub mod web;
pub mod wechat_oauth;
pub mod workers;
