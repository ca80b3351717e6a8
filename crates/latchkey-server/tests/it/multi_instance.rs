//! Two `latchkey serve` processes sharing one users database and one
//! session store behave as one server: sessions, logouts, password changes,
//! removals, role changes and failure counts are the same on both.
//!
//! Run with PostgreSQL users + Redis sessions (same schema, same prefix) and
//! with everything in PostgreSQL; each prints `SKIPPED` and passes when its
//! engines' variables are unset.

use serde_json::json;

use crate::support::*;

/// Two servers on the same stores, with the same secret key.
struct Pair {
    a: Server,
    b: Server,
}

impl Pair {
    /// Starts both at once, so their migrations run concurrently.
    fn start(database: String, sessions: Option<String>) -> Pair {
        let opts = Options {
            database: Some(database),
            sessions,
            ..Default::default()
        };
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| Server::start(opts.clone()));
            let b = scope.spawn(|| Server::start(opts.clone()));
            (a.join().unwrap(), b.join().unwrap())
        });
        Pair { a, b }
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.a.cli(args, None);
        assert!(
            out.status.success(),
            "latchkey user {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn postgres_and_redis() -> Option<Pair> {
    let redis = redis_url()?;
    let pg = postgres_url()?;
    Some(Pair::start(pg, Some(redis)))
}

fn postgres_only() -> Option<Pair> {
    Some(Pair::start(postgres_url()?, None))
}

/// `pair_suite!(module, setup)`: every shared-state test on one setup.
macro_rules! pair_suite {
    ($module:ident, $setup:ident) => {
        mod $module {
            pair_suite!(@tests $setup;
                both_ready_after_starting_together,
                login_on_a_profile_on_b,
                logout_on_b_ends_it_on_a,
                password_change_on_a_ends_session_used_on_b,
                failures_count_across_instances,
                cli_remove_signs_out_on_both,
                cli_role_change_seen_on_both,
                logout_racing_reads_is_never_stale);
        }
    };
    (@tests $setup:ident; $($test:ident),*) => {
        $(
            #[tokio::test]
            async fn $test() {
                if let Some(pair) = super::$setup() {
                    super::$test(pair).await;
                }
            }
        )*
    };
}

pair_suite!(postgres_users_redis_sessions, postgres_and_redis);
pair_suite!(all_postgres, postgres_only);

async fn both_ready_after_starting_together(p: Pair) {
    for s in [&p.a, &p.b] {
        let res = client().get(s.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", s.log());
    }
    // Both created the tables at once: neither logged a failure.
    for s in [&p.a, &p.b] {
        assert!(!s.log().contains("ERROR"), "{}", s.log());
    }
    p.a.add_user("alice", "user");
    login(&p.b, "alice", PASSWORD).await;
}

async fn login_on_a_profile_on_b(p: Pair) {
    p.a.add_user("alice", "admin");
    let cookie = login(&p.a, "alice", PASSWORD).await;
    assert_eq!(
        get_json(&p.b, "/profile", &cookie).await,
        (
            200,
            json!({"message": "Welcome to your profile, alice!", "username": "alice", "role": "admin", "email": null, "email_verified": false, "mfa": {"totp": false, "recovery_codes_left": 0, "passkeys": 0}})
        )
    );
    assert_eq!(get_json(&p.b, "/admin", &cookie).await.0, 200);
    let (st, list) = get_json(&p.b, "/sessions", &cookie).await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["current"], true);
}

async fn logout_on_b_ends_it_on_a(p: Pair) {
    p.a.add_user("alice", "user");
    let cookie = login(&p.a, "alice", PASSWORD).await;
    assert_eq!(get_json(&p.a, "/profile", &cookie).await.0, 200);
    assert_eq!(
        post(&p.b, "/logout", &cookie, json!({})).await.status(),
        200
    );
    assert_eq!(
        get_json(&p.a, "/profile", &cookie).await,
        (401, json!({"detail": "Not authenticated"}))
    );
    assert_eq!(get_json(&p.b, "/profile", &cookie).await.0, 401);
}

async fn password_change_on_a_ends_session_used_on_b(p: Pair) {
    p.a.add_user("alice", "user");
    let on_a = login(&p.a, "alice", PASSWORD).await;
    let on_b = login(&p.b, "alice", PASSWORD).await;
    assert_eq!(get_json(&p.b, "/profile", &on_b).await.0, 200);
    let new_pw = "violet harbor quantum pebble";
    let res = post(
        &p.a,
        "/password",
        &on_a,
        json!({"current_password": PASSWORD, "new_password": new_pw}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let line = set_cookie(&res, p.a.cookie_name()).expect("new cookie");
    let rotated = format!("{}={}", p.a.cookie_name(), token_of(&line));
    assert_eq!(
        get_json(&p.b, "/profile", &on_b).await.0,
        401,
        "B's session"
    );
    assert_eq!(get_json(&p.b, "/profile", &on_a).await.0, 401, "old token");
    assert_eq!(get_json(&p.b, "/profile", &rotated).await.0, 200);
    // The new password works on B, the old one on neither.
    login(&p.b, "alice", new_pw).await;
    let res = post(
        &p.b,
        "/login",
        "",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 401);
}

async fn failures_count_across_instances(p: Pair) {
    p.a.add_user("alice", "user");
    let wrong = json!({"username": "alice", "password": "not the password at all"});
    for (i, s) in [&p.a, &p.a, &p.a, &p.b, &p.b].into_iter().enumerate() {
        let res = post(s, "/login", "", wrong.clone()).await;
        assert_eq!(res.status(), 401, "failure {}", i + 1);
    }
    let right = json!({"username": "alice", "password": PASSWORD});
    for s in [&p.a, &p.b] {
        let res = post(s, "/login", "", right.clone()).await;
        assert_eq!(res.status(), 429, "6th attempt on {}", s.addr);
        assert!(res.headers().contains_key("retry-after"));
    }
}

async fn cli_remove_signs_out_on_both(p: Pair) {
    p.a.add_user("alice", "user");
    p.a.add_user("bob", "user");
    let on_a = login(&p.a, "alice", PASSWORD).await;
    let on_b = login(&p.b, "alice", PASSWORD).await;
    let bob = login(&p.b, "bob", PASSWORD).await;
    let said = p.cli_ok(&["remove", "alice"]);
    assert!(said.contains("ended 2 session(s)"), "{said}");
    for s in [&p.a, &p.b] {
        assert_eq!(get_json(s, "/profile", &on_a).await.0, 401);
        assert_eq!(get_json(s, "/profile", &on_b).await.0, 401);
        assert_eq!(get_json(s, "/profile", &bob).await.0, 200);
        let res = post(
            s,
            "/login",
            "",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
        assert_eq!(res.status(), 401, "a removed user cannot sign in");
    }
}

async fn cli_role_change_seen_on_both(p: Pair) {
    p.a.add_user("alice", "user");
    let on_a = login(&p.a, "alice", PASSWORD).await;
    let on_b = login(&p.b, "alice", PASSWORD).await;
    for s in [&p.a, &p.b] {
        assert_eq!(get_json(s, "/admin", &on_a).await.0, 403);
    }
    p.cli_ok(&["set-role", "alice", "admin"]);
    for s in [&p.a, &p.b] {
        for cookie in [&on_a, &on_b] {
            let (st, body) = get_json(s, "/profile", cookie).await;
            assert_eq!((st, &body["role"]), (200, &json!("admin")), "{}", s.addr);
            assert_eq!(get_json(s, "/admin", cookie).await.0, 200);
        }
    }
    // alice is the only admin: demoting her needs --force.
    p.cli_ok(&["set-role", "alice", "user", "--force"]);
    for s in [&p.a, &p.b] {
        assert_eq!(get_json(s, "/admin", &on_b).await.0, 403, "{}", s.addr);
    }
}

/// Issue 11's revocation race over HTTP: each round signs in on A, reads
/// the profile on B (so B caches the session), then logs out on A while B
/// reads at the same moment; once the logout has answered, B must answer
/// 401. Half-way, every revocation listener (PostgreSQL `LISTEN`, Redis
/// pub/sub) is killed: the instances reconnect, and meanwhile serve from
/// the store, never stale and never a 500. `LATCHKEY_RACE_ROUNDS` rounds
/// (default 60: CI's short run; 1,000 for the full one).
async fn logout_racing_reads_is_never_stale(p: Pair) {
    let rounds: usize = std::env::var("LATCHKEY_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    p.a.add_user("alice", "user");
    for round in 0..rounds {
        if round == rounds / 2 {
            kill_revocation_listeners();
        }
        let cookie = login(&p.a, "alice", PASSWORD).await;
        let (st, _) = get_json(&p.b, "/profile", &cookie).await;
        assert_eq!(st, 200, "round {round}: B sees the new session");
        let (logout, racing) = tokio::join!(
            post(&p.a, "/logout", &cookie, json!({})),
            get_json(&p.b, "/profile", &cookie)
        );
        assert_eq!(logout.status(), 200, "round {round}: logout");
        assert!(
            [200, 401].contains(&racing.0),
            "round {round}: a read racing the logout got {}",
            racing.0
        );
        let (after, body) = get_json(&p.b, "/profile", &cookie).await;
        assert_eq!(
            (after, body),
            (401, json!({"detail": "Not authenticated"})),
            "round {round}: B answered after A's logout had answered"
        );
    }
}

/// Ends every revocation listener of this machine's PostgreSQL and Redis
/// (other tests' instances too, which must survive it as well).
fn kill_revocation_listeners() {
    if let Some(url) = postgres_base() {
        psql(
            &url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN \"latchkey_%'",
        );
    }
    if let Some(url) = redis_base() {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &url, "CLIENT", "KILL", "TYPE", "pubsub"])
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli CLIENT KILL failed");
    }
}
