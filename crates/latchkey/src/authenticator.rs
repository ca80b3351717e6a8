//! Checking a password, the one way every credential check goes: take a
//! place in the hashing queue, find the user, count the attempt, verify,
//! make sure the user did not change meanwhile, count the outcome, and
//! upgrade a weak hash. Sign-in and password change both use it, so their
//! throttling and timing cannot drift apart.

use std::time::Duration;

use crate::auth::{clip, throttle_name};
use crate::client::RequestMeta;
use crate::error::backend;
use crate::error::Error;
use crate::user_check::{Account, Directory};
use crate::Latchkey;

/// Whose password is being checked.
#[derive(Clone, Copy)]
pub(crate) enum Who<'a> {
    /// A sign-in: the name the client typed.
    Name(&'a str),
    /// A signed-in user (password change, re-authentication).
    Id { id: &'a str, name: &'a str },
}

impl Who<'_> {
    fn name(&self) -> &str {
        match self {
            Who::Name(name) | Who::Id { name, .. } => name,
        }
    }
}

/// Why a password check did not pass.
pub(crate) enum Refusal {
    /// Past a throttle limit: try again after this long.
    Throttled(Duration),
    /// Unknown user or wrong password (the same answer for both).
    Invalid,
    /// A store, the user backend or the hasher failed (or is full).
    Unavailable(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Unavailable(e)
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Unavailable(e.into())
    }
}

/// A right password at sign-in.
pub(crate) enum Verified {
    /// Signed in.
    Done(Account),
    /// The user has second factors (these methods): a pending sign-in. The
    /// attempt was taken back, nothing was reset: only a completed sign-in
    /// clears the counts.
    NeedsFactor(Account, Vec<&'static str>),
}

impl Latchkey {
    /// The user `who` names, if `password` is theirs; see the module docs.
    pub(crate) async fn authenticate(
        &self,
        users: &dyn Directory,
        who: Who<'_>,
        password: &str,
        meta: &RequestMeta,
    ) -> Result<Account, Refusal> {
        match self
            .verify_password(users, who, password, meta, false)
            .await?
        {
            Verified::Done(a) | Verified::NeedsFactor(a, _) => Ok(a),
        }
    }

    /// [`authenticate`](Self::authenticate) for a sign-in: a user with a
    /// second factor is not signed in yet.
    pub(crate) async fn authenticate_sign_in(
        &self,
        users: &dyn Directory,
        name: &str,
        password: &str,
        meta: &RequestMeta,
    ) -> Result<Verified, Refusal> {
        self.verify_password(users, Who::Name(name), password, meta, true)
            .await
    }

    async fn verify_password(
        &self,
        users: &dyn Directory,
        who: Who<'_>,
        password: &str,
        meta: &RequestMeta,
        factors: bool,
    ) -> Result<Verified, Refusal> {
        let name = clip(who.name());
        // A place in the queue first: a full queue answers at once and counts nothing.
        let slot = self.hasher().slot()?;
        // The user as they are when the request arrives, before anything
        // that may queue: a revocation after this point, however soon,
        // fails the re-check below (the version or hash moved on).
        let found = match who {
            Who::Name(n) => users.by_name(n).await,
            Who::Id { id, .. } => users.by_id(id).await,
        };
        // An outage fails before anything is counted: it must not lock anyone out.
        let user = found.map_err(backend)?;
        let throttle = self.throttle();
        let attempt = match throttle
            .reserve(&throttle_name(who.name()), &meta.ip)
            .await?
        {
            Ok(attempt) => attempt,
            Err(retry_after) => {
                tracing::warn!(target: "latchkey::audit", event = "login_throttled", username = name, ip = %meta.ip, retry_after = retry_after.as_secs());
                return Err(Refusal::Throttled(retry_after));
            }
        };
        let ok = self
            .hasher()
            .verify_in(
                slot,
                password,
                user.as_ref().map(|u| u.password_hash.as_str()),
            )
            .await?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::warn!(target: "latchkey::audit", event = "login_failed", username = name, ip = %meta.ip);
            return Err(Refusal::Invalid);
        };
        // Removed, given a new password or signed out everywhere while the
        // hash ran: this check must not outlive that.
        let now = match users.by_id(&user.id).await {
            Ok(now) => {
                now.filter(|u| u.version == user.version && u.password_hash == user.password_hash)
            }
            Err(e) => {
                throttle.abandon(attempt).await?;
                return Err(backend(e).into());
            }
        };
        let Some(now) = now else {
            throttle.abandon(attempt).await?;
            tracing::warn!(target: "latchkey::audit", event = "login_superseded", username = name, ip = %meta.ip);
            return Err(Refusal::Invalid);
        };
        let methods = if factors {
            match self.second_factor_methods(&now.id).await {
                Ok(m) => m,
                Err(e) => {
                    throttle.abandon(attempt).await?;
                    return Err(e.into());
                }
            }
        } else {
            Vec::new()
        };
        if methods.is_empty() {
            throttle.succeeded(attempt).await?;
        } else {
            throttle.abandon(attempt).await?;
        }
        if self.hasher().needs_rehash(&now.password_hash) {
            self.rehash(users, &now, password).await;
        }
        Ok(if methods.is_empty() {
            Verified::Done(now)
        } else {
            Verified::NeedsFactor(now, methods)
        })
    }

    /// Upgrades a hash made with weaker parameters, only over the hash this
    /// check verified: a password changed while the upgrade hashed is never
    /// undone. A failure is logged; the check still passes.
    async fn rehash(&self, users: &dyn Directory, user: &Account, password: &str) {
        let result = match self.hasher().hash(password).await {
            Ok(hash) => users
                .replace_hash(&user.id, &user.password_hash, &hash)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(target: "latchkey::audit", event = "password_rehashed", username = clip(&user.username))
            }
            Err(e) => {
                tracing::warn!(username = clip(&user.username), error = %e, "password hash upgrade failed; retried at the next sign-in")
            }
        }
    }
}
