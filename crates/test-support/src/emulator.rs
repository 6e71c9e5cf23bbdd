//! The BigQuery emulator's control endpoints (deploy/dev/emulator, docs/emulator.md): fault
//! injection and the streaming-buffer flush. Tests run in parallel against one emulator, so a
//! fault rule should match only the test's own requests (its dataset name in `sql` or `path`).

use serde_json::{json, Value};

use crate::DevEnv;

/// The emulator's control API.
pub struct Emulator {
    base: String,
    http: reqwest::Client,
}

impl Emulator {
    pub fn new(env: &DevEnv) -> Emulator {
        let base = env
            .bigquery_url
            .trim_end_matches('/')
            .trim_end_matches("/bigquery/v2")
            .to_string();
        Emulator {
            base,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    /// Makes the next `count` requests whose query text matches the regex `sql` fail with
    /// `fault` (`rateLimitExceeded`, `quotaExceeded`, `backendError`, `unavailable`, `reset`,
    /// `empty_page`, or `slow` with `delay_ms`).
    pub async fn fault_on_sql(&self, fault: &str, sql: &str, count: u32) {
        self.fault(json!({ "fault": fault, "sql": sql, "count": count }))
            .await;
    }

    /// Adds a fault rule as given (see docs/emulator.md#faults); panics when refused.
    pub async fn fault(&self, rule: Value) {
        self.post("faults", rule).await;
    }

    /// POSTs `body` to a control endpoint `/_emulator/<path>`; panics unless it succeeds.
    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}/_emulator/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("emulator /_emulator/{path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "emulator /_emulator/{path} refused {body}: {status} {text}"
        );
    }

    /// Moves the rows streamed into an ingestion-time table out of its streaming buffer into
    /// their partitions, as BigQuery does a while after `insertAll`.
    pub async fn flush(&self, dataset: &str, table: &str) {
        self.post("flush", json!({ "dataset": dataset, "table": table }))
            .await;
    }

    /// Moves a table's whole history (its change history, modification times, time-travel
    /// versions) `by` into the past, so tests reach BigQuery's time rules (`CHANGES` answers
    /// 10 minutes behind) without waiting.
    pub async fn age(&self, dataset: &str, table: &str, by: std::time::Duration) {
        let body = json!({ "dataset": dataset, "table": table, "seconds": by.as_secs() });
        self.post("age", body).await;
    }

    /// How many requests the rules whose `sql` is exactly `sql` have failed so far.
    pub async fn fault_hits(&self, sql: &str) -> u64 {
        let listed: Value = self
            .http
            .get(format!("{}/_emulator/faults", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("emulator fault endpoint: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("emulator fault listing: {e}"));
        ["faults", "spent"]
            .iter()
            .flat_map(|k| listed[k].as_array().cloned().unwrap_or_default())
            .filter(|r| r["sql"] == sql)
            .map(|r| r["hits"].as_u64().unwrap_or(0))
            .sum()
    }
}
