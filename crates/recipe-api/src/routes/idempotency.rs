//! `Idempotency-Key` on writes (docs/api.md#idempotency). A client that retries a write with
//! the same key gets the first attempt's response instead of a second write.
//!
//! The key's row is inserted as the first statement of the write's transaction and completed
//! with the response at its end, so a stored response exists exactly when the write committed,
//! and a failed or interrupted write leaves no trace (its rollback removes the claim). A
//! concurrent request with the same key waits at most a second on the claim's row lock: if the
//! first commits by then, it gets the stored response; otherwise 409. Keys belong to the bearer
//! token that sent them and expire after a day.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use diesel::mysql::MysqlConnection;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::db::db;
use super::state::AppState;
use crate::auth::bearer_token;
use crate::error::{classify, ApiError, DbErrorClass};
use crate::models;
use crate::models::idempotency::{self as model, StoredResponse};

/// The request header.
pub const HEADER: &str = "Idempotency-Key";
/// The header marking a replayed response.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// How long a key is remembered by default (`RECIPE_API_IDEMPOTENCY_TTL_SECS`).
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a request waits for a concurrent one holding the same key before 409.
pub const CLAIM_WAIT_SECS: u64 = 1;

/// Seconds since the epoch of this process's last purge of expired keys.
static LAST_PURGE: AtomicI64 = AtomicI64::new(0);

/// A write's key: who sent it, the key, and a digest of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    principal: [u8; 32],
    key: String,
    request_hash: [u8; 32],
}

impl IdempotencyKey {
    /// The request's key: `None` without the header, 400 when it is not 1..=255 visible ASCII
    /// characters. `body` is the parsed JSON body, if the write has one.
    pub fn from_request(
        req: &HttpRequest,
        body: Option<&Value>,
    ) -> Result<Option<IdempotencyKey>, ApiError> {
        let Some(value) = req.headers().get(HEADER) else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| is_valid_key(k))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{HEADER} must be 1 to 255 visible ASCII characters"
                ))
            })?;
        let principal: [u8; 32] = Sha256::digest(bearer_token(req).unwrap_or_default()).into();
        let mut request = Sha256::new();
        request.update(req.method().as_str());
        request.update(b"\n");
        request.update(req.path());
        request.update(b"\n");
        if let Some(if_match) = req.headers().get(header::IF_MATCH) {
            request.update(if_match.as_bytes());
        }
        request.update(b"\n");
        if let Some(body) = body {
            request.update(serde_json::to_vec(body).unwrap_or_default());
        }
        Ok(Some(IdempotencyKey {
            principal,
            key: key.to_string(),
            request_hash: request.finalize().into(),
        }))
    }
}

fn is_valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What claiming a key found.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// This request holds the key: run the write.
    Proceed,
    /// The key's write committed: answer with its response.
    Replay(StoredResponse),
}

/// Runs a write (`work`, inside one transaction) and answers with `respond`'s response; with a
/// key, replays the stored response of an earlier committed attempt instead. Returns the
/// response and, when this request wrote, the written value.
pub async fn write<T, W, R>(
    state: &AppState,
    key: Option<IdempotencyKey>,
    mut work: W,
    respond: R,
) -> Result<(HttpResponse, Option<T>), ApiError>
where
    T: Send + 'static,
    W: FnMut(&mut MysqlConnection) -> Result<T, ApiError> + Send + 'static,
    R: Fn(&T) -> StoredResponse + Send + 'static,
{
    let lock_wait = models::lock_wait_secs(state.query_timeout);
    let ttl = state.idempotency_ttl;
    let (stored, value) = db(state, move |conn| {
        let Some(key) = key else {
            let value = models::transaction(conn, &mut work)?;
            return Ok((respond(&value), Some(value)));
        };
        purge_now_and_then(conn, models::now());
        models::transaction(conn, |conn| {
            if let Claim::Replay(stored) = claim(conn, &key, lock_wait, ttl)? {
                return Ok((stored, None));
            }
            let value = work(conn)?;
            let stored = respond(&value);
            model::complete(conn, &key.principal, &key.key, &stored)?;
            Ok((stored, Some(value)))
        })
    })
    .await?;
    Ok((response(&stored, value.is_none()), value))
}

fn in_progress() -> ApiError {
    ApiError::Conflict(format!(
        "a request with this {HEADER} is in progress; retry shortly"
    ))
}

/// Claims the key inside the write's transaction. Waits at most [`CLAIM_WAIT_SECS`] for a
/// concurrent request holding the same key (`lock_wait` is the session's usual limit, put
/// back after).
fn claim(
    conn: &mut MysqlConnection,
    key: &IdempotencyKey,
    lock_wait: u64,
    ttl: Duration,
) -> Result<Claim, ApiError> {
    let now = models::now();
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    // Twice at most: a row that expired is deleted, then claimed afresh.
    for _ in 0..2 {
        models::set_lock_wait(conn, CLAIM_WAIT_SECS)?;
        let inserted = model::insert_claim(
            conn,
            &key.principal,
            &key.key,
            &key.request_hash,
            now,
            expires_at,
        );
        models::set_lock_wait(conn, lock_wait)?;
        match inserted {
            Ok(true) => return Ok(Claim::Proceed),
            Ok(false) => {}
            Err(e) if classify(&e) == DbErrorClass::Contention => return Err(in_progress()),
            Err(e) => return Err(e.into()),
        }
        let Some(row) = model::find(conn, &key.principal, &key.key)? else {
            continue;
        };
        if row.expires_at < now {
            model::delete_expired(conn, &key.principal, &key.key, now)?;
            continue;
        }
        if row.request_hash != key.request_hash {
            return Err(ApiError::field(
                HEADER,
                "was already used with a different request",
            ));
        }
        return row.response().map(Claim::Replay).ok_or_else(in_progress);
    }
    Err(in_progress())
}

/// Deletes expired keys, at most once a minute per process and 1,000 rows at a time.
fn purge_now_and_then(conn: &mut MysqlConnection, now: chrono::NaiveDateTime) {
    let seconds = now.and_utc().timestamp();
    let last = LAST_PURGE.load(Ordering::Relaxed);
    if seconds - last < 60
        || LAST_PURGE
            .compare_exchange(last, seconds, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if let Err(e) = model::purge_expired(conn, now, 1000) {
        tracing::warn!(error = %e, "could not purge expired idempotency keys");
    }
}

/// The HTTP response of a write (fresh or replayed).
fn response(stored: &StoredResponse, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut builder = HttpResponse::build(status);
    if let Some(location) = &stored.location {
        builder.insert_header((header::LOCATION, location.as_str()));
    }
    if let Some(etag) = &stored.etag {
        builder.insert_header((header::ETAG, etag.as_str()));
    }
    if replayed {
        builder.insert_header((REPLAYED, "true"));
    }
    match &stored.body {
        Some(body) => builder.content_type("application/json").body(body.clone()),
        None => builder.finish(),
    }
}

/// A stored response with a JSON body.
pub fn json_response<T: serde::Serialize>(
    status: StatusCode,
    location: Option<String>,
    etag: Option<String>,
    body: &T,
) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        location,
        etag,
        body: Some(serde_json::to_vec(body).unwrap_or_default()),
    }
}

/// A stored response without a body (204).
pub fn empty_response(status: StatusCode) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        location: None,
        etag: None,
        body: None,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_characters() {
        assert!(is_valid_key("a"));
        assert!(is_valid_key(&"k".repeat(255)));
        for bad in ["", " ", "a b", "ä", &"k".repeat(256)] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
        let req = TestRequest::post()
            .insert_header((HEADER, "a b"))
            .to_http_request();
        assert!(matches!(
            IdempotencyKey::from_request(&req, None),
            Err(ApiError::BadRequest(_))
        ));
        let none = TestRequest::post().to_http_request();
        assert!(IdempotencyKey::from_request(&none, None).unwrap().is_none());
    }

    #[test]
    fn the_request_digest_covers_token_method_path_if_match_and_body() {
        let key = |token: &str, method: &str, path: &str, if_match: Option<&str>, body: Value| {
            let mut req = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path)
                .insert_header((HEADER, "k1"))
                .insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
            if let Some(tag) = if_match {
                req = req.insert_header((header::IF_MATCH, tag));
            }
            IdempotencyKey::from_request(&req.to_http_request(), Some(&body))
                .unwrap()
                .unwrap()
        };
        let base = key("t", "POST", "/v1/recipes", None, json!({"title": "a"}));
        assert_eq!(
            base.request_hash,
            key("t", "POST", "/v1/recipes", None, json!({"title": "a"})).request_hash
        );
        for other in [
            key("t", "POST", "/v1/recipes", None, json!({"title": "b"})),
            key("t", "PUT", "/v1/recipes", None, json!({"title": "a"})),
            key("t", "POST", "/v1/ingredients", None, json!({"title": "a"})),
            key(
                "t",
                "POST",
                "/v1/recipes",
                Some("\"1\""),
                json!({"title": "a"}),
            ),
        ] {
            assert_ne!(base.request_hash, other.request_hash);
            assert_eq!(base.principal, other.principal);
        }
        let other_token = key("u", "POST", "/v1/recipes", None, json!({"title": "a"}));
        assert_ne!(base.principal, other_token.principal);
    }

    #[test]
    fn replayed_responses_keep_status_location_etag_and_body() {
        let stored = json_response(
            StatusCode::CREATED,
            Some("/v1/recipes/7".into()),
            Some("\"1\"".into()),
            &json!({"id": 7}),
        );
        let replay = response(&stored, true);
        assert_eq!(replay.status(), StatusCode::CREATED);
        let headers = replay.headers();
        assert_eq!(headers.get(header::LOCATION).unwrap(), "/v1/recipes/7");
        assert_eq!(headers.get(header::ETAG).unwrap(), "\"1\"");
        assert_eq!(headers.get(REPLAYED).unwrap(), "true");
        let fresh = response(&empty_response(StatusCode::NO_CONTENT), false);
        assert_eq!(fresh.status(), StatusCode::NO_CONTENT);
        assert!(fresh.headers().get(REPLAYED).is_none());
    }
}
