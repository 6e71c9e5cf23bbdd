//! The retry loop of warehouse calls: calls a step again while the fault policy
//! (`domain::fault`) classes its error transient, waiting [`backoff`] between tries. The
//! syncs' own loops (a partition-sync group, a stream-sync table) ask the same classes and
//! wait the same [`backoff`].

use std::future::Future;

pub use domain::fault::{backoff, ErrorClass};

use crate::warehouse::WarehouseError;

/// Calls `f` until it succeeds, fails with an error that is not transient, or `attempts` are
/// used (the first try included); waits with capped exponential backoff and jitter between
/// tries.
pub async fn retry<T, E, F, Fut>(attempts: u32, mut f: F) -> Result<T, WarehouseError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<WarehouseError>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await.map_err(Into::into) {
            Ok(v) => return Ok(v),
            Err(e) if e.transient() && attempt < attempts => {
                let delay = backoff(attempt);
                tracing::warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "transient warehouse error; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_attempts_run_out_permanent_ones_never() {
        let calls = Cell::new(0);
        let rate_limited = || WarehouseError::Http {
            code: 403,
            reason: Some("rateLimitExceeded".into()),
            message: String::new(),
        };
        let r: Result<(), _> = retry(3, || {
            calls.set(calls.get() + 1);
            std::future::ready(Err::<(), _>(rate_limited()))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 3);

        calls.set(0);
        let r: Result<(), _> = retry(3, || {
            calls.set(calls.get() + 1);
            std::future::ready(Err::<(), _>(WarehouseError::query("invalidQuery")))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);

        calls.set(0);
        let r = retry(3, || {
            calls.set(calls.get() + 1);
            std::future::ready(if calls.get() < 2 {
                Err(WarehouseError::Network("reset".into()))
            } else {
                Ok(calls.get())
            })
        })
        .await;
        assert_eq!(r.ok(), Some(2));
    }
}
