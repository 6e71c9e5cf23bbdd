-- State of partition-sync: one row per synced target table and partition, written in the same
-- transaction as the partition's rows (so data and watermark never disagree).
CREATE TABLE IF NOT EXISTS sync_partitions (
  target_table VARCHAR(64) NOT NULL,
  partition_id VARCHAR(64) NOT NULL,
  source_modified_at DATETIME(6) NULL,
  fingerprint BIGINT NULL,
  row_count BIGINT NOT NULL,
  synced_at DATETIME(6) NOT NULL,
  run_id VARCHAR(64) NOT NULL,
  PRIMARY KEY (target_table, partition_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per run of either sync binary and table: what it did and how it ended.
CREATE TABLE IF NOT EXISTS sync_runs (
  run_id VARCHAR(64) NOT NULL,
  target_table VARCHAR(64) NOT NULL,
  engine VARCHAR(16) NOT NULL,
  started_at DATETIME(6) NOT NULL,
  finished_at DATETIME(6) NULL,
  status VARCHAR(16) NOT NULL,
  rows_loaded BIGINT NOT NULL DEFAULT 0,
  rows_deleted BIGINT NOT NULL DEFAULT 0,
  error TEXT NULL,
  PRIMARY KEY (run_id, target_table),
  KEY sync_runs_table_started (target_table, started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
