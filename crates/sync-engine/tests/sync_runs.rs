//! `sync_runs` through the one writer and reader both syncs use: a second record of a run
//! replaces the first, the latest run is found per engine, the state tables come from the
//! migration's own DDL and can be created twice.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use sync_engine::session::{self, RunRecord};

fn record<'a>(run_id: &'a str, engine: &'a str, status: &'a str, loaded: u64) -> RunRecord<'a> {
    RunRecord {
        run_id,
        target_table: "t",
        engine,
        started_at: None,
        status,
        rows_loaded: loaded,
        rows_deleted: 0,
        error: (status == "failed").then_some("boom"),
        accumulate: false,
    }
}

#[test]
fn accumulated_records_of_a_run_add_their_rows() {
    let db = test_support::TestDb::empty();
    let mut conn = session::connect(&db.url).unwrap();
    session::ensure_state_tables(&mut conn).unwrap();
    // partition-sync: one record per batch of a run.
    for loaded in [5, 7] {
        let mut batch = record("r1", "partition", "ok", loaded);
        batch.rows_deleted = 1;
        batch.accumulate = true;
        session::record_run(&mut conn, &batch).unwrap();
    }
    let last = session::last_run(&mut conn, "t", Some("partition"))
        .unwrap()
        .unwrap();
    assert_eq!((last.rows_loaded, last.rows_deleted), (12, 2));
}

#[test]
fn a_run_recorded_twice_keeps_its_last_outcome_and_the_latest_run_is_read_back() {
    let db = test_support::TestDb::empty();
    let mut conn = session::connect(&db.url).unwrap();
    session::ensure_state_tables(&mut conn).unwrap();
    session::ensure_state_tables(&mut conn).unwrap(); // idempotent
    assert_eq!(session::last_run(&mut conn, "t", None).unwrap(), None);

    session::record_run(&mut conn, &record("r1", "partition", "failed", 0)).unwrap();
    session::record_run(&mut conn, &record("r1", "partition", "ok", 7)).unwrap();
    let last = session::last_run(&mut conn, "t", Some("partition"))
        .unwrap()
        .unwrap();
    assert_eq!((last.status.as_str(), last.rows_loaded), ("ok", 7));
    assert!(last.finished_at.is_some());

    // Another engine's run of the same table is told apart.
    let mut stream = record("s1", "stream", "ok", 3);
    stream.started_at = Some("2999-01-01 00:00:00.000000".into());
    session::record_run(&mut conn, &stream).unwrap();
    let any = session::last_run(&mut conn, "t", None).unwrap().unwrap();
    assert_eq!(
        (any.rows_loaded, any.started_at.as_str()),
        (3, "2999-01-01T00:00:00Z")
    );
    let partition = session::last_run(&mut conn, "t", Some("partition"))
        .unwrap()
        .unwrap();
    assert_eq!(partition.rows_loaded, 7);
}
