//! Fixture: a dataset, a database, a config file pointing at both.

use std::sync::Arc;

use domain::config::SyncConfig;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use mysql::prelude::Queryable;
use partition_sync::runner::{self, Context, Options, RunSummary};
use test_support::{TestDataset, TestDb};

pub struct Fixture {
    pub ds: TestDataset,
    pub db: TestDb,
    pub dir: std::path::PathBuf,
    pub bucket: String,
    /// `staging.format` of the generated config.
    pub format: std::cell::Cell<&'static str>,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let ds = TestDataset::new().await;
        let db = TestDb::empty();
        let dir = std::env::temp_dir().join(format!("psync-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mysql-url"), &db.url).unwrap();
        let bucket = format!("stage-{}", uuid::Uuid::new_v4().simple());
        Fixture {
            ds,
            db,
            dir,
            bucket,
            format: std::cell::Cell::new("json"),
        }
    }

    /// Config text with `tables` (TOML `[[tables]]` blocks) appended.
    pub fn config_text(&self, tables: &str) -> String {
        format!(
            r#"
[mysql]
url_file = "{url_file}"
[warehouse]
project = "{project}"
dataset = "{dataset}"
endpoint = "{endpoint}"
credentials = "none"
change_detection = "fingerprint"
[staging]
uri = "gs://{bucket}/exports"
format = "{format}"
local_root = "{root}"
{tables}"#,
            url_file = self.dir.join("mysql-url").display(),
            project = self.ds.project,
            dataset = self.ds.dataset,
            endpoint = self.ds.env.bigquery_url,
            bucket = self.bucket,
            root = self.ds.env.export_root.display(),
            format = self.format.get(),
        )
    }

    pub fn config(&self, tables: &str) -> SyncConfig {
        SyncConfig::parse(&self.config_text(tables), "test").unwrap()
    }

    pub fn write_config(&self, tables: &str) -> std::path::PathBuf {
        let p = self.dir.join("sync.toml");
        std::fs::write(&p, self.config_text(tables)).unwrap();
        p
    }

    pub async fn run(&self, tables: &str, opts: Options) -> RunSummary {
        let ctx = Context::new(self.config(tables)).await.unwrap();
        runner::run(&ctx, &opts, Arc::new(|_| {})).await.unwrap()
    }

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
        self.ds.client.table().create(t).await.unwrap();
    }

    pub async fn insert(&self, table: &str, rows: Vec<serde_json::Value>) {
        let mut req = TableDataInsertAllRequest::new();
        for r in rows {
            req.add_row(None, r).unwrap();
        }
        let resp = self
            .ds
            .client
            .tabledata()
            .insert_all(&self.ds.project, &self.ds.dataset, table, req)
            .await
            .unwrap();
        assert!(resp.insert_errors.unwrap_or_default().is_empty());
    }

    /// Runs DML or a query in the warehouse; `{ds}` is replaced by the dataset.
    pub async fn sql(&self, sql: &str) {
        let wh =
            sync_engine::warehouse::Warehouse::new(self.ds.client.clone(), self.ds.project.clone());
        wh.query_all(&sql.replace("{ds}", &self.ds.dataset))
            .await
            .unwrap();
    }

    pub fn mysql(&self) -> mysql::Conn {
        sync_engine::session::connect(&self.db.url).unwrap()
    }

    pub fn rows<T: mysql::prelude::FromRow>(&self, sql: &str) -> Vec<T> {
        self.mysql().query(sql).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.ds.env.export_root.join(&self.bucket));
    }
}

/// `recipe_daily_stats`-shaped table.
pub const STATS: &str = r#"
[[tables]]
source = "stats"
target = "stats"
mode = "partition"
partition_column = "day"
primary_key = ["recipe_id", "day"]
varchar = { note = 20 }
"#;

pub fn stats_fields() -> Vec<TableFieldSchema> {
    let mut id = TableFieldSchema::integer("recipe_id");
    id.mode = Some("REQUIRED".into());
    let mut day = TableFieldSchema::date("day");
    day.mode = Some("REQUIRED".into());
    vec![
        id,
        day,
        TableFieldSchema::integer("views"),
        TableFieldSchema::float("rating"),
        TableFieldSchema::string("note"),
        TableFieldSchema::timestamp("updated"),
    ]
}

pub fn stat(recipe: i64, day: &str, views: i64) -> serde_json::Value {
    serde_json::json!({"recipe_id": recipe, "day": day, "views": views, "rating": 4.5, "note": format!("r{recipe} «ü», 'q'"), "updated": "2026-01-01T10:00:00.123456Z"})
}

pub async fn stats_fixture(days: &[&str], recipes: i64) -> Fixture {
    let f = Fixture::new().await;
    f.create_table("stats", stats_fields(), Some("day")).await;
    let mut rows = Vec::new();
    for d in days {
        for r in 1..=recipes {
            rows.push(stat(r, d, r * 10));
        }
    }
    f.insert("stats", rows).await;
    f
}

/// Files left in the fixture's staging bucket (the emulator's export directory).
pub fn staged_files(f: &Fixture) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&f.ds.env.export_root.join(&f.bucket), &mut out);
    out
}

pub fn count(f: &Fixture, table: &str) -> i64 {
    f.rows::<i64>(&format!("SELECT COUNT(*) FROM `{table}`"))[0]
}
