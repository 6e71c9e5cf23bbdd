//! What every handler can read: the connection pool, the database threads that use it, the
//! timeouts of a request's database work and the body limit (docs/api.md#configuration,
//! docs/api.md#database-failures).

use std::sync::Arc;
use std::time::Duration;

use super::readiness::Readiness;

use crate::executor::DbExecutor;
use crate::models::DbPool;

/// Requests that may wait for a database thread at once; past that, 503 at once.
const DB_QUEUE: usize = 1024;

/// State every handler can read.
#[derive(Clone)]
pub struct AppState {
    pub pool: DbPool,
    /// One thread per pooled connection runs the blocking diesel work; requests queue there.
    pub executor: DbExecutor,
    /// How long a request waits for a connection before answering 503.
    pub db_timeout: Duration,
    /// How long a request waits for its database work before answering 503.
    pub query_timeout: Duration,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// `/readyz`'s own connection, apart from the pool and the database threads.
    pub readiness: Arc<Readiness>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
}

impl AppState {
    pub fn new(
        database_url: &str,
        pool: DbPool,
        db_timeout: Duration,
        query_timeout: Duration,
        body_limit: usize,
        idempotency_ttl: Duration,
    ) -> std::io::Result<AppState> {
        let threads = usize::try_from(pool.max_size()).unwrap_or(1).max(1);
        Ok(AppState {
            pool,
            executor: DbExecutor::new(threads, DB_QUEUE, db_timeout)?,
            db_timeout,
            query_timeout,
            body_limit,
            readiness: Readiness::new(database_url),
            idempotency_ttl,
        })
    }
}
