//! Mail the recovery flows send: what to say ([`Notice`]) and to whom
//! ([`Mail`]); how it travels is the app's [`Mailer`].
//!
//! The library composes a plain-text body with the link on a line of its
//! own (mail clients and scanners find it there); a mailer may render its
//! own HTML from the same [`Notice`].

use std::time::Duration;

use async_trait::async_trait;

use crate::user::BackendError;

/// Why a user gets mail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A password-reset link (forgot password, or an admin's "send reset link").
    PasswordReset {
        /// The one-time link.
        link: String,
        /// How long it works.
        valid_for: Duration,
    },
    /// A link that confirms a new address (sent to that address).
    VerifyEmail {
        /// The one-time link.
        link: String,
        /// How long it works.
        valid_for: Duration,
    },
    /// The account's address is about to change (sent to the old address).
    EmailChanging {
        /// The address asked for.
        new_address: String,
    },
    /// The password was changed (by the user, a reset link or an admin).
    PasswordChanged,
}

/// One message for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The account's username (for the greeting).
    pub username: String,
    /// What the mail says.
    pub notice: Notice,
}

impl Mail {
    /// The subject line.
    pub fn subject(&self) -> &'static str {
        match self.notice {
            Notice::PasswordReset { .. } => "Reset your password",
            Notice::VerifyEmail { .. } => "Confirm your email address",
            Notice::EmailChanging { .. } => "Your email address is being changed",
            Notice::PasswordChanged => "Your password was changed",
        }
    }

    /// The link the mail carries, if any.
    pub fn link(&self) -> Option<&str> {
        match &self.notice {
            Notice::PasswordReset { link, .. } | Notice::VerifyEmail { link, .. } => Some(link),
            _ => None,
        }
    }

    /// The plain-text body; a link stands on a line of its own.
    pub fn text(&self) -> String {
        let name = &self.username;
        match &self.notice {
            Notice::PasswordReset { link, valid_for } => format!(
                "Hello {name},\n\nSomeone (we hope you) asked to reset the password of your account.\n\
                 To choose a new one, open this link within {}:\n\n{link}\n\n\
                 If you did not ask, ignore this mail: your password stays as it is.\n",
                minutes(*valid_for)
            ),
            Notice::VerifyEmail { link, valid_for } => format!(
                "Hello {name},\n\nTo make this the address of your account, open this link within {}:\n\n{link}\n\n\
                 If you did not ask for this, ignore this mail.\n",
                minutes(*valid_for)
            ),
            Notice::EmailChanging { new_address } => format!(
                "Hello {name},\n\nSomeone signed in to your account asked to change its email address to\n\
                 {new_address}\nIt changes once that address confirms it. If this was not you, \
                 change your password now.\n"
            ),
            Notice::PasswordChanged => format!(
                "Hello {name},\n\nThe password of your account was just changed, and every session \
                 of it was signed out.\nIf this was not you, reset your password now.\n"
            ),
        }
    }
}

fn minutes(d: Duration) -> String {
    let m = d.as_secs().div_ceil(60).max(1);
    if m.is_multiple_of(60) {
        let h = m / 60;
        format!("{h} hour{}", if h == 1 { "" } else { "s" })
    } else {
        format!("{m} minute{}", if m == 1 { "" } else { "s" })
    }
}

/// Sends (or queues) mail. latchkey's server queues it durably in its users
/// database and sends it in the background; the flows call this after
/// answering what they can, so a slow mailer never delays a response that
/// must look the same whether an account exists.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Accepts one message for delivery.
    async fn send(&self, mail: Mail) -> Result<(), BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_stands_on_its_own_line() {
        let mail = Mail {
            to: "a@example.com".into(),
            username: "alice".into(),
            notice: Notice::PasswordReset {
                link: "https://x.example/password/reset?token=abc".into(),
                valid_for: Duration::from_secs(15 * 60),
            },
        };
        assert!(mail
            .text()
            .lines()
            .any(|l| l == "https://x.example/password/reset?token=abc"));
        assert!(mail.text().contains("15 minutes"));
        assert_eq!(
            mail.link(),
            Some("https://x.example/password/reset?token=abc")
        );
    }
}
