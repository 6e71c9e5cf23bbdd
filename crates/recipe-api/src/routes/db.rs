//! The bridge from async handlers to blocking diesel: [`db`] runs a closure with a pooled
//! connection on one of the database threads, bounds the wait for a thread and for the work
//! (503 past either), and discards a connection the server closed
//! (docs/api.md#database-failures).

use diesel::mysql::MysqlConnection;

use super::state::AppState;
use crate::commit_gate::CommitGate;
use crate::error::ApiError;
use crate::executor::ExecError;

/// Runs blocking diesel code with a pooled connection on one of the database threads
/// ([`DbExecutor`](crate::executor::DbExecutor)), after waiting (at most `db_timeout`, then
/// 503) for a free thread; answers 503 when the work has not finished `query_timeout` after
/// that, and then only if it will never commit ([`CommitGate`]): a commit that started in
/// time is waited for and its result returned.
pub async fn db<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut MysqlConnection) -> Result<T, ApiError> + Send + 'static,
{
    let pool = state.pool.clone();
    let gate = CommitGate::new();
    let job_gate = gate.clone();
    let work = state.executor.run(move || {
        job_gate.scope(|| {
            let mut pooled = pool.get()?;
            let result = f(&mut pooled.conn);
            if matches!(result, Err(ApiError::Unavailable(_))) {
                // The server went away under this connection: don't hand it out again.
                pooled.broken = true;
            }
            result
        })
    });
    tokio::pin!(work);
    // A hung database must not hang the client. An abandoned job runs on until the database
    // answers, then rolls back, freeing its thread and connection.
    let outcome =
        match tokio::time::timeout(state.db_timeout + state.query_timeout, &mut work).await {
            Ok(outcome) => outcome,
            Err(_) if gate.abandon() => {
                return Err(ApiError::Unavailable(anyhow::anyhow!(
                    "the database did not answer within {:?}; the work was rolled back",
                    state.query_timeout
                )))
            }
            // The commit had started: its outcome is the answer.
            Err(_) => work.await,
        };
    match outcome {
        Ok(result) => result,
        Err(e @ (ExecError::QueueFull(_) | ExecError::QueueTimeout(_))) => {
            Err(ApiError::Unavailable(e.into()))
        }
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}
