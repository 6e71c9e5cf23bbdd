//! The route table and what every handler shares: running diesel off the async executor,
//! reading JSON bodies (content type, size limit, syntax), path ids, paging parameters, ETags.

pub mod health;
pub mod ingredients;
pub mod metrics;
pub mod openapi;
pub mod recipes;

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::mysql::MysqlConnection;
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;
use crate::executor::{DbExecutor, ExecError};
use crate::models::DbPool;
use crate::validation;

/// Requests that may wait for a database thread at once; past that, 503 at once.
const DB_QUEUE: usize = 1024;

/// State every handler can read.
#[derive(Clone)]
pub struct AppState {
    pub pool: DbPool,
    /// One thread per pooled connection runs the blocking diesel work; requests queue there.
    pub executor: DbExecutor,
    /// How long a request waits for a connection before answering 503.
    pub db_timeout: Duration,
    /// How long a request waits for its database work before answering 503.
    pub query_timeout: Duration,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
}

impl AppState {
    pub fn new(
        pool: DbPool,
        db_timeout: Duration,
        query_timeout: Duration,
        body_limit: usize,
    ) -> std::io::Result<AppState> {
        let threads = usize::try_from(pool.max_size()).unwrap_or(1).max(1);
        Ok(AppState {
            pool,
            executor: DbExecutor::new(threads, DB_QUEUE, db_timeout)?,
            db_timeout,
            query_timeout,
            body_limit,
        })
    }
}

/// Registers every route. Each resource answers other methods with 405 and `Allow`.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .service(
                web::resource("/recipes")
                    .route(web::get().to(recipes::list_recipes))
                    .route(web::post().to(recipes::create_recipe))
                    .default_service(web::to(|| not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/recipes/{id}")
                    .route(web::get().to(recipes::get_recipe))
                    .route(web::put().to(recipes::replace_recipe))
                    .route(web::patch().to(recipes::patch_recipe))
                    .route(web::delete().to(recipes::delete_recipe))
                    .default_service(web::to(|| not_allowed("GET, PUT, PATCH, DELETE"))),
            )
            .service(
                web::resource("/recipes/{id}/stats")
                    .route(web::get().to(recipes::recipe_stats))
                    .default_service(web::to(|| not_allowed("GET"))),
            )
            .service(
                web::resource("/ingredients")
                    .route(web::get().to(ingredients::list_ingredients))
                    .route(web::post().to(ingredients::create_ingredient))
                    .default_service(web::to(|| not_allowed("GET, POST"))),
            )
            .service(
                web::resource("/ingredients/{id}")
                    .route(web::get().to(ingredients::get_ingredient))
                    .route(web::put().to(ingredients::replace_ingredient))
                    .route(web::delete().to(ingredients::delete_ingredient))
                    .default_service(web::to(|| not_allowed("GET, PUT, DELETE"))),
            )
            .service(
                web::resource("/ingredients/{id}/recipes")
                    .route(web::get().to(ingredients::ingredient_recipes))
                    .default_service(web::to(|| not_allowed("GET"))),
            ),
    )
    .service(get_only("/healthz", health::healthz))
    .service(get_only("/readyz", health::readyz))
    .service(get_only("/metrics", metrics::metrics))
    .service(get_only("/openapi.json", openapi::openapi_json))
    .service(get_only("/docs", openapi::docs_index));
}

fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(|| not_allowed("GET")))
}

async fn not_allowed(allow: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(allow))
}

/// The answer to every unknown route.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".to_string()))
}

/// Runs blocking diesel code with a pooled connection on one of the database threads
/// ([`DbExecutor`]), after waiting (at most `db_timeout`, then 503) for a free thread; answers
/// 503 when the work has not finished `query_timeout` after that.
pub async fn db<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut MysqlConnection) -> Result<T, ApiError> + Send + 'static,
{
    let pool = state.pool.clone();
    let work = state.executor.run(move || {
        let mut pooled = pool.get()?;
        let result = f(&mut pooled.conn);
        if matches!(result, Err(ApiError::Unavailable(_))) {
            // The server went away under this connection: don't hand it out again.
            pooled.broken = true;
        }
        result
    });
    // A hung database must not hang the client. The job runs on and frees its thread (and,
    // failing, its connection) when the client library gives up.
    match tokio::time::timeout(state.db_timeout + state.query_timeout, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e @ (ExecError::QueueFull(_) | ExecError::QueueTimeout(_)))) => {
            Err(ApiError::Unavailable(e.into()))
        }
        Ok(Err(e)) => Err(ApiError::Internal(e.into())),
        Err(_) => Err(ApiError::Unavailable(anyhow::anyhow!(
            "the database did not answer within {:?}",
            state.query_timeout
        ))),
    }
}

/// Parses a path id; anything but a positive 64-bit integer is a 400.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    validation::path_id(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("'{raw}' is not a positive 64-bit integer id")))
}

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
        if !charset.as_str().eq_ignore_ascii_case("utf-8") {
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

/// The strong ETag of a recipe version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// A parsed `If-Match` / `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    Any,
    /// The listed tags with their `W/` prefix removed, and whether each was weak.
    List(Vec<(bool, String)>),
}

impl EntityTags {
    /// Reads a header; `None` when absent.
    pub fn from_header(headers: &HeaderMap, name: header::HeaderName) -> Option<EntityTags> {
        let values: Vec<&str> = headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return None;
        }
        let mut tags = Vec::new();
        for part in values.iter().flat_map(|v| v.split(',')) {
            let part = part.trim();
            if part == "*" {
                return Some(EntityTags::Any);
            }
            if part.is_empty() {
                continue;
            }
            match part.strip_prefix("W/") {
                Some(rest) => tags.push((true, rest.to_string())),
                None => tags.push((false, part.to_string())),
            }
        }
        Some(EntityTags::List(tags))
    }

    /// Strong comparison (If-Match): weak tags never match.
    pub fn matches_strong(&self, current: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|(weak, tag)| !weak && tag == current),
        }
    }

    /// Weak comparison (If-None-Match).
    pub fn matches_weak(&self, current: &str) -> bool {
        match self {
            EntityTags::Any => true,
            EntityTags::List(tags) => tags.iter().any(|(_, tag)| tag == current),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

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

    #[test]
    fn entity_tags_compare_strongly_for_if_match_and_weakly_for_if_none_match() {
        let req = TestRequest::default()
            .insert_header((header::IF_MATCH, "W/\"1\", \"2\""))
            .to_http_request();
        let tags = EntityTags::from_header(req.headers(), header::IF_MATCH).unwrap();
        assert!(tags.matches_strong("\"2\""));
        assert!(!tags.matches_strong("\"1\""));
        assert!(tags.matches_weak("\"1\""));
        let any = TestRequest::default()
            .insert_header((header::IF_MATCH, "*"))
            .to_http_request();
        assert_eq!(
            EntityTags::from_header(any.headers(), header::IF_MATCH),
            Some(EntityTags::Any)
        );
    }
}
