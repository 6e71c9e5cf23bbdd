//! partition-sync: finds the warehouse partitions modified since they were last synced,
//! exports each to the staging bucket and loads each group of tables into MySQL in one
//! transaction together with the partitions' watermarks (`docs/sync.md#partition-sync`;
//! the sequence of a run is in `docs/architecture.md#partition-sync-sequence`).

mod batches;
pub mod commands;
mod dry_run;
pub mod exchange;
mod export;
mod group_plan;
mod insert;
pub mod load;
mod load_data;
pub mod partition;
pub mod plan;
pub mod push;
mod ranged;
mod readers;
mod rows;
pub mod runner;
pub mod source;
pub mod state;
pub mod target_ddl;
pub mod verify;
