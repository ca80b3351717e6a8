//! In-process store: fastest, single process, forgotten at exit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{CounterStore, SessionStore, StoreError};
use crate::session::{ms, now_ms, SessionRecord, TokenHash};

/// Sessions and counters in a process-local map.
#[derive(Default)]
pub struct MemoryStore {
    sessions: RwLock<Sessions>,
    counters: RwLock<HashMap<String, (u64, i64)>>,
    /// Ticket key → (value, expires_at ms); expired ones go at the sweep.
    tickets: RwLock<HashMap<String, (String, i64)>>,
}

#[derive(Default)]
struct Sessions {
    by_key: HashMap<TokenHash, Arc<SessionRecord>>,
    by_user: HashMap<String, HashSet<TokenHash>>,
}

impl Sessions {
    fn remove(&mut self, key: &TokenHash) {
        if let Some(rec) = self.by_key.remove(key) {
            if let Some(keys) = self.by_user.get_mut(&rec.user_id) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_user.remove(&rec.user_id);
                }
            }
        }
    }

    fn user_keys(&self, user_id: &str) -> Vec<TokenHash> {
        self.by_user
            .get(user_id)
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

// A poisoned lock only means another request panicked mid-update; the maps
// stay structurally valid, so keep serving rather than failing every request.
macro_rules! write {
    ($lock:expr) => {
        $lock.write().unwrap_or_else(|e| e.into_inner())
    };
}
macro_rules! read {
    ($lock:expr) => {
        $lock.read().unwrap_or_else(|e| e.into_inner())
    };
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let mut s = write!(self.sessions);
        let key = record.key();
        s.by_user
            .entry(record.user_id.clone())
            .or_default()
            .insert(key);
        s.by_key.insert(key, Arc::new(record.clone()));
        Ok(())
    }

    async fn load(&self, key: &TokenHash) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(read!(self.sessions).by_key.get(key).cloned())
    }

    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        if let Some(r) = write!(self.sessions).by_key.get_mut(key) {
            let r = Arc::make_mut(r);
            r.last_seen_at = last_seen_at;
            r.expires_at = expires_at;
        }
        Ok(())
    }

    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        Ok(match write!(self.sessions).by_key.get_mut(&record.key()) {
            Some(r) => {
                Arc::make_mut(r).data.clone_from(&record.data);
                true
            }
            None => false,
        })
    }

    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        write!(self.sessions).remove(key);
        Ok(())
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let s = read!(self.sessions);
        let mut out: Vec<SessionRecord> = s
            .user_keys(user_id)
            .iter()
            .filter_map(|k| s.by_key.get(k).map(|r| SessionRecord::clone(r)))
            .collect();
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    async fn delete_user(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, StoreError> {
        let mut s = write!(self.sessions);
        let mut n = 0;
        for key in s.user_keys(user_id) {
            if Some(&key) != keep {
                s.remove(&key);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        let mut s = write!(self.sessions);
        for key in s.user_keys(user_id) {
            if let Some(r) = s.by_key.get_mut(&key) {
                Arc::make_mut(r).role = role.to_owned();
            }
        }
        Ok(())
    }

    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        let expired: Vec<TokenHash> = read!(self.sessions)
            .by_key
            .iter()
            .filter(|(_, r)| r.expires_at < now)
            .map(|(k, _)| *k)
            .collect();
        // Small write-lock slices so a big sweep never stalls requests.
        for chunk in expired.chunks(1000) {
            let mut s = write!(self.sessions);
            for k in chunk {
                s.remove(k);
            }
        }
        write!(self.counters).retain(|_, (_, exp)| *exp > now);
        write!(self.tickets).retain(|_, (_, exp)| *exp > now);
        Ok(expired.len() as u64)
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        slide: bool,
    ) -> Result<(u64, i64), StoreError> {
        let now = now_ms();
        let mut c = write!(self.counters);
        let entry = c.entry(key.to_owned()).or_insert((0, 0));
        if entry.1 <= now {
            *entry = (0, now + ms(window));
        }
        entry.0 += 1;
        if slide {
            entry.1 = now + ms(window);
        }
        Ok((entry.0, entry.1 - now))
    }

    async fn peek(&self, key: &str) -> Result<Option<(u64, i64)>, StoreError> {
        let now = now_ms();
        Ok(read!(self.counters)
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(n, exp)| (*n, exp - now)))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        write!(self.counters).remove(key);
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let now = now_ms();
        if let Some(entry) = write!(self.counters).get_mut(key) {
            if entry.1 > now {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl super::TicketStore for MemoryStore {
    async fn put_ticket(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let expires_at = now_ms() + ms(ttl);
        write!(self.tickets).insert(key.to_owned(), (value.to_owned(), expires_at));
        Ok(())
    }

    async fn get_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        Ok(read!(self.tickets)
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone()))
    }

    async fn take_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        Ok(write!(self.tickets)
            .remove(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v))
    }
}

#[cfg(test)]
mod tests {
    crate::store::suite::store_suite!(async { Some(super::MemoryStore::new()) });
}
