//! The background sender: takes due mail from the queue one row at a time
//! and hands it to the SMTP server, retrying failures with backoff.
//! Delivery is at least once: a sender that dies between the SMTP
//! server's "accepted" and the row's deletion sends that mail again.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{watch, Notify};

use super::now_ms;
use super::queue::{Claimed, Queue};
use crate::metrics::MailMetrics;

/// The sender's clocks.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Looks for due mail this often besides being woken by an enqueue
    /// (retries come due, other instances enqueue).
    pub poll: Duration,
    /// How long a claim holds a row: past it, a row whose sender died is
    /// taken again. Longer than a whole SMTP exchange may take.
    pub lease: Duration,
    /// The wait after the first failure, doubling after each.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// A mail still failing this long after it was queued is given up.
    pub give_up_after: Duration,
    /// So is one that failed this many times (a stuck clock, a flood).
    pub max_attempts: i64,
    /// Each SMTP command's bound (lettre's timeout).
    pub smtp_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(60 * 60),
            give_up_after: Duration::from_secs(24 * 60 * 60),
            max_attempts: 100,
            smtp_timeout: Duration::from_secs(15),
        }
    }
}

impl Timing {
    /// The wait before attempt `failed + 1`.
    fn backoff(&self, failed: i64) -> Duration {
        let doublings = failed.saturating_sub(1).clamp(0, 30) as u32;
        self.first_retry
            .saturating_mul(1 << doublings)
            .min(self.max_retry)
    }
}

pub struct Sender {
    pub queue: Arc<Queue>,
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Mailbox,
    pub metrics: MailMetrics,
    pub timing: Timing,
    pub wake: Arc<Notify>,
    pub stop: watch::Receiver<bool>,
}

impl Sender {
    /// Runs until the outbox stops (or is dropped).
    pub async fn run(mut self) {
        let mut db_down = false;
        while !self.stopping() {
            let lease = self.timing.lease.as_millis() as i64;
            let claimed = self.queue.claim(now_ms(), lease).await;
            match &claimed {
                Err(e) if !db_down => {
                    tracing::warn!("mail queue unavailable ({e}); mail waits until it answers");
                    db_down = true;
                }
                Ok(_) if db_down => {
                    tracing::info!("mail queue answers again");
                    db_down = false;
                }
                _ => {}
            }
            if let Ok(depth) = self.queue.depth().await {
                self.metrics.queue_depth.set(depth);
            }
            if let Ok(Some(row)) = claimed {
                self.deliver(row).await;
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.timing.poll) => {}
                // A stop, or the outbox dropped: the loop's test ends it.
                _ = self.stop.changed() => {}
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    async fn deliver(&self, row: Claimed) {
        let Claimed {
            id,
            recipient: to,
            subject,
            attempts,
            ..
        } = &row;
        let message = match &row.body {
            None => Err("its body does not open (sealed under another secret key?)".to_owned()),
            Some(body) => body.message(&self.from, to, subject),
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => return self.give_up(&row, &e).await,
        };
        // Bounded as a whole too (each command is): the row is ours only
        // for the lease.
        let whole = self.timing.lease / 2;
        let error = match tokio::time::timeout(whole, self.transport.send(message)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", whole.as_secs())),
        };
        let Some(error) = error else {
            self.metrics.sent.inc();
            tracing::info!(mail = %id, %to, %subject, "mail sent");
            if let Err(e) = self.queue.remove(id).await {
                tracing::warn!(mail = %id, "mail sent but still queued ({e}); it may be sent again");
            }
            return;
        };
        self.metrics.send_failures.inc();
        let age = Duration::from_millis(now_ms().saturating_sub(row.created_at).max(0) as u64);
        if *attempts >= self.timing.max_attempts || age >= self.timing.give_up_after {
            return self.give_up(&row, &error).await;
        }
        let wait = self.timing.backoff(*attempts);
        tracing::warn!(mail = %id, %to, attempt = attempts, retry_in = ?wait, "mail not sent ({error}); will retry");
        let at = now_ms() + wait.as_millis() as i64;
        if let Err(e) = self.queue.retry_at(id, at, &error).await {
            tracing::warn!(mail = %id, "cannot reschedule the mail ({e}); it is retried when its claim lapses");
        }
    }

    /// Drops a mail that cannot be sent, logging why (never its body).
    async fn give_up(&self, row: &Claimed, why: &str) {
        tracing::error!(
            mail = %row.id, to = %row.recipient, subject = %row.subject, attempts = row.attempts,
            "mail given up, not sent: {why}"
        );
        if let Err(e) = self.queue.remove(&row.id).await {
            tracing::warn!(mail = %row.id, "cannot remove the mail given up ({e})");
        }
        self.metrics.given_up.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let t = Timing::default();
        let secs: Vec<u64> = [1, 2, 3, 4, 10, 11, 12, 99, i64::MAX]
            .into_iter()
            .map(|n| t.backoff(n).as_secs())
            .collect();
        assert_eq!(secs, [5, 10, 20, 40, 2560, 3600, 3600, 3600, 3600]);
        assert_eq!(t.backoff(0).as_secs(), 5);
    }
}
