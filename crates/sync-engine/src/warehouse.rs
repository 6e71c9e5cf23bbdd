//! The BigQuery warehouse adapter: client construction (real credentials in production, a
//! custom endpoint with no authentication for the local emulator or a private endpoint),
//! standard-SQL queries with `errors[]` checked on every answer, paging, and retries of the
//! failures the fault policy (`domain::fault`) calls transient.

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::Client;

use domain::fault::{self, ErrorClass};

use crate::retry::retry;

pub use domain::config::Credentials;

/// An authenticator that sends no real token; the emulator accepts any.
#[derive(Clone, Default)]
pub struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".to_string())
    }
}

/// Builds a client. `endpoint` overrides the REST base URL (e.g.
/// `http://127.0.0.1:9050/bigquery/v2` for the emulator).
pub async fn client(endpoint: Option<&str>, credentials: &Credentials) -> Result<Client, BQError> {
    let mut builder = ClientBuilder::new();
    if let Some(url) = endpoint {
        builder.with_v2_base_url(url.trim_end_matches('/').to_string());
    }
    match credentials {
        Credentials::None => builder.build_from_authenticator(Arc::new(NoAuth)).await,
        Credentials::KeyFile(path) => builder.build_from_service_account_key_file(path).await,
        Credentials::ApplicationDefault => {
            builder.build_from_application_default_credentials().await
        }
    }
}

/// Errors talking to BigQuery. [`WarehouseError::class`] says what to do about one.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The request did not complete (connection refused, timeout, TLS...).
    #[error("BigQuery request failed: {0}")]
    Network(String),
    /// An HTTP error status from the API.
    #[error("BigQuery answered HTTP {code}: {message}")]
    Http {
        code: i64,
        /// The first `errors[].reason`, e.g. `rateLimitExceeded`.
        reason: Option<String>,
        message: String,
    },
    /// The query ran but reported errors (BigQuery may do so with HTTP 200).
    #[error("BigQuery query failed: {message}")]
    Query {
        /// The first `errors[].reason`, e.g. `invalidQuery` or `backendError`.
        reason: Option<String>,
        message: String,
    },
    /// insertAll rejected some rows.
    #[error("BigQuery rejected {rows} row(s): {message}")]
    Insert { rows: usize, message: String },
    /// The query did not finish within the allowed time.
    #[error("BigQuery query did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error("BigQuery client error: {0}")]
    Client(String),
}

impl WarehouseError {
    /// The error's class under the fault policy: network failures and timeouts are transient,
    /// HTTP statuses and error reasons are judged by [`fault::bigquery_error`].
    pub fn class(&self) -> ErrorClass {
        match self {
            WarehouseError::Network(_) | WarehouseError::Timeout(_) => ErrorClass::Transient,
            WarehouseError::Http { code, reason, .. } => {
                fault::bigquery_error(u16::try_from(*code).ok(), reason.as_deref())
            }
            WarehouseError::Query { reason, .. } => fault::bigquery_error(None, reason.as_deref()),
            WarehouseError::Insert { .. } | WarehouseError::Client(_) => ErrorClass::Permanent,
        }
    }

    /// Shorthand for `class().is_transient()`.
    pub fn transient(&self) -> bool {
        self.class().is_transient()
    }

    /// A query error of our own making (no reason from BigQuery).
    pub fn query(message: impl Into<String>) -> WarehouseError {
        WarehouseError::Query {
            reason: None,
            message: message.into(),
        }
    }
}

impl From<BQError> for WarehouseError {
    fn from(e: BQError) -> Self {
        match e {
            BQError::RequestError(r) => match r.status() {
                Some(s) => WarehouseError::Http {
                    code: i64::from(s.as_u16()),
                    reason: None,
                    message: r.to_string(),
                },
                None => WarehouseError::Network(r.to_string()),
            },
            BQError::ResponseError { error } => WarehouseError::Http {
                code: error.error.code,
                reason: error
                    .error
                    .errors
                    .iter()
                    .find_map(|e| e.get("reason").cloned()),
                message: error.error.message,
            },
            other => WarehouseError::Client(other.to_string()),
        }
    }
}

/// The `errors[]` of an answer as one query error: the first reason, every message.
fn query_error(errors: &[gcp_bigquery_client::model::error_proto::ErrorProto]) -> WarehouseError {
    let message = errors
        .iter()
        .map(|e| {
            let reason = e.reason.as_deref().unwrap_or("error");
            let message = e.message.as_deref().unwrap_or("");
            format!("{reason}: {message}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    WarehouseError::Query {
        reason: errors.iter().find_map(|e| e.reason.clone()),
        message,
    }
}

/// An INT64 cell of a query answer (BigQuery sends a JSON string, the emulator sometimes a
/// number).
pub fn cell_i64(v: &Option<serde_json::Value>) -> Option<i64> {
    match v.as_ref()? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A cell as text: a JSON string as it is, anything else as JSON.
pub fn cell_str(v: &Option<serde_json::Value>) -> Option<String> {
    match v.as_ref()? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The fields of a table schema as the domain describes them.
pub fn fields_of(
    schema: &gcp_bigquery_client::model::table_schema::TableSchema,
) -> Vec<domain::schema::WarehouseField> {
    schema
        .fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|f| domain::schema::WarehouseField {
            name: f.name.clone(),
            type_name: serde_json::to_value(&f.r#type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            mode: f.mode.clone(),
        })
        .collect()
}

/// One page of a query result: column names and rows of JSON cells (`None` is SQL NULL).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<serde_json::Value>>>,
    /// Bytes the query processed (on the first page only).
    pub bytes_processed: u64,
}

/// A BigQuery project as the sync sees it: runs standard-SQL queries, checks `errors[]` on
/// every response, pages through results and retries transient failures with capped backoff.
#[derive(Clone)]
pub struct Warehouse {
    pub client: Client,
    pub project: String,
    pub location: Option<String>,
    /// Rows per page when reading results.
    pub page_size: i32,
    /// How long a query may run before we give up.
    pub query_timeout: std::time::Duration,
    /// Attempts for a transient failure (first try included).
    pub max_attempts: u32,
}

impl Warehouse {
    pub fn new(client: Client, project: impl Into<String>) -> Warehouse {
        Warehouse {
            client,
            project: project.into(),
            location: None,
            page_size: 10_000,
            query_timeout: std::time::Duration::from_secs(600),
            max_attempts: 5,
        }
    }

    /// The warehouse a sync config describes: its endpoint, credentials, project, location.
    pub async fn from_config(
        config: &domain::config::WarehouseConfig,
    ) -> Result<Warehouse, BQError> {
        let client = client(config.endpoint.as_deref(), &config.credentials()).await?;
        let mut warehouse = Warehouse::new(client, config.project.clone());
        warehouse.location = config.location.clone();
        Ok(warehouse)
    }

    /// Runs `sql` and calls `on_page` for each page of results, in order. `on_page` returns the
    /// caller's own error type, which stops the query and comes back as is. A transient error
    /// before the first page is retried; once a page was delivered an error is returned, as a
    /// retry could deliver rows twice.
    pub async fn query_pages<F, E>(&self, sql: &str, mut on_page: F) -> Result<u64, E>
    where
        F: FnMut(Page) -> Result<(), E>,
        E: From<WarehouseError>,
    {
        let started = std::time::Instant::now();
        let request = self.query_request(sql);
        let first = retry(self.max_attempts, || {
            self.client.job().query(&self.project, request.clone())
        })
        .await?;
        if let Some(errors) = first.errors.as_deref().filter(|e| !e.is_empty()) {
            return Err(query_error(errors).into());
        }
        let bytes: u64 = first
            .total_bytes_processed
            .as_deref()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        let job_id = first.job_reference.as_ref().and_then(|r| r.job_id.clone());
        let location = first
            .job_reference
            .as_ref()
            .and_then(|r| r.location.clone())
            .or(self.location.clone());
        let mut columns = schema_columns(first.schema.as_ref());
        let mut page_token = first.page_token.clone();
        let mut complete = first.job_complete.unwrap_or(true);
        if complete {
            on_page(Page {
                columns: columns.clone(),
                rows: cells(first.rows),
                bytes_processed: bytes,
            })?;
            if page_token.is_none() {
                return Ok(bytes);
            }
        }
        let Some(job_id) = job_id else {
            return if complete {
                Ok(bytes)
            } else {
                Err(WarehouseError::query("incomplete query without a job reference").into())
            };
        };
        loop {
            if started.elapsed() > self.query_timeout {
                return Err(WarehouseError::Timeout(self.query_timeout).into());
            }
            let params = self.results_page(location.clone(), page_token.clone());
            let resp = retry(self.max_attempts, || {
                self.client
                    .job()
                    .get_query_results(&self.project, &job_id, params.clone())
            })
            .await?;
            if let Some(errors) = resp.errors.as_deref().filter(|e| !e.is_empty()) {
                return Err(query_error(errors).into());
            }
            if !resp.job_complete.unwrap_or(true) {
                continue; // the server waited timeout_ms already
            }
            if !complete {
                complete = true;
                columns = schema_columns(resp.schema.as_ref());
            }
            on_page(Page {
                columns: columns.clone(),
                rows: cells(resp.rows),
                bytes_processed: 0,
            })?;
            page_token = resp.page_token;
            if page_token.is_none() {
                return Ok(bytes);
            }
        }
    }

    /// A standard-SQL query request in the warehouse's location, paged by `page_size`.
    fn query_request(&self, sql: &str) -> QueryRequest {
        let mut request = QueryRequest::new(sql);
        request.use_legacy_sql = false;
        request.max_results = Some(self.page_size);
        request.timeout_ms = Some(10_000);
        request.location = self.location.clone();
        request
    }

    /// The parameters of the next `getQueryResults` call.
    fn results_page(
        &self,
        location: Option<String>,
        page_token: Option<String>,
    ) -> GetQueryResultsParameters {
        GetQueryResultsParameters {
            format_options: None,
            location,
            max_results: Some(self.page_size),
            page_token,
            start_index: None,
            timeout_ms: Some(10_000),
        }
    }

    /// The bytes `sql` would process (and bill, on demand), from a BigQuery dry run: nothing
    /// runs, nothing is billed. Retried on transient failures.
    pub async fn dry_run(&self, sql: &str) -> Result<u64, WarehouseError> {
        let mut request = self.query_request(sql);
        request.dry_run = Some(true);
        let response = retry(self.max_attempts, || {
            self.client.job().query(&self.project, request.clone())
        })
        .await?;
        if let Some(errors) = response.errors.as_deref().filter(|e| !e.is_empty()) {
            return Err(query_error(errors));
        }
        Ok(response
            .total_bytes_processed
            .as_deref()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0))
    }

    /// The table's metadata (`tables.get`: schema, partitioning, modification time), retried
    /// on transient failures.
    pub async fn get_table(
        &self,
        dataset: &str,
        table: &str,
    ) -> Result<gcp_bigquery_client::model::table::Table, WarehouseError> {
        retry(self.max_attempts, || {
            self.client.table().get(&self.project, dataset, table, None)
        })
        .await
    }

    /// Runs `sql` and collects every row (for small results: metadata, digests, fingerprints).
    pub async fn query_all(&self, sql: &str) -> Result<Page, WarehouseError> {
        let mut all = Page::default();
        let bytes = self
            .query_pages(sql, |page| {
                all.columns = page.columns;
                all.rows.extend(page.rows);
                Ok::<(), WarehouseError>(())
            })
            .await?;
        all.bytes_processed = bytes;
        Ok(all)
    }
}

fn schema_columns(
    schema: Option<&gcp_bigquery_client::model::table_schema::TableSchema>,
) -> Vec<String> {
    schema
        .and_then(|s| s.fields.as_ref())
        .map(|f| f.iter().map(|f| f.name.clone()).collect())
        .unwrap_or_default()
}

fn cells(
    rows: Option<Vec<gcp_bigquery_client::model::table_row::TableRow>>,
) -> Vec<Vec<Option<serde_json::Value>>> {
    rows.unwrap_or_default()
        .into_iter()
        .map(|r| {
            r.columns
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.value.filter(|v| !v.is_null()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(code: i64, reason: Option<&str>) -> WarehouseError {
        WarehouseError::Http {
            code,
            reason: reason.map(str::to_string),
            message: String::new(),
        }
    }

    #[test]
    fn cells_read_as_bigquery_and_the_emulator_send_them() {
        use serde_json::json;
        assert_eq!(cell_i64(&Some(json!("42"))), Some(42));
        assert_eq!(cell_i64(&Some(json!(-7))), Some(-7));
        assert_eq!(cell_i64(&Some(json!("x"))), None);
        assert_eq!(cell_i64(&None), None);
        assert_eq!(cell_str(&Some(json!("a b"))).as_deref(), Some("a b"));
        assert_eq!(cell_str(&Some(json!(1.5))).as_deref(), Some("1.5"));
        assert_eq!(cell_str(&None), None);
    }

    #[test]
    fn server_rate_and_quota_errors_are_transient_the_rest_permanent() {
        assert!(http(503, None).transient());
        assert!(http(429, None).transient());
        assert!(http(403, Some("rateLimitExceeded")).transient());
        assert!(http(403, Some("quotaExceeded")).transient());
        assert!(!http(403, Some("accessDenied")).transient());
        assert!(!http(400, Some("invalidQuery")).transient());
        assert!(WarehouseError::Network("refused".into()).transient());
        assert!(!WarehouseError::query("bad").transient());
        let backend = WarehouseError::Query {
            reason: Some("backendError".into()),
            message: "try again".into(),
        };
        assert!(backend.transient());
    }
}
