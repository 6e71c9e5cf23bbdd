//! The one retry loop of the sync engine: calls a step again while the fault policy
//! (`domain::fault`) classes its error transient, waiting [`backoff`] between tries.

use std::future::Future;

pub use domain::fault::{backoff, ErrorClass};

/// An error the fault policy can class.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

impl Classify for crate::warehouse::WarehouseError {
    fn class(&self) -> ErrorClass {
        crate::warehouse::WarehouseError::class(self)
    }
}

impl Classify for crate::session::MysqlError {
    fn class(&self) -> ErrorClass {
        crate::session::MysqlError::class(self)
    }
}

/// Calls `f` until it succeeds, fails with an error that is not transient, or `attempts` are
/// used (the first try included); waits with capped exponential backoff and jitter between
/// tries. For async steps (warehouse calls).
pub async fn retry<T, E, F, Fut>(attempts: u32, mut f: F) -> Result<T, E::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: IntoClassified,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await.map_err(IntoClassified::into_classified) {
            Ok(v) => return Ok(v),
            Err(e) if e.class().is_transient() && attempt < attempts => {
                let delay = backoff(attempt);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "transient error; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`retry`] for blocking steps (MySQL work on the calling thread).
pub fn retry_blocking<T, E, F>(attempts: u32, mut f: F) -> Result<T, E>
where
    F: FnMut(u32) -> Result<T, E>,
    E: Classify + std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f(attempt) {
            Ok(v) => return Ok(v),
            Err(e) if e.class().is_transient() && attempt < attempts => {
                let delay = backoff(attempt);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "transient error; retrying");
                std::thread::sleep(delay);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Errors a driver call returns, converted to the error the caller classes (e.g. a
/// `BQError` into a [`crate::warehouse::WarehouseError`]).
pub trait IntoClassified {
    type Output: Classify + std::fmt::Display;
    fn into_classified(self) -> Self::Output;
}

impl IntoClassified for gcp_bigquery_client::error::BQError {
    type Output = crate::warehouse::WarehouseError;
    fn into_classified(self) -> Self::Output {
        self.into()
    }
}

impl IntoClassified for crate::warehouse::WarehouseError {
    type Output = crate::warehouse::WarehouseError;
    fn into_classified(self) -> Self::Output {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::MysqlError;
    use std::cell::Cell;

    #[test]
    fn transient_errors_are_retried_until_attempts_run_out_permanent_ones_never() {
        let calls = Cell::new(0);
        let r: Result<(), MysqlError> = retry_blocking(3, |_| {
            calls.set(calls.get() + 1);
            Err(MysqlError::Server {
                code: 1213,
                message: "deadlock".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 3);

        calls.set(0);
        let r: Result<(), MysqlError> = retry_blocking(3, |_| {
            calls.set(calls.get() + 1);
            Err(MysqlError::Server {
                code: 1406,
                message: "too long".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);

        let r: Result<u32, MysqlError> = retry_blocking(3, |attempt| {
            if attempt < 2 {
                Err(MysqlError::Io("reset".into()))
            } else {
                Ok(attempt)
            }
        });
        assert_eq!(r.ok(), Some(2));
    }
}
