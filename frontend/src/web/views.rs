//! View types every context shares: a form kept after a refusal and a page of a list.

use serde::{Deserialize, Serialize};

/// What a refused form had in it, handed back so the page shows it again (never passwords or
/// the CSRF token), with the fields the refusal named.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeptForm {
    pub values: std::collections::BTreeMap<String, String>,
}

impl KeptForm {
    /// The kept value of `field`, or `default` when nothing was kept.
    pub fn value_or(&self, field: &str, default: &str) -> String {
        self.values
            .get(field)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// Whether `field` was `value` in the refused form (for selects).
    pub fn chose(&self, field: &str, value: &str) -> bool {
        self.values.get(field).is_some_and(|v| v == value)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
