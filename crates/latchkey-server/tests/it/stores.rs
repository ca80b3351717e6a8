//! One suite of session tests over real HTTP, written once and run against
//! every session store the server offers: SQLite (the default), memory,
//! PostgreSQL, and Redis sessions beside SQLite or PostgreSQL users.
//!
//! Each store gets a module of its own (`cargo test -p latchkey-server
//! --test it stores::sqlite::`); tests of PostgreSQL and Redis print
//! `SKIPPED` and pass when `LATCHKEY_TEST_POSTGRES_URL` /
//! `LATCHKEY_TEST_REDIS_URL` are unset.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::*;

/// Where one store's servers keep their state: the same directory and
/// options start the "same" server again after a restart.
struct Setup {
    dir: Arc<TempDir>,
    opts: Options,
}

impl Setup {
    fn new(database: Option<String>, sessions: Option<String>) -> Setup {
        Setup {
            dir: Arc::new(TempDir::new()),
            opts: Options {
                database,
                sessions,
                ..Default::default()
            },
        }
    }

    fn start(&self) -> Server {
        Server::start_in(self.dir.clone(), self.opts.clone())
    }
}

fn sqlite() -> Option<Setup> {
    Some(Setup::new(None, None))
}

fn memory() -> Option<Setup> {
    Some(Setup::new(None, Some("memory".into())))
}

fn postgres() -> Option<Setup> {
    Some(Setup::new(Some(postgres_url()?), None))
}

fn sqlite_users_redis_sessions() -> Option<Setup> {
    Some(Setup::new(None, Some(redis_url()?)))
}

fn postgres_users_redis_sessions() -> Option<Setup> {
    let redis = redis_url()?;
    Some(Setup::new(Some(postgres_url()?), Some(redis)))
}

/// `suite!(module, setup, extra tests...)`: the common tests, plus the
/// named extras (those that need a store outside the server process).
macro_rules! suite {
    ($store:ident, $setup:ident $(, $extra:ident)* $(,)?) => {
        mod $store {
            suite!(@tests $setup;
                login_profile_logout_replay,
                login_rotates_the_token,
                password_change_ends_other_sessions,
                deleting_another_users_session_is_404,
                sixth_failure_is_throttled
                $(, $extra)*);
        }
    };
    (@tests $setup:ident; $($test:ident),*) => {
        $(
            #[tokio::test]
            async fn $test() {
                if let Some(setup) = super::$setup() {
                    super::$test(setup).await;
                }
            }
        )*
    };
}

suite!(sqlite, sqlite, cli_end_sessions, restart_keeps_sessions);
suite!(memory, memory);
suite!(postgres, postgres, cli_end_sessions, restart_keeps_sessions);
suite!(
    sqlite_redis,
    sqlite_users_redis_sessions,
    cli_end_sessions,
    restart_keeps_sessions
);
suite!(
    postgres_redis,
    postgres_users_redis_sessions,
    cli_end_sessions,
    restart_keeps_sessions
);

async fn login_profile_logout_replay(setup: Setup) {
    let s = setup.start();
    s.add_user("alice", "admin");
    let alice = login(&s, "alice", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/profile", &alice).await,
        (
            200,
            json!({"message": "Welcome to your profile, alice!", "username": "alice", "role": "admin", "email": null, "email_verified": false, "mfa": {"totp": false, "recovery_codes_left": 0, "passkeys": 0}})
        )
    );
    assert_eq!(get_json(&s, "/admin", &alice).await.0, 200);
    let res = post(&s, "/logout", &alice, json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"message": "Logged out successfully."})
    );
    assert_eq!(
        get_json(&s, "/profile", &alice).await,
        (401, json!({"detail": "Not authenticated"})),
        "the logged-out cookie, replayed"
    );
    assert_eq!(get_json(&s, "/sessions", &alice).await.0, 401);
}

async fn login_rotates_the_token(setup: Setup) {
    let s = setup.start();
    s.add_user("alice", "user");
    let first = login(&s, "alice", PASSWORD).await;
    let res = post(
        &s,
        "/login",
        &first,
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let second = session_cookie(&s, &res);
    assert_ne!(first, second);
    assert_eq!(get_json(&s, "/profile", &first).await.0, 401, "old token");
    assert_eq!(get_json(&s, "/profile", &second).await.0, 200, "new token");
    let forged = format!("{}={}", s.cookie_name(), "A".repeat(43));
    assert_eq!(get_json(&s, "/profile", &forged).await.0, 401);
}

async fn password_change_ends_other_sessions(setup: Setup) {
    let s = setup.start();
    s.add_user("alice", "user");
    let here = login(&s, "alice", PASSWORD).await;
    let elsewhere = login(&s, "alice", PASSWORD).await;
    let new_pw = "violet harbor quantum pebble";
    let res = post(
        &s,
        "/password",
        &here,
        json!({"current_password": PASSWORD, "new_password": new_pw}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let rotated = session_cookie(&s, &res);
    assert_eq!(get_json(&s, "/profile", &rotated).await.0, 200);
    assert_eq!(get_json(&s, "/profile", &here).await.0, 401, "old token");
    assert_eq!(
        get_json(&s, "/profile", &elsewhere).await.0,
        401,
        "other session"
    );
    login(&s, "alice", new_pw).await;
}

async fn deleting_another_users_session_is_404(setup: Setup) {
    let s = setup.start();
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;
    let (st, list) = get_json(&s, "/sessions", &alice).await;
    assert_eq!(st, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap();
    let res = delete(&s, &format!("/sessions/{id}"), &bob).await;
    assert_eq!(res.status(), 404);
    assert!(res.json::<Value>().await.unwrap()["detail"].is_string());
    assert_eq!(
        get_json(&s, "/profile", &alice).await.0,
        200,
        "alice's session lives on"
    );
    // Her own DELETE works, and ends it on the server.
    let res = delete(&s, &format!("/sessions/{id}"), &alice).await;
    assert_eq!(res.status(), 204);
    assert_eq!(get_json(&s, "/profile", &alice).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 200);
}

async fn sixth_failure_is_throttled(setup: Setup) {
    let s = setup.start();
    s.add_user("alice", "user");
    for i in 1..=5 {
        let res = post(
            &s,
            "/login",
            "",
            json!({"username": "alice", "password": "not the password at all"}),
        )
        .await;
        assert_eq!(res.status(), 401, "failure {i}");
    }
    // The right password no longer helps.
    let res = post(
        &s,
        "/login",
        "",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&retry), "Retry-After {retry}");
    assert!(res.json::<Value>().await.unwrap()["detail"].is_string());
    assert!(other_username_not_throttled(&s, "bob").await);
}

/// Another username from the same address is not throttled.
async fn other_username_not_throttled(s: &Server, other: &str) -> bool {
    let res = post(
        s,
        "/login",
        "",
        json!({"username": other, "password": "not the password at all"}),
    )
    .await;
    res.status() == 401 && set_cookie(&res, s.cookie_name()).is_none()
}

async fn cli_end_sessions(setup: Setup) {
    let s = setup.start();
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let a1 = login(&s, "alice", PASSWORD).await;
    let a2 = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;
    let out = s.cli(&["end-sessions", "alice"], None);
    assert!(
        out.status.success(),
        "end-sessions failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ended 2 session(s)"), "{said}");
    assert_eq!(get_json(&s, "/profile", &a1).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &a2).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 200, "bob untouched");
    login(&s, "alice", PASSWORD).await;
}

async fn restart_keeps_sessions(setup: Setup) {
    let mut s = setup.start();
    s.add_user("alice", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let gone = login(&s, "alice", PASSWORD).await;
    assert_eq!(post(&s, "/logout", &gone, json!({})).await.status(), 200);
    assert!(s.terminate().success(), "SIGTERM exits 0");
    drop(s);
    let s = setup.start();
    assert_eq!(
        get_json(&s, "/profile", &alice).await,
        (
            200,
            json!({"message": "Welcome to your profile, alice!", "username": "alice", "role": "user", "email": null, "email_verified": false, "mfa": {"totp": false, "recovery_codes_left": 0, "passkeys": 0}})
        ),
        "session survives the restart"
    );
    assert_eq!(
        get_json(&s, "/profile", &gone).await.0,
        401,
        "a logout survives it too"
    );
}
