//! The sync engine: what `partition-sync` and `stream-sync` share beyond the pure domain. The
//! BigQuery adapter ([`warehouse`]), the staging store ([`staging`]), MySQL sessions, locks and
//! state tables ([`session`]), batched inserts ([`batch`]), pauses that protect MySQL ([`throttle`]), driver values ([`values`]), the one
//! retry loop over the fault policy ([`retry`]) and logging ([`telemetry`]).
//! See `docs/architecture.md`.

pub mod batch;
pub mod retry;
pub mod session;
#[cfg(feature = "staging")]
pub mod staging;
pub mod telemetry;
pub mod throttle;
pub mod values;
pub mod warehouse;
