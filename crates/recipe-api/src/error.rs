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

/// True for MySQL client errors that mean the server is unreachable or went away
/// (2002/2003 can't connect, 2006 gone away, 2013 lost connection).
fn is_connection_loss(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("gone away")
        || m.contains("lost connection")
        || m.contains("can't connect")
        || m.contains("connection refused")
}

impl From<DieselError> for ApiError {
    fn from(error: DieselError) -> ApiError {
        match &error {
            DieselError::NotFound => ApiError::NotFound("resource not found".to_string()),
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                ApiError::Unavailable(error.into())
            }
            DieselError::DatabaseError(_, info) if is_connection_loss(info.message()) => {
                ApiError::Unavailable(error.into())
            }
            // 1213 deadlock maps to SerializationFailure; 1205 lock wait timeout has no kind.
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                ApiError::Contention(error.into())
            }
            DieselError::DatabaseError(_, info)
                if info
                    .message()
                    .to_ascii_lowercase()
                    .contains("lock wait timeout") =>
            {
                ApiError::Contention(error.into())
            }
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                ApiError::Conflict("a resource with the same unique key already exists".to_string())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                ApiError::Conflict("the change conflicts with related resources".to_string())
            }
            _ => ApiError::Internal(error.into()),
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

    #[test]
    fn unavailable_carries_retry_after_and_internal_hides_the_cause() {
        let response = ApiError::Unavailable(anyhow::anyhow!("SELECT secret")).error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let problem = ApiError::Internal(anyhow::anyhow!("SELECT password FROM users")).problem();
        assert!(!problem.detail.contains("SELECT"));
    }
}
