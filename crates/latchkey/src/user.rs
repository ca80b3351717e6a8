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
}

/// Any error a backend reports; latchkey treats it as "unavailable" (503).
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Where users live. latchkey's own users table is one implementation; an
/// app plugs in its own with a few lines (see `examples/todo-app`).
#[async_trait]
pub trait UserBackend: Send + Sync {
    /// The app's user type.
    type User: AuthUser;

    /// The user who signs in as `username`, if any.
    async fn find_by_username(&self, username: &str) -> Result<Option<Self::User>, BackendError>;

    /// Stores a new hash: after a password change, or when a login upgrades
    /// a hash made with weaker parameters.
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError>;
}
