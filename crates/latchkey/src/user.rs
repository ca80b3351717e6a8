//! Bring your own users: implement [`UserBackend`] for your storage and
//! [`AuthUser`] for your user type.

use async_trait::async_trait;

/// What latchkey needs to know about a user.
pub trait AuthUser: Send + Sync {
    /// Stable id; sessions are filed under it.
    fn id(&self) -> String;
    /// The name the user signs in with.
    fn username(&self) -> &str;
    /// The role guards check (`"admin"`, `"user"`, ...).
    fn role(&self) -> &str;
    /// PHC-format Argon2id hash, as [`PasswordHasher::hash`](crate::password::PasswordHasher::hash) makes.
    fn password_hash(&self) -> &str;
    /// A counter the backend raises whenever every session of the user must
    /// end (password change, "sign out everywhere", an admin's reset). Each
    /// session carries the value it was issued under and is refused once
    /// they differ, so a sign-in that was in flight during the change cannot
    /// outlive it. The default (always 0) relies on store deletes alone.
    fn session_version(&self) -> u64 {
        0
    }
    /// The account's email address, if it has one (for recovery mail).
    fn email(&self) -> Option<&str> {
        None
    }
    /// Whether [`email`](Self::email) was confirmed by a link (or set by an admin).
    fn email_verified(&self) -> bool {
        false
    }
}

/// Any error a backend reports; latchkey treats it as "unavailable" (503).
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Where users live. latchkey's own users table is one implementation; an
/// app plugs in its own with a few lines (see `examples/todo-app`).
///
/// The trait is object-safe through [`async_trait`](crate::async_trait):
/// put `#[latchkey::async_trait]` on the `impl` block (without it the
/// compiler reports E0195 with signatures that look identical).
#[async_trait]
pub trait UserBackend: Send + Sync {
    /// The app's user type (handlers get it with [`User`](crate::User)).
    type User: AuthUser + 'static;

    /// The user who signs in as `username`, if any.
    async fn find_by_username(&self, username: &str) -> Result<Option<Self::User>, BackendError>;

    /// The user with id `user_id`, if any. latchkey asks it to re-check a
    /// sign-in after hashing and, with [`Builder::users`](crate::Builder::users),
    /// to check that a session's user still exists (at most once a
    /// millisecond per user).
    async fn find_by_id(&self, user_id: &str) -> Result<Option<Self::User>, BackendError>;

    /// Stores a new hash: after a password change, or when a login upgrades
    /// a hash made with weaker parameters (which must not end sessions).
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError>;

    /// Raises the user's [`AuthUser::session_version`], ending every session
    /// issued before. Backends without versions keep the default (no-op).
    async fn bump_session_version(&self, user_id: &str) -> Result<(), BackendError> {
        let _ = user_id;
        Ok(())
    }

    /// A password change: the new hash and a raised session version, ideally
    /// in one write, so that a request cancelled half-way cannot store the
    /// new password yet leave the old sessions (a thief's among them) valid.
    /// The default does the two writes one after the other; override it
    /// with a single statement where the storage allows.
    async fn change_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        self.set_password_hash(user_id, hash).await?;
        self.bump_session_version(user_id).await
    }

    /// The user whose address is `email` (compared case-insensitively), if
    /// any: "forgot password" starts here. The default finds no one, so an
    /// app without addresses answers every request the same and sends nothing.
    async fn find_by_email(&self, email: &str) -> Result<Option<Self::User>, BackendError> {
        let _ = email;
        Ok(None)
    }

    /// Sets the user's address (`None` removes it) and whether it is
    /// verified; `Ok(false)` when another user already has it. The default
    /// refuses, so address changes fail closed on a backend without them.
    async fn set_email(
        &self,
        user_id: &str,
        email: Option<&str>,
        verified: bool,
    ) -> Result<bool, BackendError> {
        let _ = (user_id, email, verified);
        Err("this user backend keeps no email addresses".into())
    }

    /// Replaces the hash only if it is still `old` (an upgrade at sign-in
    /// must never overwrite a password changed meanwhile); `false` when it
    /// was not. The default reads, compares and writes, which leaves a small
    /// window; override it with a conditional update where the storage allows.
    async fn replace_password_hash(
        &self,
        user_id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, BackendError> {
        match self.find_by_id(user_id).await? {
            Some(u) if u.password_hash() == old => {
                self.set_password_hash(user_id, new).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
