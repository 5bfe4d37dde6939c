//! URL query helpers: a page's query parameters, building query strings, percent-encoding.

use crate::web::WebError;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// The error code a server function failed with, for `error.{code}` texts.
pub fn server_error_code(err: &WebError) -> String {
    err.code.clone()
}

/// A query parameter of the current URL, empty when absent.
pub fn query_param(name: &'static str) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    let query = use_query_map();
    move || query.read().get(name).unwrap_or_default()
}

/// `key=value&…` with the values percent-encoded; empty values are left out.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Undoes [`percent_encode`]; `None` for a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_strings_encode_values_and_skip_empty_ones() {
        assert_eq!(
            super::query_string(&[("q", "A 1&b"), ("model", ""), ("status", "any")]),
            "q=A%201%26b&status=any"
        );
    }
}
