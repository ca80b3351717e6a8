//! The server's mail: `--smtp-url` ([`SmtpUrl`]), the durable queue and its
//! background sender ([`Outbox`], the app's `Mailer`), and `--dev`'s log
//! ([`LogMailer`]).
//!
//! One file per concept: `smtp_url` (the flag and the transport), `render`
//! (text and HTML bodies), `seal` (bodies encrypted at rest), `queue` (the
//! `latchkey_mail` table), `sender` (delivery, retries), `outbox` (the
//! `Mailer`), `dev` (the log).

mod dev;
mod outbox;
mod queue;
mod render;
mod seal;
mod sender;
mod smtp_url;
#[cfg(test)]
mod tests;

pub use dev::LogMailer;
pub use outbox::Outbox;
pub use smtp_url::{SmtpUrl, SmtpUrlParser};

/// Milliseconds since the Unix epoch, as the queue stores times.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
