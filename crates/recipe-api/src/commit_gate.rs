//! A write answered 5xx is never committed (docs/api.md#database-failures).
//!
//! A request's database work runs on a database thread while its handler waits with a
//! deadline. Without coordination the handler could answer 503 at the deadline while the
//! thread, once a lock is released, commits anyway: a client retrying as told would write
//! twice. The [`CommitGate`] is the one decision between the two: the thread asks it right
//! before `COMMIT` ([`CommitGate::may_commit`], from inside [`crate::models::transaction`]),
//! the handler at its deadline ([`CommitGate::abandon`]). Whichever comes first wins: an
//! abandoned job rolls back, and a handler that finds the commit under way waits for its
//! outcome and answers with it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

thread_local! {
    static CURRENT: RefCell<Option<CommitGate>> = const { RefCell::new(None) };
}

/// Shared between a handler and the database job it waits for.
#[derive(Clone, Debug, Default)]
pub struct CommitGate(Arc<AtomicU8>);

impl CommitGate {
    pub fn new() -> CommitGate {
        CommitGate::default()
    }

    /// Runs `f` (on a database thread) with this gate as the thread's current one.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                CURRENT.with(|c| c.borrow_mut().take());
            }
        }
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let _reset = Reset;
        f()
    }

    /// The handler's deadline passed: true when the job will never commit (it had not
    /// started committing), false when a commit is under way and its outcome is the answer.
    pub fn abandon(&self) -> bool {
        match self
            .0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == ABANDONED,
        }
    }

    /// The job is about to commit: true when it may (the handler still waits, or an earlier
    /// transaction of the same job already committed), false when the handler gave up.
    fn try_commit(&self) -> bool {
        match self
            .0
            .compare_exchange(RUNNING, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == COMMITTING,
        }
    }

    fn abandoned(&self) -> bool {
        self.0.load(Ordering::Acquire) == ABANDONED
    }

    /// On a database thread: may the current transaction commit? True outside any gate
    /// (tests, tools); otherwise [`CommitGate::try_commit`] of the thread's gate.
    pub fn may_commit() -> bool {
        CURRENT.with(|c| c.borrow().as_ref().is_none_or(CommitGate::try_commit))
    }

    /// On a database thread: has the handler given up on this job?
    pub fn is_abandoned() -> bool {
        CURRENT.with(|c| c.borrow().as_ref().is_some_and(CommitGate::abandoned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_commit_and_abandon_wins() {
        let gate = CommitGate::new();
        assert!(gate.scope(CommitGate::may_commit));
        assert!(!gate.abandon(), "a commit under way is waited for");
        assert!(
            gate.scope(CommitGate::may_commit),
            "a second transaction of the job"
        );

        let gate = CommitGate::new();
        assert!(gate.abandon());
        assert!(gate.abandon(), "abandoning twice is still abandoned");
        assert!(gate.scope(CommitGate::is_abandoned));
        assert!(
            !gate.scope(CommitGate::may_commit),
            "an abandoned job rolls back"
        );
    }

    #[test]
    fn outside_a_gate_everything_commits_and_the_scope_is_reset() {
        assert!(CommitGate::may_commit());
        assert!(!CommitGate::is_abandoned());
        let gate = CommitGate::new();
        gate.abandon();
        gate.scope(|| ());
        assert!(
            CommitGate::may_commit(),
            "the gate does not outlive its scope"
        );
    }
}
