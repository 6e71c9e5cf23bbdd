//! The API's one error type: each variant maps to one HTTP status and one RFC 9457
//! `application/problem+json` body. Causes of 5xx errors are logged here, once, and never sent
//! to the client (no SQL, no stack trace, no secret in any body).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::validation::FieldError;

/// Seconds a client should wait before retrying when the database is unavailable.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// Content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference identifying the problem type; `about:blank` means "see the status".
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type (the status' reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For 422 only: every violated rule, by field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the resource has changed: its ETag no longer matches If-Match")]
    PreconditionFailed,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is invalid")]
    Validation(Vec<FieldError>),
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A deadlock or lock-wait timeout that outlived the retries: the client may retry.
    #[error("the resource is busy")]
    Contention(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                format!("invalid fields: {}", fields.join(", "))
            }
            ApiError::Unavailable(_) => {
                "the database is unavailable; retry after a few seconds".to_string()
            }
            ApiError::Contention(_) => "the resource is busy; retry shortly".to_string(),
            ApiError::Internal(_) => "an unexpected error occurred".to_string(),
            other => other.to_string(),
        }
    }

    /// The problem document of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        Problem {
            problem_type: "about:blank".to_string(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.detail(),
            errors: match self {
                ApiError::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
        }
    }
}

/// Logs an error with its whole cause chain (for 5xx only: client errors are not ours).
fn log_cause(error: &ApiError) {
    match error {
        ApiError::Unavailable(cause) => {
            tracing::warn!(error.cause = format!("{cause:#}"), "database unavailable")
        }
        ApiError::Contention(cause) => {
            tracing::warn!(
                error.cause = format!("{cause:#}"),
                "write contention outlived retries"
            )
        }
        ApiError::Internal(cause) => {
            tracing::error!(error.cause = format!("{cause:#}"), "internal error")
        }
        _ => {}
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Contention(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        log_cause(self);
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::Unavailable(_) | ApiError::Contention(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
            }
            _ => {}
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        response.body(body)
    }
}

/// What a database error means to the service: its one classification of diesel errors
/// (docs/api.md#database-failures, docs/api.md#errors). [`classify`] decides it;
/// `From<DieselError> for ApiError` turns it into a status, and the few places that answer a
/// class differently (a duplicate ingredient name, an ingredient still in use, a synced table
/// not created yet) ask [`classify`] too, instead of reading the error themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorClass {
    /// No row where one was expected (diesel's `NotFound`): 404.
    NotFound,
    /// The server is unreachable, went away or closed the connection: 503 with `Retry-After`,
    /// and the connection is discarded instead of going back to the pool.
    Unavailable,
    /// A deadlock (1213) or a lock-wait timeout (1205): the write transaction is re-run, and
    /// past its attempts the answer is 503 with `Retry-After`.
    Contention,
    /// A unique key is taken (1062 and kin): 409.
    UniqueViolation,
    /// A foreign key forbids the change (1451, 1452 and kin): 409.
    ForeignKeyViolation,
    /// The table does not exist (1146, `ER_NO_SUCH_TABLE`): a synced table reads as empty until
    /// the first sync creates it; anywhere else, 500.
    MissingTable,
    /// Anything else: 500, the cause logged and never sent.
    Other,
}

/// Classifies a diesel error: the one place the service looks inside one.
///
/// The kind diesel derives from the server's error number decides first. diesel names only a
/// few MySQL numbers, and none of the client errors (2002/2003 can't connect, 2006 gone away,
/// 2013 lost connection), 1146 or 1205, so for any other kind the message text decides: the
/// exact shape of 1146 first, then the words of a lost connection, then a lock-wait timeout.
pub fn classify(error: &DieselError) -> DbErrorClass {
    match error {
        DieselError::NotFound => DbErrorClass::NotFound,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            DbErrorClass::Unavailable
        }
        // 1213 deadlock.
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            DbErrorClass::Contention
        }
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            DbErrorClass::UniqueViolation
        }
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            DbErrorClass::ForeignKeyViolation
        }
        DieselError::DatabaseError(_, info) if is_missing_table(info.message()) => {
            DbErrorClass::MissingTable
        }
        DieselError::DatabaseError(_, info) if is_connection_loss(info.message()) => {
            DbErrorClass::Unavailable
        }
        DieselError::DatabaseError(_, info) if is_lock_wait_timeout(info.message()) => {
            DbErrorClass::Contention
        }
        DieselError::DatabaseError(_, info) if is_statement_timeout(info.message()) => {
            DbErrorClass::Unavailable
        }
        _ => DbErrorClass::Other,
    }
}

/// True for the message of MySQL/MariaDB error 1146 (`ER_NO_SUCH_TABLE`):
/// `Table 'db.name' doesn't exist`.
fn is_missing_table(message: &str) -> bool {
    message.starts_with("Table '") && message.ends_with("doesn't exist")
}

/// True for MySQL client errors that mean the server is unreachable or went away
/// (2002/2003 can't connect, 2006 gone away, 2013 lost connection).
fn is_connection_loss(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("gone away")
        || m.contains("lost connection")
        || m.contains("can't connect")
        || m.contains("connection refused")
}

/// True for a statement stopped by the session's time limit: MariaDB 1969
/// (`max_statement_time exceeded`), MySQL 3024 (`maximum statement execution time exceeded`).
fn is_statement_timeout(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("max_statement_time exceeded") || m.contains("maximum statement execution time")
}

/// True for MySQL error 1205 (`Lock wait timeout exceeded`), which diesel gives no kind.
fn is_lock_wait_timeout(message: &str) -> bool {
    message.to_ascii_lowercase().contains("lock wait timeout")
}

impl From<DieselError> for ApiError {
    fn from(error: DieselError) -> ApiError {
        match classify(&error) {
            DbErrorClass::NotFound => ApiError::NotFound("resource not found".to_string()),
            DbErrorClass::Unavailable => ApiError::Unavailable(error.into()),
            DbErrorClass::Contention => ApiError::Contention(error.into()),
            DbErrorClass::UniqueViolation => {
                ApiError::Conflict("a resource with the same unique key already exists".to_string())
            }
            DbErrorClass::ForeignKeyViolation => {
                ApiError::Conflict("the change conflicts with related resources".to_string())
            }
            DbErrorClass::MissingTable | DbErrorClass::Other => ApiError::Internal(error.into()),
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(error: r2d2::Error) -> ApiError {
        // The pool's only error is a checkout timeout: no connection could be had in time.
        ApiError::Unavailable(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_status() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Unauthorized, 401),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::MethodNotAllowed("GET"), 405),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::PreconditionFailed, 412),
            (ApiError::PayloadTooLarge(1), 413),
            (ApiError::UnsupportedMediaType("x".into()), 415),
            (ApiError::field("title", "is required"), 422),
            (ApiError::Unavailable(anyhow::anyhow!("down")), 503),
            (ApiError::Contention(anyhow::anyhow!("deadlock")), 503),
            (ApiError::Internal(anyhow::anyhow!("boom")), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status_code().as_u16(), status, "{error:?}");
            assert_eq!(error.problem().status, status);
        }
    }

    #[test]
    fn diesel_errors_map_to_client_statuses_and_hide_their_text() {
        assert_eq!(
            ApiError::from(DieselError::NotFound).status_code(),
            StatusCode::NOT_FOUND
        );
        let internal = ApiError::from(DieselError::RollbackTransaction);
        assert_eq!(internal.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.problem().detail.contains("rollback"));
    }

    fn db_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_string()))
    }

    #[test]
    fn database_errors_are_classified_by_kind_first_then_by_message() {
        let cases = [
            (
                DatabaseErrorKind::Unknown,
                "MySQL server has gone away",
                DbErrorClass::Unavailable,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Lost connection to MySQL server during query",
                DbErrorClass::Unavailable,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Can't connect to MySQL server on 'db' (111)",
                DbErrorClass::Unavailable,
            ),
            (
                DatabaseErrorKind::ClosedConnection,
                "closed",
                DbErrorClass::Unavailable,
            ),
            (
                DatabaseErrorKind::SerializationFailure,
                "Deadlock found when trying to get lock",
                DbErrorClass::Contention,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Lock wait timeout exceeded; try restarting transaction",
                DbErrorClass::Contention,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Query execution was interrupted (max_statement_time exceeded)",
                DbErrorClass::Unavailable,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Query execution was interrupted, maximum statement execution time exceeded",
                DbErrorClass::Unavailable,
            ),
            (
                DatabaseErrorKind::UniqueViolation,
                "Duplicate entry 'gone away' for key 'name_key'",
                DbErrorClass::UniqueViolation,
            ),
            (
                DatabaseErrorKind::ForeignKeyViolation,
                "a foreign key constraint fails",
                DbErrorClass::ForeignKeyViolation,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Table 'recipes.recipe_daily_stats' doesn't exist",
                DbErrorClass::MissingTable,
            ),
            (
                DatabaseErrorKind::Unknown,
                "Unknown column 'calories' in 'field list'",
                DbErrorClass::Other,
            ),
        ];
        for (kind, message, class) in cases {
            assert_eq!(classify(&db_error(kind, message)), class, "{message}");
        }
        assert_eq!(classify(&DieselError::NotFound), DbErrorClass::NotFound);
        assert_eq!(
            classify(&DieselError::RollbackTransaction),
            DbErrorClass::Other
        );
    }

    #[test]
    fn unavailable_carries_retry_after_and_internal_hides_the_cause() {
        let response = ApiError::Unavailable(anyhow::anyhow!("SELECT secret")).error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let problem = ApiError::Internal(anyhow::anyhow!("SELECT password FROM users")).problem();
        assert!(!problem.detail.contains("SELECT"));
    }
}
