//! Test support, a dev-dependency of every crate that needs it: a MySQL database
//! ([`TestDb`]) and a BigQuery dataset ([`TestDataset`]) per test, and the two together with a
//! sync config pointing at both ([`SyncFixture`]), so tests run in parallel and leave nothing
//! behind. Service URLs come from the environment or
//! from `.dev/env`, written by `deploy/dev/env.sh up`. A missing service fails the test with a
//! message saying how to start it; it never skips.

// Test support panics by design: a test that cannot get its database must fail loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::new_without_default)]

use std::collections::HashMap;
use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::Connection;
use domain::config::Credentials;

mod emulator;
mod fixture;
pub use emulator::Emulator;
pub use fixture::SyncFixture;

/// URLs of the local services.
#[derive(Debug, Clone)]
pub struct DevEnv {
    /// Server URL without a database, e.g. `mysql://dev:dev@127.0.0.1:33306`.
    pub mysql_url: String,
    pub bigquery_url: String,
    pub bigquery_project: String,
    /// Directory the BigQuery emulator writes `gs://bucket/path` exports into.
    pub export_root: PathBuf,
    pub gcs_url: String,
    /// Prometheus Pushgateway.
    pub pushgateway_url: String,
    /// The real MariaDB replica of `mysql_url` (it applies only databases named `repl_*`).
    pub mysql_replica_url: String,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_file() -> HashMap<String, String> {
    let path = std::env::var("DEV_ENV_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".dev/env"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Reads the service URLs. Panics with instructions when they are unknown.
pub fn dev_env() -> DevEnv {
    let file = env_file();
    let get = |key: &str| -> String {
        std::env::var(key)
            .ok()
            .or_else(|| file.get(key).cloned())
            .unwrap_or_else(|| {
                panic!(
                    "{key} is not set and .dev/env does not define it: start the local services \
                 with `deploy/dev/env.sh up` (or `make test`)"
                )
            })
    };
    DevEnv {
        mysql_url: get("MYSQL_URL"),
        bigquery_url: get("BIGQUERY_URL"),
        bigquery_project: get("BIGQUERY_PROJECT"),
        export_root: PathBuf::from(get("BIGQUERY_EXPORT_ROOT")),
        gcs_url: get("GCS_URL"),
        pushgateway_url: get("PUSHGATEWAY_URL"),
        mysql_replica_url: get("MYSQL_REPLICA_URL"),
    }
}

/// A fresh, uniquely named MySQL database (`test_<uuid>`, or `repl_<uuid>` when replicated),
/// dropped when this value drops.
pub struct TestDb {
    pub name: String,
    /// URL of this database, for the code under test.
    pub url: String,
    /// URL of this database on the dev replica (applied there only for `repl_*` databases).
    pub replica_url: String,
    server_url: String,
}

impl TestDb {
    /// A database with every migration applied.
    pub fn new() -> TestDb {
        let db = TestDb::empty();
        let mut conn = db.connect();
        migrations::run_migrations(&mut conn).expect("migrations apply");
        db
    }

    /// A database with nothing in it.
    pub fn empty() -> TestDb {
        TestDb::named("test")
    }

    /// An empty database that the dev replica applies too (`repl_<uuid>`). It is there as
    /// soon as [`TestDb::wait_replicated`] returns.
    pub fn replicated() -> TestDb {
        let db = TestDb::named("repl");
        db.wait_replicated();
        db
    }

    /// Waits (up to 30 s) until everything written to this database so far has reached the
    /// replica: a marker row written now is read there.
    pub fn wait_replicated(&self) {
        use mysql::prelude::Queryable;
        let mut primary = mysql::Conn::new(self.url.as_str()).expect("connect to the primary");
        primary
            .query_drop(
                "CREATE TABLE IF NOT EXISTS test_marker (id INT PRIMARY KEY, token VARCHAR(64))",
            )
            .expect("create marker table");
        let token = uuid::Uuid::new_v4().simple().to_string();
        primary
            .exec_drop("REPLACE INTO test_marker VALUES (1, ?)", (token.as_str(),))
            .expect("write marker");
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(30) {
            if let Ok(mut r) = mysql::Conn::new(self.replica_url.as_str()) {
                let seen: Option<String> = r
                    .query_first("SELECT token FROM test_marker WHERE id = 1")
                    .unwrap_or(None);
                if seen.as_deref() == Some(token.as_str()) {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "database {} did not reach the replica at {} within 30 s (is it replicating? \
             `deploy/dev/env.sh status`)",
            self.name,
            redact(&self.replica_url)
        );
    }

    fn named(prefix: &str) -> TestDb {
        let env = dev_env();
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = MysqlConnection::establish(&env.mysql_url).unwrap_or_else(|e| {
            panic!(
                "MySQL is not reachable at {}: {e}; start it with `deploy/dev/env.sh up`",
                redact(&env.mysql_url)
            )
        });
        admin
            .batch_execute(&format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            ))
            .expect("create test database");
        let url = format!("{}/{name}", env.mysql_url.trim_end_matches('/'));
        let replica_url = format!("{}/{name}", env.mysql_replica_url.trim_end_matches('/'));
        TestDb {
            name,
            url,
            replica_url,
            server_url: env.mysql_url,
        }
    }

    /// A new connection to this database.
    pub fn connect(&self) -> MysqlConnection {
        MysqlConnection::establish(&self.url).expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = MysqlConnection::establish(&self.server_url) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

/// Replaces the password of a URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A fresh BigQuery dataset (`test_<uuid>`) in the emulator, deleted with its tables on drop.
pub struct TestDataset {
    pub client: gcp_bigquery_client::Client,
    pub project: String,
    pub dataset: String,
    pub env: DevEnv,
}

impl TestDataset {
    pub async fn new() -> TestDataset {
        let env = dev_env();
        let client = sync_engine::warehouse::client(Some(&env.bigquery_url), &Credentials::None)
            .await
            .expect("build BigQuery client");
        let dataset = format!("test_{}", uuid::Uuid::new_v4().simple());
        client
            .dataset()
            .create(gcp_bigquery_client::model::dataset::Dataset::new(
                &env.bigquery_project,
                &dataset,
            ))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "BigQuery emulator at {} refused to create a dataset: {e}; start it with \
                     `deploy/dev/env.sh up`",
                    env.bigquery_url
                )
            });
        TestDataset {
            client,
            project: env.bigquery_project.clone(),
            dataset,
            env,
        }
    }
}

impl Drop for TestDataset {
    fn drop(&mut self) {
        let (project, dataset) = (self.project.clone(), self.dataset.clone());
        let url = self.env.bigquery_url.clone();
        // Drop can't be async, and the test's runtime is blocked here: delete from a thread
        // with its own runtime and its own client (a client's pooled connections belong to
        // the runtime that made them).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(client) =
                        sync_engine::warehouse::client(Some(&url), &Credentials::None).await
                    {
                        let _ = client.dataset().delete(&project, &dataset, true).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Five statements running `secs` seconds on the server of `url`, started when this is made,
/// and a `throttle.max_threads_running` they put the server over while they run: its quietest
/// `Threads_running` just before (this session, replicas' binlog dump threads, other tests'
/// queries), plus 2.
pub struct BusyPrimary {
    pub max_threads_running: u64,
    sessions: Vec<std::thread::JoinHandle<()>>,
}

impl BusyPrimary {
    pub fn start(url: &str, secs: u32) -> BusyPrimary {
        use mysql::prelude::Queryable;
        let mut c = mysql::Conn::new(url).expect("connect to MySQL");
        // The least of 20 readings 10 ms apart: a burst of other tests' queries doesn't count.
        let quiet = (0..20)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                sync_engine::throttle::threads_running(&mut c).expect("read Threads_running")
            })
            .min()
            .unwrap_or(1);
        let sessions = (0..5)
            .map(|_| {
                let url = url.to_string();
                std::thread::spawn(move || {
                    let mut c = mysql::Conn::new(url.as_str()).expect("connect to MySQL");
                    c.query_drop(format!("SELECT SLEEP({secs})"))
                        .expect("SLEEP");
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        BusyPrimary {
            max_threads_running: quiet + 2,
            sessions,
        }
    }

    /// Whether any of the statements is still running.
    pub fn running(&self) -> bool {
        self.sessions.iter().any(|s| !s.is_finished())
    }

    /// Waits for the statements to end.
    pub fn join(self) {
        for s in self.sessions {
            s.join().expect("busy session");
        }
    }
}
