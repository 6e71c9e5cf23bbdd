//! partition-sync against the BigQuery emulator and MariaDB, each test with its own dataset
//! and database.
#![allow(clippy::expect_used, clippy::unwrap_used)] // helpers of tests

mod helpers;

mod cli;
mod exchange;
mod failures;
mod faults;
mod gcs;
mod groups;
mod runs;
