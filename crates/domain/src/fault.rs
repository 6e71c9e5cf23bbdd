//! The one fault policy of the product: every error is put into an [`ErrorClass`] here, once,
//! and every retry loop asks the class what to do (the supabase/etl `policy.rs` shape). The
//! sync engine maps its driver errors through [`mysql_error`] and [`bigquery_error`]; no caller
//! inspects error text. See `docs/architecture.md#error-handling`.

use std::time::Duration;

/// What a failure means for the work that hit it, and so what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// May go away by itself (network, server busy, lock wait, failover): retry the same step
    /// after [`backoff`].
    Transient,
    /// This cycle or run can't finish (a bad row, a guard refused it), but nothing is wrong with
    /// the table's set-up: give up this cycle, try again at the next interval.
    Cycle,
    /// Needs a change outside the process (configuration, schema, permission): stop the table
    /// and tell an operator, re-checking only on the long [`PERMANENT_RECHECK`] backoff.
    Permanent,
}

impl ErrorClass {
    /// The label value of the `errors_total{kind}` metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Cycle => "cycle",
            ErrorClass::Permanent => "permanent",
        }
    }

    /// Whether retrying the same step soon may succeed.
    pub fn is_transient(self) -> bool {
        self == ErrorClass::Transient
    }
}

/// How long a table stopped by a permanent error waits before it is tried again (a fixed
/// permission or an edited schema heals it without a restart).
pub const PERMANENT_RECHECK: Duration = Duration::from_secs(600);

/// MySQL / MariaDB error numbers (server and client library) that go away on retry.
const TRANSIENT_MYSQL: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1205, // lock wait timeout
    1213, // deadlock
    1290, // --read-only (a primary demoted during failover)
    1792, // read-only transaction
    1836, // read-only mode
    1927, // connection killed (MariaDB)
    2002, // can't connect (socket)
    2003, // can't connect (TCP)
    2006, // server has gone away
    2013, // lost connection during query
    3024, // MAX_EXECUTION_TIME exceeded (MySQL 8)
    1969, // max_statement_time exceeded (MariaDB)
];

/// The class of a MySQL / MariaDB error number.
pub fn mysql_error(code: u16) -> ErrorClass {
    if TRANSIENT_MYSQL.contains(&code) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

/// BigQuery error reasons (`errors[].reason`) that BigQuery documents as "retry with backoff".
const TRANSIENT_BIGQUERY_REASONS: &[&str] = &[
    "backendError",
    "internalError",
    "jobBackendError",
    "jobInternalError",
    "rateLimitExceeded",
    "quotaExceeded",
];

/// The class of a BigQuery failure from its HTTP status (when there was an answer) and its
/// error reason (when the answer carried one). 5xx and 429 are transient whatever the reason;
/// 403 is transient only for the rate and quota reasons (otherwise it is a permission).
pub fn bigquery_error(status: Option<u16>, reason: Option<&str>) -> ErrorClass {
    let reason_transient = reason.is_some_and(|r| {
        TRANSIENT_BIGQUERY_REASONS
            .iter()
            .any(|t| t.eq_ignore_ascii_case(r))
    });
    match status {
        Some(s) if s == 429 || s >= 500 => ErrorClass::Transient,
        _ if reason_transient => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Capped exponential backoff with jitter: between half and all of 200 ms × 2^(attempt−1),
/// capped at 10 s. The one backoff of the product.
pub fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    backoff_with(attempt, nanos)
}

/// [`backoff`] with its randomness given.
pub fn backoff_with(attempt: u32, entropy: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(10_000);
    let jitter = u64::from(entropy) % (base / 2 + 1);
    Duration::from_millis(base / 2 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_is_capped() {
        let ms = Duration::from_millis;
        for entropy in [0, 1, 12_345, u32::MAX] {
            let first = backoff_with(1, entropy);
            assert!(ms(100) <= first && first <= ms(200), "{first:?}");
            let capped = backoff_with(30, entropy);
            assert!(ms(5_000) <= capped && capped <= ms(10_000), "{capped:?}");
        }
        // Each step's shortest wait is longer than two steps earlier's longest.
        assert!(backoff_with(3, 0) > backoff_with(1, u32::MAX));
        // Jitter: different randomness, different waits.
        assert_ne!(backoff_with(5, 0), backoff_with(5, 777));
        assert!(backoff(30) <= ms(10_000));
    }

    #[test]
    fn mysql_failover_locks_and_lost_connections_are_transient() {
        for code in [1040, 1205, 1213, 1290, 2006, 2013, 1927] {
            assert_eq!(mysql_error(code), ErrorClass::Transient, "{code}");
        }
        // Data too long, column cannot be null, unknown column, access denied: need a change.
        for code in [1406, 1048, 1054, 1045, 1142] {
            assert_eq!(mysql_error(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn bigquery_rate_and_quota_403s_are_transient_other_403s_are_not() {
        use ErrorClass::*;
        let cases = [
            (Some(403), Some("rateLimitExceeded"), Transient),
            (Some(403), Some("quotaExceeded"), Transient),
            (Some(403), Some("accessDenied"), Permanent),
            (Some(403), None, Permanent),
            (Some(429), None, Transient),
            (Some(500), Some("backendError"), Transient),
            (Some(503), None, Transient),
            (Some(400), Some("invalidQuery"), Permanent),
            (Some(404), Some("notFound"), Permanent),
            (Some(200), Some("backendError"), Transient),
            (None, Some("internalError"), Transient),
            (None, Some("invalid"), Permanent),
        ];
        for (status, reason, want) in cases {
            assert_eq!(
                bigquery_error(status, reason),
                want,
                "{status:?} {reason:?}"
            );
        }
    }

    #[test]
    fn labels_are_the_metric_label_values() {
        assert_eq!(ErrorClass::Transient.label(), "transient");
        assert_eq!(ErrorClass::Cycle.label(), "cycle");
        assert_eq!(ErrorClass::Permanent.label(), "permanent");
    }
}
