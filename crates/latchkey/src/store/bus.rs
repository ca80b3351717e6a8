//! Exact revocation across instances for the shared stores (PostgreSQL,
//! Redis), so each instance may cache session records.
//!
//! Every instance listens on one channel of its store (PostgreSQL
//! `LISTEN/NOTIFY`, Redis pub/sub) and publishes a ping on it every
//! [`PING_EVERY`]. Both deliver a listener's messages in commit order, so
//! hearing its own ping sent at time `s` tells an instance it has heard
//! everything committed before `s`. Hence the rules:
//!
//! - **Revoking.** A revocation's message is published in the same
//!   transaction as the delete (`pg_notify` in the transaction, `PUBLISH`
//!   in the `MULTI`), so a revocation is never committed unannounced.
//!   Every instance that hears it drops the entry, then acknowledges.
//! - **Waiting.** The revoking request answers once every instance heard
//!   from within [`STALE_AFTER`] has acknowledged, and at the latest
//!   [`STALE_AFTER`] after the commit.
//! - **Serving.** An instance answers from its cache only while the last
//!   own ping it heard was sent less than [`STALE_AFTER`] ago. So an
//!   instance that has not acknowledged by the deadline either heard the
//!   revocation (its next own ping comes after it) or serves nothing from
//!   its cache: no stale answer after the revoking response, whichever
//!   instance, connection or broadcast failed.
//!
//! A listener that drops clears the cache; after reconnecting, nothing is
//! served from the cache until an own ping is heard on the new connection,
//! and then the cache starts empty (what was missed meanwhile cannot matter).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch, Notify};

use super::cache::SessionCache;
use super::StoreError;
use crate::session::TokenHash;

/// How long an instance may go without hearing its own ping before it
/// stops serving from its cache; also the longest a revocation waits.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(1);
/// How often each instance pings itself (and tells others it is alive).
const PING_EVERY: Duration = Duration::from_millis(100);
/// Before reconnecting a dropped listener.
const RECONNECT_AFTER: Duration = Duration::from_millis(100);

/// How a store carries the bus's messages.
#[async_trait]
pub(super) trait Transport: Send + Sync + 'static {
    /// Sends one message (pings and acknowledgements) to every listener.
    async fn publish(&self, message: String) -> Result<(), StoreError>;
    /// Opens a listening connection: its messages arrive in commit order,
    /// and the receiver closes when the connection drops.
    async fn listen(&self) -> Result<mpsc::Receiver<String>, StoreError>;
}

/// What a revocation names.
pub(super) enum Revoked<'a> {
    /// One session.
    Session(&'a TokenHash),
    /// Every session of a user (ended, or their role changed).
    User(&'a str),
}

/// A revocation about to be committed: publish [`message`](Self::message)
/// with it, then [`Bus::settle`].
pub(super) struct Announcement {
    bus: Arc<Inner>,
    id: u64,
    /// The message to publish in the revoking transaction.
    pub(super) message: String,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        self.bus.lock_waits().remove(&self.id);
    }
}

/// See the module docs. Dropping the last handle stops its tasks.
pub(super) struct Bus {
    inner: Arc<Inner>,
}

struct Wait {
    acked: HashSet<String>,
    woken: Arc<Notify>,
}

struct Inner {
    me: String,
    started: Instant,
    cache: Arc<SessionCache>,
    /// Micros since `started` (plus one) at which the last own ping heard
    /// on the current connection was sent; 0 while deaf.
    fresh_as_of: AtomicU64,
    /// Micros since `started` (plus one) since when this instance has
    /// heard its own pings without a break; 0 while deaf.
    hearing_since: AtomicU64,
    /// Own pings in flight: (sequence number, micros sent).
    pings: Mutex<VecDeque<(u64, u64)>>,
    /// Instances heard from, and when.
    peers: Mutex<HashMap<String, Instant>>,
    waits: Mutex<HashMap<u64, Wait>>,
    next_id: AtomicU64,
    /// Closes (drops) with the last handle; the tasks watch it.
    _stop: watch::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64 + 1
    }

    fn lock_waits(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Wait>> {
        lock(&self.waits)
    }

    fn serving(&self) -> bool {
        let fresh = self.fresh_as_of.load(Ordering::Acquire);
        fresh != 0 && self.micros().saturating_sub(fresh) < STALE_AFTER.as_micros() as u64
    }

    /// The listener dropped: forget the cache, serve nothing from it.
    fn deafen(&self) {
        self.fresh_as_of.store(0, Ordering::Release);
        self.hearing_since.store(0, Ordering::Release);
        self.cache.clear();
    }

    /// Handles one message; returns an acknowledgement to publish.
    fn handle(&self, message: &str, connected_at: u64) -> Option<String> {
        let mut parts = message.split(' ');
        let (kind, from) = (parts.next()?, parts.next()?);
        match kind {
            "p" => {
                lock(&self.peers).insert(from.to_owned(), Instant::now());
                if from == self.me {
                    let seq: u64 = parts.next()?.parse().ok()?;
                    self.heard_own_ping(seq, connected_at);
                }
                None
            }
            "k" | "u" => {
                let id = parts.next()?;
                let target = hex::decode(parts.next()?).ok()?;
                if kind == "k" {
                    let key = <[u8; 32]>::try_from(target.as_slice()).ok()?;
                    self.cache.evict(&TokenHash(key));
                } else {
                    self.cache.evict_user(std::str::from_utf8(&target).ok()?);
                }
                if from == self.me {
                    self.acked(&self.me, id.parse().ok()?);
                    None
                } else {
                    Some(format!("a {} {from} {id}", self.me))
                }
            }
            "a" => {
                let (to, id) = (parts.next()?, parts.next()?.parse().ok()?);
                if to == self.me {
                    self.acked(from, id);
                }
                None
            }
            _ => None,
        }
    }

    fn heard_own_ping(&self, seq: u64, connected_at: u64) {
        let sent = {
            let mut pings = lock(&self.pings);
            let mut sent = None;
            while let Some(&(s, at)) = pings.front() {
                if s > seq {
                    break;
                }
                pings.pop_front();
                if s == seq {
                    sent = Some(at);
                }
            }
            sent
        };
        // A ping sent before this connection listened proves nothing about it.
        let Some(sent) = sent.filter(|&at| at >= connected_at) else {
            return;
        };
        if self.hearing_since.load(Ordering::Acquire) == 0 {
            // First proof on a new connection: what was cached before it
            // may have missed revocations, so start empty.
            self.cache.clear();
            self.hearing_since.store(sent, Ordering::Release);
        }
        self.fresh_as_of.fetch_max(sent, Ordering::AcqRel);
    }

    fn acked(&self, from: &str, id: u64) {
        if let Some(wait) = self.lock_waits().get_mut(&id) {
            wait.acked.insert(from.to_owned());
            wait.woken.notify_one();
        }
    }

    /// Whether every instance heard from lately has acknowledged `id`. Only
    /// after hearing for [`STALE_AFTER`] does this instance know them all.
    fn all_acked(&self, id: u64) -> bool {
        let since = self.hearing_since.load(Ordering::Acquire);
        if since == 0 || self.micros().saturating_sub(since) < STALE_AFTER.as_micros() as u64 {
            return false;
        }
        let waits = self.lock_waits();
        let Some(wait) = waits.get(&id) else {
            return true;
        };
        let peers = lock(&self.peers);
        peers
            .iter()
            .filter(|(_, at)| at.elapsed() < STALE_AFTER)
            .all(|(peer, _)| wait.acked.contains(peer))
    }
}

impl Bus {
    /// Starts listening and pinging over `transport`, evicting from `cache`.
    pub(super) fn start(transport: Arc<dyn Transport>, cache: Arc<SessionCache>) -> Self {
        let (stop, stopped) = watch::channel(());
        let inner = Arc::new(Inner {
            me: hex::encode(crate::session::random_bytes::<8>()),
            started: Instant::now(),
            cache,
            fresh_as_of: AtomicU64::new(0),
            hearing_since: AtomicU64::new(0),
            pings: Mutex::new(VecDeque::new()),
            peers: Mutex::new(HashMap::new()),
            waits: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            _stop: stop,
        });
        tokio::spawn(listen(
            Arc::downgrade(&inner),
            transport.clone(),
            stopped.clone(),
        ));
        tokio::spawn(ping(Arc::downgrade(&inner), transport, stopped));
        Self { inner }
    }

    /// Whether the cache may answer now (see the module docs).
    pub(super) fn serving(&self) -> bool {
        self.inner.serving()
    }

    /// Prepares the announcement of a revocation: register before the
    /// commit, so no acknowledgement can arrive unexpected.
    pub(super) fn announce(&self, what: Revoked<'_>) -> Announcement {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.lock_waits().insert(
            id,
            Wait {
                acked: HashSet::new(),
                woken: Arc::new(Notify::new()),
            },
        );
        let message = match what {
            Revoked::Session(key) => format!("k {} {id} {}", self.inner.me, key.to_hex()),
            Revoked::User(user) => format!("u {} {id} {}", self.inner.me, hex::encode(user)),
        };
        Announcement {
            bus: self.inner.clone(),
            id,
            message,
        }
    }

    /// After the revocation committed: returns once every live instance
    /// has dropped it, at the latest [`STALE_AFTER`] from now.
    pub(super) async fn settle(&self, announcement: Announcement) {
        let deadline = tokio::time::Instant::now() + STALE_AFTER;
        let Some(woken) = self
            .inner
            .lock_waits()
            .get(&announcement.id)
            .map(|w| w.woken.clone())
        else {
            return;
        };
        loop {
            if self.inner.all_acked(announcement.id) {
                return;
            }
            // Re-checked every ping: the peer set and hearing change too.
            let tick = tokio::time::Instant::now() + PING_EVERY;
            tokio::select! {
                _ = woken.notified() => {}
                _ = tokio::time::sleep_until(tick.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
        }
    }
}

/// The listening task: reconnects until the bus is dropped.
async fn listen(bus: Weak<Inner>, transport: Arc<dyn Transport>, mut stop: watch::Receiver<()>) {
    let mut warned = false;
    loop {
        let connected_at = match bus.upgrade() {
            Some(b) => b.micros(),
            None => return,
        };
        let opened = tokio::select! {
            r = transport.listen() => r,
            _ = stop.changed() => return,
        };
        match opened {
            Ok(mut rx) => {
                if warned {
                    tracing::info!("session cache: listening for revocations again");
                }
                loop {
                    let msg = tokio::select! {
                        m = rx.recv() => m,
                        _ = stop.changed() => return,
                    };
                    let Some(msg) = msg else { break };
                    let Some(b) = bus.upgrade() else { return };
                    if let Some(ack) = b.handle(&msg, connected_at) {
                        let t = transport.clone();
                        tokio::spawn(async move { t.publish(ack).await });
                    }
                }
                if let Some(b) = bus.upgrade() {
                    b.deafen();
                }
                tracing::warn!("session cache: revocation listener dropped; serving from the store until it is back");
                warned = true;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "session cache: cannot listen for revocations; serving from the store");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The pinging task.
async fn ping(bus: Weak<Inner>, transport: Arc<dyn Transport>, mut stop: watch::Receiver<()>) {
    let mut seq = 0u64;
    let mut was_serving = false;
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(b) = bus.upgrade() else { return };
        // Every flip is logged: a cache that keeps going stale (an
        // overloaded process or store) sends every read to the store.
        let serving = b.serving();
        if serving != was_serving {
            if serving {
                tracing::info!("session cache: hearing revocations; answering from the cache");
            } else if b.hearing_since.load(Ordering::Acquire) != 0 {
                let heard_ms = (b.micros() - b.fresh_as_of.load(Ordering::Acquire)) / 1000;
                tracing::warn!(
                    "session cache: own ping last heard {heard_ms} ms ago (over {} ms); reading from the store until it is heard",
                    STALE_AFTER.as_millis()
                );
            }
            was_serving = serving;
        }
        seq += 1;
        if seq.is_multiple_of(600) {
            // Instances that stopped long ago: forget them (once a minute).
            lock(&b.peers).retain(|_, at| at.elapsed() < 60 * STALE_AFTER);
        }
        {
            let mut pings = lock(&b.pings);
            pings.push_back((seq, b.micros()));
            if pings.len() > 64 {
                pings.pop_front();
            }
        }
        let message = format!("p {} {seq}", b.me);
        drop(b);
        // A lost ping only delays freshness; the next one tries again.
        let _ = tokio::time::timeout(PING_EVERY * 5, transport.publish(message)).await;
    }
}

/// The guarantee, tested against two stores of one backend (two instances).
#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use crate::store::suite::record;
    use crate::store::SessionStore;

    /// Rounds of the race: `LATCHKEY_RACE_ROUNDS`, else 300 (CI's short run).
    pub(crate) fn rounds() -> usize {
        std::env::var("LATCHKEY_RACE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300)
    }

    /// Waits until `serving` says the cache answers (the bus hears).
    pub(crate) async fn until(what: &str, serving: impl Fn() -> bool) {
        for _ in 0..100 {
            if serving() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: the bus never started hearing");
    }

    /// Each round: a session made on `a` and read (so cached) on `b`; then
    /// `a` deletes it while `b` reads it at the same moment; once the
    /// delete has returned, `b` must not find it. `disturb` runs before
    /// round `rounds / 2` (a listener killed, say). Returns how many of
    /// `b`'s reads before the delete were answered from its cache.
    pub(crate) async fn race<A, B>(
        a: &A,
        b: &B,
        rounds: usize,
        cached: impl Fn(&crate::session::TokenHash) -> bool,
        disturb: impl std::future::Future<Output = ()>,
    ) -> usize
    where
        A: SessionStore,
        B: SessionStore,
    {
        let mut disturb = Some(disturb);
        let mut hits = 0;
        for round in 0..rounds {
            if round == rounds / 2 {
                if let Some(d) = disturb.take() {
                    d.await;
                }
            }
            let (tok, rec) = record(&format!("racer{round}"));
            let key = tok.hash();
            a.create(&rec).await.unwrap();
            assert!(
                b.load(&key).await.unwrap().is_some(),
                "round {round}: b sees it"
            );
            if cached(&key) {
                hits += 1;
            }
            let (deleted, _) = tokio::join!(a.delete(&key), b.load(&key));
            deleted.unwrap();
            assert!(
                b.load(&key).await.unwrap().is_none(),
                "round {round}: b served a session a had revoked"
            );
        }
        hits
    }
}
