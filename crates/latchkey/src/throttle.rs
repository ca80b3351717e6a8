//! Login throttling: per (username, address), per address, and per account.
//!
//! Counters live in the session store's backend ([`CounterStore`]), so
//! several instances count together. Only failures count; a success clears
//! the (username, address) and account counters. Every block lapses by itself.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

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

struct Keys {
    user_addr: String,
    addr: String,
    account: String,
}

impl Keys {
    // Hashed so hostile usernames never become long or odd store keys.
    fn new(username: &str, ip: &str) -> Self {
        Self {
            user_addr: format!("ua:{}", digest(&[username, ip])),
            addr: format!("a:{}", digest(&[ip])),
            account: format!("acct:{}", digest(&[username])),
        }
    }
}

impl Throttle {
    /// A throttle counting in `counters`.
    pub fn new(counters: Arc<dyn CounterStore>, config: ThrottleConfig) -> Self {
        Self { counters, config }
    }

    /// `Some(wait)` when an attempt for `username` from `ip` must be refused now.
    pub async fn blocked_for(
        &self,
        username: &str,
        ip: &str,
    ) -> Result<Option<Duration>, StoreError> {
        let keys = Keys::new(username, ip);
        let c = &self.config;
        let ms = |n: i64| Duration::from_millis(n.max(1000) as u64);
        if let Some((n, left)) = self.counters.peek(&keys.user_addr).await? {
            if n >= c.per_user_and_address {
                return Ok(Some(ms(left)));
            }
        }
        if let Some((n, left)) = self.counters.peek(&keys.addr).await? {
            if n >= c.per_address {
                return Ok(Some(ms(left)));
            }
        }
        if let Some((n, left)) = self.counters.peek(&keys.account).await? {
            if n >= c.account_hard_limit {
                return Ok(Some(ms(left)));
            }
            if n >= c.account_delay_after {
                let doublings = (n - c.account_delay_after).min(32) as u32;
                let delay = Duration::from_secs(1u64 << doublings).min(c.max_delay);
                // The account counter slides: its age since the last failure
                // is the window minus what is left.
                let since = c
                    .account_window
                    .saturating_sub(Duration::from_millis(left.max(0) as u64));
                if since < delay {
                    return Ok(Some((delay - since).max(Duration::from_secs(1))));
                }
            }
        }
        Ok(None)
    }

    /// Counts a failed attempt.
    pub async fn failed(&self, username: &str, ip: &str) -> Result<(), StoreError> {
        let keys = Keys::new(username, ip);
        let c = &self.config;
        self.counters.hit(&keys.user_addr, c.window, false).await?;
        self.counters.hit(&keys.addr, c.window, false).await?;
        self.counters
            .hit(&keys.account, c.account_window, true)
            .await?;
        Ok(())
    }

    /// Clears the username's failures from `ip` and the account's count.
    pub async fn succeeded(&self, username: &str, ip: &str) -> Result<(), StoreError> {
        let keys = Keys::new(username, ip);
        self.counters.reset(&keys.user_addr).await?;
        self.counters.reset(&keys.account).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn throttle(config: ThrottleConfig) -> Throttle {
        Throttle::new(Arc::new(MemoryStore::new()), config)
    }

    #[tokio::test]
    async fn sixth_attempt_for_user_and_address_is_blocked_elsewhere_not() {
        let t = throttle(ThrottleConfig::default());
        for _ in 0..5 {
            assert!(t.blocked_for("alice", "10.0.0.1").await.unwrap().is_none());
            t.failed("alice", "10.0.0.1").await.unwrap();
        }
        let wait = t
            .blocked_for("alice", "10.0.0.1")
            .await
            .unwrap()
            .expect("blocked");
        assert!(wait <= Duration::from_secs(15 * 60) && wait >= Duration::from_secs(14 * 60));
        assert!(t.blocked_for("alice", "10.0.0.2").await.unwrap().is_none());
        assert!(t.blocked_for("bob", "10.0.0.1").await.unwrap().is_none());
        t.succeeded("alice", "10.0.0.1").await.unwrap();
        assert!(t.blocked_for("alice", "10.0.0.1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn one_address_spraying_many_users_is_blocked() {
        let t = throttle(ThrottleConfig {
            per_address: 10,
            ..Default::default()
        });
        for i in 0..10 {
            t.failed(&format!("user{i}"), "10.0.0.9").await.unwrap();
        }
        assert!(t
            .blocked_for("someone-new", "10.0.0.9")
            .await
            .unwrap()
            .is_some());
        assert!(t
            .blocked_for("someone-new", "10.0.0.8")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn account_delay_grows_and_hard_stop_holds_across_addresses() {
        let t = throttle(ThrottleConfig {
            account_delay_after: 3,
            account_hard_limit: 6,
            ..Default::default()
        });
        for i in 0..3 {
            t.failed("carol", &format!("10.1.0.{i}")).await.unwrap();
        }
        let first = t
            .blocked_for("carol", "10.2.0.1")
            .await
            .unwrap()
            .expect("delayed");
        assert!(first <= Duration::from_secs(1));
        for i in 3..6 {
            t.failed("carol", &format!("10.1.0.{i}")).await.unwrap();
        }
        let hard = t
            .blocked_for("carol", "10.3.0.1")
            .await
            .unwrap()
            .expect("hard stop");
        assert!(hard > Duration::from_secs(3600));
        t.succeeded("carol", "10.3.0.1").await.unwrap();
        assert!(t.blocked_for("carol", "10.3.0.1").await.unwrap().is_none());
    }
}
