//! Helpers of the stream-sync integration tests: a BigQuery emulator dataset and a MariaDB
//! database per test, a config pointing at both, SQL on either side, one sync cycle.
#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use domain::config::SyncConfig;
use stream_sync::cycle::CycleSettings;
use stream_sync::runner::{Mode, Runner, TableOutcome};
use test_support::SyncFixture;

/// The shared [`SyncFixture`] (dataset, database, config over both) and stream-sync's own
/// helpers on top of it.
pub struct Fixture(SyncFixture);

impl std::ops::Deref for Fixture {
    type Target = SyncFixture;
    fn deref(&self) -> &SyncFixture {
        &self.0
    }
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture(SyncFixture::new().await)
    }

    pub fn my(&self) -> mysql::Conn {
        self.mysql()
    }

    /// Rows of a MySQL query, each column as text (NULL as "NULL").
    pub fn my_rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.mysql_text_rows(sql)
    }

    pub fn my_count(&self, table: &str) -> u64 {
        self.mysql_count(table)
            .unwrap_or_else(|| panic!("table {table} does not exist"))
    }

    /// Rows of `table`, or `None` while it does not exist.
    pub fn my_count_if_exists(&self, table: &str) -> Option<u64> {
        self.mysql_count(table)
    }

    /// A config with the given `[[tables]]` TOML and extra `[stream_sync]` lines.
    pub fn config(&self, tables: &str, stream_sync: &str) -> SyncConfig {
        SyncConfig::parse(&self.config_text(tables, stream_sync), "test.toml")
            .expect("test config parses")
    }

    /// The TOML of [`Fixture::config`]: 64 buckets unless `stream_sync` says otherwise.
    pub fn config_text(&self, tables: &str, stream_sync: &str) -> String {
        self.0.config_text(
            None,
            &format!("[stream_sync]\nbuckets = 64\n{stream_sync}\n{tables}"),
        )
    }

    pub async fn runner(&self, config: &SyncConfig, settings: Option<CycleSettings>) -> Runner {
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

    /// Asserts `verify` (a fresh runner's, up to 10 differences) finds MySQL in sync.
    pub async fn assert_in_sync(&self, config: &SyncConfig) {
        let differences = self.runner(config, None).await.verify(10).await.unwrap();
        assert!(differences.is_empty(), "{differences:?}");
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
