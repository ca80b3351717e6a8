//! The behavioural tests every store passes, as one macro: [`store_suite!`].
//!
//! latchkey runs it against each of its own stores; a third-party store
//! runs it too, with the `test-suite` feature:
//!
//! ```toml
//! [dev-dependencies]
//! latchkey = { version = "0.2", features = ["test-suite"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "time"] }
//! ```
//!
//! [`store_suite!`]: crate::store_suite

use crate::session::{SessionRecord, SessionToken};

/// A fresh session record for `user`, expiring in a minute, and its token.
pub fn record(user: &str) -> (SessionToken, SessionRecord) {
    let token = SessionToken::generate();
    let now = now();
    let rec = SessionRecord {
        id: crate::session::SessionId::generate(),
        token_hash: Some(token.hash()),
        user_id: user.into(),
        username: format!("name-{user}").into(),
        role: "user".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 60_000,
        user_agent: "test-agent".into(),
        ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        csrf_secret: crate::session::CsrfSecret::generate(),
        user_version: 3,
        data: None,
    };
    (token, rec)
}

/// The current time as sessions record it (ms since the Unix epoch).
pub fn now() -> i64 {
    crate::session::now_ms()
}

#[cfg(all(test, any(feature = "postgres", feature = "redis")))]
fn unique(tag: &str) -> String {
    format!("{tag}{}", hex::encode(crate::session::random_bytes::<6>()))
}

/// `LATCHKEY_TEST_POSTGRES_URL` with a new schema of its own, or `None`
/// (and a loud line) when the variable is unset.
#[cfg(all(test, feature = "postgres"))]
pub(crate) async fn postgres_url() -> Option<String> {
    let Ok(base) = std::env::var("LATCHKEY_TEST_POSTGRES_URL") else {
        eprintln!(
            "SKIPPED: LATCHKEY_TEST_POSTGRES_URL is not set; PostgreSQL store tests did not run"
        );
        return None;
    };
    let schema = unique("lk_test_");
    let pool = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to LATCHKEY_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// `LATCHKEY_TEST_REDIS_URL` with a key prefix of its own, or `None`.
#[cfg(all(test, feature = "redis"))]
pub(crate) fn redis_url() -> Option<String> {
    let Ok(base) = std::env::var("LATCHKEY_TEST_REDIS_URL") else {
        eprintln!("SKIPPED: LATCHKEY_TEST_REDIS_URL is not set; Redis store tests did not run");
        return None;
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}prefix={}:", unique("lk_test_")))
}

/// Writes the shared store tests into the calling module, as `#[tokio::test]`
/// functions (so the calling crate needs `tokio` with `macros` and
/// `rt-multi-thread`). The argument is an expression giving a future of
/// `Option<S>` where `S` is the store ([`SessionStore`] + [`CounterStore`]);
/// it is evaluated afresh in every test, and `None` skips the test (say, a
/// database that is not configured). Each test uses its own keys and user ids,
/// but counters use fixed keys, so give each test a fresh store or namespace.
///
/// ```
/// mod tests {
///     latchkey::store_suite!(async { Some(latchkey::store::MemoryStore::new()) });
/// }
/// ```
///
/// [`SessionStore`]: crate::store::SessionStore
/// [`CounterStore`]: crate::store::CounterStore
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "test-suite")))]
macro_rules! store_suite {
    ($make:expr) => {
        use std::time::Duration;
        use $crate::store::suite::record;
        #[allow(unused_imports)]
        use $crate::store::{CounterStore as _, SessionStore as _, TicketStore as _};

        #[tokio::test]
        async fn create_load_delete() {
            let Some(s) = $make.await else { return };
            let (tok, rec) = record("u1");
            s.create(&rec).await.unwrap();
            let got = s.load(&tok.hash()).await.unwrap().expect("stored");
            assert_eq!(*got, rec);
            s.delete(&tok.hash()).await.unwrap();
            assert!(s.load(&tok.hash()).await.unwrap().is_none());
            s.delete(&tok.hash()).await.unwrap(); // idempotent
        }

        #[tokio::test]
        async fn update_sets_and_clears_data_and_never_resurrects() {
            let Some(s) = $make.await else { return };
            let (tok, mut rec) = record("u1");
            rec.data = Some(r#"{"cart":[1]}"#.into());
            s.create(&rec).await.unwrap();
            assert_eq!(s.load(&tok.hash()).await.unwrap().unwrap().data, rec.data);
            rec.data = Some(r#"{"cart":[1,2]}"#.into());
            assert!(s.update(&rec).await.unwrap());
            let got = s.load(&tok.hash()).await.unwrap().expect("still there");
            assert_eq!(*got, rec, "only the data changed");
            rec.data = None;
            assert!(s.update(&rec).await.unwrap());
            assert_eq!(s.load(&tok.hash()).await.unwrap().unwrap().data, None);
            s.delete(&tok.hash()).await.unwrap();
            rec.data = Some("1".into());
            assert!(!s.update(&rec).await.unwrap(), "a deleted session is gone");
            assert!(s.load(&tok.hash()).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn a_ticket_is_read_many_times_and_taken_once() {
            let Some(s) = $make.await else { return };
            let key = format!("suite:{}", $crate::SessionToken::generate().as_str());
            assert_eq!(s.get_ticket(&key).await.unwrap(), None);
            s.put_ticket(&key, "v1", Duration::from_secs(60))
                .await
                .unwrap();
            s.put_ticket(&key, "v2", Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(s.get_ticket(&key).await.unwrap().as_deref(), Some("v2"));
            assert_eq!(s.get_ticket(&key).await.unwrap().as_deref(), Some("v2"));
            // Takers racing: exactly one gets the value.
            let s = std::sync::Arc::new(s);
            let takers: Vec<_> = (0..16)
                .map(|_| {
                    let (s, key) = (s.clone(), key.clone());
                    tokio::spawn(async move { s.take_ticket(&key).await.unwrap() })
                })
                .collect();
            let mut won = 0;
            for t in takers {
                if let Some(v) = t.await.unwrap() {
                    assert_eq!(v, "v2");
                    won += 1;
                }
            }
            assert_eq!(won, 1, "a ticket is taken once");
            assert_eq!(s.get_ticket(&key).await.unwrap(), None);
        }

        #[tokio::test]
        async fn an_expired_ticket_is_neither_read_nor_taken() {
            let Some(s) = $make.await else { return };
            let key = format!("suite:{}", $crate::SessionToken::generate().as_str());
            s.put_ticket(&key, "v", Duration::from_millis(30))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(80)).await;
            assert_eq!(s.get_ticket(&key).await.unwrap(), None);
            assert_eq!(s.take_ticket(&key).await.unwrap(), None);
        }

        #[tokio::test]
        async fn unknown_key_is_none() {
            let Some(s) = $make.await else { return };
            let (tok, _) = record("u1");
            assert!(s.load(&tok.hash()).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn touch_updates_times_and_never_resurrects() {
            let Some(s) = $make.await else { return };
            let (tok, rec) = record("u1");
            s.create(&rec).await.unwrap();
            s.touch(&tok.hash(), rec.last_seen_at + 5, rec.expires_at + 5)
                .await
                .unwrap();
            let got = s.load(&tok.hash()).await.unwrap().unwrap();
            assert_eq!(
                (got.last_seen_at, got.expires_at),
                (rec.last_seen_at + 5, rec.expires_at + 5)
            );
            s.delete(&tok.hash()).await.unwrap();
            s.touch(&tok.hash(), rec.last_seen_at + 9, rec.expires_at + 9)
                .await
                .unwrap();
            assert!(s.load(&tok.hash()).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn per_user_listing_delete_and_role() {
            let Some(s) = $make.await else { return };
            let (a1, r1) = record("alice");
            let (a2, mut r2) = record("alice");
            r2.created_at += 1;
            let (b1, r3) = record("bob");
            for r in [&r1, &r2, &r3] {
                s.create(r).await.unwrap();
            }
            let ids: Vec<$crate::session::SessionId> = s
                .list_user("alice")
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(ids, vec![r1.id, r2.id]);

            s.set_role("alice", "admin").await.unwrap();
            assert_eq!(
                s.load(&a2.hash()).await.unwrap().unwrap().role.as_ref(),
                "admin"
            );
            assert_eq!(
                s.load(&b1.hash()).await.unwrap().unwrap().role.as_ref(),
                "user"
            );

            assert_eq!(s.delete_user("alice", Some(&a1.hash())).await.unwrap(), 1);
            assert!(s.load(&a1.hash()).await.unwrap().is_some());
            assert!(s.load(&a2.hash()).await.unwrap().is_none());
            assert_eq!(s.delete_user("alice", None).await.unwrap(), 1);
            assert!(s.list_user("alice").await.unwrap().is_empty());
            assert!(
                s.load(&b1.hash()).await.unwrap().is_some(),
                "other users untouched"
            );
        }

        #[tokio::test]
        async fn sweep_removes_only_expired() {
            let Some(s) = $make.await else { return };
            let (live, r1) = record("u1");
            let (dead, mut r2) = record("u1");
            r2.expires_at = r2.created_at - 1;
            s.create(&r1).await.unwrap();
            s.create(&r2).await.unwrap();
            s.sweep($crate::store::suite::now()).await.unwrap();
            assert!(s.load(&live.hash()).await.unwrap().is_some());
            // Redis drops the expired key itself, the others by sweeping.
            assert!(s
                .load(&dead.hash())
                .await
                .unwrap()
                .map_or(true, |r| r.expires_at < r.created_at));
        }

        #[tokio::test]
        async fn counters_count_expire_and_reset() {
            let Some(s) = $make.await else { return };
            let w = Duration::from_secs(60);
            assert_eq!(s.hit("k", w, false).await.unwrap().0, 1);
            let (n, left) = s.hit("k", w, false).await.unwrap();
            assert_eq!(n, 2);
            assert!(left > 0 && left <= 60_000);
            assert_eq!(s.peek("k").await.unwrap().unwrap().0, 2);
            assert!(s.peek("other").await.unwrap().is_none());
            // A release takes back one hit, never below zero, window kept.
            s.release("k").await.unwrap();
            let (n, left) = s.peek("k").await.unwrap().unwrap();
            assert_eq!(n, 1);
            assert!(left > 0 && left <= 60_000);
            s.release("k").await.unwrap();
            s.release("k").await.unwrap();
            assert_eq!(s.peek("k").await.unwrap().map_or(0, |c| c.0), 0);
            s.release("missing").await.unwrap();
            assert!(s.peek("missing").await.unwrap().is_none());
            assert_eq!(s.hit("k", w, false).await.unwrap().0, 1);
            s.reset("k").await.unwrap();
            assert!(s.peek("k").await.unwrap().is_none());
            // A short window lapses and the count starts again.
            s.hit("short", Duration::from_millis(300), false)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(450)).await;
            assert!(s.peek("short").await.unwrap().is_none());
            assert_eq!(s.hit("short", w, false).await.unwrap().0, 1);
            // Sliding windows restart on every hit.
            s.hit("slide", Duration::from_millis(400), true)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            s.hit("slide", Duration::from_millis(400), true)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(s.peek("slide").await.unwrap().unwrap().0, 2);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_hits_each_get_their_own_count() {
            let Some(s) = $make.await else { return };
            let s = std::sync::Arc::new(s);
            let w = Duration::from_secs(60);
            let tasks: Vec<_> = (0..40)
                .map(|_| {
                    let s = s.clone();
                    tokio::spawn(async move { s.hit("burst", w, false).await.unwrap().0 })
                })
                .collect();
            let mut seen = Vec::new();
            for t in tasks {
                seen.push(t.await.unwrap());
            }
            seen.sort_unstable();
            assert_eq!(seen, (1..=40).collect::<Vec<u64>>());
        }

        #[tokio::test]
        async fn ping_answers() {
            let Some(s) = $make.await else { return };
            s.ping().await.unwrap();
        }
    };
}

#[cfg(test)]
pub(crate) use crate::store_suite;
