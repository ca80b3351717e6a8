//! [`Outbox`]: the server's [`Mailer`]. Sending is one INSERT into the
//! durable queue and a nudge to the background sender, so a request never
//! waits for SMTP and an SMTP outage delays mail without losing it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use latchkey::mail::{Mail, Mailer};
use latchkey::user::BackendError;
use lettre::message::Mailbox;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::queue::Queue;
use super::sender::{Sender, Timing};
use super::{now_ms, SmtpUrl};
use crate::metrics::MailMetrics;
use crate::users::Users;

/// How long [`Outbox::stop`] lets a mail being sent finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Queues mail in the users database and sends it in the background.
/// Several instances may share one database: each mail goes out once.
pub struct Outbox {
    queue: Arc<Queue>,
    wake: Arc<Notify>,
    /// Dropping it stops the sender too.
    stop: watch::Sender<bool>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Outbox {
    /// Starts the sender: mail from `from`, through `smtp`, queued in the
    /// users database and sealed under a key derived from `secret`.
    pub fn start(
        users: &Users,
        secret: &[u8],
        smtp: &SmtpUrl,
        from: Mailbox,
        metrics: MailMetrics,
    ) -> Result<Arc<Outbox>, String> {
        Self::start_with(users, secret, smtp, from, metrics, Timing::default())
    }

    pub(super) fn start_with(
        users: &Users,
        secret: &[u8],
        smtp: &SmtpUrl,
        from: Mailbox,
        metrics: MailMetrics,
        timing: Timing,
    ) -> Result<Arc<Outbox>, String> {
        let queue = Arc::new(Queue::new(users, secret));
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        tracing::info!(
            "mail goes out through {smtp} from {from}, queued in {}",
            users.label()
        );
        let sender = Sender {
            queue: queue.clone(),
            transport: smtp.transport(timing.smtp_timeout)?,
            from,
            metrics,
            timing,
            wake: wake.clone(),
            stop: stopped,
        };
        let sender = tokio::spawn(sender.run());
        Ok(Arc::new(Outbox {
            queue,
            wake,
            stop,
            sender: Mutex::new(Some(sender)),
        }))
    }

    /// Stops the sender, letting a mail being sent finish (a while).
    /// Queued mail stays queued for the next start.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut sender) = sender {
            if tokio::time::timeout(STOP_GRACE, &mut sender).await.is_err() {
                // Its row's claim lapses and another start sends it.
                sender.abort();
            }
        }
    }
}

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, mail: Mail) -> Result<(), BackendError> {
        self.queue.push(&mail, now_ms()).await?;
        self.wake.notify_one();
        Ok(())
    }
}
