DROP TABLE IF EXISTS sync_history;
