//! What the stream-sync benchmarks (`bench_stream`, `bench_stream_scale`) share: settings from
//! the environment, the benchmark table, and a 0.1% change of it. SQL uses `{ds}` for the
//! dataset.

use domain::config::SyncConfig;
use stream_sync::runner::Runner;

/// A runner for `config` writing to `mysql_url`, with its configured settings and room for
/// the long warehouse queries of a large table (an hour).
pub async fn bench_runner(config: &SyncConfig, mysql_url: &str) -> Runner {
    let mut runner = Runner::new(
        config,
        mysql_url.to_string(),
        Runner::settings_from(config),
        None,
    )
    .await
    .unwrap();
    runner.warehouse_mut().query_timeout = std::time::Duration::from_secs(3600);
    runner
}

/// A setting from the environment (`.dev/env`, loaded by make), or `default`.
pub fn env(key: &str, default: Option<&str>) -> String {
    std::env::var(key)
        .ok()
        .or(default.map(String::from))
        .unwrap_or_else(|| panic!("{key} is not set: run the benchmark through make"))
}

/// The statements creating the table `{ds}.bench` (with `options`, e.g. `OPTIONS (…)`) and
/// filling it with `rows` rows.
pub fn table_sql(rows: i64, options: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE {{ds}}.bench (id INT64 NOT NULL, name STRING, qty INT64, price FLOAT64, day DATE) {options}"
        ),
        format!(
            "INSERT INTO {{ds}}.bench (id, name, qty, price, day) SELECT x, CONCAT('item ', CAST(x AS STRING)), \
             MOD(x, 1000), x / 7.0, DATE_ADD(DATE '2020-01-01', INTERVAL MOD(x, 2000) DAY) \
             FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS x"
        ),
    ]
}

/// 0.1% of a `rows`-row table: half updated, a quarter deleted, a quarter inserted.
pub struct Change {
    pub rows: i64,
    pub updates: i64,
    pub deletes: i64,
    pub inserts: i64,
}

impl Change {
    /// A change of one row in `per` (at least 4 rows).
    pub fn per(rows: i64, per: i64) -> Change {
        let changed = (rows / per).max(4);
        Change {
            rows,
            updates: changed / 2,
            deletes: changed / 4,
            inserts: changed - changed / 2 - changed / 4,
        }
    }

    pub fn total(&self) -> i64 {
        self.updates + self.deletes + self.inserts
    }

    /// The statements of change number `round` (0, 1, …): each round touches other rows.
    pub fn sql(&self, round: i64) -> Vec<String> {
        let rows = self.rows;
        vec![
            format!(
                "UPDATE {{ds}}.bench SET qty = -qty, name = 'changed {round}' WHERE MOD(id, {}) = {}",
                rows / self.updates,
                2 * round
            ),
            format!(
                "DELETE FROM {{ds}}.bench WHERE MOD(id, {}) = {}",
                rows / self.deletes,
                1 + 2 * round
            ),
            format!(
                "INSERT INTO {{ds}}.bench (id, name, qty, price, day) SELECT x, 'new', 1, 1.0, DATE '2030-01-01' \
                 FROM UNNEST(GENERATE_ARRAY({}, {})) AS x",
                rows + round * self.inserts + 1,
                rows + (round + 1) * self.inserts
            ),
        ]
    }
}

/// Where a benchmark works: a fresh emulator dataset and MariaDB database, both named `tag`.
pub struct Place {
    pub tag: String,
    /// The database's URL.
    pub mysql_url: String,
    project: String,
    client: gcp_bigquery_client::Client,
    wh: sync_engine::warehouse::Warehouse,
    admin: mysql::Conn,
}

impl Place {
    pub async fn create(tag: &str, bq_url: &str, project: &str, mysql_server: &str) -> Place {
        use mysql::prelude::Queryable;
        let client = sync_engine::warehouse::client(
            Some(bq_url),
            &sync_engine::warehouse::Credentials::None,
        )
        .await
        .unwrap();
        client
            .dataset()
            .create(gcp_bigquery_client::model::dataset::Dataset::new(
                project, tag,
            ))
            .await
            .unwrap();
        let mut admin = sync_engine::session::connect(mysql_server).unwrap();
        admin
            .query_drop(format!("CREATE DATABASE `{tag}`"))
            .unwrap();
        let mut wh = sync_engine::warehouse::Warehouse::new(client.clone(), project.to_string());
        wh.query_timeout = std::time::Duration::from_secs(3600);
        Place {
            tag: tag.to_string(),
            mysql_url: format!("{}/{tag}", mysql_server.trim_end_matches('/')),
            project: project.to_string(),
            client,
            wh,
            admin,
        }
    }

    /// Runs warehouse SQL, `{ds}` standing for the dataset; panics naming the statement.
    pub async fn bq(&self, sql: &str) {
        self.wh
            .query_all(&sql.replace("{ds}", &self.tag))
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    /// Drops the database and the dataset.
    pub async fn remove(mut self) {
        use mysql::prelude::Queryable;
        let _ = self
            .admin
            .query_drop(format!("DROP DATABASE `{}`", self.tag));
        let _ = self
            .client
            .dataset()
            .delete(&self.project, &self.tag, true)
            .await;
    }
}
