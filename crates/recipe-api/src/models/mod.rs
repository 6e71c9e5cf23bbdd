//! Database access: row types, insert forms and changesets, and queries returning
//! `QueryResult`. Handlers never build SQL; they call these functions through
//! `routes::db::db`, on the database threads.

pub mod idempotency;
pub mod ingredients;
pub mod recipes;
pub mod synced;

use std::time::Duration;

use chrono::{NaiveDateTime, Timelike, Utc};
use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool};
use diesel::Connection;

use crate::commit_gate::CommitGate;
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

/// Opens [`PooledMysql`] connections through diesel's r2d2 manager, with the session limits
/// of [`session_limits`].
pub struct MysqlManager {
    manager: ConnectionManager<MysqlConnection>,
    limits: [SessionSetting; 2],
}

impl ManageConnection for MysqlManager {
    type Connection = PooledMysql;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PooledMysql, Self::Error> {
        let mut conn = self.manager.connect()?;
        let [lock_wait, statement] = &self.limits;
        conn.batch_execute(&lock_wait.mariadb)
            .and_then(|()| {
                conn.batch_execute(&statement.mariadb)
                    .or_else(|_| conn.batch_execute(&statement.mysql))
            })
            .map_err(diesel::r2d2::Error::QueryError)?;
        Ok(PooledMysql {
            conn,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut PooledMysql) -> Result<(), Self::Error> {
        self.manager.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut PooledMysql) -> bool {
        conn.broken || self.manager.has_broken(&mut conn.conn)
    }
}

/// The session's `innodb_lock_wait_timeout`: half the query timeout, at least 1 s.
pub fn lock_wait_secs(query_timeout: Duration) -> u64 {
    (query_timeout.as_secs() / 2).max(1)
}

/// Sets the session's `innodb_lock_wait_timeout` (also inside a transaction: it applies to the
/// next statement).
pub fn set_lock_wait(conn: &mut MysqlConnection, secs: u64) -> Result<(), ApiError> {
    conn.batch_execute(&format!("SET SESSION innodb_lock_wait_timeout = {secs}"))
        .map_err(ApiError::from)
}

/// A session setting spelled for MariaDB and for MySQL.
pub struct SessionSetting {
    pub mariadb: String,
    pub mysql: String,
}

/// The session limits that keep a request's database work bounded inside the server, so a
/// statement stuck behind a lock or running long ends (and its transaction rolls back) on its
/// own instead of holding a thread and a connection: row-lock waits end after half the query
/// timeout (at least 1 s; the transaction is retried while the request still waits), any
/// statement after the query timeout (MariaDB's `max_statement_time`; MySQL 8's
/// `MAX_EXECUTION_TIME`, which bounds SELECTs only).
pub fn session_limits(query_timeout: Duration) -> [SessionSetting; 2] {
    let lock_wait = lock_wait_secs(query_timeout);
    let sql = format!("SET SESSION innodb_lock_wait_timeout = {lock_wait}");
    let millis = query_timeout.as_millis().max(1);
    [
        SessionSetting {
            mariadb: sql.clone(),
            mysql: sql,
        },
        SessionSetting {
            mariadb: format!(
                "SET SESSION max_statement_time = {}.{:03}",
                millis / 1000,
                millis % 1000
            ),
            mysql: format!("SET SESSION MAX_EXECUTION_TIME = {millis}"),
        },
    ]
}

/// Builds the pool without connecting: the service starts (and answers 503) while the
/// database is down. `timeout` bounds how long a request waits for a connection,
/// `query_timeout` its work (see [`session_limits`]).
pub fn pool(
    database_url: &str,
    max_size: u32,
    timeout: Duration,
    query_timeout: Duration,
) -> DbPool {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(max_size.min(2)))
        .connection_timeout(timeout)
        .test_on_check_out(false)
        .build_unchecked(MysqlManager {
            manager: ConnectionManager::new(database_url),
            limits: session_limits(query_timeout),
        })
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
/// Commits only if the request still waits for it ([`CommitGate`]); otherwise rolls back.
/// Called inside another transaction, `f` joins it (the outer one commits and retries).
pub fn transaction<T, F>(conn: &mut MysqlConnection, mut f: F) -> Result<T, ApiError>
where
    F: FnMut(&mut MysqlConnection) -> Result<T, ApiError>,
{
    if in_transaction(conn) {
        return f(conn);
    }
    let mut attempt = 1;
    loop {
        let result = conn.transaction(|conn| {
            let value = f(conn)?;
            if CommitGate::may_commit() {
                Ok(value)
            } else {
                // Not `Unavailable`: the connection is fine and stays in the pool (the handler
                // answered its own 503 already; this result is dropped).
                Err(ApiError::Contention(anyhow::anyhow!(
                    "the request gave up waiting; rolled back"
                )))
            }
        });
        match result {
            Err(ApiError::Contention(cause))
                if attempt < TRANSACTION_ATTEMPTS && !CommitGate::is_abandoned() =>
            {
                tracing::debug!(attempt, error.cause = %cause, "retrying a transaction after lock contention");
                std::thread::sleep(Duration::from_millis(u64::from(attempt) * 5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether the connection is inside a transaction diesel opened.
fn in_transaction(conn: &mut MysqlConnection) -> bool {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .is_ok_and(|depth| depth.is_some())
}
