//! Black-box tests of recipe-api: the real `Application` on port 0 against a fresh MariaDB
//! database per test (`test_support::TestDb`).

// Tests may panic on unexpected results; clippy.toml allows it in #[test] fns, not helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod concurrency;
mod errors;
mod helpers;
mod ingredients;
mod operations;
mod queries;
mod recipes;
mod synced;
mod write_safety;
