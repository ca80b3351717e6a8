//! Redis store: sessions as hashes that expire by key TTL, a per-user set
//! index for "end all sessions of this user", and counters with TTLs.
//!
//! Each instance caches the sessions it reads; revocations are announced
//! with `PUBLISH` in the revoking `MULTI` or script, and the
//! [`bus`](super::bus) keeps every instance's cache exact. Pub/sub rather
//! than RESP3 client-side caching: it works on Redis 6 with RESP2 and on
//! every redis-rs connection type, and the same bus serves PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, OnceCell};

use super::bus::{Bus, Revoked, Transport};
use super::cache::SessionCache;
use super::{CounterStore, SessionStore, StoreError};
use crate::session::{ms, CsrfSecret, SessionId, SessionRecord, TokenHash};

/// Sessions and counters in Redis.
///
/// The URL may carry `?prefix=NAME` (stripped before connecting) so that
/// several deployments or test runs share one Redis; the default is `latchkey:`.
#[derive(Clone)]
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    cache: Arc<SessionCache>,
    /// Started at the first operation (inside the runtime).
    bus: Arc<OnceLock<Bus>>,
}

/// The connection, shared by the store and its bus.
struct Link {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    label: String,
    /// The bus's channel: `PREFIXbus`.
    channel: String,
}

impl Link {
    fn fail(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            store: self.label.clone(),
            reason: e.to_string(),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = self
            .conn
            .get_or_try_init(|| async {
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .map_err(|e| self.fail(e))?;
        Ok(manager.clone())
    }

    async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        super::bounded(&self.label, async { fut.await.map_err(|e| self.fail(e)) }).await
    }
}

#[async_trait]
impl Transport for Link {
    async fn publish(&self, message: String) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.run(c.publish::<_, _, ()>(&self.channel, message))
            .await
    }

    async fn listen(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        let pubsub = self
            .run(async {
                let mut p = self.client.get_async_pubsub().await?;
                p.subscribe(&self.channel).await?;
                Ok(p)
            })
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            // Ends when the connection drops (the stream ends) or the bus
            // stops listening.
            let mut messages = pubsub.into_on_message();
            while let Some(m) = messages.next().await {
                let Ok(payload) = m.get_payload::<String>() else {
                    continue;
                };
                if tx.send(payload).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

// Touch only a session that still exists, so a request racing a logout
// cannot bring it back; keep the user index alive as long as its sessions.
const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1], 'expires_at', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
local uid = redis.call('HGET', KEYS[1], 'user_id')
if uid then redis.call('PEXPIREAT', ARGV[3] .. uid, ARGV[2], 'GT') end
return 1";

const SET_ROLE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'role', ARGV[1]) end
return 1";

// Data only for a session that still exists (never recreate a deleted one).
// ... and announced to every instance's cache in the same step.
const SET_DATA: &str = r"
redis.call('PUBLISH', ARGV[3], ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'data', ARGV[2])
else redis.call('HDEL', KEYS[1], 'data') end
return 1";

const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ARGV[2] == '1' or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}";

/// DECR keeps the key's TTL; a missing or zero counter is left alone.
const RELEASE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return n";

impl RedisStore {
    /// A store for `redis://HOST[:PORT][/DB][?prefix=NAME]`. Connects lazily
    /// and reconnects by itself after an outage.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the URL does not parse. Nothing
    /// connects here: an unreachable server fails the first operation.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let (base, prefix) = split_prefix(url);
        let label = format!("redis {}", super::redact_url(&base));
        let client = redis::Client::open(base.as_str()).map_err(|e| StoreError::Unavailable {
            store: label.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self::assemble(client, prefix, label))
    }

    fn assemble(client: redis::Client, prefix: String, label: String) -> Self {
        Self {
            link: Arc::new(Link {
                client,
                conn: OnceCell::new(),
                label,
                channel: format!("{prefix}bus"),
            }),
            prefix,
            cache: Arc::new(SessionCache::new()),
            bus: Default::default(),
        }
    }

    fn bus(&self) -> &Bus {
        self.bus
            .get_or_init(|| Bus::start(self.link.clone(), self.cache.clone()))
    }

    /// A store on the app's own client, its keys under `prefix` (`open`'s
    /// default is `latchkey:`), so that it can share a Redis database with
    /// the app's keys or with other deployments. Connects lazily, through a
    /// connection manager of its own with short timeouts, and reconnects by
    /// itself after an outage.
    ///
    /// ```
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let store = latchkey::store::RedisStore::from_client(client, "myapp:sessions:");
    /// # let _ = store;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn from_client(client: redis::Client, prefix: impl Into<String>) -> Self {
        let label = format!("redis {}", client.get_connection_info().addr());
        Self::assemble(client, prefix.into(), label)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.link.conn().await
    }

    fn session_key(&self, key: &TokenHash) -> String {
        format!("{}s:{}", self.prefix, key.to_hex())
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}u:{}", self.prefix, user_id)
    }

    async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.link.run(fut).await
    }

    /// Loads the sessions behind the hex keys of one user's index, pruning
    /// index entries whose session has expired.
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut c = self.conn().await?;
        let ukey = self.user_key(user_id);
        let members: Vec<String> = self.run(c.smembers(&ukey)).await?;
        let mut out = Vec::new();
        for hex in members {
            let Some(hash) = TokenHash::from_hex(&hex) else {
                continue;
            };
            match self.load(&hash).await? {
                Some(r) => out.push(SessionRecord::clone(&r)),
                None => {
                    let _: () = self.run(c.srem(&ukey, &hex)).await?;
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }
}

fn split_prefix(url: &str) -> (String, String) {
    let default = "latchkey:".to_owned();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), default);
    };
    let mut prefix = default;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("prefix=") {
            Some(p) => {
                prefix = p.to_owned();
                false
            }
            None => true,
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), prefix)
    } else {
        (format!("{base}?{}", rest.join("&")), prefix)
    }
}

fn record_from_hash(key: TokenHash, mut h: HashMap<String, String>) -> Option<SessionRecord> {
    let mut take = |f: &str| h.remove(f);
    Some(SessionRecord {
        id: SessionId::parse(&take("id")?)?,
        token_hash: Some(key),
        user_id: take("user_id")?.into(),
        username: take("username")?.into(),
        role: take("role")?.into(),
        created_at: take("created_at")?.parse().ok()?,
        last_seen_at: take("last_seen_at")?.parse().ok()?,
        expires_at: take("expires_at")?.parse().ok()?,
        user_agent: take("user_agent").unwrap_or_default().into(),
        ip: take("ip").and_then(|ip| ip.parse().ok()),
        csrf_secret: CsrfSecret::from_form_token(&take("csrf_secret")?)?,
        user_version: take("user_version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        data: take("data").map(Into::into),
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let skey = self.session_key(&r.key());
        let ukey = self.user_key(&r.user_id);
        let fields = [
            ("id", r.id.to_string()),
            ("user_id", r.user_id.to_string()),
            ("username", r.username.to_string()),
            ("role", r.role.to_string()),
            ("created_at", r.created_at.to_string()),
            ("last_seen_at", r.last_seen_at.to_string()),
            ("expires_at", r.expires_at.to_string()),
            ("user_agent", r.user_agent.to_string()),
            ("ip", r.ip_text()),
            ("csrf_secret", r.csrf_secret.form_token()),
            ("user_version", r.user_version.to_string()),
        ];
        let data = r.data.as_ref().map(|d| ("data", d.to_string()));
        let mut pipe = redis::pipe();
        pipe.atomic().hset_multiple(&skey, &fields).ignore();
        if let Some(data) = &data {
            pipe.hset(&skey, data.0, &data.1).ignore();
        }
        pipe.cmd("PEXPIREAT")
            .arg(&skey)
            .arg(r.expires_at)
            .ignore()
            .sadd(&ukey, r.key().to_hex())
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&ukey)
            .arg(r.expires_at)
            .arg("NX")
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&ukey)
            .arg(r.expires_at)
            .arg("GT")
            .ignore();
        self.run(pipe.query_async::<()>(&mut c)).await?;
        if self.bus().serving() {
            self.cache.insert_new(r.key(), Arc::new(r.clone()));
        }
        Ok(())
    }

    async fn load(&self, key: &TokenHash) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let bus = self.bus();
        let read = async {
            let mut c = self.conn().await?;
            let h: HashMap<String, String> = self.run(c.hgetall(self.session_key(key))).await?;
            Ok((!h.is_empty())
                .then(|| record_from_hash(*key, h).map(Arc::new))
                .flatten())
        };
        self.cache.load_through(|| bus.serving(), key, read).await
    }

    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let generation = self.cache.generation();
        let mut c = self.conn().await?;
        let script = Script::new(TOUCH);
        let mut inv = script.key(self.session_key(key));
        inv.arg(last_seen_at)
            .arg(expires_at)
            .arg(format!("{}u:", self.prefix));
        self.run(inv.invoke_async::<i64>(&mut c)).await?;
        self.cache
            .touched(key, last_seen_at, expires_at, generation);
        Ok(())
    }

    async fn update(&self, r: &SessionRecord) -> Result<bool, StoreError> {
        let key = r.key();
        let bus = self.bus();
        let announcement = bus.announce(Revoked::Session(&key));
        let write = async {
            let mut c = self.conn().await?;
            let script = Script::new(SET_DATA);
            let mut inv = script.key(self.session_key(&key));
            inv.arg(if r.data.is_some() { "1" } else { "0" })
                .arg(r.data.as_deref().unwrap_or(""))
                .arg(&self.link.channel)
                .arg(&announcement.message);
            self.run(inv.invoke_async::<i64>(&mut c)).await
        };
        let found = self.cache.evicting(&key, write).await? == 1;
        bus.settle(announcement).await;
        Ok(found)
    }

    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        let bus = self.bus();
        let announcement = bus.announce(Revoked::Session(key));
        let write = async {
            let mut c = self.conn().await?;
            // The index entry is pruned lazily by `user_sessions`.
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(self.session_key(key))
                .ignore()
                .publish(&self.link.channel, &announcement.message)
                .ignore();
            self.run(pipe.query_async::<()>(&mut c)).await
        };
        self.cache.evicting(key, write).await?;
        bus.settle(announcement).await;
        Ok(())
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.user_sessions(user_id).await
    }

    async fn delete_user(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let ukey = self.user_key(user_id);
        let members: Vec<String> = self.run(c.smembers(&ukey)).await?;
        let doomed: Vec<String> = members
            .into_iter()
            .filter(|hex| keep.map(|k| k.to_hex()).as_deref() != Some(hex.as_str()))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = doomed
            .iter()
            .map(|h| format!("{}s:{h}", self.prefix))
            .collect();
        let bus = self.bus();
        let announcement = bus.announce(Revoked::User(user_id));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&keys)
            .srem(&ukey, &doomed)
            .ignore()
            .publish(&self.link.channel, &announcement.message)
            .ignore();
        let (n,): (u64,) = self.run(pipe.query_async(&mut c)).await?;
        self.cache.evict_user(user_id);
        bus.settle(announcement).await;
        Ok(n)
    }

    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let members: Vec<String> = self.run(c.smembers(self.user_key(user_id))).await?;
        let script = Script::new(SET_ROLE);
        for hex in members {
            let mut inv = script.key(format!("{}s:{hex}", self.prefix));
            inv.arg(role);
            self.run(inv.invoke_async::<i64>(&mut c)).await?;
        }
        // Announced after the changes: a role is never a reason to serve
        // less (with `Builder::users` it comes from the user anyway).
        let bus = self.bus();
        let announcement = bus.announce(Revoked::User(user_id));
        self.run(c.publish::<_, _, ()>(&self.link.channel, &announcement.message))
            .await?;
        self.cache.evict_user(user_id);
        bus.settle(announcement).await;
        Ok(())
    }

    // `sweep` keeps its default: Redis expires sessions and counters by TTL.

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.run(redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .map(drop)
    }
}

#[async_trait]
impl CounterStore for RedisStore {
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        slide: bool,
    ) -> Result<(u64, i64), StoreError> {
        let mut c = self.conn().await?;
        let script = Script::new(HIT);
        let mut inv = script.key(format!("{}c:{key}", self.prefix));
        inv.arg(ms(window)).arg(if slide { "1" } else { "0" });
        let (n, ttl): (u64, i64) = self.run(inv.invoke_async(&mut c)).await?;
        Ok((n, ttl))
    }

    async fn peek(&self, key: &str) -> Result<Option<(u64, i64)>, StoreError> {
        let mut c = self.conn().await?;
        let k = format!("{}c:{key}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.get(&k).cmd("PTTL").arg(&k);
        let (n, ttl): (Option<u64>, i64) = self.run(pipe.query_async(&mut c)).await?;
        Ok(n.filter(|_| ttl > 0).map(|n| (n, ttl)))
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.run(c.del::<_, ()>(format!("{}c:{key}", self.prefix)))
            .await
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let script = Script::new(RELEASE);
        let inv = script.key(format!("{}c:{key}", self.prefix));
        self.run(inv.invoke_async::<i64>(&mut c)).await.map(drop)
    }
}

/// Tickets are plain keys with a millisecond expiry; `GETDEL` (Redis 6.2)
/// takes one atomically.
#[async_trait]
impl super::TicketStore for RedisStore {
    async fn put_ticket(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}t:{key}", self.prefix))
            .arg(value)
            .arg("PX")
            .arg(ms(ttl).max(1));
        self.run(cmd.query_async::<()>(&mut c)).await
    }

    async fn get_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        self.run(c.get(format!("{}t:{key}", self.prefix))).await
    }

    async fn take_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(format!("{}t:{key}", self.prefix));
        self.run(cmd.query_async(&mut c)).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_is_split_from_the_url() {
        assert_eq!(
            super::split_prefix("redis://h:1/0?prefix=t1:"),
            ("redis://h:1/0".into(), "t1:".into())
        );
        assert_eq!(
            super::split_prefix("redis://h:1"),
            ("redis://h:1".into(), "latchkey:".into())
        );
    }

    crate::store::suite::store_suite!(async {
        let url = crate::store::suite::redis_url()?;
        Some(super::RedisStore::open(&url).unwrap())
    });

    /// Two instances on one prefix: a session revoked on one is never
    /// served by the other once the revocation has answered, even with the
    /// pub/sub connections killed half-way (`CLIENT KILL TYPE pubsub`:
    /// other buses on this Redis reconnect too, which they must survive).
    #[tokio::test]
    async fn revocation_is_exact_across_instances() {
        let Some(url) = crate::store::suite::redis_url() else {
            return;
        };
        let a = super::RedisStore::open(&url).unwrap();
        let b = super::RedisStore::open(&url).unwrap();
        let (sa, sb) = (a.clone(), b.clone());
        crate::store::bus::tests::until("a", || sa.bus().serving()).await;
        crate::store::bus::tests::until("b", || sb.bus().serving()).await;
        let admin = a.link.clone();
        let kill = async move {
            let mut c = admin.conn().await.unwrap();
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(killed >= 2, "both listeners killed ({killed})");
        };
        let rounds = crate::store::bus::tests::rounds();
        let hits =
            crate::store::bus::tests::race(&a, &b, rounds, |k| b.cache.get(k).is_some(), kill)
                .await;
        assert!(
            hits > rounds / 4,
            "b's cache answered only {hits} of {rounds} reads"
        );
    }

    /// The same suite on a client the app made.
    mod from_client {
        crate::store::suite::store_suite!(async {
            let (base, prefix) =
                crate::store::redis::split_prefix(&crate::store::suite::redis_url()?);
            let client = redis::Client::open(base.as_str()).unwrap();
            Some(crate::store::RedisStore::from_client(client, prefix))
        });
    }
}
