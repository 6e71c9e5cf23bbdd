-- Where partition-sync's change-history detection (`change_detection = "changes"`) reads next:
-- per target, the next window's start and the earliest end it may have (the start of the
-- detection that last listed every partition). Written after the group's transaction commits:
-- a crash in between re-reads one window, which reloads the same partitions again.
CREATE TABLE IF NOT EXISTS sync_history (
  target_table VARCHAR(64) NOT NULL,
  from_micros BIGINT NOT NULL,
  not_before_micros BIGINT NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (target_table)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
