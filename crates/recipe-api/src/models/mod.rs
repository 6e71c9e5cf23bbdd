//! Database access: row types, insert forms and changesets, and queries returning
//! `QueryResult`. Handlers never build SQL; they call these functions through
//! `routes::db::db`, on the database threads.

pub mod ingredients;
pub mod recipes;
pub mod synced;

use std::time::Duration;

use chrono::{NaiveDateTime, Timelike, Utc};
use diesel::mysql::MysqlConnection;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool};
use diesel::Connection;

use crate::error::ApiError;

/// The connection pool shared by all workers.
pub type DbPool = Pool<MysqlManager>;

/// A pooled MySQL connection that can be marked broken, so the pool drops it instead of
/// handing it out again. diesel only notices broken transactions, not a connection the server
/// closed (a restart, a failover, `KILL`): without this, such a connection fails forever.
pub struct PooledMysql {
    pub conn: MysqlConnection,
    pub broken: bool,
}

/// Opens [`PooledMysql`] connections through diesel's r2d2 manager.
pub struct MysqlManager(ConnectionManager<MysqlConnection>);

impl ManageConnection for MysqlManager {
    type Connection = PooledMysql;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PooledMysql, Self::Error> {
        Ok(PooledMysql {
            conn: self.0.connect()?,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut PooledMysql) -> Result<(), Self::Error> {
        self.0.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut PooledMysql) -> bool {
        conn.broken || self.0.has_broken(&mut conn.conn)
    }
}

/// Builds the pool without connecting: the service starts (and answers 503) while the
/// database is down. `timeout` bounds how long a request waits for a connection.
pub fn pool(database_url: &str, max_size: u32, timeout: Duration) -> DbPool {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(max_size.min(2)))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .build_unchecked(MysqlManager(ConnectionManager::new(database_url)))
}

/// The current time in UTC, truncated to the microseconds a DATETIME(6) keeps, so what we
/// return on a write equals what a later read returns.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// Attempts of a write transaction that fails on a deadlock or lock-wait timeout.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// Runs `f` in a transaction, re-running it from the start when InnoDB picks it as a deadlock
/// victim (or a lock wait times out): the rollback undid everything, so a retry is safe.
pub fn transaction<T, F>(conn: &mut MysqlConnection, mut f: F) -> Result<T, ApiError>
where
    F: FnMut(&mut MysqlConnection) -> Result<T, ApiError>,
{
    let mut attempt = 1;
    loop {
        match conn.transaction(&mut f) {
            Err(ApiError::Contention(cause)) if attempt < TRANSACTION_ATTEMPTS => {
                tracing::debug!(attempt, error.cause = %cause, "retrying a transaction after lock contention");
                std::thread::sleep(Duration::from_millis(u64::from(attempt) * 5));
                attempt += 1;
            }
            other => return other,
        }
    }
}
