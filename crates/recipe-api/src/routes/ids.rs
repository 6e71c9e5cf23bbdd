//! Path ids: `{id}` in a route must be a positive 64-bit integer in plain decimal digits, or
//! the answer is 400 (docs/api.md#conventions).

use crate::error::ApiError;
use crate::validation;

/// Parses a path id; anything but a positive 64-bit integer is a 400.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    validation::path_id(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("'{raw}' is not a positive 64-bit integer id")))
}
