//! Fixture: a dataset, a database, a config file pointing at both.

use std::sync::Arc;

use domain::config::SyncConfig;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use mysql::prelude::Queryable;
use partition_sync::runner::{self, Context, Options, RunSummary};
use test_support::SyncFixture;

/// The shared [`SyncFixture`] (dataset, database, config over both) with a staging bucket in
/// the emulator's export directory, in `format`.
pub struct Fixture {
    base: SyncFixture,
    /// `staging.format` of the generated config.
    pub format: std::cell::Cell<&'static str>,
}

impl std::ops::Deref for Fixture {
    type Target = SyncFixture;
    fn deref(&self) -> &SyncFixture {
        &self.base
    }
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture {
            base: SyncFixture::new().await,
            format: std::cell::Cell::new("json"),
        }
    }

    /// A fixture whose database the dev replica applies (`SyncFixture::replicated`).
    pub async fn replicated() -> Fixture {
        Fixture {
            base: SyncFixture::replicated().await,
            format: std::cell::Cell::new("json"),
        }
    }

    /// Config text with `tables` (TOML `[[tables]]` blocks) appended.
    pub fn config_text(&self, tables: &str) -> String {
        self.base.config_text(Some(self.format.get()), tables)
    }

    pub fn config(&self, tables: &str) -> SyncConfig {
        SyncConfig::parse(&self.config_text(tables), "test").unwrap()
    }

    pub fn write_config(&self, tables: &str) -> std::path::PathBuf {
        self.base.write_config(Some(self.format.get()), tables)
    }

    pub async fn run(&self, tables: &str, opts: Options) -> RunSummary {
        let ctx = Context::new(self.config(tables)).await.unwrap();
        runner::run(&ctx, &opts, Arc::new(|_| {})).await.unwrap()
    }

    /// `verify` finds MySQL equal to the warehouse.
    pub async fn assert_in_sync(&self, tables: &str) {
        let ctx = Context::new(self.config(tables)).await.unwrap();
        let differ = partition_sync::commands::verify(&ctx, &Options::default())
            .await
            .unwrap();
        assert!(differ.is_empty(), "verify found differences: {differ:?}");
    }

    /// Runs DML or a query in the warehouse; `{ds}` is replaced by the dataset.
    pub async fn sql(&self, sql: &str) {
        self.bq(sql).await;
    }

    pub fn rows<T: mysql::prelude::FromRow>(&self, sql: &str) -> Vec<T> {
        self.mysql().query(sql).unwrap()
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
    fill_stats(Fixture::new().await, days, recipes).await
}

/// Creates the `stats` table in `f`'s dataset with `recipes` rows per day.
pub async fn fill_stats(f: Fixture, days: &[&str], recipes: i64) -> Fixture {
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
    f.base.staged_files()
}

pub fn count(f: &Fixture, table: &str) -> i64 {
    f.rows::<i64>(&format!("SELECT COUNT(*) FROM `{table}`"))[0]
}
