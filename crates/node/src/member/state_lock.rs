//! The lock around the state machine, shared by the Raft loop (its one writer of entries) and
//! the client handlers, which read it from tokio's worker threads.
//!
//! A worker thread that blocks on a lock stops every task queued on it: with two workers, a
//! writer holding the lock for a while (a defragment copies the whole store under it) would
//! stall peer streams, Status and keepalives along with the reads that actually wait. So a
//! wait here happens through [`tokio::task::block_in_place`], which hands the worker's other
//! tasks to a fresh thread first. The uncontended case, nearly every call, is one `try_read`
//! and costs nothing more than a plain lock.

use std::sync::{LockResult, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use super::state_machine::StateMachine;

/// The state machine behind its lock (see the [module docs](self)).
pub struct StateLock(RwLock<StateMachine>);

impl std::fmt::Debug for StateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateLock").finish_non_exhaustive()
    }
}

impl StateLock {
    /// Wraps a state machine.
    pub fn new(sm: StateMachine) -> Self {
        StateLock(RwLock::new(sm))
    }

    /// Shared access; waits, off the worker, while a writer holds the lock.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, StateMachine>> {
        match self.0.try_read() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => off_worker(|| self.0.read()),
        }
    }

    /// Exclusive access; waits, off the worker, while anyone holds the lock.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, StateMachine>> {
        match self.0.try_write() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::Poisoned(e)) => Err(e),
            Err(TryLockError::WouldBlock) => off_worker(|| self.0.write()),
        }
    }

    /// Shared access only if nobody writes now.
    pub fn try_read(
        &self,
    ) -> Result<RwLockReadGuard<'_, StateMachine>, TryLockError<RwLockReadGuard<'_, StateMachine>>>
    {
        self.0.try_read()
    }
}

/// Runs a blocking wait so that it holds up no other task: through `block_in_place` on a
/// multi-threaded runtime's worker, directly anywhere else (the Raft loop's thread, blocking
/// threads, single-threaded runtimes, where `block_in_place` is not allowed).
fn off_worker<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn scratch() -> StateLock {
        let db = sled::Config::new().temporary(true).open().expect("db");
        StateLock::new(StateMachine::new(
            crate::mvcc::MvccStore::open(&db).expect("store"),
        ))
    }

    /// While a writer holds the lock, a reader on one of two workers waits, and the runtime
    /// keeps running other tasks on both.
    #[test]
    fn a_waiting_reader_does_not_stall_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let lock = Arc::new(scratch());
        let guard = lock.write().expect("write");
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                rt.spawn(async move { lock.read().map(|sm| sm.applied_index()).is_ok() })
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = tx.send(());
        });
        // Measured on the test's own thread: a stalled runtime cannot time itself out.
        let ran = rx.recv_timeout(Duration::from_secs(10));
        drop(guard);
        ran.expect("the runtime stalled behind the waiting readers");
        for r in readers {
            assert!(rt.block_on(r).expect("reader"));
        }
    }
}
