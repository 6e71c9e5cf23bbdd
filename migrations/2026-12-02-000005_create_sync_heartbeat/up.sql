-- The syncs' heartbeat (docs/sync.md#throttling), pt-heartbeat style: while a sync loads, it
-- writes the primary's UTC time here every few hundred milliseconds. Read on a replica, the
-- row's age is that replica's lag. One row per primary (its @@server_id).
CREATE TABLE IF NOT EXISTS sync_heartbeat (
  server_id BIGINT UNSIGNED NOT NULL,
  ts DATETIME(6) NOT NULL,
  PRIMARY KEY (server_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
