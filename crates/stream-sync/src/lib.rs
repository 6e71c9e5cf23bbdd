//! `stream-sync`: keeps MySQL tables equal to warehouse tables (DESIGN 5.3). Each cycle
//! compares per-bucket row counts and XORs of row hashes on both sides, drills into the
//! buckets that differ, fetches full rows only for new and changed keys and applies them in
//! batched transactions.
//!
//! Layout: [`plan`] and [`canon`] are pure; [`source`] is the warehouse, [`target`] MySQL;
//! [`cycle`] runs one table's cycle and `verify`; [`runner`] the daemon loop with retries,
//! shutdown and status; [`metrics`] and [`http`] the Prometheus side.

pub use domain::canon;
pub mod cycle;
pub mod http;
pub mod iblt;
pub mod metrics;
pub mod plan;
pub mod runner;
pub mod source;
pub mod target;

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

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retry after a capped, jittered backoff.
    Transient,
    /// Stop this table until an operator acts; other tables go on.
    Permanent,
    /// Give up this cycle; try again at the next interval.
    Cycle,
    Shutdown,
}

impl ErrorKind {
    /// Label value for `errors_total{kind}`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Cycle => "cycle",
            ErrorKind::Shutdown => "shutdown",
        }
    }
}

impl SyncError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Warehouse(e) if e.transient() => ErrorKind::Transient,
            SyncError::Mysql(e) if e.transient() => ErrorKind::Transient,
            // A query the warehouse rejects, a URL MySQL rejects: configuration.
            SyncError::Warehouse(_) | SyncError::Mysql(_) | SyncError::Permanent(_) => {
                ErrorKind::Permanent
            }
            SyncError::BadRow(_) | SyncError::Guard(_) => ErrorKind::Cycle,
            SyncError::Shutdown => ErrorKind::Shutdown,
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
