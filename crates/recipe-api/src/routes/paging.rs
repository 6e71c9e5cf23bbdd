//! Keyset paging of the list endpoints (docs/api.md#paging): the `limit`, `cursor`,
//! `ingredient_id` and `q` query parameters, the opaque cursors the service issues, and
//! cutting a page (and its `next_cursor`) from `limit + 1` fetched rows.

use actix_web::web;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::ApiError;
use crate::validation;

/// Paging parameters of list endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams {
    /// Keyset position: items with an id above this.
    pub after: i64,
    /// Items per page, 1..=100.
    pub limit: i64,
    /// `ingredient_id` filter (recipes).
    pub ingredient_id: Option<i64>,
    /// `q` name prefix (ingredients).
    pub q: Option<String>,
}

/// Default and maximum page sizes.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// Parses `limit`, `cursor`, `ingredient_id` and `q`; malformed values are a 400.
pub fn page_params(query_string: &str) -> Result<PageParams, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query_string)
        .map_err(|_| ApiError::BadRequest("the query string is malformed".to_string()))?
        .into_inner();
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let after = match get("cursor") {
        None => 0,
        Some(raw) => decode_cursor(raw)
            .ok_or_else(|| ApiError::BadRequest("cursor is malformed".to_string()))?,
    };
    let ingredient_id = match get("ingredient_id") {
        None => None,
        Some(raw) => Some(validation::path_id(raw).ok_or_else(|| {
            ApiError::BadRequest("ingredient_id must be a positive 64-bit integer".to_string())
        })?),
    };
    Ok(PageParams {
        after,
        limit,
        ingredient_id,
        q: get("q")
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_string),
    })
}

/// The opaque cursor pointing after `id`.
pub fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("id:{id}"))
}

/// The id a cursor points after, if the cursor is one we issued.
pub fn decode_cursor(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    validation::path_id(text.strip_prefix("id:")?)
}

/// Takes the page from `limit + 1` fetched rows: the extra row only says there is more.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    id_of: impl Fn(&T) -> i64,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|r| encode_cursor(id_of(r)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_cursors_are_rejected() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        for bad in ["", "!!", "MTI", "aWQ6MA", "aWQ6LTE", "aWQ6eA"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn page_params_enforce_the_limit_range_and_the_cursor_format() {
        assert_eq!(page_params("").unwrap().limit, 20);
        assert_eq!(page_params("limit=1").unwrap().limit, 1);
        assert_eq!(page_params("limit=100").unwrap().limit, 100);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=x",
            "cursor=zz",
            "ingredient_id=0",
            "ingredient_id=a",
        ] {
            assert!(page_params(bad).is_err(), "{bad}");
        }
        let cursor = encode_cursor(7);
        assert_eq!(page_params(&format!("cursor={cursor}")).unwrap().after, 7);
    }

    #[test]
    fn pagination_reports_a_next_cursor_only_when_more_rows_exist() {
        let (items, next) = paginate(vec![1, 2, 3], 2, |x| *x);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next.and_then(|c| decode_cursor(&c)), Some(2));
        let (items, next) = paginate(vec![1, 2], 2, |x| *x);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, None);
    }
}
