//! A per-process cache of session records, kept exact by evictions that a
//! feed of revocations drives (SQLite's revocation log; the broadcast
//! [`bus`](super::bus) of PostgreSQL and Redis). This piece holds the
//! entries and the rule that stops a read racing an eviction from caching
//! a revoked session again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::session::{SessionRecord, TokenHash};

/// Sessions cached per process (about 0.5 KiB each at most).
pub(super) const CACHE_CAPACITY: usize = 100_000;

/// See the module docs.
pub(super) struct SessionCache {
    entries: Cache<TokenHash, Arc<SessionRecord>>,
    /// Bumped by every eviction. A load or touch that ran while it moved
    /// may hold a record from before a revocation: it is not cached.
    generation: AtomicU64,
}

impl SessionCache {
    pub(super) fn new() -> Self {
        Self {
            entries: Cache::new(CACHE_CAPACITY),
            generation: AtomicU64::new(0),
        }
    }

    pub(super) fn get(&self, key: &TokenHash) -> Option<Arc<SessionRecord>> {
        self.entries.get(key)
    }

    /// Read before a store read whose answer may be cached.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a record this process has just written (nothing can have
    /// revoked it yet).
    pub(super) fn insert_new(&self, key: TokenHash, record: Arc<SessionRecord>) {
        self.entries.insert(key, record);
    }

    /// Caches `record` unless an eviction ran since `generation` was read.
    /// Checking again after the insert closes the gap between check and
    /// insert: an eviction in it bumps the generation before it removes,
    /// so either it removes this entry or the second check sees it.
    pub(super) fn insert_unless_evicted(
        &self,
        key: TokenHash,
        record: Arc<SessionRecord>,
        generation: u64,
    ) {
        if self.generation.load(Ordering::SeqCst) == generation {
            self.entries.insert(key, record);
            if self.generation.load(Ordering::SeqCst) == generation {
                return;
            }
        }
        self.entries.remove(&key);
    }

    /// A load through the cache: an entry that looks live when `serving`,
    /// else `read` from the store, cached (when `serving`) unless an
    /// eviction ran meanwhile. An entry that looks expired is read again:
    /// another instance may have kept the session alive.
    #[cfg(any(feature = "postgres", feature = "redis"))]
    pub(super) async fn load_through(
        &self,
        serving: impl Fn() -> bool,
        key: &TokenHash,
        read: impl std::future::Future<Output = Result<Option<Arc<SessionRecord>>, super::StoreError>>,
    ) -> Result<Option<Arc<SessionRecord>>, super::StoreError> {
        if serving() {
            if let Some(hit) = self.get(key) {
                if hit.expires_at > crate::session::now_ms() {
                    return Ok(Some(hit));
                }
            }
        }
        let generation = self.generation();
        let found = read.await?;
        if serving() {
            match &found {
                Some(r) => self.insert_unless_evicted(*key, r.clone(), generation),
                None => self.evict(key),
            }
        }
        Ok(found)
    }

    /// After a touch written with `generation` read before it: the cached
    /// entry, if any, gets the new times (unless an eviction ran).
    #[cfg(any(feature = "postgres", feature = "redis"))]
    pub(super) fn touched(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
        generation: u64,
    ) {
        if let Some(hit) = self.get(key) {
            let mut r = SessionRecord::clone(&hit);
            r.last_seen_at = last_seen_at;
            r.expires_at = expires_at;
            self.insert_unless_evicted(*key, Arc::new(r), generation);
        }
    }

    /// Runs `write` between two evictions of `key`: the first so nothing
    /// serves the old record while the write runs, the second so a read
    /// that raced the write cannot leave the old record cached.
    pub(super) async fn evicting<T>(
        &self,
        key: &TokenHash,
        write: impl std::future::Future<Output = T>,
    ) -> T {
        self.evict(key);
        let out = write.await;
        self.evict(key);
        out
    }

    /// Drops one session (and fails every read in flight's insert).
    pub(super) fn evict(&self, key: &TokenHash) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(key);
    }

    /// Drops every session of `user_id`.
    #[cfg(any(feature = "postgres", feature = "redis"))]
    pub(super) fn evict_user(&self, user_id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.retain(|_, r| &*r.user_id != user_id);
    }

    /// Drops everything.
    pub(super) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }
}
