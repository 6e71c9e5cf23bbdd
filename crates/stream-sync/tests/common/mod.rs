//! Helpers of the stream-sync integration tests: a BigQuery emulator dataset and a MariaDB
//! database per test, a config pointing at both, SQL on either side, one sync cycle.
#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use domain::config::SyncConfig;
use mysql::prelude::Queryable;
use stream_sync::cycle::Settings;
use stream_sync::runner::{Mode, Runner, TableOutcome};
use sync_engine::warehouse::Warehouse;
use test_support::{TestDataset, TestDb};

pub struct Fixture {
    pub ds: TestDataset,
    pub db: TestDb,
    pub wh: Warehouse,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let ds = TestDataset::new().await;
        let db = TestDb::empty();
        let wh = Warehouse::new(ds.client.clone(), ds.project.clone());
        Fixture { ds, db, wh }
    }

    /// Runs warehouse SQL; `{ds}` stands for the dataset.
    pub async fn bq(&self, sql: &str) -> Vec<Vec<Option<serde_json::Value>>> {
        let sql = sql.replace("{ds}", &self.ds.dataset);
        self.wh
            .query_all(&sql)
            .await
            .unwrap_or_else(|e| panic!("warehouse SQL failed: {e}\n{sql}"))
            .rows
    }

    pub fn my(&self) -> mysql::Conn {
        sync_engine::session::connect(&self.db.url).expect("connect to the test database")
    }

    /// Rows of a MySQL query, each column as text (NULL as "NULL").
    pub fn my_rows(&self, sql: &str) -> Vec<Vec<String>> {
        let rows: Vec<mysql::Row> = self.my().query(sql).expect(sql);
        rows.into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql::Value::NULL => "NULL".to_string(),
                        mysql::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                        other => other.as_sql(true),
                    })
                    .collect()
            })
            .collect()
    }

    pub fn my_count(&self, table: &str) -> u64 {
        let n: Option<u64> = self
            .my()
            .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
            .expect("count");
        n.unwrap_or(0)
    }

    /// Rows of `table`, or `None` while it does not exist.
    pub fn my_count_if_exists(&self, table: &str) -> Option<u64> {
        self.my()
            .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
            .ok()
            .flatten()
    }

    /// A config with the given `[[tables]]` TOML and extra `[stream_sync]` lines.
    pub fn config(&self, tables: &str, stream_sync: &str) -> SyncConfig {
        SyncConfig::parse(&self.config_text(tables, stream_sync), "test.toml")
            .expect("test config parses")
    }

    /// The TOML of [`Fixture::config`]; the MySQL DSN is read from `STREAM_SYNC_TEST_URL`.
    pub fn config_text(&self, tables: &str, stream_sync: &str) -> String {
        format!(
            r#"
[mysql]
url_env = "STREAM_SYNC_TEST_URL"
[warehouse]
project = "{project}"
dataset = "{dataset}"
endpoint = "{endpoint}"
credentials = "none"
change_detection = "fingerprint"
[stream_sync]
buckets = 64
{stream_sync}
{tables}
"#,
            project = self.ds.project,
            dataset = self.ds.dataset,
            endpoint = self.ds.env.bigquery_url,
        )
    }

    pub async fn runner(&self, config: &SyncConfig, settings: Option<Settings>) -> Runner {
        let settings = settings.unwrap_or_else(|| Runner::settings_from(config));
        Runner::new(config, self.db.url.clone(), settings, None)
            .await
            .expect("runner")
    }

    /// One cycle of every table.
    pub async fn sync(&self, config: &SyncConfig) -> Vec<TableOutcome> {
        self.runner(config, None)
            .await
            .run(Mode::Once { max_attempts: 3 })
            .await
    }
}

/// The outcome of `table`, which must have succeeded.
pub fn ok<'a>(outcomes: &'a [TableOutcome], table: &str) -> &'a stream_sync::cycle::CycleReport {
    let o = outcomes
        .iter()
        .find(|o| o.table == table)
        .unwrap_or_else(|| panic!("no outcome for {table}"));
    if let Some((kind, e)) = &o.error {
        panic!("{table} failed ({kind:?}): {e}");
    }
    &o.report
}

/// `[[tables]]` TOML of one stream table.
pub fn table(name: &str, pk: &[&str], extra: &str) -> String {
    let pk: Vec<String> = pk.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[[tables]]\nsource = \"{name}\"\ntarget = \"{name}\"\nmode = \"stream\"\nprimary_key = [{}]\n{extra}\n",
        pk.join(", ")
    )
}
