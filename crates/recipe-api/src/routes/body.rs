//! Reading JSON request bodies: the content type and charset (415), the size limit (413, on
//! `Content-Length` and again while reading) and the syntax (400), in that order
//! (docs/api.md#errors). What the document says is checked afterwards, by
//! [`crate::validation`].

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpMessage, HttpRequest};
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// Reads a JSON body: checks the content type (415), the size (413) and the syntax (400).
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    accepted: &[&str],
) -> Result<Value, ApiError> {
    let unsupported = || {
        ApiError::UnsupportedMediaType(format!("Content-Type must be {}", accepted.join(" or ")))
    };
    let mime = req
        .mime_type()
        .map_err(|_| unsupported())?
        .ok_or_else(unsupported)?;
    if !accepted.contains(&mime.essence_str()) {
        return Err(unsupported());
    }
    if let Some(charset) = mime.get_param(actix_web::mime::CHARSET) {
        // `utf8` is not the registered name, but common enough (MySQL's spelling) to take.
        let name = charset.as_str();
        if !(name.eq_ignore_ascii_case("utf-8") || name.eq_ignore_ascii_case("utf8")) {
            return Err(ApiError::UnsupportedMediaType(
                "the charset must be utf-8".to_string(),
            ));
        }
    }
    if content_length(req.headers()).is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::BadRequest("the request body could not be read".to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
