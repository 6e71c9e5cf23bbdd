//! The domain shared by `recipe-api`, `partition-sync` and `stream-sync`: types and rules only,
//! no I/O client. The sync configuration and its table specs ([`config`]), typed SQL
//! identifiers ([`ident`]), the warehouse → MySQL type map and value conversion ([`schema`]),
//! canonical values ([`canon`]) and the classes of errors with what to do about each
//! ([`fault`]). See `docs/architecture.md`.

pub mod canon;
pub mod config;
pub mod fault;
pub mod history;
pub mod ident;
pub mod schema;
pub mod shard;
