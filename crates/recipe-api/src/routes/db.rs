//! The bridge from async handlers to blocking diesel: [`db`] runs a closure with a pooled
//! connection on one of the database threads, bounds the wait for a thread and for the work
//! (503 past either), and discards a connection the server closed
//! (docs/api.md#database-failures).

use diesel::mysql::MysqlConnection;

use super::state::AppState;
use crate::error::ApiError;
use crate::executor::ExecError;

/// Runs blocking diesel code with a pooled connection on one of the database threads
/// ([`DbExecutor`](crate::executor::DbExecutor)), after waiting (at most `db_timeout`, then
/// 503) for a free thread; answers 503 when the work has not finished `query_timeout` after
/// that.
pub async fn db<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut MysqlConnection) -> Result<T, ApiError> + Send + 'static,
{
    let pool = state.pool.clone();
    let work = state.executor.run(move || {
        let mut pooled = pool.get()?;
        let result = f(&mut pooled.conn);
        if matches!(result, Err(ApiError::Unavailable(_))) {
            // The server went away under this connection: don't hand it out again.
            pooled.broken = true;
        }
        result
    });
    // A hung database must not hang the client. The job runs on and frees its thread (and,
    // failing, its connection) when the client library gives up.
    match tokio::time::timeout(state.db_timeout + state.query_timeout, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e @ (ExecError::QueueFull(_) | ExecError::QueueTimeout(_)))) => {
            Err(ApiError::Unavailable(e.into()))
        }
        Ok(Err(e)) => Err(ApiError::Internal(e.into())),
        Err(_) => Err(ApiError::Unavailable(anyhow::anyhow!(
            "the database did not answer within {:?}",
            state.query_timeout
        ))),
    }
}
