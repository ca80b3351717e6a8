//! Where sessions and throttle counters live: one trait, one module per backend.
//!
//! | URL | backend |
//! |---|---|
//! | `memory` | [`MemoryStore`]: one process, gone at exit |
//! | `sqlite://PATH` | [`SqliteStore`]: the default, survives restarts |
//! | `postgres://...` | [`PostgresStore`]: shared by several instances |
//! | `redis://...` | [`RedisStore`]: shared, expiry by key TTL |

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::session::{SessionRecord, TokenHash};

mod memory;
mod postgres;
mod redis;
mod sql;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use redis::RedisStore;
pub use sqlite::SqliteStore;

/// How long one store operation may take before the request fails closed
/// with 503 (the contract allows 2 s end to end).
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(1500);

/// A store failure. Every variant means "cannot say": callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer (down, unreachable, timed out).
    #[error("{store} unavailable: {reason}")]
    Unavailable {
        /// Which store, with its address, e.g. `redis 127.0.0.1:6379`.
        store: String,
        /// Why, in the driver's words.
        reason: String,
    },
    /// A URL this crate cannot open.
    #[error(
        "unsupported store URL {0:?}: use memory, sqlite://PATH, postgres://... or redis://..."
    )]
    BadUrl(String),
}

/// Server-side session storage. Every method is keyed by the token's hash or
/// the user id; none ever sees a raw token.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Files a new session under `record.token_hash`.
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError>;
    /// The session filed under `key`, if any (expired or not: the caller checks).
    async fn load(&self, key: &TokenHash) -> Result<Option<Arc<SessionRecord>>, StoreError>;
    /// Records activity: new `last_seen_at` and `expires_at`.
    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// Ends one session. Deleting a missing one is not an error.
    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError>;
    /// All sessions of one user (live or not yet swept).
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// Ends every session of `user_id` except `keep`; returns how many ended.
    async fn delete_user(&self, user_id: &str, keep: Option<&TokenHash>)
        -> Result<u64, StoreError>;
    /// Sets the role carried by every session of `user_id` (a role change
    /// takes effect on the next request without a user lookup per request).
    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError>;
    /// Removes sessions whose `expires_at` is before `now`, in small batches.
    async fn sweep(&self, now: i64) -> Result<u64, StoreError>;
    /// Answers when the backend does (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Expiring counters for login throttling, kept in the same backend as the
/// sessions so that several instances share them.
#[async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// Adds one to `key` and returns the new count and ms until it resets.
    /// A fresh or expired counter starts at 1 with `window` to live; with
    /// `slide`, every hit restarts the window.
    async fn hit(&self, key: &str, window: Duration, slide: bool)
        -> Result<(u64, i64), StoreError>;
    /// The count and ms until reset, if the counter is live.
    async fn peek(&self, key: &str) -> Result<Option<(u64, i64)>, StoreError>;
    /// Forgets `key`.
    async fn reset(&self, key: &str) -> Result<(), StoreError>;
    /// Takes back one hit on a live `key` (never below zero, window kept):
    /// for an attempt that was counted in advance but must not count.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
}

/// A backend that keeps both sessions and counters.
pub trait Store: SessionStore + CounterStore {}
impl<T: SessionStore + CounterStore> Store for T {}

/// Opens the store a URL names (see the module table), creating its tables
/// or connecting lazily. An unreachable PostgreSQL or Redis does not fail
/// here: operations answer [`StoreError::Unavailable`] until it returns.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url == "memory" {
        Ok(Arc::new(MemoryStore::new()))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url)?))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Arc::new(RedisStore::open(url)?))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}

/// A store URL for logs: the kind and address, never credentials.
pub fn describe(url: &str) -> String {
    match url.split_once("://") {
        Some((kind, _)) if kind.starts_with("sqlite") => {
            format!("sqlite {}", url.trim_start_matches("sqlite://"))
        }
        Some((kind, _)) => format!("{kind} {}", redact_url(url)),
        None => url.to_owned(),
    }
}

/// Runs a store future under [`OPERATION_TIMEOUT`].
pub(crate) async fn bounded<T>(
    store: &str,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable {
            store: store.to_owned(),
            reason: "timed out".into(),
        }),
    }
}

/// The address part of a URL, without credentials, for error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
pub(crate) mod suite;
