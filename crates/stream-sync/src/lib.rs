//! `stream-sync`: keeps MySQL tables equal to warehouse tables (see `docs/sync.md#stream-sync`).
//! Each cycle compares per-bucket row counts and XORs of row hashes on both sides, drills into
//! the buckets that differ, fetches full rows only for new and changed keys and applies them in
//! batched transactions.
//!
//! Layout: [`plan`] and [`canon`] are pure; [`source`] is the warehouse, [`target`] MySQL;
//! [`cycle`] runs one table's cycle as a list of steps, with `changes` (which rows changed: the
//! [`iblt`] or the key scan), `apply` (batched upserts and deletes) and `cursor` (cursor mode);
//! [`verify`] compares every row; [`runner`] the daemon loop with retries, shutdown and status;
//! [`metrics`] and [`http`] the Prometheus side.

pub use domain::canon;
mod apply;
mod changes;
mod cursor;
pub mod cycle;
mod history;
pub mod http;
pub mod iblt;
pub mod metrics;
pub mod plan;
pub mod runner;
pub mod source;
pub mod target;
pub mod verify;

use std::future::Future;
use std::task::Poll;

use domain::fault::ErrorClass;
use sync_engine::session::MysqlError;
use sync_engine::warehouse::WarehouseError;

/// Why a table's cycle failed, and so what happens next (see [`SyncError::kind`]).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    /// Needs an operator: schema mismatch, missing table, bad configuration. Stops the table.
    #[error("{0}")]
    Permanent(String),
    /// A value MySQL can't take, or duplicate keys: the cycle stops, the next one tries again.
    #[error("bad row: {0}")]
    BadRow(String),
    /// The mass-delete guard refused the cycle.
    #[error("mass-delete guard: {0}")]
    Guard(#[from] plan::GuardStop),
    /// The warehouse's answers within one cycle don't agree (a partial answer, reads from
    /// different moments): nothing is deleted from them; the next cycle tries again.
    #[error("inconsistent warehouse answers: {0}")]
    Inconsistent(String),
    /// Another session holds the table's advisory lock: another stream-sync, or the session
    /// of a killed one that MySQL has not ended yet (it rolls back first). Transient.
    #[error("table {0}: another session holds its stream-sync lock (another stream-sync, or a killed one's session still rolling back)")]
    Locked(String),
    /// SIGTERM arrived; the current batch was committed.
    #[error("shutting down")]
    Shutdown,
}

impl From<mysql::Error> for SyncError {
    fn from(e: mysql::Error) -> Self {
        SyncError::Mysql(MysqlError::from(e))
    }
}

impl From<plan::PlanError> for SyncError {
    fn from(e: plan::PlanError) -> Self {
        SyncError::BadRow(e.to_string())
    }
}

/// What to do after an error: the fault policy's class (`domain::fault`), or shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retry after a capped, jittered backoff.
    Transient,
    /// Stop this table (re-checked on a long backoff); other tables go on.
    Permanent,
    /// Give up this cycle; try again at the next interval.
    Cycle,
    Shutdown,
}

impl From<ErrorClass> for ErrorKind {
    fn from(c: ErrorClass) -> Self {
        match c {
            ErrorClass::Transient => ErrorKind::Transient,
            ErrorClass::Cycle => ErrorKind::Cycle,
            ErrorClass::Permanent => ErrorKind::Permanent,
        }
    }
}

impl ErrorKind {
    /// Label value for `errors_total{kind}`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Transient => ErrorClass::Transient.label(),
            ErrorKind::Permanent => ErrorClass::Permanent.label(),
            ErrorKind::Cycle => ErrorClass::Cycle.label(),
            ErrorKind::Shutdown => "shutdown",
        }
    }
}

impl SyncError {
    /// The error's class: driver errors as the fault policy classes them; a bad row or a
    /// refused guard fails the cycle; our own permanent errors (schema, missing table) stop
    /// the table.
    pub fn class(&self) -> ErrorClass {
        match self {
            SyncError::Warehouse(e) => e.class(),
            SyncError::Mysql(e) => e.class(),
            SyncError::Permanent(_) => ErrorClass::Permanent,
            SyncError::Locked(_) => ErrorClass::Transient,
            SyncError::BadRow(_)
            | SyncError::Guard(_)
            | SyncError::Inconsistent(_)
            | SyncError::Shutdown => ErrorClass::Cycle,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Shutdown => ErrorKind::Shutdown,
            other => other.class().into(),
        }
    }
}

/// Runs blocking MySQL work: off the async workers on a multi-thread runtime, inline on a
/// current-thread one (tests).
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs the MySQL work `mysql` while the warehouse request `warehouse` is in flight: the
/// request is sent first (one poll), the warehouse computes while MySQL reads, then its
/// answer is awaited.
pub(crate) async fn overlapped<T, R>(
    warehouse: impl Future<Output = T>,
    mysql: impl FnOnce() -> R,
) -> (T, R) {
    let mut warehouse = std::pin::pin!(warehouse);
    let early = std::future::poll_fn(|cx| Poll::Ready(warehouse.as_mut().poll(cx))).await;
    let mine = blocking(mysql);
    let theirs = match early {
        Poll::Ready(t) => t,
        Poll::Pending => warehouse.await,
    };
    (theirs, mine)
}
