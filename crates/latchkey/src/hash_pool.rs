//! The threads Argon2 runs on: a fixed pool at the lowest scheduling
//! priority (nice 19), so a login storm cannot take CPU time from requests
//! that are already signed in. tokio's blocking pool would run hashes at the
//! same priority as the async workers and grow a thread per waiting login.
//!
//! The queue is bounded by slots ([`HashSlot`]): a request takes one before
//! it queues and the slot travels with the job, so a request whose client
//! has gone still holds its place only until a thread picks the job up and
//! sees that nobody waits for it any more — then it is skipped, unhashed.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use thread_priority::{set_current_thread_priority, ThreadPriority};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// A place in the hashing queue, taken before a request queues (so a full
/// queue is refused at once) and given back when its job ends or is skipped.
pub struct HashSlot {
    // Held, never read: dropping it gives the place back.
    _permit: OwnedSemaphorePermit,
}

impl HashSlot {
    /// A slot outside any pool's bound, for work no client waits on.
    pub(crate) fn unbounded() -> Self {
        let permits = Arc::new(Semaphore::new(1));
        Self {
            _permit: permits
                .try_acquire_owned()
                .expect("a fresh semaphore has a permit"),
        }
    }
}

impl std::fmt::Debug for HashSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashSlot")
    }
}

/// Runs jobs on `size` low-priority threads, at most `max_pending` queued
/// or running at once.
pub(crate) struct HashPool {
    jobs: Mutex<Sender<Job>>,
    slots: Arc<Semaphore>,
}

impl HashPool {
    pub(crate) fn new(size: usize, max_pending: usize) -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..size.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("latchkey-hash-{i}"))
                .spawn(move || {
                    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
                        tracing::debug!(error = ?e, "could not lower the hashing thread's priority");
                    }
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            // A panicking job must not take its thread with it.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return, // pool dropped
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self {
            jobs: Mutex::new(tx),
            slots: Arc::new(Semaphore::new(max_pending.max(1))),
        }
    }

    /// A place in the queue, or `None` when `max_pending` requests already wait.
    pub(crate) fn slot(&self) -> Option<HashSlot> {
        self.slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| HashSlot { _permit: p })
    }

    /// Runs `job` on the pool in `slot` and waits for it without blocking
    /// the executor. If this future is dropped (the client went away)
    /// before a thread reaches the job, the job is skipped.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        slot: HashSlot,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _slot = slot;
            if tx.is_closed() {
                return; // nobody waits for this answer: skip the hash
            }
            let _ = tx.send(job());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn the_queue_is_bounded_and_abandoned_jobs_are_skipped() {
        let pool = Arc::new(HashPool::new(1, 3));
        let ran = Arc::new(AtomicUsize::new(0));
        // Keep the one thread busy so the next jobs queue behind it.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            let slot = pool.slot().unwrap();
            tokio::spawn(async move { pool.run(slot, move || hold.recv().ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut abandoned = Vec::new();
        for _ in 0..2 {
            let (pool, ran) = (pool.clone(), ran.clone());
            let slot = pool.slot().unwrap();
            abandoned.push(tokio::spawn(async move {
                pool.run(slot, move || ran.fetch_add(1, Ordering::SeqCst))
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.slot().is_none(), "3 slots taken: the 4th is refused");
        for task in &abandoned {
            task.abort(); // the clients go away
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).unwrap();
        busy.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "abandoned jobs were not run");
        // Their slots came back.
        let slots: Vec<_> = (0..3).map(|_| pool.slot()).collect();
        assert!(slots.iter().all(Option::is_some));
    }
}
