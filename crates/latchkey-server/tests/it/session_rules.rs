//! The contract's session rules, against the real binary over real HTTP and
//! real SQLite: idle and absolute timeouts, sessions surviving a restart,
//! graceful shutdown, changes made with `latchkey user ...` reaching a
//! running server on the next request, and the first-run setup link.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const NEW_PASSWORD: &str = "violet harbour quantum pickle lantern";

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

/// Sends SIGTERM without waiting for the process to end.
fn send_sigterm(s: &Server) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Waits (bounded) for the server process to exit; returns its status.
fn wait_exit(s: &mut Server, within: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < end,
            "server did not exit within {within:?}; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signs in with a fresh session; returns the cookie and the instants just
/// before the request was sent and just after its answer arrived.
async fn login_timed(s: &Server, user: &str) -> (String, Instant, Instant) {
    let before = Instant::now();
    let cookie = login(s, user, PASSWORD).await;
    (cookie, before, Instant::now())
}

#[tokio::test]
async fn idle_timeout_counts_activity_and_ends_idle_sessions() {
    let s = Server::start(Options {
        idle: Some("2s"),
        ..Default::default()
    });
    s.add_user("alice", "user");

    let (active, _, _) = login_timed(&s, "alice").await;
    let (early, early_sent, _) = login_timed(&s, "alice").await;
    let (idle, _, idle_done) = login_timed(&s, "alice").await;

    // `active` is used about every second for 5 s, well past the 2 s idle
    // timeout. `early` is checked once 1.7 s after sign-in: not ended before
    // the idle timeout. `idle` is left alone and checked once, 3.2 s after
    // its last use (idle 2 s + max(idle/10, 1 s) + 0.2 s slack). Polling
    // those two would count as activity, so each is checked exactly once.
    let early_due = early_sent + Duration::from_millis(1700);
    let idle_due = idle_done + Duration::from_millis(3200);
    let mut early_checked = false;
    let mut idle_checked = false;
    let start = Instant::now();
    for i in 1..=5u64 {
        let tick = start + Duration::from_secs(i);
        if !early_checked && early_due <= tick {
            sleep_until(early_due).await;
            assert_eq!(
                get_json(&s, "/profile", &early).await.0,
                200,
                "a session ended before its idle timeout"
            );
            early_checked = true;
        }
        if !idle_checked && idle_due <= tick {
            sleep_until(idle_due).await;
            assert_eq!(
                get_json(&s, "/profile", &idle).await,
                (401, json!({"detail": "Not authenticated"})),
                "an idle session outlived idle + max(idle/10, 1s)"
            );
            idle_checked = true;
        }
        sleep_until(tick).await;
        let (st, body) = get_json(&s, "/profile", &active).await;
        assert_eq!(
            st,
            200,
            "a session used every second ended after {:?}: {body}",
            start.elapsed()
        );
    }
    assert!(early_checked);
    assert!(idle_checked);
    assert!(start.elapsed() > Duration::from_secs(4));
    // The idle session stays ended; the active one still works.
    assert_eq!(get_json(&s, "/profile", &idle).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &active).await.0, 200);
}

#[tokio::test]
async fn absolute_timeout_ends_even_active_sessions_and_rules_over_idle() {
    // Idle (1m) is longer than absolute (3s): the absolute timeout rules.
    let s = Server::start(Options {
        idle: Some("1m"),
        absolute: Some("3s"),
        ..Default::default()
    });
    s.add_user("alice", "user");
    let (cookie, sent, done) = login_timed(&s, "alice").await;

    let deadline = done + Duration::from_millis(4200);
    let mut ended_at = None;
    let mut tick = Instant::now();
    while Instant::now() < deadline {
        tick += Duration::from_millis(500);
        sleep_until(tick.min(deadline)).await;
        let asked = Instant::now();
        let (st, body) = get_json(&s, "/profile", &cookie).await;
        match st {
            200 => {
                assert!(ended_at.is_none(), "an ended session came back to life");
            }
            401 => {
                assert_eq!(body, json!({"detail": "Not authenticated"}));
                assert!(
                    asked >= sent + Duration::from_millis(2500),
                    "session ended {:?} after sign-in, before the 3s absolute timeout",
                    asked - sent
                );
                ended_at.get_or_insert(asked);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    // One last check exactly at the deadline.
    if ended_at.is_none() {
        sleep_until(deadline).await;
        let st = get_json(&s, "/profile", &cookie).await.0;
        assert_eq!(
            st, 401,
            "a session used every 0.5s outlived its 3s absolute timeout by more than 1.2s"
        );
    }
    // The cookie's Max-Age is not beyond the absolute timeout.
    let res = sign_in(&s, "alice", PASSWORD).await;
    let line = set_cookie(&res, s.cookie_name()).unwrap();
    let max_age: u64 = line
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    assert!(max_age <= 3, "{line}");
}

#[tokio::test]
async fn sqlite_sessions_survive_a_restart() {
    let mut s = Server::start(Options::default());
    s.add_user("alice", "admin");
    let cookie = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);

    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log());

    let s2 = Server::start_in(s.dir.clone(), Options::default());
    assert_eq!(s2.database, s.database);
    assert_eq!(
        get_json(&s2, "/profile", &cookie).await,
        (
            200,
            json!({"message": "Welcome to your profile, alice!", "username": "alice", "role": "admin", "email": null, "email_verified": false, "mfa": {"totp": false, "recovery_codes_left": 0, "passkeys": 0}})
        )
    );
    assert_eq!(get_json(&s2, "/admin", &cookie).await.0, 200);
}

#[tokio::test]
async fn sigterm_exits_zero_and_says_so() {
    let mut s = Server::start(Options::default());
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);
    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log());
    let log = s.log();
    assert!(log.contains("shutting down"), "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_and_stops_accepting() {
    let mut s = Server::start(Options::default());
    s.add_user("alice", "user");

    // A login whose body is still on its way when SIGTERM arrives.
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        s.addr,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    // Let the server read the head and start the handler.
    tokio::time::sleep(Duration::from_millis(400)).await;

    send_sigterm(&s);
    s.wait_log("shutting down", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the server exited with a request in flight"
    );

    // No new connections are served.
    let refused = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(s.url("/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new request was served after SIGTERM: {:?}",
        refused.map(|r| r.status())
    );

    // The request in flight completes normally.
    conn.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer))
        .await
        .expect("answer to the request in flight")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight login got: {answer}"
    );
    assert!(answer.contains("Login successful!"), "{answer}");

    let status = wait_exit(&mut s, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log());
}

#[tokio::test]
async fn role_change_takes_effect_on_the_next_request() {
    let s = Server::start(Options::default());
    s.add_user("bob", "user");
    let bob = login(&s, "bob", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/admin", &bob).await,
        (403, json!({"detail": "Forbidden"}))
    );

    let out = s.cli(&["set-role", "bob", "admin"], None);
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(
        get_json(&s, "/admin", &bob).await,
        (200, json!({"message": "Admin dashboard for bob."}))
    );
    assert_eq!(get_json(&s, "/profile", &bob).await.1["role"], "admin");

    // bob is the only admin: demoting him needs --force.
    let out = s.cli(&["set-role", "bob", "user", "--force"], None);
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(
        get_json(&s, "/admin", &bob).await,
        (403, json!({"detail": "Forbidden"}))
    );
    assert_eq!(get_json(&s, "/profile", &bob).await.1["role"], "user");
    // Still the same session throughout: no new sign-in was needed.
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 200);

    // A new sign-in sees the stored role too.
    let out = s.cli(&["set-role", "bob", "admin"], None);
    assert!(out.status.success());
    let again = login(&s, "bob", PASSWORD).await;
    assert_eq!(get_json(&s, "/admin", &again).await.0, 200);
}

#[tokio::test]
async fn user_remove_ends_sessions_and_sign_in() {
    let s = Server::start(Options::default());
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &alice).await.0, 200);

    let out = s.cli(&["remove", "alice"], None);
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(
        get_json(&s, "/profile", &alice).await,
        (401, json!({"detail": "Not authenticated"}))
    );
    let res = sign_in(&s, "alice", PASSWORD).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({"detail": "Invalid credentials"})
    );
    // Others are untouched.
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 200);
    // Removing again: an error, not a success.
    let out = s.cli(&["remove", "alice"], None);
    assert!(!out.status.success());
}

#[tokio::test]
async fn user_end_sessions_signs_out_only_that_user() {
    let s = Server::start(Options::default());
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let a1 = login(&s, "alice", PASSWORD).await;
    let a2 = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;
    for c in [&a1, &a2, &bob] {
        assert_eq!(get_json(&s, "/profile", c).await.0, 200);
    }

    let out = s.cli(&["end-sessions", "alice"], None);
    assert!(out.status.success(), "{:?}", out);
    assert_eq!(get_json(&s, "/profile", &a1).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &a2).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 200);
    // Alice can sign in again.
    let a3 = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &a3).await.0, 200);
}

#[tokio::test]
async fn user_set_password_ends_sessions_and_changes_the_password() {
    let s = Server::start(Options::default());
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;

    let out = s.cli(
        &["set-password", "alice", "--password-stdin"],
        Some(&format!("{NEW_PASSWORD}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get_json(&s, "/profile", &alice).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 200);

    let res = sign_in(&s, "alice", PASSWORD).await;
    assert_eq!(res.status(), 401, "the old password still works");
    let fresh = login(&s, "alice", NEW_PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &fresh).await.0, 200);

    // A refused password changes nothing and ends nothing.
    let out = s.cli(
        &["set-password", "alice", "--password-stdin"],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert_eq!(get_json(&s, "/profile", &fresh).await.0, 200);
    let again = login(&s, "alice", NEW_PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &again).await.0, 200);
}

/// The setup code from the server's first-run log line.
fn setup_code(s: &Server) -> String {
    let prefix = format!("http://{}/setup?code=", s.addr);
    let log = s.wait_log(&prefix, Duration::from_secs(10));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&prefix)).collect();
    assert_eq!(lines.len(), 1, "one setup line expected:\n{log}");
    let i = lines[0].find(&prefix).unwrap() + prefix.len();
    let code: String = lines[0][i..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(code.len() >= 16, "setup code too short: {code:?}");
    code
}

async fn get_setup(s: &Server, query: &str, html: bool) -> (u16, String) {
    let mut req = client().get(s.url(&format!("/setup{query}")));
    if html {
        req = req.header("accept", "text/html");
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn post_setup(s: &Server, code: &str, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(s.url("/setup"))
        .json(&json!({"code": code, "username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn first_run_setup_link_creates_one_admin_once() {
    let s = Server::start(Options::default());
    let code = setup_code(&s);

    for html in [false, true] {
        assert_eq!(get_setup(&s, "", html).await.0, 404);
        assert_eq!(get_setup(&s, "?code=", html).await.0, 404);
        assert_eq!(
            get_setup(&s, "?code=0123456789abcdef0123456789abcdef", html)
                .await
                .0,
            404
        );
        let wrong = format!("?code={}x", &code[..code.len() - 1]);
        assert_eq!(get_setup(&s, &wrong, html).await.0, 404);
    }
    // A wrong code cannot create a user either.
    let res = post_setup(&s, "0123456789abcdef0123456789abcdef", "mallory", PASSWORD).await;
    assert_eq!(res.status(), 404);
    let res = sign_in(&s, "mallory", PASSWORD).await;
    assert_eq!(res.status(), 401);

    // The right code gives a browser the form.
    let (st, page) = get_setup(&s, &format!("?code={code}"), true).await;
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("<form"), "{page}");
    assert!(page.contains("name=\"username\""), "{page}");
    assert!(page.contains("name=\"password\""), "{page}");

    // A password the rules refuse is refused, and the code keeps working.
    let res = post_setup(&s, &code, "root", "short").await;
    assert_eq!(res.status(), 422);
    assert!(res.json::<serde_json::Value>().await.unwrap()["detail"].is_string());

    let res = post_setup(&s, &code, "root", PASSWORD).await;
    assert!(
        res.status().is_success(),
        "setup failed: {} {}",
        res.status(),
        res.text().await.unwrap()
    );
    let root = login(&s, "root", PASSWORD).await;
    assert_eq!(
        get_json(&s, "/admin", &root).await,
        (200, json!({"message": "Admin dashboard for root."}))
    );
    assert_eq!(get_json(&s, "/profile", &root).await.1["role"], "admin");

    // The code then stops working.
    assert_eq!(get_setup(&s, &format!("?code={code}"), true).await.0, 404);
    assert_eq!(get_setup(&s, &format!("?code={code}"), false).await.0, 404);
    let res = post_setup(&s, &code, "second", NEW_PASSWORD).await;
    assert_eq!(res.status(), 404);
    let out = s.cli(&["list"], None);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("root"), "{list}");
    assert!(!list.contains("second"), "{list}");
}

#[tokio::test]
async fn setup_code_stops_working_once_a_user_exists() {
    let s = Server::start(Options::default());
    let code = setup_code(&s);
    assert_eq!(get_setup(&s, &format!("?code={code}"), true).await.0, 200);
    s.add_user("alice", "user");
    assert_eq!(get_setup(&s, &format!("?code={code}"), true).await.0, 404);
    let res = post_setup(&s, &code, "root", PASSWORD).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn no_setup_link_when_users_exist() {
    let mut s = Server::start(Options::default());
    s.add_user("alice", "admin");
    assert!(s.terminate().success());
    let s2 = Server::start_in(s.dir.clone(), Options::default());
    // Any readiness-dependent start-up work is done once /readyz answers 200.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let st = client()
            .get(s2.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        if st == 200 {
            break;
        }
        assert!(Instant::now() < end, "/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s2.log();
    assert!(!log.contains("/setup?code="), "{log}");
}
