DROP TABLE IF EXISTS sync_heartbeat;
