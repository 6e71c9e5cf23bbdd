//! The sync configuration: one TOML file for `partition-sync` and `stream-sync`. Unknown keys
//! are an error that names the key; identifiers are validated; secrets are never in the file
//! (the MySQL DSN is read from the environment variable or file the config names).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::ident::Ident;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("config: MySQL DSN: {0}")]
    Secret(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub mysql: MysqlConfig,
    pub warehouse: WarehouseConfig,
    #[serde(default)]
    pub staging: Option<StagingConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub partition_sync: PartitionSyncSettings,
    #[serde(default)]
    pub stream_sync: StreamSyncSettings,
    #[serde(default)]
    pub throttle: ThrottleConfig,
    #[serde(default)]
    pub tables: Vec<TableSpec>,
}

/// How both syncs protect the MySQL they write to (`docs/sync.md#throttling`): between chunks
/// they pause while the primary is busy or a replica lags.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Pause while the primary's `Threads_running` is above this (0: don't check).
    #[serde(default = "default_threads_running")]
    pub max_threads_running: u64,
    /// Pause while any replica lags more than this many seconds.
    #[serde(default = "default_replica_lag")]
    pub max_replica_lag_secs: f64,
    /// Replicas whose lag is watched.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// `heartbeat` (default): the sync writes `sync_heartbeat` on the primary every
    /// `heartbeat_interval_ms` and reads its age on each replica (sub-second, pt-heartbeat
    /// style); `seconds_behind_master`: the replica's own `SHOW REPLICA STATUS` figure
    /// (whole seconds; no writes).
    #[serde(default)]
    pub lag_source: LagSource,
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// One pause lasting longer than this fails the batch or cycle (transient: retried later)
    /// instead of waiting on.
    #[serde(default = "default_max_pause")]
    pub max_pause_secs: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_threads_running: default_threads_running(),
            max_replica_lag_secs: default_replica_lag(),
            replicas: Vec::new(),
            lag_source: LagSource::default(),
            heartbeat_interval_ms: default_heartbeat_interval(),
            max_pause_secs: default_max_pause(),
        }
    }
}

fn default_threads_running() -> u64 {
    40
}
fn default_replica_lag() -> f64 {
    1.0
}
fn default_heartbeat_interval() -> u64 {
    100
}
fn default_max_pause() -> u64 {
    600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LagSource {
    #[default]
    Heartbeat,
    SecondsBehindMaster,
}

/// One replica to watch: its DSN (same database as the primary's) from an environment
/// variable or a file, and a name for logs and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub name: String,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<String>,
}

/// A DSN from a file (a mounted Secret; wins) or an environment variable. `what` names the
/// setting in errors (`mysql`, `replica r1`).
fn read_dsn(file: Option<&str>, env: Option<&str>, what: &str) -> Result<String, ConfigError> {
    match (file, env) {
        (Some(file), _) => std::fs::read_to_string(file)
            .map(|s| s.trim().to_string())
            .map_err(|e| ConfigError::Secret(format!("cannot read {what}.url_file {file}: {e}"))),
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            ConfigError::Secret(format!(
                "environment variable {var} ({what}.url_env) is not set"
            ))
        }),
        (None, None) => Err(ConfigError::Secret(format!(
            "{what}: set url_env or url_file"
        ))),
    }
}

impl ThrottleConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.max_replica_lag_secs.is_finite() && self.max_replica_lag_secs > 0.0) {
            return Err("throttle.max_replica_lag_secs must be a positive number".into());
        }
        if self.heartbeat_interval_ms == 0 {
            return Err("throttle.heartbeat_interval_ms must be at least 1".into());
        }
        let mut names = BTreeSet::new();
        for r in &self.replicas {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(format!(
                    "throttle.replicas: name `{}` is empty or listed twice",
                    r.name
                ));
            }
            if r.url_env.is_none() && r.url_file.is_none() {
                return Err(format!(
                    "throttle.replicas `{}`: set url_env or url_file",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

impl ReplicaConfig {
    /// The replica's DSN.
    pub fn url(&self) -> Result<String, ConfigError> {
        let what = format!("replica {}", self.name);
        read_dsn(self.url_file.as_deref(), self.url_env.as_deref(), &what)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Environment variable that holds the DSN (`mysql://user:pass@host:port/db`).
    #[serde(default = "default_url_env")]
    pub url_env: String,
    /// Alternatively a file holding the DSN (a mounted Secret).
    #[serde(default)]
    pub url_file: Option<String>,
}

fn default_url_env() -> String {
    "SYNC_MYSQL_URL".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WarehouseKind {
    #[default]
    Bigquery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChangeDetection {
    /// `INFORMATION_SCHEMA.PARTITIONS` (free; needs trustworthy `last_modified_time`).
    #[default]
    Metadata,
    /// Per partition `COUNT(*)` and `BIT_XOR(FARM_FINGERPRINT(TO_JSON_STRING(t)))`.
    Fingerprint,
    /// BigQuery's change history (`CHANGES(TABLE …)`, the table option
    /// `enable_change_history = TRUE`): the rows changed since the last sync, read up to 10
    /// minutes behind (docs/sync.md#change-history); metadata otherwise.
    Changes,
}

impl ChangeDetection {
    /// Whether `last_modified_time` is trusted (every mode but `fingerprint`).
    pub fn trusts_metadata(self) -> bool {
        self != ChangeDetection::Fingerprint
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    #[serde(default)]
    pub kind: WarehouseKind,
    pub project: String,
    pub dataset: Ident,
    #[serde(default)]
    pub location: Option<String>,
    /// REST base URL, e.g. `http://127.0.0.1:9050/bigquery/v2` for the emulator.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `adc` (default), `none`, or a path to a service-account key file.
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub change_detection: ChangeDetection,
}

/// How the warehouse client authenticates (`warehouse.credentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Application default credentials (workload identity on GKE, `gcloud auth` locally).
    ApplicationDefault,
    /// A service-account key file.
    KeyFile(String),
    /// No authentication: for the emulator.
    None,
}

impl WarehouseConfig {
    pub fn credentials(&self) -> Credentials {
        match self.credentials.as_deref() {
            None | Some("adc") => Credentials::ApplicationDefault,
            Some("none") => Credentials::None,
            Some(path) => Credentials::KeyFile(path.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StagingFormat {
    /// Newline-delimited JSON.
    #[default]
    Json,
    Parquet,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// `gs://bucket/prefix` where the warehouse exports partitions.
    pub uri: String,
    #[serde(default)]
    pub format: StagingFormat,
    /// Custom GCS endpoint (emulator) for reading the exports.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Read the exports from this local directory instead of the bucket (`gs://b/p` is
    /// `<local_root>/b/p`): what the BigQuery emulator writes to.
    #[serde(default)]
    pub local_root: Option<String>,
    /// Keep the run's exported files after commit (default: delete them).
    #[serde(default)]
    pub keep_files: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Pushgateway URL for partition-sync.
    #[serde(default)]
    pub pushgateway: Option<String>,
    /// Listen address of stream-sync's `/metrics` and `/healthz`.
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSyncSettings {
    /// Most partitions that may vanish from one table in one run before the run refuses.
    #[serde(default = "default_max_vanished")]
    pub max_vanished_partitions: usize,
    /// Seconds to wait for a group's advisory lock.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_secs: u64,
    /// How rows reach MySQL: `auto` (LOAD DATA LOCAL INFILE from memory where the server
    /// allows it, else batched INSERTs) or `insert` (always batched INSERTs).
    #[serde(default)]
    pub loader: Loader,
    /// Seconds a DDL statement (CREATE TABLE, ADD PARTITION) may wait for a table's metadata
    /// lock (`lock_wait_timeout`) before the group fails (transient: retried). A DDL waiting
    /// behind a long reader would make every later query of the table queue behind it.
    #[serde(default = "default_ddl_lock_wait")]
    pub ddl_lock_wait_secs: u64,
    /// A group's backlog loads in batches of at most this many partitions (oldest first),
    /// each its own transaction with its watermarks.
    #[serde(default = "default_batch_partitions")]
    pub max_batch_partitions: usize,
    /// ... and at most this many warehouse rows (a batch holds at least one partition).
    #[serde(default = "default_batch_rows")]
    pub max_batch_rows: u64,
    /// A run starts no batch that would likely end later than this many seconds after the
    /// run began; the rest waits for the next run (`--max-run-secs` overrides). Keep it below
    /// the CronJob's `activeDeadlineSeconds`.
    #[serde(default = "default_max_run_secs")]
    pub max_run_secs: u64,
    /// After each batch commits, compare its partitions' rows in MySQL with the warehouse's
    /// (count and content digest, only those partitions): a difference fails the group as
    /// `drift` and forgets those partitions' watermarks, so the next run reloads them.
    #[serde(default = "default_true")]
    pub verify_after_load: bool,
    /// How a changed partition of a `mysql_partitioning` target is replaced: `exchange`
    /// (default; loaded in chunks into a shadow table, then swapped in with `EXCHANGE
    /// PARTITION`, `docs/sync.md#exchange`) or `transaction` (DELETE + load in the batch's
    /// transaction, as for every other target).
    #[serde(default)]
    pub replace: Replace,
    /// Rows per chunk (one transaction each) of a shadow-table load.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u64,
    /// `primary_key` (default): exports are `ORDER BY` the table's primary key, which BigQuery
    /// keeps across the export's files, so that rows reach InnoDB in key order (measured 2.3x
    /// faster LOAD DATA than random order); `none`: no sort (for a partition too large for
    /// BigQuery to sort).
    #[serde(default)]
    pub export_order: ExportOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExportOrder {
    #[default]
    PrimaryKey,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Replace {
    #[default]
    Exchange,
    Transaction,
}

fn default_chunk_rows() -> u64 {
    50_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    #[default]
    Auto,
    Insert,
}

impl Default for PartitionSyncSettings {
    fn default() -> Self {
        PartitionSyncSettings {
            max_vanished_partitions: default_max_vanished(),
            lock_timeout_secs: default_lock_timeout(),
            loader: Loader::Auto,
            ddl_lock_wait_secs: default_ddl_lock_wait(),
            max_batch_partitions: default_batch_partitions(),
            max_batch_rows: default_batch_rows(),
            max_run_secs: default_max_run_secs(),
            verify_after_load: true,
            replace: Replace::Exchange,
            chunk_rows: default_chunk_rows(),
            export_order: ExportOrder::PrimaryKey,
        }
    }
}

fn default_max_vanished() -> usize {
    3
}
fn default_lock_timeout() -> u64 {
    10
}
fn default_ddl_lock_wait() -> u64 {
    5
}
fn default_batch_partitions() -> usize {
    50
}
fn default_batch_rows() -> u64 {
    5_000_000
}
fn default_max_run_secs() -> u64 {
    2700
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSyncSettings {
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// Largest share of a table one cycle may delete (0.0 to 1.0).
    #[serde(default = "default_max_delete")]
    pub max_delete_fraction: f64,
    #[serde(default = "default_batch")]
    pub batch_rows: usize,
    /// The tables are spread over this many stream-sync processes (the pods of a StatefulSet;
    /// `docs/sync.md#sharding`): each syncs the tables whose name hashes to its index.
    #[serde(default = "default_shards")]
    pub shards: u64,
    /// Cursor-mode and change-history tables: the full bucket diff runs on the first cycle
    /// and every N-th (`run --full-diff-every` overrides it).
    #[serde(default = "default_full_diff_every")]
    pub full_diff_every: u64,
}

fn default_shards() -> u64 {
    1
}

fn default_full_diff_every() -> u64 {
    10
}

impl Default for StreamSyncSettings {
    fn default() -> Self {
        StreamSyncSettings {
            interval_secs: default_interval(),
            buckets: default_buckets(),
            max_delete_fraction: default_max_delete(),
            batch_rows: default_batch(),
            shards: default_shards(),
            full_diff_every: default_full_diff_every(),
        }
    }
}

fn default_interval() -> u64 {
    10
}
fn default_buckets() -> u32 {
    1024
}
fn default_max_delete() -> f64 {
    0.1
}
fn default_batch() -> usize {
    5000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Partition,
    Stream,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Warehouse table (in `warehouse.dataset`).
    pub source: Ident,
    /// MySQL table.
    pub target: Ident,
    pub mode: SyncMode,
    /// Column the warehouse partitions by, or `_PARTITIONDATE` / `_PARTITIONTIME` for
    /// ingestion-time tables.
    #[serde(default)]
    pub partition_column: Option<Ident>,
    #[serde(default)]
    pub primary_key: Vec<Ident>,
    /// Tables of one group load in one transaction (default: the target's name).
    #[serde(default)]
    pub group: Option<String>,
    /// Targets in the same group that this table references (loaded before it, deleted after).
    #[serde(default)]
    pub depends_on: Vec<Ident>,
    /// `VARCHAR(n)` lengths for STRING columns (default `LONGTEXT`).
    #[serde(default)]
    pub varchar: BTreeMap<Ident, u32>,
    /// Per-table override of `warehouse.change_detection`.
    #[serde(default)]
    pub change_detection: Option<ChangeDetection>,
    /// Per-table override of `partition_sync.max_vanished_partitions`.
    #[serde(default)]
    pub max_vanished_partitions: Option<usize>,
    /// stream mode: column for cheap incremental fetches.
    #[serde(default)]
    pub cursor_column: Option<Ident>,
    /// partition mode: create the MySQL target `PARTITION BY RANGE COLUMNS(<partition column>)`
    /// and add partitions as the warehouse's appear. The primary key must include the
    /// partition column, and partitioned InnoDB tables can't have foreign keys.
    #[serde(default)]
    pub mysql_partitioning: bool,
}

impl TableSpec {
    pub fn group_name(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.target)
    }
}

impl SyncConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<SyncConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        SyncConfig::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<SyncConfig, ConfigError> {
        let config: SyncConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_warehouse().map_err(ConfigError::Invalid)?;
        let mut targets = BTreeSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let at = format!("tables[{i}] ({})", t.target);
            validate_table(t)
                .and_then(|()| {
                    if targets.insert(t.target.as_str()) {
                        Ok(())
                    } else {
                        Err(format!("target `{}` is listed twice", t.target))
                    }
                })
                .map_err(|m| ConfigError::Invalid(format!("{at}: {m}")))?;
        }
        self.validate_dependencies().map_err(ConfigError::Invalid)?;
        self.throttle.validate().map_err(ConfigError::Invalid)?;
        if self.partition_sync.chunk_rows == 0 {
            return Err(ConfigError::Invalid(
                "partition_sync.chunk_rows must be at least 1".into(),
            ));
        }
        self.stream_sync.validate().map_err(ConfigError::Invalid)
    }

    fn validate_warehouse(&self) -> Result<(), String> {
        let project = &self.warehouse.project;
        if project.is_empty()
            || !project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "warehouse.project `{project}` is not a valid project id"
            ));
        }
        Ok(())
    }

    /// `depends_on` names a target of the same group, partition tables only, no cycles.
    fn validate_dependencies(&self) -> Result<(), String> {
        for (i, t) in self.tables.iter().enumerate() {
            let at = format!("tables[{i}] ({})", t.target);
            for dep in &t.depends_on {
                match self.tables.iter().find(|o| &o.target == dep) {
                    None => {
                        return Err(format!(
                            "{at}: depends_on `{dep}` is not a configured target"
                        ))
                    }
                    Some(o) if o.group_name() != t.group_name() => {
                        return Err(format!(
                            "{at}: depends_on `{dep}` is in group `{}`, not `{}`",
                            o.group_name(),
                            t.group_name()
                        ))
                    }
                    Some(o) if o.mode != SyncMode::Partition || t.mode != SyncMode::Partition => {
                        return Err(format!("{at}: depends_on links partition tables only"))
                    }
                    Some(_) => {}
                }
            }
        }
        for group in self.groups() {
            if load_order(&group.tables).is_none() {
                return Err(format!("group `{}`: depends_on has a cycle", group.name));
            }
        }
        Ok(())
    }

    /// Partition tables grouped by `group`, each group's tables in load order (parents first).
    pub fn groups(&self) -> Vec<Group> {
        let mut by_name: BTreeMap<String, Vec<TableSpec>> = BTreeMap::new();
        for t in self.tables.iter().filter(|t| t.mode == SyncMode::Partition) {
            by_name
                .entry(t.group_name().to_string())
                .or_default()
                .push(t.clone());
        }
        by_name
            .into_iter()
            .map(|(name, tables)| {
                let tables = load_order(&tables).unwrap_or(tables);
                Group { name, tables }
            })
            .collect()
    }

    /// Tables in stream mode.
    pub fn stream_tables(&self) -> Vec<TableSpec> {
        self.tables
            .iter()
            .filter(|t| t.mode == SyncMode::Stream)
            .cloned()
            .collect()
    }

    /// Reads the MySQL DSN from the configured environment variable or file.
    pub fn mysql_url(&self) -> Result<String, ConfigError> {
        read_dsn(
            self.mysql.url_file.as_deref(),
            Some(&self.mysql.url_env),
            "mysql",
        )
    }
}

/// One table's own rules: identifiers, what its mode needs, `mysql_partitioning`, varchar
/// lengths. Messages leave out the table, which the caller adds.
fn validate_table(t: &TableSpec) -> Result<(), String> {
    if t.target.starts_with("sync_") {
        return Err("target names starting with `sync_` are reserved for the sync's state".into());
    }
    validate_mode(t)?;
    if t.mysql_partitioning {
        validate_mysql_partitioning(t)?;
    }
    if let Some(n) = t.varchar.values().find(|n| **n == 0 || **n > 16_383) {
        return Err(format!("varchar length {n} is outside 1..=16383"));
    }
    Ok(())
}

/// A partition table needs a partition column; a stream table a primary key and none.
fn validate_mode(t: &TableSpec) -> Result<(), String> {
    match t.mode {
        SyncMode::Partition => match t.partition_column.as_deref() {
            None => Err("mode = \"partition\" needs partition_column".into()),
            Some(_) => Ok(()),
        },
        SyncMode::Stream if t.primary_key.is_empty() => {
            Err("mode = \"stream\" needs a primary_key".into())
        }
        SyncMode::Stream if t.partition_column.is_some() => {
            Err("partition_column only applies to mode = \"partition\"".into())
        }
        SyncMode::Stream => Ok(()),
    }
}

/// MySQL requires the partitioning column in every unique key.
fn validate_mysql_partitioning(t: &TableSpec) -> Result<(), String> {
    if t.mode != SyncMode::Partition {
        return Err("mysql_partitioning only applies to mode = \"partition\"".into());
    }
    let pcol = t.partition_column.as_deref().unwrap_or_default();
    let target_col = match pcol.to_ascii_uppercase().as_str() {
        "_PARTITIONDATE" => "partition_date",
        "_PARTITIONTIME" => "partition_time",
        _ => pcol,
    };
    if !t.primary_key.is_empty() && !t.primary_key.iter().any(|k| k == target_col) {
        return Err(format!(
            "mysql_partitioning needs the partition column `{target_col}` in primary_key (MySQL requires it in every unique key)"
        ));
    }
    Ok(())
}

impl StreamSyncSettings {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_delete_fraction) {
            return Err("stream_sync.max_delete_fraction must be within 0.0..=1.0".into());
        }
        if self.buckets == 0 || self.buckets > 65_535 {
            return Err("stream_sync.buckets must be within 1..=65535".into());
        }
        if self.shards == 0 || self.shards > 1024 {
            return Err("stream_sync.shards must be within 1..=1024".into());
        }
        if self.full_diff_every == 0 {
            return Err("stream_sync.full_diff_every must be at least 1".into());
        }
        Ok(())
    }
}

/// Tables of one group that load in one transaction, in load order (parents first).
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub tables: Vec<TableSpec>,
}

/// Topological order of `tables` by `depends_on` (parents first, else config order);
/// `None` on a cycle.
pub fn load_order(tables: &[TableSpec]) -> Option<Vec<TableSpec>> {
    let mut done: Vec<TableSpec> = Vec::new();
    let mut left: Vec<&TableSpec> = tables.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|t| {
            t.depends_on.iter().all(|d| {
                done.iter().any(|x| &x.target == d) || !tables.iter().any(|x| &x.target == d)
            })
        })?;
        done.push(left.remove(ready).clone());
    }
    Some(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[mysql]
url_env = "SYNC_MYSQL_URL"
[warehouse]
project = "acme-analytics"
dataset = "recipes"
"#;

    fn parse(extra: &str) -> Result<SyncConfig, ConfigError> {
        SyncConfig::parse(&format!("{BASE}{extra}"), "test.toml")
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(
            r#"
[staging]
uri = "gs://b/p"
[[tables]]
source = "recipe_daily_stats"
target = "recipe_daily_stats"
mode = "partition"
partition_column = "day"
primary_key = ["recipe_id", "day"]
group = "stats"
[[tables]]
source = "ingredient_nutrition"
target = "ingredient_nutrition"
mode = "stream"
primary_key = ["ingredient_id"]
"#,
        )
        .unwrap();
        assert_eq!(c.groups().len(), 1);
        assert_eq!(c.stream_tables().len(), 1);
        assert_eq!(c.warehouse.change_detection, ChangeDetection::Metadata);
        assert_eq!(c.stream_sync.full_diff_every, 10);
        let c = parse("[stream_sync]\nfull_diff_every = 3\n").unwrap();
        assert_eq!(c.stream_sync.full_diff_every, 3);
        let e = parse("[stream_sync]\nfull_diff_every = 0\n").unwrap_err();
        assert!(e.to_string().contains("full_diff_every"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse("[[tables]]\nsource='a'\ntarget='a'\nmode='partition'\npartition_column='d'\nprimary_keys=['x']\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("primary_keys"), "{e}");
        let e = SyncConfig::parse(&format!("{BASE}\n[mysql2]\n"), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mysql2"), "{e}");
    }

    #[test]
    fn invalid_tables_are_rejected_with_a_reason() {
        let cases = [
            (
                "source='a'\ntarget='a-b'\nmode='stream'\nprimary_key=['id']",
                "not a valid identifier",
            ),
            (
                "source='a'\ntarget='a'\nmode='stream'",
                "needs a primary_key",
            ),
            (
                "source='a'\ntarget='a'\nmode='partition'",
                "needs partition_column",
            ),
            (
                "source='a'\ntarget='sync_x'\nmode='partition'\npartition_column='d'",
                "reserved",
            ),
            (
                "source='a'\ntarget='a'\nmode='partition'\npartition_column='d'\ndepends_on=['zz']",
                "not a configured target",
            ),
            (
                "source='a'\ntarget='a'\nmode='partition'\npartition_column='d'\nvarchar={s=0}",
                "outside",
            ),
            ("source='a'\ntarget='a'\nmode='sideways'", "sideways"),
            ("source='a'\ntarget='a'\nmode='partition'\npartition_column='d'\nprimary_key=['id']\nmysql_partitioning=true", "in primary_key"),
        ];
        for (table, want) in cases {
            let e = parse(&format!("[[tables]]\n{table}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{table}: {e}");
        }
    }

    #[test]
    fn groups_load_parents_first_and_reject_cycles() {
        let c = parse(
            r#"
[[tables]]
source = "links"
target = "links"
mode = "partition"
partition_column = "day"
group = "catalog"
depends_on = ["recipes", "ingredients"]
[[tables]]
source = "recipes"
target = "recipes"
mode = "partition"
partition_column = "day"
group = "catalog"
[[tables]]
source = "ingredients"
target = "ingredients"
mode = "partition"
partition_column = "day"
group = "catalog"
"#,
        )
        .unwrap();
        let order: Vec<_> = c.groups()[0]
            .tables
            .iter()
            .map(|t| t.target.clone())
            .collect();
        assert_eq!(order, vec!["recipes", "ingredients", "links"]);

        let e = parse(
            r#"
[[tables]]
source = "a"
target = "a"
mode = "partition"
partition_column = "d"
group = "g"
depends_on = ["b"]
[[tables]]
source = "b"
target = "b"
mode = "partition"
partition_column = "d"
group = "g"
depends_on = ["a"]
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn the_readme_example_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n[mysql]")
            .expect("README has the example config")
            + "```toml\n".len();
        let len = readme[start..].find("```").expect("closed code block");
        let c = SyncConfig::parse(&readme[start..start + len], "README.md").unwrap();
        assert_eq!(c.groups().len(), 1);
        assert_eq!(c.stream_tables().len(), 1);
    }

    #[test]
    fn identifiers_are_validated_and_quoted() {
        assert!(crate::ident::is_valid("recipe_daily_stats"));
        for bad in ["", "1a", "a b", "a`b", "a;drop", &"x".repeat(65)] {
            assert!(!crate::ident::is_valid(bad), "{bad}");
        }
        assert_eq!(crate::ident::quote("a`b"), "`a``b`");
    }
}
