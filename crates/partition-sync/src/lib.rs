//! partition-sync: finds the warehouse partitions modified since they were last synced,
//! exports each to the staging bucket and loads each group of tables into MySQL in one
//! transaction together with the partitions' watermarks (DESIGN 5.2).

pub mod commands;
pub mod load;
pub mod partition;
pub mod plan;
pub mod runner;
pub mod source;
pub mod verify;
