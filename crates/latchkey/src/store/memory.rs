//! In-process store: fastest, single process, forgotten at exit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::HashTable;

use super::{CounterStore, SessionStore, StoreError};
use crate::session::{ms, now_ms, SessionRecord, TokenHash};

/// Sessions and counters in a process-local map.
///
/// A session costs under 400 bytes here (`bench/scale.sh` measures it):
/// the record is compact (see [`SessionRecord`]), the table holds one
/// pointer per session, and the strings a user's sessions share (user id,
/// name) or that many sessions share (role, user agent) are kept once.
#[derive(Default)]
pub struct MemoryStore {
    sessions: RwLock<Sessions>,
    counters: RwLock<HashMap<String, (u64, i64)>>,
    /// Ticket key → (value, expires_at ms); expired ones go at the sweep.
    tickets: RwLock<HashMap<String, (String, i64)>>,
}

#[derive(Default)]
struct Sessions {
    /// The records, hashed by their key's first 8 bytes: a key is SHA-256
    /// of a token we generated, uniform already, so a keyed hasher would
    /// add work and no safety (a hostile cookie can only miss).
    by_key: HashTable<Arc<SessionRecord>>,
    /// Each user's sessions; the key is the one copy of the user id that
    /// the user's records share.
    by_user: hashbrown::HashMap<Arc<str>, UserSessions, std::hash::RandomState>,
    /// Roles and user agents, one copy each; unused ones go at the sweep.
    strings: HashSet<Arc<str>>,
}

struct UserSessions {
    /// The name the user's sessions share (a rename mid-way gives the
    /// newer sessions their own copy).
    username: Arc<str>,
    /// The [`slot`]s of the user's keys (8 bytes each, not 32: the
    /// records found there hold the rest), exactly sized: most users have
    /// one or two sessions.
    slots: Box<[u64]>,
}

/// Where a key's record sits in `by_key` (see there).
fn slot(key: &TokenHash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.0[..8]);
    u64::from_le_bytes(first)
}

fn slot_of(record: &Arc<SessionRecord>) -> u64 {
    slot(&record.key())
}

impl Sessions {
    fn get(&self, key: &TokenHash) -> Option<&Arc<SessionRecord>> {
        self.by_key.find(slot(key), |r| r.token_hash == Some(*key))
    }

    fn get_mut(&mut self, key: &TokenHash) -> Option<&mut Arc<SessionRecord>> {
        self.by_key
            .find_mut(slot(key), |r| r.token_hash == Some(*key))
    }

    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.strings.get(&**s) {
            Some(shared) => shared.clone(),
            None => {
                self.strings.insert(s.clone());
                s.clone()
            }
        }
    }

    fn insert(&mut self, record: &SessionRecord) {
        let key = record.key();
        self.remove(&key);
        let mut rec = record.clone();
        rec.role = self.intern(&record.role);
        rec.user_agent = self.intern(&record.user_agent);
        match self.by_user.get_key_value_mut(&*record.user_id) {
            Some((user_id, user)) => {
                rec.user_id = user_id.clone();
                if user.username == record.username {
                    rec.username = user.username.clone();
                }
                let mut slots = std::mem::take(&mut user.slots).into_vec();
                slots.push(slot(&key));
                user.slots = slots.into_boxed_slice();
            }
            None => {
                let user = UserSessions {
                    username: record.username.clone(),
                    slots: Box::new([slot(&key)]),
                };
                self.by_user.insert(record.user_id.clone(), user);
            }
        }
        self.by_key
            .insert_unique(slot(&key), Arc::new(rec), slot_of);
    }

    fn remove(&mut self, key: &TokenHash) {
        let Ok(entry) = self
            .by_key
            .find_entry(slot(key), |r| r.token_hash == Some(*key))
        else {
            return;
        };
        let (rec, _) = entry.remove();
        if let Some(user) = self.by_user.get_mut(&*rec.user_id) {
            if user.slots.len() <= 1 {
                self.by_user.remove(&*rec.user_id);
            } else {
                // One occurrence: two keys of one user may share a slot.
                let mut slots = std::mem::take(&mut user.slots).into_vec();
                if let Some(i) = slots.iter().position(|s| *s == slot(key)) {
                    slots.swap_remove(i);
                }
                user.slots = slots.into_boxed_slice();
            }
        }
    }

    fn user_keys(&self, user_id: &str) -> Vec<TokenHash> {
        let Some(user) = self.by_user.get(user_id) else {
            return Vec::new();
        };
        let mut slots = user.slots.to_vec();
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .flat_map(|s| {
                self.by_key
                    .iter_hash(s)
                    .filter(move |r| slot_of(r) == s && &*r.user_id == user_id)
                    .map(|r| r.key())
            })
            .collect()
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
        write!(self.sessions).insert(record);
        Ok(())
    }

    async fn load(&self, key: &TokenHash) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(read!(self.sessions).get(key).cloned())
    }

    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        if let Some(r) = write!(self.sessions).get_mut(key) {
            let r = Arc::make_mut(r);
            r.last_seen_at = last_seen_at;
            r.expires_at = expires_at;
        }
        Ok(())
    }

    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        Ok(match write!(self.sessions).get_mut(&record.key()) {
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
            .filter_map(|k| s.get(k).map(|r| SessionRecord::clone(r)))
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
        let role = s.intern(&Arc::from(role));
        for key in s.user_keys(user_id) {
            if let Some(r) = s.get_mut(&key) {
                Arc::make_mut(r).role = role.clone();
            }
        }
        Ok(())
    }

    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        let expired: Vec<TokenHash> = read!(self.sessions)
            .by_key
            .iter()
            .filter(|r| r.expires_at < now)
            .map(|r| r.key())
            .collect();
        // Small write-lock slices so a big sweep never stalls requests.
        for chunk in expired.chunks(1000) {
            let mut s = write!(self.sessions);
            for k in chunk {
                s.remove(k);
            }
        }
        // Roles and user agents no session holds any more.
        write!(self.sessions)
            .strings
            .retain(|s| Arc::strong_count(s) > 1);
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
    use super::*;
    use crate::store::suite::now;

    crate::store::suite::store_suite!(async { Some(super::MemoryStore::new()) });

    /// A record of `user` whose key starts with `first` (the slot) and
    /// ends with `last`.
    fn keyed(user: &str, first: u8, last: u8) -> SessionRecord {
        let mut key = [first; 32];
        key[31] = last;
        let (_, mut rec) = record(user);
        rec.token_hash = Some(TokenHash(key));
        rec
    }

    #[tokio::test]
    async fn keys_sharing_a_slot_stay_apart() {
        let s = MemoryStore::new();
        let (a1, a2, b1) = (keyed("ann", 7, 1), keyed("ann", 7, 2), keyed("bob", 7, 3));
        for r in [&a1, &a2, &b1] {
            s.create(r).await.unwrap();
        }
        let ids = |v: Vec<SessionRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let mut ann = ids(s.list_user("ann").await.unwrap());
        ann.sort_by_key(|id| id.0);
        let mut want = vec![a1.id, a2.id];
        want.sort_by_key(|id| id.0);
        assert_eq!(ann, want);
        assert_eq!(ids(s.list_user("bob").await.unwrap()), vec![b1.id]);

        s.delete(&a1.key()).await.unwrap();
        assert_eq!(ids(s.list_user("ann").await.unwrap()), vec![a2.id]);
        assert!(s.load(&a2.key()).await.unwrap().is_some());
        assert_eq!(s.delete_user("ann", None).await.unwrap(), 1);
        assert!(s.load(&a2.key()).await.unwrap().is_none());
        assert!(
            s.load(&b1.key()).await.unwrap().is_some(),
            "bob's session kept"
        );
    }

    #[tokio::test]
    async fn shared_strings_are_kept_once_and_dropped_when_unused() {
        let s = MemoryStore::new();
        let (_, r1) = record("ann");
        let (_, r2) = record("ann");
        s.create(&r1).await.unwrap();
        s.create(&r2).await.unwrap();
        let (l1, l2) = (
            s.load(&r1.key()).await.unwrap().unwrap(),
            s.load(&r2.key()).await.unwrap().unwrap(),
        );
        // Each record arrived with its own copies; the store keeps one.
        assert!(!Arc::ptr_eq(&r1.user_agent, &r2.user_agent));
        for (a, b) in [
            (&l1.user_id, &l2.user_id),
            (&l1.username, &l2.username),
            (&l1.role, &l2.role),
            (&l1.user_agent, &l2.user_agent),
        ] {
            assert!(Arc::ptr_eq(a, b), "{a} is kept twice");
        }
        s.delete_user("ann", None).await.unwrap();
        drop((l1, l2, r1, r2));
        s.sweep(now()).await.unwrap();
        assert!(read!(s.sessions).strings.is_empty());
        assert!(read!(s.sessions).by_user.is_empty());
    }
}
