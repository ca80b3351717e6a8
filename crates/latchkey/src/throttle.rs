//! Login throttling: per (username, address), per address, and per account.
//!
//! Counters live in the session store's backend ([`CounterStore`]), so
//! several instances count together. Every attempt is counted before its
//! password is verified; a success clears the (username, address) and
//! account counters and is taken back from the per-address one, so in the
//! end only failures count. Every block lapses by itself.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::client::address_bucket;
use crate::store::{CounterStore, StoreError};

/// Limits, all configurable. The defaults follow OWASP and NIST SP 800-63B.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// Failures for one username from one address before 429 (default 5).
    pub per_user_and_address: u64,
    /// Failures from one address, any usernames, before 429 (default 100).
    pub per_address: u64,
    /// Window for the two limits above (default 15 minutes).
    pub window: Duration,
    /// Consecutive failures of one account, all addresses, after which each
    /// attempt must wait a delay that doubles from 1 s up to `max_delay` (default 20).
    pub account_delay_after: u64,
    /// Cap of that delay (default 1 hour).
    pub max_delay: Duration,
    /// Consecutive failures of one account that stop all attempts until the
    /// count lapses (default 100, NIST's ceiling).
    pub account_hard_limit: u64,
    /// How long an account's failure count lives after its last failure (default 24 h).
    pub account_window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            per_user_and_address: 5,
            per_address: 100,
            window: Duration::from_secs(15 * 60),
            account_delay_after: 20,
            max_delay: Duration::from_secs(3600),
            account_hard_limit: 100,
            account_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Decides whether a login attempt may run, and records its outcome.
///
/// An attempt is counted *before* its password is verified
/// ([`Throttle::reserve`]): every counter is one atomic increment whose new
/// value decides, so of N attempts sent at the same moment at most the limit
/// are let through, however the requests interleave. Reading the counters
/// first and counting after the hash let every attempt already queued
/// through (30 parallel attempts against a limit of 5 all ran).
#[derive(Clone)]
pub struct Throttle {
    counters: Arc<dyn CounterStore>,
    config: ThrottleConfig,
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// An attempt that passed [`Throttle::reserve`] and is counted as a
/// failure unless [`Throttle::succeeded`] says otherwise.
#[must_use = "report the outcome with Throttle::succeeded, or drop it to leave it counted as a failure"]
pub struct Attempt {
    keys: Keys,
}

struct Keys {
    user_addr: String,
    addr: String,
    account: String,
    gate: String,
}

impl Keys {
    // Hashed so hostile usernames never become long or odd store keys.
    fn new(username: &str, ip: &str) -> Self {
        let bucket = address_bucket(ip);
        Self {
            user_addr: format!("ua:{}", digest(&[username, &bucket])),
            addr: format!("a:{}", digest(&[&bucket])),
            account: format!("acct:{}", digest(&[username])),
            gate: format!("gate:{}", digest(&[username])),
        }
    }
}

/// A refusal lasts at least a second (`Retry-After` counts whole seconds).
fn wait(ms: i64) -> Duration {
    Duration::from_millis(ms.max(1000) as u64)
}

impl Throttle {
    /// A throttle counting in `counters`.
    pub fn new(counters: Arc<dyn CounterStore>, config: ThrottleConfig) -> Self {
        Self { counters, config }
    }

    /// Counts an attempt for `username` from `ip` and decides on it:
    /// `Ok(attempt)` when it may be verified, `Err(wait)` when it must be
    /// refused now. Each limit is one atomic increment read back, so the
    /// limits hold when attempts arrive together; a refused attempt takes
    /// back every increment it made, so refusals never count (neither
    /// towards a lockout nor against the address's budget).
    pub async fn reserve(
        &self,
        username: &str,
        ip: &str,
    ) -> Result<Result<Attempt, Duration>, StoreError> {
        let keys = Keys::new(username, ip);
        let mut taken: Vec<&str> = Vec::with_capacity(3);
        let verdict = self.decide(&keys, &mut taken).await;
        if !matches!(verdict, Ok(None)) {
            for key in taken {
                self.counters.release(key).await?;
            }
        }
        Ok(match verdict? {
            None => Ok(Attempt { keys }),
            Some(ms) => Err(wait(ms)),
        })
    }

    /// The increments behind [`Throttle::reserve`]; `Some(ms)` to refuse.
    /// `taken` collects the keys incremented so far.
    async fn decide<'k>(
        &self,
        keys: &'k Keys,
        taken: &mut Vec<&'k str>,
    ) -> Result<Option<i64>, StoreError> {
        let c = &self.config;
        let (n, left) = self.counters.hit(&keys.user_addr, c.window, false).await?;
        taken.push(&keys.user_addr);
        if n > c.per_user_and_address {
            return Ok(Some(left));
        }
        let (n, left) = self.counters.hit(&keys.addr, c.window, false).await?;
        taken.push(&keys.addr);
        if n > c.per_address {
            return Ok(Some(left));
        }
        // Peek first so a locked account's window is not slid by refusals.
        if let Some((n, left)) = self.counters.peek(&keys.account).await? {
            if n >= c.account_hard_limit {
                return Ok(Some(left));
            }
        }
        let (n, left) = self
            .counters
            .hit(&keys.account, c.account_window, true)
            .await?;
        taken.push(&keys.account);
        if n > c.account_hard_limit {
            return Ok(Some(left));
        }
        if n >= c.account_delay_after {
            // From the soft limit on, each attempt shuts a gate behind it
            // for a delay doubling from 1 s; the next must find it open.
            let doublings = (n - c.account_delay_after).min(32) as u32;
            let delay = Duration::from_secs(1u64 << doublings).min(c.max_delay);
            let (g, gate_left) = self.counters.hit(&keys.gate, delay, false).await?;
            if n > c.account_delay_after && g > 1 {
                return Ok(Some(gate_left));
            }
        }
        Ok(None)
    }

    /// Takes back an attempt that was never judged on its password (the
    /// user store failed, or the account changed while it was hashed), so
    /// outages and races do not lock anyone out.
    pub async fn abandon(&self, attempt: Attempt) -> Result<(), StoreError> {
        let k = attempt.keys;
        self.counters.release(&k.user_addr).await?;
        self.counters.release(&k.addr).await?;
        self.counters.release(&k.account).await
    }

    /// The attempt's password was right: clears the username's failures
    /// from that address and the account's count, and takes the attempt
    /// back from the per-address count (which counts failures only).
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), StoreError> {
        let k = attempt.keys;
        self.counters.reset(&k.user_addr).await?;
        self.counters.reset(&k.account).await?;
        self.counters.reset(&k.gate).await?;
        self.counters.release(&k.addr).await
    }

    /// Counts one sign-up attempt from `ip` (a taken name too); `Some(wait)`
    /// once the address is past the per-(username, address) limit within
    /// the window, as for failed logins.
    pub async fn signup(&self, ip: &str) -> Result<Option<Duration>, StoreError> {
        let key = format!("su:{}", digest(&[&address_bucket(ip)]));
        let c = &self.config;
        let (n, left) = self.counters.hit(&key, c.window, false).await?;
        Ok((n > c.per_user_and_address).then(|| wait(left)))
    }

    /// `Some(wait)` when the client address has failed passkey sign-ins
    /// past the per-address limit within the window (a passkey cannot be
    /// guessed, so the looser of the two address limits applies).
    pub async fn passkey_gate(&self, ip: &str) -> Result<Option<Duration>, StoreError> {
        let key = format!("pk:{}", digest(&[&address_bucket(ip)]));
        Ok(self
            .counters
            .peek(&key)
            .await?
            .filter(|(n, _)| *n >= self.config.per_address)
            .map(|(_, left)| wait(left)))
    }

    /// Counts a failed passkey sign-in from `ip`.
    pub async fn passkey_failed(&self, ip: &str) -> Result<(), StoreError> {
        let key = format!("pk:{}", digest(&[&address_bucket(ip)]));
        self.counters
            .hit(&key, self.config.window, false)
            .await
            .map(drop)
    }

    /// A completed sign-in by other means (a passkey): clears the
    /// username's failures from that address and the account's count, as
    /// a right password does.
    pub async fn clear_account(&self, username: &str, ip: &str) -> Result<(), StoreError> {
        let k = Keys::new(username, ip);
        self.counters.reset(&k.user_addr).await?;
        self.counters.reset(&k.account).await?;
        self.counters.reset(&k.gate).await
    }

    /// Counts one request for a mailed link (forgot password): per client
    /// address and per target address, each allowed the per-(username,
    /// address) limit within the window, so neither one client nor many
    /// can flood one inbox. `Some(wait)` past either limit.
    pub async fn mail_request(
        &self,
        ip: &str,
        target: &str,
    ) -> Result<Option<Duration>, StoreError> {
        let c = &self.config;
        let by_ip = format!("ml:a:{}", digest(&[&address_bucket(ip)]));
        let by_target = format!("ml:t:{}", digest(&[target]));
        let (n_ip, left_ip) = self.counters.hit(&by_ip, c.window, false).await?;
        if n_ip > c.per_user_and_address {
            return Ok(Some(wait(left_ip)));
        }
        let (n_t, left_t) = self.counters.hit(&by_target, c.window, false).await?;
        Ok((n_t > c.per_user_and_address).then(|| wait(left_t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn throttle(config: ThrottleConfig) -> Throttle {
        Throttle::new(Arc::new(MemoryStore::new()), config)
    }

    async fn fail(t: &Throttle, user: &str, ip: &str) -> Result<(), Duration> {
        t.reserve(user, ip).await.unwrap().map(drop)
    }

    #[tokio::test]
    async fn sixth_attempt_for_user_and_address_is_blocked_elsewhere_not() {
        let t = throttle(ThrottleConfig::default());
        for _ in 0..5 {
            fail(&t, "alice", "10.0.0.1").await.expect("allowed");
        }
        let wait = fail(&t, "alice", "10.0.0.1").await.expect_err("blocked");
        assert!(wait <= Duration::from_secs(15 * 60) && wait >= Duration::from_secs(14 * 60));
        assert!(fail(&t, "alice", "10.0.0.2").await.is_ok());
        assert!(fail(&t, "bob", "10.0.0.1").await.is_ok());
    }

    #[tokio::test]
    async fn success_clears_the_user_and_address_count() {
        let t = throttle(ThrottleConfig::default());
        for _ in 0..4 {
            fail(&t, "alice", "10.0.0.1").await.unwrap();
        }
        let ok = t.reserve("alice", "10.0.0.1").await.unwrap().unwrap();
        t.succeeded(ok).await.unwrap();
        for _ in 0..5 {
            fail(&t, "alice", "10.0.0.1").await.expect("cleared");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_gets_no_more_than_the_limit() {
        let t = Arc::new(throttle(ThrottleConfig::default()));
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move { fail(&t, "alice", "10.0.0.1").await.is_ok() })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += task.await.unwrap() as u32;
        }
        assert_eq!(allowed, 5);
    }

    #[tokio::test]
    async fn one_address_spraying_many_users_is_blocked() {
        let t = throttle(ThrottleConfig {
            per_address: 10,
            ..Default::default()
        });
        for i in 0..10 {
            fail(&t, &format!("user{i}"), "10.0.0.9").await.unwrap();
        }
        assert!(fail(&t, "someone-new", "10.0.0.9").await.is_err());
        assert!(fail(&t, "someone-new", "10.0.0.8").await.is_ok());
    }

    #[tokio::test]
    async fn ipv6_clients_count_by_their_slash_64() {
        let t = throttle(ThrottleConfig {
            per_address: 3,
            ..Default::default()
        });
        for i in 1..=3 {
            fail(&t, &format!("u{i}"), &format!("2001:db8:1:2::{i}"))
                .await
                .unwrap();
        }
        assert!(fail(&t, "u9", "2001:db8:1:2:ffff::9").await.is_err());
        assert!(fail(&t, "u9", "2001:db8:1:3::1").await.is_ok());
    }

    #[tokio::test]
    async fn account_delay_grows_and_hard_stop_holds_across_addresses() {
        let t = throttle(ThrottleConfig {
            account_delay_after: 3,
            account_hard_limit: 6,
            ..Default::default()
        });
        // The 3rd failure shuts the gate for 1 s; the next attempt waits.
        for i in 0..3 {
            fail(&t, "carol", &format!("10.1.0.{i}")).await.unwrap();
        }
        let first = fail(&t, "carol", "10.2.0.1").await.expect_err("delayed");
        assert!(first <= Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The 4th passes and shuts it for 2 s.
        fail(&t, "carol", "10.2.0.2")
            .await
            .expect("gate open again");
        let second = fail(&t, "carol", "10.2.0.3").await.expect_err("delayed");
        assert!(second > Duration::from_secs(1) && second <= Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        fail(&t, "carol", "10.2.0.4")
            .await
            .expect("gate open again");
        tokio::time::sleep(Duration::from_millis(4100)).await;
        fail(&t, "carol", "10.2.0.5")
            .await
            .expect("gate open again");
        // 6 counted (refusals were taken back): the hard stop holds anywhere.
        let hard = fail(&t, "carol", "10.3.0.1").await.expect_err("hard stop");
        assert!(hard > Duration::from_secs(3600));
        let ok = t.reserve("dave", "10.3.0.1").await.unwrap().unwrap();
        t.succeeded(ok).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_attempts_cost_nothing() {
        let t = Arc::new(throttle(ThrottleConfig {
            account_delay_after: 2,
            account_hard_limit: 10,
            ..Default::default()
        }));
        fail(&t, "erin", "10.4.0.1").await.unwrap();
        fail(&t, "erin", "10.4.0.1").await.unwrap();
        // A burst while the gate is shut: all refused, none counted.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let t = t.clone();
                tokio::spawn(async move { fail(&t, "erin", &format!("10.5.{i}.1")).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        let (n, _) = t
            .counters
            .peek(&Keys::new("erin", "x").account)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 2, "refusals took their increments back");
        // The victim's own address is not used up by the refusals either.
        let (n, _) = t
            .counters
            .peek(&Keys::new("erin", "10.4.0.1").user_addr)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn the_sixth_signup_from_one_address_waits() {
        let t = throttle(ThrottleConfig::default());
        for _ in 0..5 {
            assert!(t.signup("10.0.0.1").await.unwrap().is_none());
        }
        assert!(t.signup("10.0.0.1").await.unwrap().is_some());
        assert!(t.signup("10.0.0.2").await.unwrap().is_none());
    }
}
