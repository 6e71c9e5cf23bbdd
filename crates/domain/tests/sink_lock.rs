//! Advisory locks through the sink hold until released or disconnected.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use mysql::prelude::Queryable;

#[test]
fn a_lock_held_by_one_session_is_refused_to_another() {
    let db = domain::testing::TestDb::empty();
    let mut a = domain::sink::connect(&db.url).unwrap();
    let mut b = domain::sink::connect(&db.url).unwrap();
    let name = format!("lock-test:{}", db.name);
    assert!(domain::sink::get_lock(&mut a, &name, Duration::from_secs(1)).unwrap());
    let used: Option<Option<i64>> = b.exec_first("SELECT IS_USED_LOCK(?)", (&name,)).unwrap();
    assert!(used.flatten().is_some());
    assert!(!domain::sink::get_lock(&mut b, &name, Duration::from_secs(1)).unwrap());
    domain::sink::release_lock(&mut a, &name).unwrap();
    assert!(domain::sink::get_lock(&mut b, &name, Duration::from_secs(1)).unwrap());
}
