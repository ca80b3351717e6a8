//! Where sessions and throttle counters live: one trait, one module per backend.
//!
//! | URL | backend | Cargo feature |
//! |---|---|---|
//! | `memory` | `MemoryStore`: one process, gone at exit | `memory` (default) |
//! | `sqlite://PATH` | `SqliteStore`: the default, survives restarts | `sqlite` (default) |
//! | `postgres://...` | `PostgresStore`: shared by several instances | `postgres` |
//! | `redis://...` | `RedisStore`: shared, expiry by key TTL | `redis` |
//!
//! Each backend, its driver and its branch in [`open`] are compiled only
//! with its feature; a URL for a backend left out is a [`StoreError::NotCompiled`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::session::{SessionRecord, TokenHash};

#[cfg(any(feature = "postgres", feature = "redis"))]
mod bus;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod cache;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

/// How long one store operation may take before the request fails closed
/// with 503 (the contract allows 2 s end to end).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_millis(1500);

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
    /// The store does not do what was asked (a third-party store that
    /// keeps the provided [`SessionStore::update`]).
    #[error("this session store does not keep {0}")]
    Unsupported(&'static str),
    /// A URL this crate cannot open.
    #[error(
        "unsupported store URL {0:?}: use memory, sqlite://PATH, postgres://... or redis://..."
    )]
    BadUrl(String),
    /// A URL for a backend this build of latchkey leaves out: enable the
    /// Cargo feature it names.
    #[error(
        "store URL {url:?} needs latchkey's `{feature}` Cargo feature, which this build leaves out"
    )]
    NotCompiled {
        /// The URL, as given.
        url: String,
        /// The feature that compiles the backend: `memory`, `sqlite`,
        /// `postgres` or `redis`.
        feature: &'static str,
    },
}

/// Server-side session storage. Every method is keyed by the token's hash or
/// the user id; none ever sees a raw token. Six methods are required (the
/// session itself, and a user's sessions for revocation); role, sweep and
/// readiness have defaults a simple store can keep.
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
    /// Stores the changeable part of an existing session (today its
    /// [`data`](SessionRecord::data)); `false` when the session is gone
    /// (it is never created again). Provided as a refusal, so a store that
    /// keeps no such data fails closed rather than dropping it.
    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        let _ = record;
        Err(StoreError::Unsupported("session data"))
    }
    /// Ends one session. Deleting a missing one is not an error.
    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError>;
    /// All sessions of one user (live or not yet swept).
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// Ends every session of `user_id` except `keep`; returns how many ended.
    async fn delete_user(&self, user_id: &str, keep: Option<&TokenHash>)
        -> Result<u64, StoreError>;
    /// Sets the role carried by every session of `user_id`. Provided as a
    /// no-op: with [`Builder::users`](crate::Builder::users) each request
    /// takes the role from the user anyway; a store that keeps the role
    /// current (all of latchkey's do) serves apps without a user backend.
    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        let _ = (user_id, role);
        Ok(())
    }
    /// Removes sessions whose `expires_at` is before `now`, in small batches.
    /// Provided for stores that expire entries by themselves (Redis TTLs):
    /// nothing to do. Expired sessions are refused at load either way.
    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        let _ = now;
        Ok(0)
    }
    /// Answers when the backend does (for `/readyz`). Provided: always ready.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
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

/// Short-lived, single-use records kept beside the sessions: reset and
/// verification links, re-authentication marks. Keys are hashes or public
/// handles, never a raw token, so a copy of the store opens nothing. Kept in
/// the session store so that every instance sees the same records.
///
/// The methods are provided as refusals ([`StoreError::Unsupported`]), so a
/// third-party store that keeps no tickets compiles with an empty
/// `impl TicketStore for MyStore {}` and the flows that need them fail closed.
#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Files `value` under `key` (replacing any), dying after `ttl`.
    async fn put_ticket(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let _ = (key, value, ttl);
        Err(StoreError::Unsupported("tickets"))
    }
    /// The live value under `key`, left in place (a link shown, not used).
    async fn get_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
        let _ = key;
        Err(StoreError::Unsupported("tickets"))
    }
    /// The live value under `key`, removed in the same step: of any number
    /// of racing takers exactly one gets it.
    async fn take_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
        let _ = key;
        Err(StoreError::Unsupported("tickets"))
    }
}

/// A backend that keeps sessions, counters and tickets.
pub trait Store: SessionStore + CounterStore + TicketStore {}
impl<T: SessionStore + CounterStore + TicketStore> Store for T {}

/// Opens the store a URL names (see the module table), creating its tables
/// or connecting lazily. An unreachable PostgreSQL or Redis does not fail
/// here: operations answer [`StoreError::Unavailable`] until it returns.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    #[cfg(not(all(
        feature = "memory",
        feature = "sqlite",
        feature = "postgres",
        feature = "redis"
    )))]
    let not_compiled = |feature| {
        Err(StoreError::NotCompiled {
            url: url.to_owned(),
            feature,
        })
    };
    if url == "memory" {
        #[cfg(feature = "memory")]
        return Ok(Arc::new(MemoryStore::new()));
        #[cfg(not(feature = "memory"))]
        return not_compiled("memory");
    }
    if url.starts_with("sqlite:") {
        #[cfg(feature = "sqlite")]
        return Ok(Arc::new(SqliteStore::open(url).await?));
        #[cfg(not(feature = "sqlite"))]
        return not_compiled("sqlite");
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PostgresStore::open(url)?));
        #[cfg(not(feature = "postgres"))]
        return not_compiled("postgres");
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        #[cfg(feature = "redis")]
        return Ok(Arc::new(RedisStore::open(url)?));
        #[cfg(not(feature = "redis"))]
        return not_compiled("redis");
    }
    Err(StoreError::BadUrl(url.to_owned()))
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
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
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

#[cfg(any(test, feature = "test-suite"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-suite")))]
pub mod suite;
