//! `--dev` without `--smtp-url`: mail is logged, not sent, so a newcomer
//! can follow a reset from the terminal. The one place a link is logged.

use async_trait::async_trait;
use latchkey::mail::{Mail, Mailer};
use latchkey::user::BackendError;

/// Logs each mail at INFO: recipient, subject, and its link alone on the
/// last line (to copy, or for a script to pick out).
pub struct LogMailer;

#[async_trait]
impl Mailer for LogMailer {
    async fn send(&self, mail: Mail) -> Result<(), BackendError> {
        // The address came from a client: escaped, it cannot forge lines.
        let to = mail.to.escape_debug();
        let subject = mail.subject();
        match mail.link() {
            Some(link) => tracing::info!(
                "mail not sent (--dev without --smtp-url) to {to}: {subject}\n{}",
                link.escape_debug()
            ),
            None => tracing::info!("mail not sent (--dev without --smtp-url) to {to}: {subject}"),
        }
        Ok(())
    }
}
