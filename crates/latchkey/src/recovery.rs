//! Account recovery and recent authentication: password-reset links,
//! verified email addresses, and "confirm it's you" before sensitive actions.
//!
//! Links carry a 256-bit random token; the store keeps only its SHA-256 as a
//! [ticket](crate::store::TicketStore) that dies at its time-to-live, at use,
//! and (for reset links) when the password changes: each ticket holds a
//! fingerprint of the password hash it was issued under. Reading a link
//! (`GET`, a mail scanner) never uses it up; only the `POST` that acts does.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::clip;
use crate::authenticator::{Refusal, Who};
use crate::client::RequestMeta;
use crate::error::{backend, detail, Error, LoginError, PasswordChangeError};
use crate::mail::{Mail, Mailer, Notice};
use crate::session::{SessionRecord, SessionToken};
use crate::store::{StoreError, TicketStore};
use crate::user::AuthUser;
use crate::user_check::{Account, Directory};
use crate::Latchkey;

const RESET: &str = "reset:";
const VERIFY: &str = "verify:";
const REAUTH: &str = "reauth:";

/// Every "forgot password" answer takes at least this long. The lookup
/// and the mail run in the background within it, so their cost (and the
/// SMTP send they trigger) lands inside the request that caused it, not on
/// the next one: known and unknown addresses take the same time.
const FORGOT_FLOOR: Duration = Duration::from_millis(100);

/// Addresses longer than this are refused (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

/// Why a recovery step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The link is unknown, used, expired, or its password has changed.
    #[error("Invalid or expired link")]
    InvalidLink,
    /// The new password breaks the policy; the reason is user-facing.
    #[error("{0}")]
    Rejected(String),
    /// The address is not one.
    #[error("Enter a valid email address.")]
    BadEmail,
    /// A verification link for an address another account took meanwhile.
    #[error("That address is already in use by another account.")]
    EmailTaken,
    /// Too many requests; try again after `retry_after`.
    #[error("Too many requests. Try again in {} seconds.", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until the block lapses.
        retry_after: Duration,
    },
    /// No [`Mailer`] was given to the builder: mail-based flows are off.
    #[error("Not Found")]
    MailOff,
    /// A store, the user backend or the hasher failed.
    #[error(transparent)]
    Unavailable(#[from] Error),
}

impl From<StoreError> for RecoveryError {
    fn from(e: StoreError) -> Self {
        RecoveryError::Unavailable(e.into())
    }
}

impl IntoResponse for RecoveryError {
    fn into_response(self) -> Response {
        if let RecoveryError::Unavailable(e) = self {
            return e.into_response();
        }
        let status = match &self {
            RecoveryError::InvalidLink => StatusCode::BAD_REQUEST,
            RecoveryError::Rejected(_) | RecoveryError::BadEmail => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RecoveryError::EmailTaken => StatusCode::CONFLICT,
            RecoveryError::MailOff => StatusCode::NOT_FOUND,
            RecoveryError::Throttled { retry_after } => {
                return LoginError::Throttled {
                    retry_after: *retry_after,
                }
                .into_response()
            }
            RecoveryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        detail(status, &self.to_string())
    }
}

/// What a link's ticket holds.
#[derive(Serialize, Deserialize)]
struct LinkTicket {
    /// The user it is for.
    user: String,
    /// Fingerprint of the password hash it was issued under (reset links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pw: Option<String>,
    /// The address it confirms (verification links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

fn ticket_key(kind: &str, token: &str) -> String {
    format!("{kind}{}", hex::encode(Sha256::digest(token.as_bytes())))
}

fn fingerprint(password_hash: &str) -> String {
    hex::encode(&Sha256::digest(password_hash.as_bytes())[..16])
}

/// A token as a client sent it, if it could be one of ours (bounded
/// length, URL-safe characters): anything else is refused before any work.
fn plausible(token: &str) -> Option<&str> {
    let t = token.trim();
    (!t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(t)
}

/// `Some(address)` trimmed, when it looks like one: one `@` with text on
/// both sides, no spaces or control characters, at most 254 bytes.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && e.len() <= MAX_EMAIL
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| e.to_owned())
}

/// `base` (a public URL, with or without a trailing `/`) + `path?token=T`.
pub fn link(base: &str, path: &str, token: &SessionToken) -> String {
    format!(
        "{}{path}?token={}",
        base.trim_end_matches('/'),
        token.as_str()
    )
}

/// Issues a password-reset token for `user`, valid for `ttl`, and stores
/// its ticket in `store`. For admin paths (the CLI's `reset-link`); the
/// forgot-password flow is [`Latchkey::forgot_password`].
///
/// # Errors
/// [`StoreError`] when the store cannot be reached.
pub async fn issue_reset_token<S: TicketStore + ?Sized>(
    store: &S,
    user: &impl AuthUser,
    ttl: Duration,
) -> Result<SessionToken, StoreError> {
    reset_ticket(store, &user.id(), user.password_hash(), ttl).await
}

async fn reset_ticket<S: TicketStore + ?Sized>(
    store: &S,
    user_id: &str,
    password_hash: &str,
    ttl: Duration,
) -> Result<SessionToken, StoreError> {
    let token = SessionToken::generate();
    let ticket = LinkTicket {
        user: user_id.to_owned(),
        pw: Some(fingerprint(password_hash)),
        email: None,
    };
    let value = serde_json::to_string(&ticket).expect("a ticket serialises");
    store
        .put_ticket(&ticket_key(RESET, token.as_str()), &value, ttl)
        .await?;
    Ok(token)
}

/// Recovery settings, as the builder sets them.
#[derive(Clone, Debug)]
pub(crate) struct RecoveryConfig {
    pub(crate) public_url: Option<String>,
    pub(crate) link_ttl: Duration,
    pub(crate) reauth_window: Duration,
    pub(crate) reauth_path: String,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            link_ttl: Duration::from_secs(15 * 60),
            reauth_window: Duration::from_secs(10 * 60),
            reauth_path: "/reauth".into(),
        }
    }
}

impl Latchkey {
    fn users_for_recovery(&self) -> Result<&dyn Directory, Error> {
        self.directory()
            .ok_or_else(|| Error::Backend("account recovery needs Builder::users".into()))
    }

    fn mailer(&self) -> Result<&Arc<dyn Mailer>, RecoveryError> {
        self.0.mailer.as_ref().ok_or(RecoveryError::MailOff)
    }

    /// Whether mail-based flows are on (a [`Mailer`] was given).
    pub fn mail_enabled(&self) -> bool {
        self.0.mailer.is_some()
    }

    fn public_link(&self, path: &str, token: &SessionToken) -> String {
        let base = self.0.config.recovery.public_url.as_deref().unwrap_or("");
        link(base, path, token)
    }

    /// Sends `notice` to the account's address, if it has one; failures are
    /// logged (a notice is never worth failing the change it reports).
    pub(crate) async fn notify(&self, account: &Account, notice: Notice) {
        let (Some(mailer), Some(to)) = (&self.0.mailer, &account.email) else {
            return;
        };
        let mail = Mail {
            to: to.clone(),
            username: account.username.clone(),
            notice,
        };
        if let Err(e) = mailer.send(mail).await {
            tracing::error!(error = %e, username = clip(&account.username), "could not queue a notice mail");
        }
    }

    /// The signed-in user's address and whether it is verified, from the
    /// same short-lived per-user cache the session checks use (at most a
    /// millisecond old), so a profile page costs no extra backend read.
    ///
    /// # Errors
    /// [`Error`] when the user backend cannot be reached (or none was given).
    pub async fn email_of(&self, user_id: &str) -> Result<(Option<Arc<str>>, bool), Error> {
        let users = self
            .0
            .users
            .as_ref()
            .ok_or_else(|| Error::Backend("email addresses need Builder::users".into()))?;
        Ok(users
            .state(user_id)
            .await?
            .map_or((None, false), |s| (s.email, s.email_verified)))
    }

    /// "Forgot password": counts the request per client address and per
    /// target address (429 past either), then answers at once; the lookup
    /// and the mail happen in the background, so the answer and its time
    /// are the same whether or not the address has an account.
    ///
    /// # Errors
    /// [`RecoveryError::MailOff`] without a mailer, [`RecoveryError::BadEmail`],
    /// [`RecoveryError::Throttled`], [`RecoveryError::Unavailable`] when the
    /// counters cannot be reached.
    pub async fn forgot_password(
        &self,
        email: &str,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        let answer_at = tokio::time::Instant::now() + FORGOT_FLOOR;
        self.mailer()?;
        let email = normalize_email(email).ok_or(RecoveryError::BadEmail)?;
        let target = email.to_lowercase();
        if let Some(retry_after) = self.throttle().mail_request(&meta.ip, &target).await? {
            tracing::warn!(target: "latchkey::audit", event = "reset_throttled", ip = %meta.ip);
            return Err(RecoveryError::Throttled { retry_after });
        }
        let this = self.clone();
        let ip = meta.ip.clone();
        tokio::spawn(async move {
            if let Err(e) = this.send_reset(&email, &ip).await {
                tracing::error!(error = %e, "could not send a reset link");
            }
        });
        tokio::time::sleep_until(answer_at).await;
        Ok(())
    }

    async fn send_reset(&self, email: &str, ip: &str) -> Result<(), RecoveryError> {
        let users = self.users_for_recovery()?;
        let found = users.by_email(email).await.map_err(backend)?;
        let Some(account) = found else {
            tracing::info!(target: "latchkey::audit", event = "reset_requested_unknown", ip = %ip);
            return Ok(());
        };
        self.mail_reset_link(&account).await?;
        tracing::info!(target: "latchkey::audit", event = "reset_requested", username = clip(&account.username), ip = %ip);
        Ok(())
    }

    async fn mail_reset_link(&self, account: &Account) -> Result<(), RecoveryError> {
        let ttl = self.0.config.recovery.link_ttl;
        let token = reset_ticket(
            self.store().as_ref(),
            &account.id,
            &account.password_hash,
            ttl,
        )
        .await?;
        let Some(to) = account.email.clone() else {
            return Ok(());
        };
        let mail = Mail {
            to,
            username: account.username.clone(),
            notice: Notice::PasswordReset {
                link: self.public_link("/password/reset", &token),
                valid_for: ttl,
            },
        };
        self.mailer()?.send(mail).await.map_err(backend)?;
        Ok(())
    }

    /// Mails the user a reset link (an admin's "send reset link"); `false`
    /// when the user has no address.
    ///
    /// # Errors
    /// [`RecoveryError::MailOff`], or [`RecoveryError::Unavailable`].
    pub async fn send_reset_link(&self, user_id: &str) -> Result<bool, RecoveryError> {
        self.mailer()?;
        let account = self.account(user_id).await?;
        match account {
            Some(a) if a.email.is_some() => {
                self.mail_reset_link(&a).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn account(&self, user_id: &str) -> Result<Option<Account>, Error> {
        self.users_for_recovery()?
            .by_id(user_id)
            .await
            .map_err(backend)
    }

    /// The user a reset link is for, if it still works (without using it).
    async fn reset_target(&self, token: &str) -> Result<Option<(String, Account)>, Error> {
        let Some(token) = plausible(token) else {
            return Ok(None);
        };
        let key = ticket_key(RESET, token);
        let Some(value) = self.store().get_ticket(&key).await? else {
            return Ok(None);
        };
        let Ok(ticket) = serde_json::from_str::<LinkTicket>(&value) else {
            return Ok(None);
        };
        let account = self.account(&ticket.user).await?;
        Ok(account
            .filter(|a| ticket.pw.as_deref() == Some(&fingerprint(&a.password_hash)))
            .map(|a| (key, a)))
    }

    /// Whether a reset link works (for the page a `GET` shows); reading it
    /// does not use it up.
    ///
    /// # Errors
    /// [`Error`] when a store cannot be reached.
    pub async fn reset_link_valid(&self, token: &str) -> Result<bool, Error> {
        Ok(self.reset_target(token).await?.is_some())
    }

    /// Sets a new password through a reset link: the link dies, every
    /// session of the user ends, the address counts as verified, and a
    /// notice is mailed. Nobody is signed in. A password the policy refuses
    /// leaves the link working.
    ///
    /// # Errors
    /// [`RecoveryError::InvalidLink`], [`RecoveryError::Rejected`], or
    /// [`RecoveryError::Unavailable`].
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        let (key, account) = self
            .reset_target(token)
            .await?
            .ok_or(RecoveryError::InvalidLink)?;
        self.policy()
            .check(&account.username, new_password)
            .map_err(RecoveryError::Rejected)?;
        let hash = self.hasher().hash(new_password).await?;
        // Taken only now, after the checks, so a refused password keeps the
        // link; of two racing resets exactly one gets past this.
        let taken = self.store().take_ticket(&key).await?;
        let users = self.users_for_recovery()?;
        let current = self.account(&account.id).await?;
        let still = current
            .as_ref()
            .is_some_and(|a| a.password_hash == account.password_hash);
        if taken.is_none() || !still {
            return Err(RecoveryError::InvalidLink);
        }
        users
            .change_hash(&account.id, &hash)
            .await
            .map_err(backend)?;
        self.forget_user(&account.id);
        self.store().delete_user(&account.id, None).await?;
        if let Some(email) = account.email.as_deref().filter(|_| !account.email_verified) {
            users
                .set_email(&account.id, Some(email), true)
                .await
                .map_err(backend)?;
        }
        tracing::info!(target: "latchkey::audit", event = "password_reset", username = clip(&account.username), ip = %meta.ip);
        self.notify(&account, Notice::PasswordChanged).await;
        Ok(())
    }

    /// Mails the notice that `user_id`'s password changed (for changes made
    /// outside [`Latchkey::change_password`], such as an admin's reset).
    pub async fn password_changed_notice(&self, user_id: &str) {
        match self.account(user_id).await {
            Ok(Some(a)) => self.notify(&a, Notice::PasswordChanged).await,
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "could not look up a user for a notice"),
        }
    }

    /// Starts a change of the signed-in user's address: a link to the new
    /// address, a notice to the old one; nothing changes until the link is
    /// used. An address another account has gets no mail (and the same
    /// answer, so the route reveals nothing). Call it from a handler that
    /// takes [`Recent`](crate::Recent).
    ///
    /// # Errors
    /// [`RecoveryError::MailOff`], [`RecoveryError::BadEmail`], or
    /// [`RecoveryError::Unavailable`].
    pub async fn request_email_change(
        &self,
        session: &SessionRecord,
        email: &str,
    ) -> Result<(), RecoveryError> {
        let mailer = self.mailer()?.clone();
        let email = normalize_email(email).ok_or(RecoveryError::BadEmail)?;
        let users = self.users_for_recovery()?;
        let account = self
            .account(&session.user_id)
            .await?
            .ok_or(RecoveryError::InvalidLink)?;
        let holder = users.by_email(&email).await.map_err(backend)?;
        if holder.is_some_and(|h| h.id != account.id) {
            tracing::info!(target: "latchkey::audit", event = "email_change_taken", username = clip(&account.username));
            return Ok(());
        }
        let ttl = self.0.config.recovery.link_ttl;
        let token = SessionToken::generate();
        let ticket = LinkTicket {
            user: account.id.clone(),
            pw: None,
            email: Some(email.clone()),
        };
        let value = serde_json::to_string(&ticket).expect("a ticket serialises");
        self.store()
            .put_ticket(&ticket_key(VERIFY, token.as_str()), &value, ttl)
            .await?;
        let verify = Mail {
            to: email.clone(),
            username: account.username.clone(),
            notice: Notice::VerifyEmail {
                link: self.public_link("/email/verify", &token),
                valid_for: ttl,
            },
        };
        mailer.send(verify).await.map_err(backend)?;
        if account
            .email
            .as_deref()
            .is_some_and(|old| !old.eq_ignore_ascii_case(&email))
        {
            self.notify(&account, Notice::EmailChanging { new_address: email })
                .await;
        }
        tracing::info!(target: "latchkey::audit", event = "email_change_requested", username = clip(&account.username));
        Ok(())
    }

    /// Whether a verification link works (for the page a `GET` shows).
    ///
    /// # Errors
    /// [`Error`] when the store cannot be reached.
    pub async fn verify_link_valid(&self, token: &str) -> Result<bool, Error> {
        let Some(token) = plausible(token) else {
            return Ok(false);
        };
        Ok(self
            .store()
            .get_ticket(&ticket_key(VERIFY, token))
            .await?
            .is_some())
    }

    /// Uses a verification link: the address becomes the account's, verified.
    ///
    /// # Errors
    /// [`RecoveryError::InvalidLink`], [`RecoveryError::EmailTaken`] (another
    /// account took it meanwhile), or [`RecoveryError::Unavailable`].
    pub async fn verify_email(&self, token: &str) -> Result<(), RecoveryError> {
        let token = plausible(token).ok_or(RecoveryError::InvalidLink)?;
        let value = self
            .store()
            .take_ticket(&ticket_key(VERIFY, token))
            .await?
            .ok_or(RecoveryError::InvalidLink)?;
        let ticket: LinkTicket =
            serde_json::from_str(&value).map_err(|_| RecoveryError::InvalidLink)?;
        let email = ticket.email.ok_or(RecoveryError::InvalidLink)?;
        let users = self.users_for_recovery()?;
        let set = users
            .set_email(&ticket.user, Some(&email), true)
            .await
            .map_err(backend)?;
        self.forget_user(&ticket.user);
        if !set {
            return Err(RecoveryError::EmailTaken);
        }
        tracing::info!(target: "latchkey::audit", event = "email_verified", user = %ticket.user);
        Ok(())
    }

    /// Confirms the signed-in user's password again (`POST /reauth`):
    /// counted and throttled like a sign-in; on success the session counts
    /// as recently authenticated for the re-authentication window.
    ///
    /// # Errors
    /// [`PasswordChangeError::WrongPassword`] (403), [`PasswordChangeError::Throttled`],
    /// or [`PasswordChangeError::Unavailable`].
    pub async fn reauthenticate(
        &self,
        session: &SessionRecord,
        password: &str,
        meta: &RequestMeta,
    ) -> Result<(), PasswordChangeError> {
        let users = self.users_for_recovery()?;
        let who = Who::Id {
            id: &session.user_id,
            name: &session.username,
        };
        match self.authenticate(users, who, password, meta).await {
            Ok(_) => {}
            Err(Refusal::Throttled(retry_after)) => {
                return Err(PasswordChangeError::Throttled { retry_after })
            }
            Err(Refusal::Invalid) => {
                tracing::warn!(target: "latchkey::audit", event = "reauth_failed", username = clip(&session.username), ip = %meta.ip);
                return Err(PasswordChangeError::WrongPassword);
            }
            Err(Refusal::Unavailable(e)) => return Err(e.into()),
        }
        self.mark_recent(session).await?;
        tracing::info!(target: "latchkey::audit", event = "reauth", username = clip(&session.username), ip = %meta.ip, session = %session.id);
        Ok(())
    }

    /// Records that the session's user just proved who they are.
    pub(crate) async fn mark_recent(&self, session: &SessionRecord) -> Result<(), Error> {
        let window = self.0.config.recovery.reauth_window;
        let at = crate::session::now_ms().to_string();
        self.store()
            .put_ticket(&format!("{REAUTH}{}", session.id), &at, window)
            .await?;
        Ok(())
    }

    /// Whether the session's user proved who they are within the
    /// re-authentication window: signing in counts, and so does
    /// [`reauthenticate`](Self::reauthenticate).
    ///
    /// # Errors
    /// [`Error`] when the store cannot be reached.
    pub async fn is_recent(&self, session: &SessionRecord) -> Result<bool, Error> {
        let window = crate::session::ms(self.0.config.recovery.reauth_window);
        if crate::session::now_ms() - session.created_at < window {
            return Ok(true);
        }
        Ok(self
            .store()
            .get_ticket(&format!("{REAUTH}{}", session.id))
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_trimmed() {
        assert_eq!(
            normalize_email("  Alice@Example.com ").as_deref(),
            Some("Alice@Example.com")
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a@b",
            "a b@example.com",
            "a@@example.com",
            "a@exa\u{7}mple.com",
            "a@.example.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize_email(&format!("{}@example.com", "a".repeat(250))),
            None
        );
    }

    #[test]
    fn only_plausible_tokens_reach_the_store() {
        assert_eq!(plausible(" abc_DEF-123 "), Some("abc_DEF-123"));
        for bad in ["", "a/b", "a%20b", "ä", &"a".repeat(129)] {
            assert_eq!(plausible(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn links_join_the_public_url() {
        let t = SessionToken::generate();
        assert_eq!(
            link("https://x.example/", "/password/reset", &t),
            format!("https://x.example/password/reset?token={}", t.as_str())
        );
    }
}
