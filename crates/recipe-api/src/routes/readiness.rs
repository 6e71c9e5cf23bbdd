//! `/readyz`'s own database probe (docs/api.md#database-failures): one connection of its own,
//! outside the pool and the database threads, so readiness says whether MySQL answers even
//! while every request thread is busy (a queue of writes behind a row lock must not take every
//! pod out of the Service). A result is reused for up to [`FRESH`]; a probe that does not
//! answer within [`PROBE_TIMEOUT`] counts as not ready.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::Connection;

/// How long a probe result is reused.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long a probe may take before the answer is "not ready".
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The probe connection's slot: one probe at a time uses it.
type Slot = Arc<Mutex<Option<MysqlConnection>>>;

/// The probe connection and the last result.
pub struct Readiness {
    url: String,
    /// The current slot. A probe that does not answer in time keeps its (stuck) slot and
    /// the next probe gets a fresh one, so one hung connection can't hold readiness down
    /// after the database recovers.
    slot: Mutex<Slot>,
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub fn new(database_url: &str) -> Arc<Readiness> {
        Arc::new(Readiness {
            url: database_url.to_string(),
            slot: Mutex::new(Arc::new(Mutex::new(None))),
            last: Mutex::new(None),
        })
    }

    /// Whether the database answers `SELECT 1` now (or did less than [`FRESH`] ago).
    pub async fn check(self: &Arc<Self>) -> bool {
        if let Some(ready) = self.fresh() {
            return ready;
        }
        let slot = Arc::clone(&self.slot.lock().unwrap_or_else(|e| e.into_inner()));
        let url = self.url.clone();
        let answer = tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::task::spawn_blocking(move || probe(&url, &slot)),
        )
        .await;
        if answer.is_err() {
            // Stuck: leave that connection to its probe, give the next one a fresh slot.
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(Mutex::new(None));
        }
        let ready = matches!(answer, Ok(Ok(true)));
        self.record(ready);
        ready
    }

    fn fresh(&self) -> Option<bool> {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, ready)| ready)
    }

    fn record(&self, ready: bool) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ready));
    }
}

/// Blocking: `SELECT 1` on the slot's connection, (re)connecting when there is none. A probe
/// running concurrently on the same slot is waited for (bounded by the caller's timeout).
fn probe(url: &str, slot: &Slot) -> bool {
    let mut conn = slot.lock().unwrap_or_else(|e| e.into_inner());
    if conn.is_none() {
        *conn = MysqlConnection::establish(url).ok();
    }
    let ready = conn
        .as_mut()
        .is_some_and(|c| c.batch_execute("SELECT 1").is_ok());
    if !ready {
        *conn = None;
    }
    ready
}
