//! [`SyncFixture`]: a BigQuery dataset, a MySQL database and a sync config pointing at both,
//! the starting point of every sync test (partition-sync, stream-sync, end to end).

use std::path::PathBuf;

use domain::config::SyncConfig;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use mysql::prelude::Queryable;
use sync_engine::warehouse::Warehouse;

use crate::{TestDataset, TestDb};

/// A dataset, an empty database, a private temp directory (holding the MySQL URL in the file
/// `mysql-url`, which the config's `mysql.url_file` names) and a staging bucket name.
/// Everything is removed on drop.
pub struct SyncFixture {
    pub ds: TestDataset,
    pub db: TestDb,
    pub wh: Warehouse,
    pub dir: PathBuf,
    pub bucket: String,
}

impl SyncFixture {
    pub async fn new() -> SyncFixture {
        SyncFixture::with_db(TestDb::empty()).await
    }

    /// A fixture whose database the dev replica applies too; its replica URL is in the file
    /// `replica-url` (for `throttle.replicas`).
    pub async fn replicated() -> SyncFixture {
        let f = SyncFixture::with_db(TestDb::replicated()).await;
        std::fs::write(f.dir.join("replica-url"), &f.db.replica_url).expect("write replica-url");
        f
    }

    async fn with_db(db: TestDb) -> SyncFixture {
        let ds = TestDataset::new().await;
        let wh = Warehouse::new(ds.client.clone(), ds.project.clone());
        let dir = std::env::temp_dir().join(format!("sync-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the fixture's temp dir");
        std::fs::write(dir.join("mysql-url"), &db.url).expect("write mysql-url");
        let bucket = format!("stage-{}", uuid::Uuid::new_v4().simple());
        SyncFixture {
            ds,
            db,
            wh,
            dir,
            bucket,
        }
    }

    /// Config text: `[mysql]` and `[warehouse]` pointing at this fixture (fingerprint change
    /// detection, as the emulator's metadata can't be trusted), then `rest` verbatim (more
    /// sections and `[[tables]]`). `staging` adds a `[staging]` section in this fixture's
    /// bucket, exported into the emulator's directory, in the given format.
    pub fn config_text(&self, staging: Option<&str>, rest: &str) -> String {
        let staging = staging
            .map(|format| {
                format!(
                    "[staging]\nuri = \"gs://{bucket}/exports\"\nformat = \"{format}\"\nlocal_root = \"{root}\"\n",
                    bucket = self.bucket,
                    root = self.ds.env.export_root.display(),
                )
            })
            .unwrap_or_default();
        format!(
            r#"
[mysql]
url_file = "{url_file}"
[warehouse]
project = "{project}"
dataset = "{dataset}"
endpoint = "{endpoint}"
credentials = "none"
{staging}{rest}"#,
            url_file = self.dir.join("mysql-url").display(),
            project = self.ds.project,
            dataset = self.ds.dataset,
            endpoint = self.ds.env.bigquery_url,
        )
    }

    /// [`SyncFixture::config_text`], parsed.
    pub fn config(&self, staging: Option<&str>, rest: &str) -> SyncConfig {
        SyncConfig::parse(&self.config_text(staging, rest), "test.toml")
            .unwrap_or_else(|e| panic!("test config does not parse: {e}"))
    }

    /// Writes [`SyncFixture::config_text`] to `sync.toml` in the fixture's directory.
    pub fn write_config(&self, staging: Option<&str>, rest: &str) -> PathBuf {
        let p = self.dir.join("sync.toml");
        std::fs::write(&p, self.config_text(staging, rest)).expect("write sync.toml");
        p
    }

    /// Runs warehouse SQL (`{ds}` stands for the dataset) and returns its rows.
    pub async fn bq(&self, sql: &str) -> Vec<Vec<Option<serde_json::Value>>> {
        let sql = sql.replace("{ds}", &self.ds.dataset);
        self.wh
            .query_all(&sql)
            .await
            .unwrap_or_else(|e| panic!("warehouse SQL failed: {e}\n{sql}"))
            .rows
    }

    /// Creates a warehouse table, DAY-partitioned by `partition_field` when given (`None`:
    /// ingestion-time partitioning).
    pub async fn create_table(
        &self,
        name: &str,
        fields: Vec<TableFieldSchema>,
        partition_field: Option<&str>,
    ) {
        let mut tp = TimePartitioning::per_day();
        tp.field = partition_field.map(str::to_string);
        let t = Table::new(
            &self.ds.project,
            &self.ds.dataset,
            name,
            TableSchema::new(fields),
        )
        .time_partitioning(tp);
        self.ds
            .client
            .table()
            .create(t)
            .await
            .unwrap_or_else(|e| panic!("create warehouse table {name}: {e}"));
    }

    /// Streams rows into a warehouse table (insertAll); every row must be accepted.
    pub async fn insert(&self, table: &str, rows: Vec<serde_json::Value>) {
        let mut req = TableDataInsertAllRequest::new();
        for r in rows {
            req.add_row(None, r).expect("serializable row");
        }
        let resp = self
            .ds
            .client
            .tabledata()
            .insert_all(&self.ds.project, &self.ds.dataset, table, req)
            .await
            .unwrap_or_else(|e| panic!("insertAll into {table}: {e}"));
        let errors = resp.insert_errors.unwrap_or_default();
        assert!(
            errors.is_empty(),
            "insertAll into {table} rejected rows: {errors:?}"
        );
    }

    /// A new MySQL session on the test database (the sync's own session settings).
    pub fn mysql(&self) -> mysql::Conn {
        sync_engine::session::connect(&self.db.url)
            .unwrap_or_else(|e| panic!("connect to the test database: {e}"))
    }

    /// Rows of a MySQL query, each column as text (NULL as "NULL").
    pub fn mysql_text_rows(&self, sql: &str) -> Vec<Vec<String>> {
        let rows: Vec<mysql::Row> = self
            .mysql()
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
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

    /// Rows of `table` in MySQL, or `None` while it does not exist.
    pub fn mysql_count(&self, table: &str) -> Option<u64> {
        self.mysql()
            .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
            .ok()
            .flatten()
    }

    /// Files left in the fixture's staging bucket (the emulator's export directory).
    pub fn staged_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.ds.env.export_root.join(&self.bucket), &mut out);
        out
    }
}

impl Drop for SyncFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.ds.env.export_root.join(&self.bucket));
    }
}
