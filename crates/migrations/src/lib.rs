//! The MySQL schema, one source for it: the diesel migrations under the workspace's
//! `migrations/` (recipe tables, idempotency keys, sync state tables). With the `diesel` feature (default) they
//! are embedded and applied by [`run_migrations`] (`recipe-api migrate`, tests); without it the
//! sync binaries take the sync state tables' DDL text from [`sync_state_statements`], so they
//! link no diesel and still create exactly what the migration creates.

/// The migration that creates the sync state tables (`sync_partitions`, `sync_runs`).
/// Its statements are `CREATE TABLE IF NOT EXISTS`, so the sync and the migration can each run
/// first.
pub const SYNC_STATE_UP: &str =
    include_str!("../../../migrations/2026-11-26-000002_create_sync_state/up.sql");

/// The migration that creates `sync_history` (partition-sync's change-history windows).
pub const SYNC_HISTORY_UP: &str =
    include_str!("../../../migrations/2026-12-02-000004_create_sync_history/up.sql");

/// The migration that creates `sync_heartbeat` (the syncs' replica-lag heartbeat).
pub const SYNC_HEARTBEAT_UP: &str =
    include_str!("../../../migrations/2026-12-02-000005_create_sync_heartbeat/up.sql");

/// The statements of [`SYNC_STATE_UP`], [`SYNC_HISTORY_UP`] and [`SYNC_HEARTBEAT_UP`],
/// comments removed.
pub fn sync_state_statements() -> Vec<String> {
    let mut all = statements(SYNC_STATE_UP);
    all.extend(statements(SYNC_HISTORY_UP));
    all.extend(statements(SYNC_HEARTBEAT_UP));
    all
}

/// Splits a migration's SQL into statements (on `;`), dropping `--` comment lines.
pub fn statements(sql: &str) -> Vec<String> {
    sql.split(';')
        .map(|stmt| {
            stmt.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(feature = "diesel")]
mod harness {
    use diesel::mysql::MysqlConnection;
    use diesel::Connection;
    use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

    /// Every migration under the workspace's `migrations/`, compiled into the binary.
    pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

    /// Errors of the migration helpers.
    #[derive(Debug, thiserror::Error)]
    pub enum MigrationError {
        #[error("could not connect to MySQL: {0}")]
        Connect(#[from] diesel::ConnectionError),
        #[error("migration failed: {0}")]
        Migration(String),
    }

    /// Opens one connection. The URL is never logged: it may hold a password.
    pub fn connect(url: &str) -> Result<MysqlConnection, MigrationError> {
        Ok(MysqlConnection::establish(url)?)
    }

    /// Applies every pending migration; safe to re-run (applied ones are skipped).
    /// Returns the versions applied by this call.
    pub fn run_migrations(conn: &mut MysqlConnection) -> Result<Vec<String>, MigrationError> {
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| MigrationError::Migration(e.to_string()))?;
        Ok(applied.iter().map(|v| v.to_string()).collect())
    }

    /// Reverts every applied migration, newest first (used by the migration round-trip test).
    pub fn revert_all_migrations(
        conn: &mut MysqlConnection,
    ) -> Result<Vec<String>, MigrationError> {
        let reverted = conn
            .revert_all_migrations(MIGRATIONS)
            .map_err(|e| MigrationError::Migration(e.to_string()))?;
        Ok(reverted.iter().map(|v| v.to_string()).collect())
    }
}

#[cfg(feature = "diesel")]
pub use harness::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_state_ddl_is_idempotent_creates_without_comments() {
        let stmts = sync_state_statements();
        assert_eq!(stmts.len(), 4, "{stmts:#?}");
        for s in &stmts {
            assert!(s.starts_with("CREATE TABLE IF NOT EXISTS sync_"), "{s}");
            assert!(!s.contains("--"), "{s}");
        }
    }

    #[test]
    fn statements_split_on_semicolons_and_skip_comment_only_parts() {
        let sql = "-- a\nCREATE TABLE a (x INT);\n-- only a comment;\n\nDROP TABLE b;";
        assert_eq!(
            statements(sql),
            vec![
                "CREATE TABLE a (x INT)".to_string(),
                "DROP TABLE b".to_string()
            ]
        );
    }
}
