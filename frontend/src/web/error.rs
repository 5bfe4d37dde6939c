//! The error every server function answers with: a code the page translates (`error.<code>`),
//! carried as a field of its own — not recognised inside a free-text message — and sent as JSON.
//! Core errors become their `CoreError::code()`; transport failures (the network, a broken
//! body) become `internal`. No detail of the server's side reaches the browser.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebError {
    /// `unauthorized`, `not_found`, `password_change_required`, `validation_failed`, …
    pub code: String,
}

impl WebError {
    pub fn new(code: impl Into<String>) -> WebError {
        WebError { code: code.into() }
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code)
    }
}

impl std::error::Error for WebError {}

impl FromServerFnError for WebError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        // Failures of the call itself, not of the service behind it.
        let code = match value {
            ServerFnErrorErr::Request(_) | ServerFnErrorErr::Response(_) => "unreachable",
            _ => "internal",
        };
        WebError::new(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_survives_the_round_trip_and_transport_failures_say_so() {
        let sent = WebError::new("password_change_required");
        let bytes = sent.ser();
        assert_eq!(WebError::de(bytes), sent);
        assert_eq!(
            WebError::from_server_fn_error(ServerFnErrorErr::Request("down".into())).code,
            "unreachable"
        );
        assert_eq!(WebError::de(b"not json".to_vec().into()).code, "internal");
    }
}
