//! Prometheus metrics, every name prefixed `latchkey_`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub logins: Family<Labels, Counter>,
    pub logouts: Counter,
    by_class: [Counter; 5],
    pub sessions_revoked: Counter,
    pub password_changes: Counter,
    pub mail: MailMetrics,
}

/// The mail sender's: handles onto the registered metrics, cloned into it.
#[derive(Clone, Default)]
pub struct MailMetrics {
    /// Mails waiting in the queue (all instances'), as the sender last counted.
    pub queue_depth: Gauge,
    pub sent: Counter,
    /// Attempts that failed (each is retried until the mail is given up).
    pub send_failures: Counter,
    /// Mails dropped after a day of failures, or unreadable.
    pub given_up: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("latchkey");
        let logins = Family::<Labels, Counter>::default();
        let logouts = Counter::default();
        let requests = Family::<Labels, Counter>::default();
        let sessions_revoked = Counter::default();
        let password_changes = Counter::default();
        registry.register("logins", "Login attempts by outcome", logins.clone());
        registry.register("logouts", "Logouts", logouts.clone());
        registry.register(
            "http_requests",
            "HTTP responses by status class",
            requests.clone(),
        );
        registry.register(
            "sessions_revoked",
            "Sessions ended by their owner or an admin",
            sessions_revoked.clone(),
        );
        registry.register(
            "password_changes",
            "Passwords changed",
            password_changes.clone(),
        );
        let mail = MailMetrics::default();
        registry.register(
            "mail_queue_depth",
            "Mails queued and not yet sent",
            mail.queue_depth.clone(),
        );
        registry.register(
            "mail_sent",
            "Mails handed to the SMTP server",
            mail.sent.clone(),
        );
        registry.register(
            "mail_send_failures",
            "Failed attempts to send a mail (each is retried)",
            mail.send_failures.clone(),
        );
        registry.register(
            "mail_given_up",
            "Mails dropped after failing for a day, or unreadable",
            mail.given_up.clone(),
        );
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            requests
                .get_or_create(&vec![("status".into(), class.into())])
                .clone()
        });
        Self {
            registry,
            logins,
            logouts,
            by_class,
            sessions_revoked,
            password_changes,
            mail,
        }
    }

    pub fn login(&self, outcome: &str) {
        self.logins
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Counts a response by status class. Per request, so the five
    /// counters are made once and indexed, with no allocation here.
    pub fn response(&self, status: u16) {
        if let Some(c) = self.by_class.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
