//! MariaDB really stopped (SIGKILL) and restarted while the daemon runs: the daemon retries
//! with backoff and converges with no lost or duplicated rows. The test runs its own private
//! `mariadbd` (own datadir, own port) so the shared server other tests use stays up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{table, Fixture};
use mysql::prelude::Queryable;
use stream_sync::cycle::CycleSettings;
use stream_sync::runner::{Mode, Runner};

/// `(id, name, qty)` rows.
type Items = Vec<(i64, Option<String>, Option<i64>)>;

struct PrivateMariaDb {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateMariaDb {
    fn user() -> String {
        let out = Command::new("id").arg("-un").output().expect("id -un");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn start() -> PrivateMariaDb {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "stream-sync-mariadb-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--user={}", Self::user()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db (install mariadb-server: deploy/dev/env.sh install)");
        assert!(status.success(), "mariadb-install-db failed");
        let mut db = PrivateMariaDb {
            dir,
            port,
            child: None,
        };
        db.launch();
        let sql = "CREATE USER 'dev'@'%' IDENTIFIED BY 'dev'; GRANT ALL ON *.* TO 'dev'@'%'; \
                   CREATE DATABASE sync CHARACTER SET utf8mb4;";
        let status = Command::new("mariadb")
            .args(["--no-defaults", "-uroot"])
            .arg(format!("--socket={}", db.dir.join("sock").display()))
            .args(["-e", sql])
            .status()
            .unwrap();
        assert!(status.success());
        db
    }

    fn launch(&mut self) {
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--user={}", Self::user()))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .args(["--innodb-buffer-pool-size=64M", "--max-allowed-packet=64M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start; see {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The port answers; wait until the server accepts sessions.
        let ok = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            Command::new("mariadb-admin")
                .args(["--no-defaults", "-uroot", "ping", "--silent"])
                .arg(format!("--socket={}", self.dir.join("sock").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(ok, "mariadbd does not answer ping");
    }

    /// Kills the server by its PID, like a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("mysql://dev:dev@127.0.0.1:{}/sync", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_and_restarted_mid_run_the_daemon_retries_and_converges() {
    let f = Fixture::new().await;
    let mut server = PrivateMariaDb::start();
    f.bq("CREATE TABLE {ds}.items (id INT64 NOT NULL, name STRING, qty INT64)")
        .await;
    f.bq(
        "INSERT INTO {ds}.items (id, name, qty) SELECT x, CONCAT('item ', CAST(x AS STRING)), x \
          FROM UNNEST(GENERATE_ARRAY(1, 3000)) AS x",
    )
    .await;
    let config = f.config(&table("items", &["id"], ""), "");
    let settings = CycleSettings {
        batch_rows: 20,
        ..Runner::settings_from(&config)
    };
    let mut runner = Runner::new(&config, server.url(), settings.clone(), None)
        .await
        .unwrap();
    let stop = runner.shutdown_flag();
    let metrics = runner.metrics.clone();
    let daemon = tokio::spawn(async move {
        runner
            .run(Mode::Forever {
                interval: Duration::from_millis(200),
            })
            .await;
    });
    let count = |url: &str| -> Option<u64> {
        let mut c = sync_engine::session::connect(url).ok()?;
        c.query_first("SELECT COUNT(*) FROM items").ok().flatten()
    };
    let wait_until = |what: &str, secs: u64, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_until("the first sync", 60, &|| count(&server.url()) == Some(3000));

    // Change the warehouse, let the daemon start applying, then kill the server.
    f.bq("UPDATE {ds}.items SET name = 'changed', qty = -qty WHERE MOD(id, 6) = 0")
        .await;
    f.bq("DELETE FROM {ds}.items WHERE MOD(id, 30) = 1").await;
    f.bq("INSERT INTO {ds}.items (id, name, qty) SELECT x, 'new', x FROM UNNEST(GENERATE_ARRAY(5001, 5600)) AS x")
        .await;
    let url = server.url();
    // Kill the server as soon as the first batches are in, and check that was mid-apply:
    // 500 updated + 600 new rows arrive in batches of 20.
    let applied = std::cell::Cell::new(0u64);
    wait_until("the daemon to start applying", 30, &|| {
        let n = sync_engine::session::connect(&url)
            .ok()
            .and_then(|mut c| {
                c.query_first::<u64, _>(
                    "SELECT COUNT(*) FROM items WHERE name IN ('changed', 'new')",
                )
                .ok()
                .flatten()
            })
            .unwrap_or(0);
        applied.set(n);
        n > 0
    });
    server.kill();
    assert!(
        applied.get() < 1100,
        "the kill came after the whole change was applied ({} rows)",
        applied.get()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.launch();

    let expected: Items = {
        let rows = f
            .bq("SELECT id, name, qty FROM {ds}.items ORDER BY id")
            .await;
        rows.into_iter()
            .map(|r| {
                let s = |i: usize| r[i].as_ref().and_then(|v| v.as_str()).map(String::from);
                (
                    s(0).unwrap().parse().unwrap(),
                    s(1),
                    s(2).map(|q| q.parse().unwrap()),
                )
            })
            .collect()
    };
    assert_eq!(expected.len(), 3000 - 100 + 600);
    let read = |url: &str| -> Option<Items> {
        let mut c = sync_engine::session::connect(url).ok()?;
        c.query("SELECT id, name, qty FROM items ORDER BY id").ok()
    };
    wait_until("convergence after the restart", 90, &|| {
        read(&url).as_ref() == Some(&expected)
    });

    let text = metrics.render();
    let transient = text
        .lines()
        .find(|l| l.starts_with("stream_sync_errors_total") && l.contains("kind=\"transient\""))
        .unwrap_or_else(|| panic!("no transient errors were counted:\n{text}"));
    assert!(!transient.ends_with(" 0"), "{transient}");
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("the daemon stops on shutdown")
        .unwrap();

    // The data equals the warehouse's, and a final cycle finds nothing to do.
    let mut check = Runner::new(&config, server.url(), settings, None)
        .await
        .unwrap();
    assert!(check.verify(10).await.unwrap().is_empty());
    let out = check.run(Mode::Once { max_attempts: 3 }).await;
    assert!(out[0].error.is_none(), "{:?}", out[0].error);
    assert_eq!(out[0].report.rows_written(), 0);
}
