//! Where blocking diesel work runs: a fixed set of threads, one per pooled connection, taking
//! jobs from one shared queue.
//!
//! Why not `web::block` (tokio's blocking pool)? Every job handed to it wakes a parked thread,
//! and the blocking pool keeps more threads than connections, so under load each request paid
//! for a thread wake-up and a context switch on top of its database round trips (profiled: a
//! third of the service's CPU was the kernel switching threads). Here a thread that finishes a
//! job takes the next one straight from the queue, and only sleeps when the queue is empty.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run (or did not finish).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    /// The queue is full: every thread is busy and `queue` jobs are waiting.
    #[error("all {0} database threads are busy and the queue is full")]
    QueueFull(usize),
    /// The job waited longer than the queue timeout before a thread was free.
    #[error("waited more than {0:?} for a database connection")]
    QueueTimeout(Duration),
    /// The job panicked (the thread carries on).
    #[error("the database job panicked")]
    Panicked,
    /// The executor has shut down.
    #[error("the database executor is shut down")]
    Closed,
}

/// A fixed pool of threads for blocking work. Dropping every clone of it lets the threads
/// finish their current job and exit.
#[derive(Clone)]
pub struct DbExecutor {
    sender: Sender<Job>,
    threads: usize,
    queue_timeout: Duration,
}

impl DbExecutor {
    /// Starts `threads` threads (at least one) sharing a queue of at most `queue` waiting
    /// jobs; a job that waited longer than `queue_timeout` for a thread is not run.
    pub fn new(threads: usize, queue: usize, queue_timeout: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(queue.max(1));
        for index in 0..threads {
            let receiver: Receiver<Job> = receiver.clone();
            thread::Builder::new()
                .name(format!("db-{index}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        // The caller's closure is already guarded; this keeps the thread alive
                        // should dropping a result or a skipped job's captures panic too.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(DbExecutor {
            sender,
            threads,
            queue_timeout,
        })
    }

    /// Jobs waiting for a thread.
    pub fn waiting(&self) -> usize {
        self.sender.len()
    }

    /// Runs `f` on one of the threads and waits for its result without blocking the caller's
    /// executor. A job whose caller stopped waiting (a timeout, a closed connection) is
    /// skipped if it has not started yet.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ExecError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, ExecError>>();
        let queued = Instant::now();
        let queue_timeout = self.queue_timeout;
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return;
            }
            if queued.elapsed() > queue_timeout {
                let _ = tx.send(Err(ExecError::QueueTimeout(queue_timeout)));
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(|_| ExecError::Panicked);
            let _ = tx.send(result);
        });
        self.sender.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => ExecError::QueueFull(self.threads),
            TrySendError::Disconnected(_) => ExecError::Closed,
        })?;
        rx.await.unwrap_or(Err(ExecError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn runs_jobs_off_the_calling_thread_and_returns_their_results() {
        let exec = DbExecutor::new(2, 8, Duration::from_secs(5)).expect("executor");
        let caller = thread::current().id();
        let (value, ran_on) = runtime()
            .block_on(exec.run(move || (21 * 2, thread::current().id())))
            .expect("job result");
        assert_eq!(value, 42);
        assert_ne!(ran_on, caller);
    }

    #[test]
    fn a_panicking_job_is_an_error_and_the_thread_survives() {
        let exec = DbExecutor::new(1, 8, Duration::from_secs(5)).expect("executor");
        let rt = runtime();
        let panicked = rt.block_on(exec.run(|| -> u8 { panic!("boom") }));
        assert_eq!(panicked, Err(ExecError::Panicked));
        assert_eq!(rt.block_on(exec.run(|| 7)), Ok(7));
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        let exec = DbExecutor::new(1, 1, Duration::from_secs(5)).expect("executor");
        let rt = runtime();
        let gate = Arc::new(Barrier::new(2));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        // Occupy the only thread ...
        let blocker = {
            let gate = gate.clone();
            let exec = exec.clone();
            rt.spawn(async move {
                exec.run(move || {
                    let _ = started_tx.send(());
                    gate.wait();
                })
                .await
            })
        };
        while started_rx.try_recv().is_err() {
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
        }
        // ... then fill the one queue slot.
        let queued = {
            let exec = exec.clone();
            rt.spawn(async move { exec.run(|| 1).await })
        };
        while exec.sender.is_empty() {
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
        }
        let refused = rt.block_on(exec.run(|| 2));
        assert_eq!(refused, Err(ExecError::QueueFull(1)));
        gate.wait();
        assert!(rt.block_on(blocker).expect("join").is_ok());
        assert_eq!(rt.block_on(queued).expect("join"), Ok(1));
    }

    #[test]
    fn a_job_that_waited_too_long_for_a_thread_is_not_run() {
        let exec = DbExecutor::new(1, 8, Duration::from_millis(20)).expect("executor");
        let rt = runtime();
        let ran = Arc::new(AtomicUsize::new(0));
        let slow = {
            let exec = exec.clone();
            rt.spawn(async move { exec.run(|| thread::sleep(Duration::from_millis(100))).await })
        };
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(10)).await });
        let late = {
            let ran = ran.clone();
            rt.block_on(exec.run(move || ran.fetch_add(1, Ordering::SeqCst)))
        };
        assert_eq!(
            late,
            Err(ExecError::QueueTimeout(Duration::from_millis(20)))
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert!(rt.block_on(slow).expect("join").is_ok());
    }
}
