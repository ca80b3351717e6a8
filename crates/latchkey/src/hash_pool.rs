//! The threads Argon2 runs on: a fixed pool at the lowest scheduling
//! priority (nice 19), so a login storm cannot take CPU time from requests
//! that are already signed in. tokio's blocking pool would run hashes at the
//! same priority as the async workers and grow a thread per waiting login.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use thread_priority::{set_current_thread_priority, ThreadPriority};

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs on `size` low-priority threads.
pub(crate) struct HashPool {
    jobs: Mutex<Sender<Job>>,
}

impl HashPool {
    pub(crate) fn new(size: usize) -> Self {
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
        }
    }

    /// Runs `job` on the pool and waits for it without blocking the executor.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
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
