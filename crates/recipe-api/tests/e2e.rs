//! End to end, as `make run` does it: the demo dataset (deploy/dev/demo/demo.py) seeded into a
//! warehouse dataset of its own, recipe-api's recipes and ingredients seeded into a database of
//! its own, the real `partition-sync` and `stream-sync` binaries syncing one into the other,
//! and recipe-api serving the result, which must equal the warehouse's values exactly. Then the
//! demo change: both engines carry it through, and the latency from the warehouse change to
//! the API is printed for each (measured, not asserted).
//!
//! The sync binaries are the workspace's `target/<profile>/partition-sync` and `stream-sync`:
//! `cargo test --workspace` (what `make test` runs) builds them before any test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;
use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;
use recipe_api::config::Config;
use recipe_api::Application;
use serde_json::Value;
use sync_engine::warehouse::Warehouse;
use test_support::{TestDataset, TestDb};

/// Every demo recipe's id (deploy/dev/demo/demo.py RECIPES).
const RECIPES: std::ops::RangeInclusive<i64> = 1..=12;
/// The env variable the generated config names for the MySQL DSN.
const URL_ENV: &str = "E2E_SYNC_MYSQL_URL";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A workspace binary next to this test's own (`target/<profile>/deps/e2e-…`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {name}` (make test does)",
        path.display()
    );
    path
}

fn check(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

struct Demo {
    ds: TestDataset,
    db: TestDb,
    wh: Warehouse,
    dir: PathBuf,
    bucket: String,
    config: PathBuf,
}

impl Demo {
    async fn new() -> Demo {
        let ds = TestDataset::new().await;
        let db = TestDb::new();
        let wh = Warehouse::new(ds.client.clone(), ds.project.clone());
        let dir = std::env::temp_dir().join(format!("e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let bucket = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let config = dir.join("sync.toml");
        Demo {
            ds,
            db,
            wh,
            dir,
            bucket,
            config,
        }
    }

    /// `demo.py <args>` against this test's dataset.
    fn demo_py(&self, args: &[&str]) -> Output {
        let output = Command::new("python3")
            .arg(workspace().join("deploy/dev/demo/demo.py"))
            .args(["--bigquery-url", &self.ds.env.bigquery_url])
            .args(["--project", &self.ds.project, "--dataset", &self.ds.dataset])
            .args(args)
            .output()
            .expect("python3 runs");
        check(&format!("demo.py {}", args.join(" ")), output)
    }

    fn seed(&self) {
        self.demo_py(&["seed-warehouse"]);
        let sql = String::from_utf8(self.demo_py(&["api-sql"]).stdout).unwrap();
        self.db.connect().batch_execute(&sql).unwrap();
        let config = self.demo_py(&[
            "config",
            "--url-env",
            URL_ENV,
            "--bucket",
            &self.bucket,
            "--export-root",
            &self.ds.env.export_root.display().to_string(),
            "--pushgateway",
            "",
            "--metrics-listen",
            "",
            "--interval",
            "1",
        ]);
        std::fs::write(&self.config, config.stdout).unwrap();
    }

    fn sync_command(&self, binary_name: &str) -> Command {
        let mut command = Command::new(binary(binary_name));
        command
            .arg("--config")
            .arg(&self.config)
            .env(URL_ENV, &self.db.url)
            .env("RUST_LOG", "warn");
        command
    }

    /// One `partition-sync run`; its JSON summary.
    fn partition_sync(&self) -> Value {
        let output = self
            .sync_command("partition-sync")
            .args(["--output", "json", "run"])
            .output()
            .unwrap();
        let output = check("partition-sync run", output);
        serde_json::from_slice(&output.stdout).expect("partition-sync prints a JSON summary")
    }

    fn stream_sync_once(&self) {
        let output = self
            .sync_command("stream-sync")
            .args(["run", "--once"])
            .output()
            .unwrap();
        check("stream-sync run --once", output);
    }

    fn stream_sync_daemon(&self) -> Daemon {
        Daemon(
            self.sync_command("stream-sync")
                .arg("run")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    async fn bq(&self, sql: &str) -> Vec<Vec<Option<Value>>> {
        let sql = sql.replace("{ds}", &self.ds.dataset);
        self.wh.query_all(&sql).await.unwrap().rows
    }

    /// The warehouse's stats as the API should show them: per recipe, its days in order.
    async fn warehouse_stats(&self) -> BTreeMap<i64, Vec<DayStats>> {
        let rows = self
            .bq(
                "SELECT recipe_id, CAST(day AS STRING), views, cooks, avg_rating, \
                 UNIX_MICROS(updated_at) FROM `{ds}.recipe_daily_stats` ORDER BY recipe_id, day",
            )
            .await;
        let mut out: BTreeMap<i64, Vec<DayStats>> = BTreeMap::new();
        for r in rows {
            out.entry(int(&r[0]).unwrap()).or_default().push(DayStats {
                day: text(&r[1]).unwrap(),
                views: int(&r[2]),
                cooks: int(&r[3]),
                avg_rating: float(&r[4]),
                updated_us: int(&r[5]),
            });
        }
        out
    }

    /// The warehouse's nutrition: ingredient id → [calories, protein, fat, carbs].
    async fn warehouse_nutrition(&self) -> BTreeMap<i64, Nutrition> {
        self.bq("SELECT ingredient_id, calories, protein_g, fat_g, carbs_g \
                 FROM `{ds}.ingredient_nutrition`")
            .await
            .into_iter()
            .map(|r| {
                (
                    int(&r[0]).unwrap(),
                    [float(&r[1]), float(&r[2]), float(&r[3]), float(&r[4])],
                )
            })
            .collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.ds.env.export_root.join(&self.bucket));
    }
}

/// A stream-sync daemon, stopped with SIGTERM (graceful) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Nutrition = [Option<f64>; 4];

#[derive(Debug, Clone, PartialEq)]
struct DayStats {
    day: String,
    views: Option<i64>,
    cooks: Option<i64>,
    avg_rating: Option<f64>,
    updated_us: Option<i64>,
}

/// Warehouse cells come as JSON strings (or numbers); `None` is NULL.
fn text(cell: &Option<Value>) -> Option<String> {
    match cell {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}
fn int(cell: &Option<Value>) -> Option<i64> {
    text(cell).map(|s| s.parse().unwrap())
}
fn float(cell: &Option<Value>) -> Option<f64> {
    text(cell).map(|s| s.parse().unwrap())
}

struct Api {
    base: String,
    client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
}

impl Api {
    fn start(database_url: &str) -> Api {
        let mut config = Config::new(database_url, vec!["e2e-token".to_string()]);
        config.bind = "127.0.0.1:0".to_string();
        config.workers = Some(1);
        config.pool_size = 4;
        let app = Application::build(config).unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api {
            base,
            client,
            handle,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn stats(&self) -> BTreeMap<i64, Vec<DayStats>> {
        let mut out = BTreeMap::new();
        for id in RECIPES {
            let body = self.get(&format!("/v1/recipes/{id}/stats")).await;
            let days: Vec<DayStats> = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| DayStats {
                    day: d["day"].as_str().unwrap().to_string(),
                    views: d["views"].as_i64(),
                    cooks: d["cooks"].as_i64(),
                    avg_rating: d["avg_rating"].as_f64(),
                    updated_us: d["updated_at"]
                        .as_str()
                        .map(|t| DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros()),
                })
                .collect();
            if !days.is_empty() {
                out.insert(id, days);
            }
        }
        out
    }

    /// Every ingredient's nutrition (those with a non-null one).
    async fn nutrition(&self) -> BTreeMap<i64, Nutrition> {
        let page = self.get("/v1/ingredients?limit=100").await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| !i["nutrition"].is_null())
            .map(|i| {
                let n = &i["nutrition"];
                (
                    i["id"].as_i64().unwrap(),
                    [
                        n["calories"].as_f64(),
                        n["protein_g"].as_f64(),
                        n["fat_g"].as_f64(),
                        n["carbs_g"].as_f64(),
                    ],
                )
            })
            .collect()
    }
}

#[derive(diesel::QueryableByName)]
struct CatalogCounts {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    recipes: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    ingredients: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    links: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_warehouse_reaches_the_api_exactly_and_so_do_its_changes() {
    let demo = Demo::new().await;
    demo.seed();

    // Before any sync: the API serves its own recipes, with no synced data.
    let api = Api::start(&demo.db.url);
    assert_eq!(
        api.get("/v1/recipes?limit=100").await["items"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    assert!(api.stats().await.is_empty());
    assert!(api.nutrition().await.is_empty());

    let first = demo.partition_sync();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["rows_loaded"], 1080 + 12 + 30 + 67, "{first}");
    demo.stream_sync_once();

    let want_stats = demo.warehouse_stats().await;
    assert_eq!(want_stats.len(), 12);
    assert!(want_stats.values().all(|days| days.len() == 90));
    assert_eq!(api.stats().await, want_stats);
    let want_nutrition = demo.warehouse_nutrition().await;
    assert_eq!(want_nutrition.len(), 29, "one ingredient has no nutrition");
    assert_eq!(api.nutrition().await, want_nutrition);
    let curry = api.get("/v1/ingredients/22").await;
    assert!(curry["nutrition"].is_null(), "{curry}");

    // The catalogue group landed in its own tables, next to (not in) the API's.
    let counts = diesel::sql_query(
        "SELECT (SELECT COUNT(*) FROM catalog_recipes) AS recipes, \
           (SELECT COUNT(*) FROM catalog_ingredients) AS ingredients, \
           (SELECT COUNT(*) FROM catalog_recipe_ingredients) AS links",
    )
    .get_result::<CatalogCounts>(&mut demo.db.connect())
    .unwrap();
    assert_eq!(
        (counts.recipes, counts.ingredients, counts.links),
        (12, 30, 67)
    );

    // Idempotent: a second run with no warehouse change writes nothing.
    let again = demo.partition_sync();
    assert_eq!(again["rows_loaded"], 0, "{again}");
    assert_eq!(again["rows_deleted"], 0, "{again}");

    // The demo change, with stream-sync running as a daemon (1 s interval) and a
    // partition-sync run started at the change (as a CronJob tick would).
    let daemon = demo.stream_sync_daemon();
    tokio::time::sleep(Duration::from_secs(2)).await;
    demo.demo_py(&["change"]);
    let changed_at = Instant::now();
    let run = {
        let mut command = demo.sync_command("partition-sync");
        command.args(["--output", "json", "run"]);
        std::thread::spawn(move || check("partition-sync run", command.output().unwrap()))
    };
    let want_nutrition = demo.warehouse_nutrition().await;
    assert_eq!(want_nutrition.len(), 27, "two nutrition rows deleted");
    let want_stats = demo.warehouse_stats().await;
    let (mut stream_latency, mut partition_latency) = (None, None);
    while stream_latency.is_none() || partition_latency.is_none() {
        assert!(
            changed_at.elapsed() < Duration::from_secs(60),
            "the change did not reach the API within 60 s"
        );
        if stream_latency.is_none() && api.nutrition().await == want_nutrition {
            stream_latency = Some(changed_at.elapsed());
        }
        if partition_latency.is_none() && api.stats().await == want_stats {
            partition_latency = Some(changed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(daemon);
    let run: Value = serde_json::from_slice(&run.join().unwrap().stdout).unwrap();
    assert_eq!(run["partitions_loaded"], 1, "only the changed day: {run}");
    let last_day = &api.get("/v1/recipes/1/stats?from=2026-03-31").await["items"][0];
    assert_eq!(
        last_day["views"].as_i64(),
        want_stats[&1].last().unwrap().views
    );
    for deleted in [29, 30] {
        let ingredient = api.get(&format!("/v1/ingredients/{deleted}")).await;
        assert!(ingredient["nutrition"].is_null(), "{ingredient}");
    }

    let ms = |d: Option<Duration>| d.unwrap_or_default().as_millis();
    println!(
        "latency from a warehouse change to the API: stream-sync (daemon, 1 s interval) {} ms; \
         partition-sync (a run started at the change) {} ms",
        ms(stream_latency),
        ms(partition_latency)
    );
    api.handle.stop(true).await;
}
