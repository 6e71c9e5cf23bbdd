//! MySQL: the embedded diesel migrations (recipe tables and sync state) and connections.

use diesel::mysql::MysqlConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// Every migration under the workspace's `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Errors of the database helpers.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not connect to MySQL: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Opens one connection. The URL is never logged: it may hold a password.
pub fn connect(url: &str) -> Result<MysqlConnection, DbError> {
    Ok(MysqlConnection::establish(url)?)
}

/// Applies every pending migration; safe to re-run (applied ones are skipped).
/// Returns the versions applied by this call.
pub fn run_migrations(conn: &mut MysqlConnection) -> Result<Vec<String>, DbError> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// Reverts every applied migration, newest first (used by the migration round-trip test).
pub fn revert_all_migrations(conn: &mut MysqlConnection) -> Result<Vec<String>, DbError> {
    let reverted = conn
        .revert_all_migrations(MIGRATIONS)
        .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(reverted.iter().map(|v| v.to_string()).collect())
}
