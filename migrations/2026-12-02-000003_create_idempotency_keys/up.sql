-- Idempotency-Key records of recipe-api writes (docs/api.md#idempotency). A row is claimed
-- (status NULL: in flight) before the write and completed in the write's own transaction, so
-- a stored response exists exactly when the write committed. Works on MySQL 8 and MariaDB 10.11.
CREATE TABLE idempotency_keys (
  -- SHA-256 of the bearer token: keys are per client identity, the token is not stored.
  principal BINARY(32) NOT NULL,
  idem_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- SHA-256 of the method, path, If-Match and canonical JSON body.
  request_hash BINARY(32) NOT NULL,
  status SMALLINT NULL,
  location VARCHAR(255) NULL,
  etag VARCHAR(64) NULL,
  body MEDIUMBLOB NULL,
  created_at DATETIME(6) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  PRIMARY KEY (principal, idem_key),
  KEY idempotency_keys_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
