//! BigQuery client construction: real credentials in production, a custom endpoint with no
//! authentication for the local emulator (or a private endpoint behind a proxy).

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::Client;

/// How the BigQuery client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Application default credentials (workload identity on GKE, `gcloud auth` locally).
    ApplicationDefault,
    /// A service-account key file.
    KeyFile(String),
    /// No authentication: for the emulator.
    None,
}

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

/// Errors talking to BigQuery. `transient()` says whether a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The request did not complete (connection refused, timeout, TLS...).
    #[error("BigQuery request failed: {0}")]
    Network(String),
    /// An HTTP error status from the API.
    #[error("BigQuery answered HTTP {code}: {message}")]
    Http { code: i64, message: String },
    /// The query ran but reported errors (BigQuery may do so with HTTP 200).
    #[error("BigQuery query failed: {0}")]
    Query(String),
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
    /// 5xx, 429 and network failures may go away on their own; everything else needs a change.
    pub fn transient(&self) -> bool {
        match self {
            WarehouseError::Network(_) | WarehouseError::Timeout(_) => true,
            WarehouseError::Http { code, .. } => *code == 429 || *code >= 500,
            WarehouseError::Query(m) => {
                let m = m.to_ascii_lowercase();
                m.contains("backenderror")
                    || m.contains("ratelimitexceeded")
                    || m.contains("internalerror")
            }
            _ => false,
        }
    }
}

impl From<BQError> for WarehouseError {
    fn from(e: BQError) -> Self {
        match e {
            BQError::RequestError(r) => match r.status() {
                Some(s) => WarehouseError::Http {
                    code: i64::from(s.as_u16()),
                    message: r.to_string(),
                },
                None => WarehouseError::Network(r.to_string()),
            },
            BQError::ResponseError { error } => WarehouseError::Http {
                code: error.error.code,
                message: error.error.message,
            },
            other => WarehouseError::Client(other.to_string()),
        }
    }
}

fn errors_to_string(errors: &[gcp_bigquery_client::model::error_proto::ErrorProto]) -> String {
    errors
        .iter()
        .map(|e| {
            let reason = e.reason.as_deref().unwrap_or("error");
            let message = e.message.as_deref().unwrap_or("");
            format!("{reason}: {message}")
        })
        .collect::<Vec<_>>()
        .join("; ")
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
        config: &crate::config::WarehouseConfig,
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
        use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
        use gcp_bigquery_client::model::query_request::QueryRequest;

        let started = std::time::Instant::now();
        let mut request = QueryRequest::new(sql);
        request.use_legacy_sql = false;
        request.max_results = Some(self.page_size);
        request.timeout_ms = Some(10_000);
        request.location = self.location.clone();
        let first = retry(self.max_attempts, || {
            self.client.job().query(&self.project, request.clone())
        })
        .await?;
        if let Some(errors) = first.errors.as_deref().filter(|e| !e.is_empty()) {
            return Err(WarehouseError::Query(errors_to_string(errors)).into());
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
                Err(WarehouseError::Query("incomplete query without a job reference".into()).into())
            };
        };
        loop {
            if started.elapsed() > self.query_timeout {
                return Err(WarehouseError::Timeout(self.query_timeout).into());
            }
            let params = GetQueryResultsParameters {
                format_options: None,
                location: location.clone(),
                max_results: Some(self.page_size),
                page_token: page_token.clone(),
                start_index: None,
                timeout_ms: Some(10_000),
            };
            let resp = retry(self.max_attempts, || {
                self.client
                    .job()
                    .get_query_results(&self.project, &job_id, params.clone())
            })
            .await?;
            if let Some(errors) = resp.errors.as_deref().filter(|e| !e.is_empty()) {
                return Err(WarehouseError::Query(errors_to_string(errors)).into());
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

/// Calls `f` until it succeeds, fails permanently, or `attempts` are used; waits with capped
/// exponential backoff and jitter between tries.
pub async fn retry<T, E, F, Fut>(attempts: u32, mut f: F) -> Result<T, WarehouseError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<WarehouseError>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await.map_err(Into::into) {
            Ok(v) => return Ok(v),
            Err(e) if e.transient() && attempt < attempts => {
                let delay = backoff(attempt);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "BigQuery call failed, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Capped exponential backoff with jitter: ~200 ms, 400 ms, 800 ms ... up to 10 s.
pub fn backoff(attempt: u32) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    backoff_with(attempt, nanos)
}

/// [`backoff`] with its randomness given: between half and all of 200 ms × 2^(attempt−1),
/// capped at 10 s.
fn backoff_with(attempt: u32, entropy: u32) -> std::time::Duration {
    let base = 200u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(10_000);
    let jitter = u64::from(entropy) % (base / 2 + 1);
    std::time::Duration::from_millis(base / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_is_capped() {
        let ms = std::time::Duration::from_millis;
        for entropy in [0, 1, 12_345, u32::MAX] {
            let first = backoff_with(1, entropy);
            assert!(ms(100) <= first && first <= ms(200), "{first:?}");
            let capped = backoff_with(30, entropy);
            assert!(ms(5_000) <= capped && capped <= ms(10_000), "{capped:?}");
        }
        // Each step's shortest wait is longer than two steps earlier's longest.
        assert!(backoff_with(3, 0) > backoff_with(1, u32::MAX));
        // Jitter: different randomness, different waits.
        assert_ne!(backoff_with(5, 0), backoff_with(5, 777));
        assert!(backoff(30) <= ms(10_000));
    }

    #[test]
    fn only_server_and_rate_errors_are_transient() {
        assert!(WarehouseError::Http {
            code: 503,
            message: String::new()
        }
        .transient());
        assert!(WarehouseError::Http {
            code: 429,
            message: String::new()
        }
        .transient());
        assert!(!WarehouseError::Http {
            code: 400,
            message: String::new()
        }
        .transient());
        assert!(WarehouseError::Network("refused".into()).transient());
        assert!(!WarehouseError::Query("invalidQuery: bad".into()).transient());
    }
}
