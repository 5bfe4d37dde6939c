//! Cursor pagination shared by every list (DESIGN.md: API conventions): `limit` defaults to 50
//! and is capped at 500; the cursor is opaque to clients (the last item's time-ordered uuid v7,
//! base64url encoded), so lists stay stable while rows are added.

use crate::kernel::error::{CoreError, CoreResult};
use base64::Engine;
use serde::Serialize;
use uuid::Uuid;

pub const LIMIT_DEFAULT: i64 = 50;
pub const LIMIT_MAX: i64 = 500;
/// Exports read at most this many rows in one request (larger ones become background jobs in a
/// later issue).
pub const EXPORT_ROWS_MAX: i64 = 10_000;

/// One page of a list.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A checked `limit`.
pub fn limit(requested: Option<i64>) -> CoreResult<i64> {
    match requested {
        None => Ok(LIMIT_DEFAULT),
        Some(n) if (1..=LIMIT_MAX).contains(&n) => Ok(n),
        Some(_) => Err(CoreError::field(
            "limit",
            format!("between 1 and {LIMIT_MAX}"),
        )),
    }
}

pub fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: Option<&str>) -> CoreResult<Option<Uuid>> {
    let Some(text) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| CoreError::field("cursor", "not a cursor from this list"))
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
pub fn page_from<T>(mut rows: Vec<T>, limit: i64, id_of: impl Fn(&T) -> Uuid) -> Page<T> {
    let limit = usize::try_from(limit).expect("limit is checked positive");
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| encode_cursor(id_of(r)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(500)).unwrap(), 500);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(501)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(Some(&encode_cursor(id))).unwrap(), Some(id));
        assert_eq!(decode_cursor(None).unwrap(), None);
        assert!(decode_cursor(Some("!!")).is_err());
    }

    #[test]
    fn a_page_has_a_cursor_only_when_more_rows_exist() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = page_from(ids.clone(), 2, |id| *id);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(encode_cursor(ids[1])));
        let page = page_from(ids, 3, |id| *id);
        assert_eq!(page.next_cursor, None);
    }
}
