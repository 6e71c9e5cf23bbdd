//! Advisory locks through the sink hold until released or disconnected.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use mysql::prelude::Queryable;

#[test]
fn a_lock_held_by_one_session_is_refused_to_another() {
    let db = test_support::TestDb::empty();
    let mut a = sync_engine::session::connect(&db.url).unwrap();
    let mut b = sync_engine::session::connect(&db.url).unwrap();
    let name = format!("lock-test:{}", db.name);
    assert!(sync_engine::session::get_lock(&mut a, &name, Duration::from_secs(1)).unwrap());
    let used: Option<Option<i64>> = b.exec_first("SELECT IS_USED_LOCK(?)", (&name,)).unwrap();
    assert!(used.flatten().is_some());
    assert!(!sync_engine::session::get_lock(&mut b, &name, Duration::from_secs(1)).unwrap());
    sync_engine::session::release_lock(&mut a, &name).unwrap();
    assert!(sync_engine::session::get_lock(&mut b, &name, Duration::from_secs(1)).unwrap());
}
