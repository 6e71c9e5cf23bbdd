//! The diesel migrations apply on the real MariaDB server, and each `down.sql` undoes its
//! `up.sql` exactly (tables, columns, indexes and foreign keys compared before and after).
#![allow(clippy::expect_used, clippy::unwrap_used)] // helpers of tests

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness;
use migrations::MIGRATIONS;
use test_support::TestDb;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// Everything about the schema that a migration could change, as sorted text lines.
fn snapshot(conn: &mut MysqlConnection, db: &str) -> Vec<String> {
    let sql = "
      SELECT CONCAT('table ', TABLE_NAME, ' ', ENGINE, ' ', TABLE_COLLATION) AS line
        FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '__diesel_schema_migrations'
      UNION ALL
      SELECT CONCAT('column ', TABLE_NAME, '.', COLUMN_NAME, ' ', COLUMN_TYPE, ' ', IS_NULLABLE, ' ',
                    COALESCE(COLLATION_NAME, '-'), ' ', EXTRA) FROM information_schema.COLUMNS
        WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '__diesel_schema_migrations'
      UNION ALL
      SELECT CONCAT('index ', TABLE_NAME, '.', INDEX_NAME, ' ', SEQ_IN_INDEX, ' ', COLUMN_NAME, ' ', NON_UNIQUE)
        FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '__diesel_schema_migrations'
      UNION ALL
      SELECT CONCAT('fk ', CONSTRAINT_NAME, ' ', TABLE_NAME, ' ', REFERENCED_TABLE_NAME, ' ', DELETE_RULE)
        FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ?";
    let mut lines: Vec<String> = diesel::sql_query(sql)
        .bind::<Text, _>(db)
        .bind::<Text, _>(db)
        .bind::<Text, _>(db)
        .bind::<Text, _>(db)
        .load::<Line>(conn)
        .expect("schema snapshot")
        .into_iter()
        .map(|l| l.line)
        .collect();
    lines.sort();
    lines
}

#[test]
fn every_down_migration_undoes_its_up_migration() {
    let db = TestDb::empty();
    let mut conn = db.connect();
    let total = conn
        .pending_migrations(MIGRATIONS)
        .expect("list migrations")
        .len();
    assert!(
        total >= 2,
        "expected the recipe and sync-state migrations, found {total}"
    );
    for _ in 0..total {
        let before = snapshot(&mut conn, &db.name);
        let version = conn.run_next_migration(MIGRATIONS).expect("up").to_string();
        let after_up = snapshot(&mut conn, &db.name);
        assert_ne!(before, after_up, "migration {version} changed nothing");
        conn.revert_last_migration(MIGRATIONS).expect("down");
        assert_eq!(
            before,
            snapshot(&mut conn, &db.name),
            "down.sql of {version} does not undo up.sql"
        );
        conn.run_next_migration(MIGRATIONS).expect("up again");
        assert_eq!(
            after_up,
            snapshot(&mut conn, &db.name),
            "migration {version} is not repeatable"
        );
    }
    assert!(conn
        .pending_migrations(MIGRATIONS)
        .expect("list")
        .is_empty());
}

#[test]
fn running_migrations_twice_is_safe() {
    let db = TestDb::empty();
    let mut conn = db.connect();
    let first = migrations::run_migrations(&mut conn).expect("first run");
    assert!(!first.is_empty());
    let second = migrations::run_migrations(&mut conn).expect("second run");
    assert!(second.is_empty(), "second run applied {second:?}");
}

#[test]
fn all_migrations_revert_to_an_empty_schema() {
    let db = TestDb::empty();
    let mut conn = db.connect();
    let empty = snapshot(&mut conn, &db.name);
    migrations::run_migrations(&mut conn).expect("up");
    migrations::revert_all_migrations(&mut conn).expect("down");
    assert_eq!(empty, snapshot(&mut conn, &db.name));
}

#[test]
fn ingredient_names_are_unique_regardless_of_case() {
    let db = TestDb::new();
    let mut conn = db.connect();
    diesel::sql_query(
        "INSERT INTO ingredients (name, created_at, updated_at) VALUES ('Flour', NOW(6), NOW(6))",
    )
    .execute(&mut conn)
    .expect("first insert");
    let dup = diesel::sql_query(
        "INSERT INTO ingredients (name, created_at, updated_at) VALUES ('fLOUR', NOW(6), NOW(6))",
    )
    .execute(&mut conn);
    assert!(dup.is_err(), "a case-insensitive duplicate was accepted");
    // Accents are not folded: "crème" and "creme" are different ingredients.
    for name in ["crème", "creme"] {
        diesel::sql_query(
            "INSERT INTO ingredients (name, created_at, updated_at) VALUES (?, NOW(6), NOW(6))",
        )
        .bind::<Text, _>(name)
        .execute(&mut conn)
        .expect("accented names are distinct");
    }
}
