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

/// The probe connection and the last result.
pub struct Readiness {
    url: String,
    conn: Mutex<Option<MysqlConnection>>,
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub fn new(database_url: &str) -> Arc<Readiness> {
        Arc::new(Readiness {
            url: database_url.to_string(),
            conn: Mutex::new(None),
            last: Mutex::new(None),
        })
    }

    /// Whether the database answers `SELECT 1` now (or did less than [`FRESH`] ago).
    pub async fn check(self: &Arc<Self>) -> bool {
        if let Some(ready) = self.fresh() {
            return ready;
        }
        let me = Arc::clone(self);
        let ready = matches!(
            tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::task::spawn_blocking(move || me.probe())
            )
            .await,
            Ok(Ok(true))
        );
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

    /// Blocking: `SELECT 1` on the probe connection, (re)connecting when there is none. A
    /// probe still stuck on the connection (a hung server) makes this one not ready at once.
    fn probe(&self) -> bool {
        let Ok(mut conn) = self.conn.try_lock() else {
            return false;
        };
        if conn.is_none() {
            *conn = MysqlConnection::establish(&self.url).ok();
        }
        let ready = conn
            .as_mut()
            .is_some_and(|c| c.batch_execute("SELECT 1").is_ok());
        if !ready {
            *conn = None;
        }
        ready
    }
}
