//! View types every context shares: a form kept after a refusal and a page of a list.

use serde::{Deserialize, Serialize};

/// What a refused form had in it, handed back so the page shows it again (never passwords,
/// registration bytes or the CSRF token), with the fields the refusal named. One pattern for
/// every form: the server function ends with `finish_keeping(result, "<form id>", &input)`, and
/// the page's form reads `use_kept("<form id>")` (crate::components) for its values and marks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KeptForm {
    /// The form's id (`user-form`); empty when nothing was kept.
    pub form: String,
    pub values: std::collections::BTreeMap<String, String>,
    /// The fields the refusal named, marked `aria-invalid` in place.
    pub fields: Vec<String>,
}

impl KeptForm {
    /// This kept form if it belongs to `form_id`, else an empty one (another form on the page was
    /// refused).
    pub fn for_form(&self, form_id: &str) -> KeptForm {
        if self.form == form_id {
            self.clone()
        } else {
            KeptForm::default()
        }
    }

    /// `Some("true")` for a field the refusal named (the value of `aria-invalid`).
    pub fn invalid(&self, field: &str) -> Option<&'static str> {
        self.fields.iter().any(|f| f == field).then_some("true")
    }

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
