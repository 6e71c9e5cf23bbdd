//! Protecting the MySQL a sync writes to (`docs/sync.md#throttling`), as gh-ost and
//! pt-archiver do: between chunks of work, both syncs ask [`Throttle::wait`], which returns at
//! once while the primary's `Threads_running` and every configured replica's lag are under
//! their thresholds, and otherwise pauses until they are (or fails, transient, after
//! `max_pause_secs`).
//!
//! Replica lag is read from a heartbeat (pt-heartbeat style): while a [`Throttle`] lives, a
//! thread writes the primary's UTC time into `sync_heartbeat` every `heartbeat_interval_ms`;
//! the row's age on a replica is its lag, to a fraction of a second, whatever the replica's
//! own clock of applied events says. With `lag_source = "seconds_behind_master"` the replica's
//! `SHOW REPLICA STATUS` figure is used instead (whole seconds; nothing is written).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, Row};

use domain::config::{LagSource, ThrottleConfig};

use crate::session::{connect, MysqlError};

/// How often a paused sync looks again.
const RECHECK: Duration = Duration::from_millis(250);

/// What the throttle reports as it works: time paused (by reason) and each replica's lag as
/// last read. The binaries turn these into metrics.
pub trait ThrottleObserver: Send + Sync {
    fn paused(&self, reason: &'static str, secs: f64);
    fn replica_lag(&self, replica: &str, secs: f64);
}

/// An observer that records nothing.
pub struct NoObserver;

impl ThrottleObserver for NoObserver {
    fn paused(&self, _: &'static str, _: f64) {}
    fn replica_lag(&self, _: &str, _: f64) {}
}

/// An observer that adds up what it sees: seconds paused by reason, and each replica's
/// highest lag read (for a run's summary and metrics).
#[derive(Default)]
pub struct ThrottleTally {
    paused: Mutex<std::collections::BTreeMap<&'static str, f64>>,
    lag_max: Mutex<std::collections::BTreeMap<String, f64>>,
}

/// What a [`ThrottleTally`] saw: seconds paused by reason, highest lag by replica.
pub type Tallied = (
    std::collections::BTreeMap<&'static str, f64>,
    std::collections::BTreeMap<String, f64>,
);

impl ThrottleTally {
    /// What was seen since the last take, and starts again from nothing.
    pub fn take(&self) -> Tallied {
        let paused = self
            .paused
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        let lag = self
            .lag_max
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        (paused, lag)
    }
}

impl ThrottleObserver for ThrottleTally {
    fn paused(&self, reason: &'static str, secs: f64) {
        if let Ok(mut m) = self.paused.lock() {
            *m.entry(reason).or_default() += secs;
        }
    }
    fn replica_lag(&self, replica: &str, secs: f64) {
        if let Ok(mut m) = self.lag_max.lock() {
            let e = m.entry(replica.to_string()).or_default();
            *e = e.max(secs);
        }
    }
}

/// Why a sync must pause now.
#[derive(Debug, Clone, PartialEq)]
pub enum Over {
    ThreadsRunning {
        running: u64,
        max: u64,
    },
    ReplicaLag {
        replica: String,
        secs: f64,
        max: f64,
    },
    /// The replica's lag can't be read (unreachable, replication stopped, no heartbeat yet):
    /// treated as lagging, so a sync never races ahead of a replica it can't see.
    ReplicaUnknown {
        replica: String,
        why: String,
    },
}

impl Over {
    /// A bounded label for the throttled-seconds metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Over::ThreadsRunning { .. } => "threads_running",
            Over::ReplicaLag { .. } | Over::ReplicaUnknown { .. } => "replica_lag",
        }
    }
}

impl std::fmt::Display for Over {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Over::ThreadsRunning { running, max } => {
                write!(
                    f,
                    "the primary's Threads_running is {running} (limit {max})"
                )
            }
            Over::ReplicaLag { replica, secs, max } => {
                write!(f, "replica {replica} lags {secs:.2} s (limit {max} s)")
            }
            Over::ReplicaUnknown { replica, why } => {
                write!(f, "replica {replica}: lag unknown ({why})")
            }
        }
    }
}

/// A watched replica and its session (opened on first use, reopened after an error).
struct Replica {
    name: String,
    url: String,
    conn: Option<Conn>,
}

/// The heartbeat writer: a thread with its own primary session.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decides when a sync may go on writing. Shareable (`&self` everywhere).
pub struct Throttle {
    settings: ThrottleConfig,
    primary_url: String,
    observer: Arc<dyn ThrottleObserver>,
    /// The replicas' sessions and the heartbeat, once started (first check, or
    /// [`Throttle::start`]).
    watch: Mutex<Option<Watch>>,
    /// A pause never lasts past this (a bounded run's deadline, [`Throttle::until`]).
    deadline: Option<Instant>,
    /// Each watched replica's name and DSN, read when the throttle is made.
    replica_urls: Vec<(String, String)>,
}

/// What watching replicas needs: the primary's `@@server_id` (the heartbeat row replicas are
/// asked about), their sessions, the heartbeat writer.
struct Watch {
    server_id: u64,
    replicas: Vec<Replica>,
    _heartbeat: Option<Heartbeat>,
}

impl Throttle {
    /// A throttle that never pauses (no thresholds, no replicas).
    pub fn off() -> Throttle {
        Throttle {
            settings: ThrottleConfig {
                max_threads_running: 0,
                replicas: Vec::new(),
                ..ThrottleConfig::default()
            },
            primary_url: String::new(),
            observer: Arc::new(NoObserver),
            watch: Mutex::new(None),
            deadline: None,
            replica_urls: Vec::new(),
        }
    }

    /// A throttle that connects on its first check (a daemon whose MySQL may be down at
    /// start). The replicas' DSNs are read now: one that can't be read (its `url_env` unset,
    /// its `url_file` missing) is a configuration error at start, not at the first write.
    pub fn lazy(
        settings: &ThrottleConfig,
        primary_url: &str,
        observer: Arc<dyn ThrottleObserver>,
    ) -> Result<Throttle, MysqlError> {
        let replica_urls = settings
            .replicas
            .iter()
            .map(|r| Ok((r.name.clone(), r.url()?)))
            .collect::<Result<_, domain::config::ConfigError>>()
            .map_err(|e| MysqlError::Url(e.to_string()))?;
        Ok(Throttle {
            settings: settings.clone(),
            primary_url: primary_url.to_string(),
            observer,
            watch: Mutex::new(None),
            deadline: None,
            replica_urls,
        })
    }

    /// Pauses end at `deadline` at the latest: a pause still needed then fails with
    /// [`MysqlError::PastDeadline`], so a bounded run (partition-sync's `--max-run-secs`) ends
    /// in time instead of waiting out `max_pause_secs`.
    pub fn until(mut self, deadline: Instant) -> Throttle {
        self.deadline = Some(deadline);
        self
    }

    /// Starts the throttle of one run now: resolves the replicas' DSNs and, with replicas and
    /// the heartbeat lag source, starts writing the heartbeat on the primary.
    pub fn start(
        settings: &ThrottleConfig,
        primary_url: &str,
        observer: Arc<dyn ThrottleObserver>,
    ) -> Result<Throttle, MysqlError> {
        let t = Throttle::lazy(settings, primary_url, observer)?;
        {
            let mut watch = t.watch.lock().unwrap_or_else(|e| e.into_inner());
            if !settings.replicas.is_empty() {
                *watch = Some(t.start_watch()?);
            }
        }
        Ok(t)
    }

    fn start_watch(&self) -> Result<Watch, MysqlError> {
        let settings = &self.settings;
        let replicas = self
            .replica_urls
            .iter()
            .map(|(name, url)| Replica {
                name: name.clone(),
                url: url.clone(),
                conn: None,
            })
            .collect();
        let mut primary = connect(&self.primary_url)?;
        let server_id: u64 = primary
            .query_first("SELECT @@server_id")?
            .unwrap_or_default();
        let heartbeat = if settings.lag_source == LagSource::Heartbeat {
            // The first beat is written before any check, so a caught-up replica reads
            // a fresh row at once.
            beat(&mut primary)?;
            Some(start_heartbeat(
                primary,
                self.primary_url.clone(),
                Duration::from_millis(settings.heartbeat_interval_ms),
            ))
        } else {
            None
        };
        Ok(Watch {
            server_id,
            replicas,
            _heartbeat: heartbeat,
        })
    }

    /// What is over its threshold now, if anything (the first found). `primary` is any
    /// session on the primary (a load's own, even inside its transaction).
    pub fn over(&self, primary: &mut Conn) -> Result<Option<Over>, MysqlError> {
        let max = self.settings.max_threads_running;
        if max > 0 {
            let running = threads_running(primary)?;
            if running > max {
                return Ok(Some(Over::ThreadsRunning { running, max }));
            }
        }
        if self.settings.replicas.is_empty() {
            return Ok(None);
        }
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.is_none() {
            *watch = Some(self.start_watch()?);
        }
        let Some(watch) = watch.as_mut() else {
            return Ok(None);
        };
        let server_id = watch.server_id;
        for r in watch.replicas.iter_mut() {
            match self.replica_lag(r, server_id) {
                Ok(secs) => {
                    self.observer.replica_lag(&r.name, secs);
                    if secs > self.settings.max_replica_lag_secs {
                        return Ok(Some(Over::ReplicaLag {
                            replica: r.name.clone(),
                            secs,
                            max: self.settings.max_replica_lag_secs,
                        }));
                    }
                }
                Err(why) => {
                    return Ok(Some(Over::ReplicaUnknown {
                        replica: r.name.clone(),
                        why,
                    }))
                }
            }
        }
        Ok(None)
    }

    /// Returns once nothing is over its threshold, pausing as long as something is. Returns
    /// the time paused; fails (transient) when one pause outlasts `max_pause_secs`.
    pub fn wait(&self, primary: &mut Conn) -> Result<Duration, MysqlError> {
        let started = Instant::now();
        let limit = Duration::from_secs(self.settings.max_pause_secs);
        let mut logged = false;
        loop {
            let Some(over) = self.over(primary)? else {
                if logged {
                    tracing::info!(
                        paused_s = started.elapsed().as_secs_f64(),
                        "resuming after a pause"
                    );
                }
                return Ok(started.elapsed());
            };
            if started.elapsed() >= limit {
                return Err(MysqlError::Throttled(format!(
                    "paused {} s and {over}",
                    limit.as_secs()
                )));
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Err(MysqlError::PastDeadline(format!(
                    "paused {:.1} s and {over}",
                    started.elapsed().as_secs_f64()
                )));
            }
            if !logged {
                tracing::info!(reason = %over, "pausing to protect MySQL");
                logged = true;
            }
            let nap = self
                .deadline
                .map_or(RECHECK, |d| RECHECK.min(d.saturating_duration_since(now)));
            let t = Instant::now();
            std::thread::sleep(nap);
            self.observer
                .paused(over.reason(), t.elapsed().as_secs_f64());
        }
    }

    /// One replica's lag in seconds; `Err` says why it can't be known. The session is
    /// reopened on the next call after an error.
    fn replica_lag(&self, r: &mut Replica, server_id: u64) -> Result<f64, String> {
        if r.conn.is_none() {
            r.conn = Some(connect(&r.url).map_err(|e| e.to_string())?);
        }
        let conn = r.conn.as_mut().ok_or("no session")?;
        let read = match self.settings.lag_source {
            LagSource::Heartbeat => heartbeat_age(conn, server_id),
            LagSource::SecondsBehindMaster => seconds_behind(conn),
        };
        if read.is_err() {
            r.conn = None;
        }
        read
    }
}

/// The primary's `Threads_running`.
pub fn threads_running(conn: &mut Conn) -> Result<u64, MysqlError> {
    global_status(conn, "Threads_running")
}

/// A numeric server status variable (`SHOW GLOBAL STATUS`; `name` is one of ours, a plain
/// identifier); 0 when absent.
pub fn global_status(conn: &mut Conn, name: &str) -> Result<u64, MysqlError> {
    let row: Option<(String, String)> =
        conn.query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))?;
    Ok(row.and_then(|(_, v)| v.parse().ok()).unwrap_or(0))
}

/// Writes one heartbeat: the primary's UTC time under its server id.
fn beat(conn: &mut Conn) -> Result<(), MysqlError> {
    conn.query_drop(
        "INSERT INTO sync_heartbeat (server_id, ts) VALUES (@@server_id, UTC_TIMESTAMP(6)) \
         ON DUPLICATE KEY UPDATE ts = VALUES(ts)",
    )?;
    Ok(())
}

fn start_heartbeat(conn: Conn, url: String, every: Duration) -> Heartbeat {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut session = Some(conn);
        let mut warned = false;
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            if session.is_none() {
                session = connect(&url).ok();
            }
            let Some(c) = session.as_mut() else { continue };
            if let Err(e) = beat(c) {
                if !warned {
                    tracing::warn!(error = %e, "cannot write the replica heartbeat; replicas will read as lagging");
                    warned = true;
                }
                session = None;
            }
        }
    });
    Heartbeat {
        stop,
        thread: Some(thread),
    }
}

/// Age of the primary's heartbeat row on a replica, in seconds.
pub fn heartbeat_age(conn: &mut Conn, server_id: u64) -> Result<f64, String> {
    let age: Option<Option<i64>> = conn
        .exec_first(
            "SELECT TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM sync_heartbeat WHERE server_id = ?",
            (server_id,),
        )
        .map_err(|e| MysqlError::from(e).to_string())?;
    match age {
        Some(Some(us)) => Ok(us.max(0) as f64 / 1e6),
        _ => Err(
            "no heartbeat row yet: is the sync's database replicated there? (or set \
             throttle.lag_source = \"seconds_behind_master\")"
                .into(),
        ),
    }
}

/// `Seconds_Behind_Master` (MariaDB, MySQL before 8.0.22) or `Seconds_Behind_Source` of the
/// replica's status.
fn seconds_behind(conn: &mut Conn) -> Result<f64, String> {
    // `SHOW REPLICA STATUS`: MariaDB 10.5.1+, MySQL 8.0.22+; older servers only know the
    // SLAVE spelling (a syntax error, 1064, for the other).
    let row: Option<Row> = match conn.query_first("SHOW REPLICA STATUS") {
        Err(mysql::Error::MySqlError(e)) if e.code == 1064 => conn.query_first("SHOW SLAVE STATUS"),
        other => other,
    }
    .map_err(|e| MysqlError::from(e).to_string())?;
    let row = row.ok_or("not a replica (SHOW REPLICA STATUS is empty)")?;
    for name in ["Seconds_Behind_Master", "Seconds_Behind_Source"] {
        if let Some(v) = row.get_opt::<Option<u64>, _>(name) {
            return match v {
                Ok(Some(s)) => Ok(s as f64),
                _ => Err("replication is not running".into()),
            };
        }
    }
    Err("SHOW REPLICA STATUS has no Seconds_Behind column".into())
}
