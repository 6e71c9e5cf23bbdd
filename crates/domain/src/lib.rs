//! Shared model of the product: what `recipe-api`, `partition-sync` and `stream-sync` have in
//! common. Database migrations and connections ([`db`]), the BigQuery client set-up
//! ([`bigquery`]), the staging store ([`staging`]) and, behind the `test-support` feature,
//! per-test databases and datasets ([`testing`]).

pub mod bigquery;
pub mod canon;
pub mod config;
pub mod db;
pub mod schema;
pub mod sink;
pub mod staging;

#[cfg(feature = "test-support")]
pub mod testing;
