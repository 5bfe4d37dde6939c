//! View types of the import pages: an upload's dry run and outcome.

use serde::{Deserialize, Serialize};

/// An import wizard upload and its report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImportView {
    pub id: String,
    pub kind: String,
    pub filename: String,
    pub rows: usize,
    pub created: usize,
    /// (row, column, message)
    pub errors: Vec<(usize, String, String)>,
    pub confirmed: bool,
}
