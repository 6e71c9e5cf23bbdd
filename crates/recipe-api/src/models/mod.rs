//! Database access: row types, insert forms and changesets, and queries returning
//! `QueryResult`. Handlers never build SQL; they call these functions inside `web::block`.

pub mod ingredients;
pub mod recipes;

use std::time::Duration;

use chrono::{NaiveDateTime, Timelike, Utc};
use diesel::mysql::MysqlConnection;
use diesel::r2d2::{ConnectionManager, Pool};

/// The connection pool shared by all workers.
pub type DbPool = Pool<ConnectionManager<MysqlConnection>>;

/// Builds the pool without connecting: the service starts (and answers 503) while the
/// database is down. `timeout` bounds how long a request waits for a connection.
pub fn pool(database_url: &str, max_size: u32, timeout: Duration) -> DbPool {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(max_size.min(2)))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::new(database_url))
}

/// The current time in UTC, truncated to the microseconds a DATETIME(6) keeps, so what we
/// return on a write equals what a later read returns.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}
