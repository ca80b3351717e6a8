//! Limits that hold under concurrency and revocations that win races, over
//! real HTTP against the real binary: parallel bursts against each throttle
//! limit, the bounded hash queue, abandoned sign-ins, revocations racing a
//! stream of sign-ins, removals the session store missed, log size under
//! hostile usernames, and a `Cookie` header with a non-ASCII byte.
//!
//! Each test is bounded in requests and seconds and talks to 127.0.0.1 only.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// A `serve` with these extra flags and `alice` (role user) in it.
fn server(args: &[&str]) -> Server {
    let s = Server::start(Options {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    s.add_user("alice", "user");
    s
}

/// POST /login with JSON, as client `xff` through a trusted proxy when given;
/// returns (status, Retry-After, cookie to send back when signed in).
async fn sign_in(
    c: &reqwest::Client,
    s: &Server,
    user: &str,
    password: &str,
    xff: Option<&str>,
) -> (u16, Option<String>, Option<String>) {
    let mut req = c
        .post(s.url("/login"))
        .json(&json!({ "username": user, "password": password }));
    if let Some(ip) = xff {
        req = req.header("x-forwarded-for", ip);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let cookie = set_cookie(&res, s.cookie_name())
        .map(|line| format!("{}={}", s.cookie_name(), token_of(&line)));
    if status != 200 {
        let v: Value = res.json().await.unwrap_or(Value::Null);
        assert!(v["detail"].is_string(), "{status} without a detail: {v}");
        assert!(cookie.is_none(), "a refused sign-in set a cookie");
    }
    (status, retry, cookie)
}

/// Sends all `attempts` (user, password, xff) at once; returns the statuses.
async fn burst(s: &Server, attempts: Vec<(String, &'static str, Option<String>)>) -> Vec<u16> {
    let c = client();
    let tasks: Vec<_> = attempts
        .into_iter()
        .map(|(user, password, xff)| {
            let (c, url) = (c.clone(), s.url("/login"));
            let name = s.cookie_name();
            tokio::spawn(async move {
                let mut req = c
                    .post(url)
                    .json(&json!({ "username": user, "password": password }));
                if let Some(ip) = xff {
                    req = req.header("x-forwarded-for", ip);
                }
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                if status == 429 || status == 503 {
                    assert!(res.headers().contains_key("retry-after"), "{status}");
                }
                if status != 200 {
                    assert!(!res
                        .headers()
                        .get_all("set-cookie")
                        .iter()
                        .any(|v| v.to_str().unwrap_or("").starts_with(name)));
                }
                status
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

// ------------------------------------------------------- limits under bursts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_user_from_one_address_verifies_at_most_five() {
    let s = server(&[]);
    let got = burst(
        &s,
        (0..30)
            .map(|_| ("alice".to_owned(), "wrong password here", None))
            .collect(),
    )
    .await;
    assert_eq!(count(&got, 401), 5, "{got:?}");
    assert_eq!(count(&got, 429), 25, "{got:?}");
    // Case and width variants are the same account and the same counter.
    let (st, _, _) = sign_in(&client(), &s, "ALICE", PASSWORD, None).await;
    assert_eq!(st, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_against_one_account_from_many_addresses_stops_at_the_account_limit() {
    let s = server(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--max-failures-per-account",
        "10",
    ]);
    let got = burst(
        &s,
        (0..40)
            .map(|i| {
                let ip = format!("198.51.100.{}", i + 1);
                ("alice".to_owned(), "wrong password here", Some(ip))
            })
            .collect(),
    )
    .await;
    assert_eq!(count(&got, 401), 10, "{got:?}");
    assert_eq!(count(&got, 429), 30, "{got:?}");
    let (st, _, _) = sign_in(&client(), &s, "alice", PASSWORD, Some("192.0.2.99")).await;
    assert_eq!(st, 429, "the account is locked from every address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spraying_usernames_from_one_address_stops_at_the_address_limit() {
    let s = server(&["--max-failures-per-address", "12"]);
    let got = burst(
        &s,
        (0..40)
            .map(|i| (format!("user{i}"), "Spring2024!", None))
            .collect(),
    )
    .await;
    assert_eq!(count(&got, 401), 12, "{got:?}");
    assert_eq!(count(&got, 429), 28, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_is_counted_by_its_slash_64_and_proxies_by_cidr() {
    let s = server(&[
        "--trusted-proxies",
        "127.0.0.0/8,10.0.0.0/8",
        "--max-failures-per-address",
        "3",
    ]);
    let c = client();
    // Through two trusted hops (one inside 10/8), clients with ports.
    for (i, client_ip) in [
        "[2001:db8:7:7::1]:4711",
        "2001:db8:7:7::2",
        "[2001:db8:7:7:ffff::3]:1",
    ]
    .iter()
    .enumerate()
    {
        let xff = format!("6.6.6.6, {client_ip}, 10.1.2.3");
        let (st, _, _) = sign_in(&c, &s, &format!("u{i}"), "nope nope nope", Some(&xff)).await;
        assert_eq!(st, 401);
    }
    // Another address in the same /64: blocked; another /64: fine.
    let (st, retry, _) = sign_in(&c, &s, "alice", PASSWORD, Some("2001:db8:7:7:abcd::9")).await;
    assert_eq!(st, 429);
    assert!(retry.is_some());
    let (st, _, _) = sign_in(&c, &s, "alice", PASSWORD, Some("2001:db8:7:8::9")).await;
    assert_eq!(st, 200);
    // An entry that is no address ends the walk: what stands left of it
    // (written by the client) cannot pick a fresh address.
    for i in 0..3 {
        let xff = format!("203.0.113.{i}, garbage, 192.0.2.50:8080");
        let (st, _, _) = sign_in(&c, &s, &format!("v{i}"), "nope nope nope", Some(&xff)).await;
        assert_eq!(st, 401);
    }
    let (st, _, _) = sign_in(&c, &s, "alice", PASSWORD, Some("203.0.113.200, 192.0.2.50")).await;
    assert_eq!(
        st, 429,
        "192.0.2.50 is the client however the left is forged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hash_queue_answers_503_with_retry_after_and_recovers() {
    let s = server(&["--max-pending-logins", "3"]);
    let got = burst(
        &s,
        (0..30)
            .map(|i| (format!("user{i}"), "not the password", None))
            .collect(),
    )
    .await;
    assert!(
        got.iter().all(|st| *st == 401 || *st == 503),
        "only 401 and 503: {got:?}"
    );
    assert!(count(&got, 503) >= 10, "the queue held 3: {got:?}");
    assert!(count(&got, 401) >= 3, "{got:?}");
    // Refused for load, not counted: alice still signs in at once.
    let (st, _, _) = sign_in(&client(), &s, "alice", PASSWORD, None).await;
    assert_eq!(st, 200);
}

// ------------------------------------------------------ abandoned sign-ins

/// User + system CPU the process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), 1-based 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Sends a whole sign-in and hangs up after `after`, without reading.
fn abandoned_login(addr: &str, user: &str, after: Duration) {
    let body = json!({ "username": user, "password": "some wrong password" }).to_string();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    write!(
        sock,
        "POST /login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(after);
    drop(sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_whose_clients_hung_up_are_not_hashed() {
    let mut s = server(&[
        "--max-failures-per-address",
        "10000",
        "--max-pending-logins",
        "1000",
    ]);
    let pid = s.child.id();
    let c = client();
    // What one hash costs here: a few sign-ins one after another.
    let before = cpu_time(pid);
    let started = Instant::now();
    for i in 0..6 {
        let (st, _, _) = sign_in(&c, &s, &format!("probe{i}"), "not it at all", None).await;
        assert_eq!(st, 401);
    }
    let per_login_cpu = (cpu_time(pid) - before) / 6;
    let per_login = started.elapsed() / 6;
    eprintln!("one sign-in: {per_login:?} wall, {per_login_cpu:?} CPU");

    // 300 sign-ins whose clients go away after 5 ms.
    let before = cpu_time(pid);
    let addr = s.addr.clone();
    let flood = std::thread::spawn(move || {
        let threads: Vec<_> = (0..300)
            .map(|i| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    abandoned_login(&addr, &format!("gone{i}"), Duration::from_millis(5))
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    // A real sign-in right behind them is not queued behind 300 hashes.
    let started = Instant::now();
    let (st, _, _) = sign_in(&c, &s, "alice", PASSWORD, None).await;
    let took = started.elapsed();
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_time(pid) - before;
    eprintln!(
        "after 300 abandoned sign-ins: a real one took {took:?}; the server spent {spent:?} CPU"
    );
    // Hashing all 300 would cost 300 x per_login_cpu (seconds here).
    assert!(
        spent < per_login_cpu * 60 + Duration::from_millis(500),
        "{spent:?} of CPU for 300 abandoned sign-ins (one costs {per_login_cpu:?})"
    );
    assert!(
        took < per_login * 20 + Duration::from_millis(500),
        "a real sign-in took {took:?} (one alone: {per_login:?})"
    );
    assert!(s.child.try_wait().unwrap().is_none(), "server died");
    s.terminate();
}

// ---------------------------------------------- revocations racing sign-ins

#[derive(Clone, Copy, Debug)]
enum Revocation {
    Demote,
    Remove,
    ResetPassword,
    EndSessions,
    CliEndSessions,
    /// bob, signed in elsewhere, ends his other sessions.
    EndOthers,
}

/// Starts 12 sign-ins of bob (an admin), revokes while they are in flight
/// (most wait for a hash), then checks every session any of them got.
/// Each comes from an address of its own: from one address at most 5 would
/// be let through at once, right password or not.
async fn race(what: Revocation) {
    let s = server(&["--trusted-proxies", "127.0.0.1"]);
    s.add_user("root", "admin");
    s.add_user("bob", "admin");
    let admin = login(&s, "root", PASSWORD).await;
    let bobs_own = login(&s, "bob", PASSWORD).await;
    let c = client();
    let logins: Vec<_> = (0..12)
        .map(|i| {
            let (c, s_url, name) = (c.clone(), s.url("/login"), s.cookie_name());
            tokio::spawn(async move {
                let res = c
                    .post(s_url)
                    .header("x-forwarded-for", format!("198.51.100.{}", i + 1))
                    .json(&json!({ "username": "bob", "password": PASSWORD }))
                    .send()
                    .await
                    .unwrap();
                let done = Instant::now();
                let status = res.status().as_u16();
                let cookie =
                    set_cookie(&res, name).map(|line| format!("{name}={}", token_of(&line)));
                (status, cookie, done)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let admin_post = |path: &str, body: Value| {
        c.post(s.url(path))
            .header("cookie", &admin)
            .json(&body)
            .send()
    };
    let new_password = "a completely different passphrase 2026";
    let sent = Instant::now();
    match what {
        Revocation::Demote => {
            let r = admin_post("/admin/users/bob/role", json!({ "role": "user" })).await;
            assert_eq!(r.unwrap().status(), 200);
        }
        Revocation::Remove => {
            let r = admin_post("/admin/users/bob/remove", json!({})).await;
            assert_eq!(r.unwrap().status(), 200);
        }
        Revocation::ResetPassword => {
            let body = json!({ "new_password": new_password });
            let r = admin_post("/admin/users/bob/password", body).await;
            assert_eq!(r.unwrap().status(), 200);
        }
        Revocation::EndSessions => {
            let r = admin_post("/admin/users/bob/end-sessions", json!({})).await;
            assert_eq!(r.unwrap().status(), 200);
        }
        Revocation::CliEndSessions => {
            let out = s.cli(&["end-sessions", "bob"], None);
            assert!(out.status.success(), "{out:?}");
        }
        Revocation::EndOthers => {
            let r = c
                .post(s.url("/sessions/revoke-others"))
                .header("cookie", &bobs_own)
                .json(&json!({}))
                .send()
                .await;
            assert_eq!(r.unwrap().status(), 200);
        }
    }
    let revoked = Instant::now();
    let (mut after, mut in_flight) = (0, 0);
    let mut sessions = Vec::new();
    for t in logins {
        let (status, cookie, done) = t.await.unwrap();
        assert!(status == 200 || status == 401, "{what:?}: {status}");
        in_flight += usize::from(done > sent);
        if status == 200 {
            sessions.push(cookie.expect("a 200 sign-in sets a cookie"));
            after += usize::from(done > revoked);
        }
    }
    eprintln!(
        "{what:?}: {in_flight} of 12 sign-ins were in flight when the change was sent; {} succeeded, {after} of them after it was made",
        sessions.len()
    );
    assert!(in_flight > 0, "{what:?}: no sign-in raced the change");
    for cookie in &sessions {
        let (st, body) = get_json(&s, "/profile", cookie).await;
        match what {
            Revocation::Demote => {
                assert!(
                    st == 401 || (st == 200 && body["role"] == "user"),
                    "{what:?}: {st} {body}"
                );
                let (st, _) = get_json(&s, "/admin", cookie).await;
                assert!(st == 401 || st == 403, "{what:?}: /admin {st}");
            }
            _ => assert_eq!(
                st, 401,
                "{what:?}: a session outlived the revocation: {body}"
            ),
        }
    }
    // A sign-in after the change obeys it.
    let (st, _, cookie) = sign_in(&c, &s, "bob", PASSWORD, None).await;
    match what {
        Revocation::Demote => {
            assert_eq!(st, 200);
            let (_, body) = get_json(&s, "/profile", &cookie.unwrap()).await;
            assert_eq!(body["role"], "user");
        }
        Revocation::Remove | Revocation::ResetPassword => assert_eq!(st, 401),
        Revocation::EndSessions | Revocation::CliEndSessions | Revocation::EndOthers => {
            assert_eq!(st, 200)
        }
    }
    // The session that ended the others is the one that stays.
    let (st, _) = get_json(&s, "/profile", &bobs_own).await;
    match what {
        Revocation::EndOthers => assert_eq!(st, 200, "the kept session was ended"),
        Revocation::Demote => assert_eq!(st, 200),
        _ => assert_eq!(st, 401),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_racing_sign_ins_leaves_no_admin_session() {
    race(Revocation::Demote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_racing_sign_ins_leaves_no_working_session() {
    race(Revocation::Remove).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_racing_sign_ins_leaves_no_old_session() {
    race(Revocation::ResetPassword).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_sessions_racing_sign_ins_leaves_no_session() {
    race(Revocation::EndSessions).await;
    race(Revocation::CliEndSessions).await;
    race(Revocation::EndOthers).await;
}

// ------------------------------------------- removals the store did not see

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_with_the_session_store_out_of_reach_still_signs_out() {
    let Some(redis) = redis_url() else {
        return;
    };
    let s = Server::start(Options {
        sessions: Some(redis),
        ..Default::default()
    });
    for name in ["alice", "bob", "carol"] {
        s.add_user(name, "user");
    }
    let (alice, bob, carol) = (
        login(&s, "alice", PASSWORD).await,
        login(&s, "bob", PASSWORD).await,
        login(&s, "carol", PASSWORD).await,
    );
    // The CLI cannot reach the session store (down, or the wrong URL).
    let unreachable = "redis://127.0.0.1:9";
    let run = |args: &[&str], stdin: Option<&str>| {
        let out = cli(&s.database, Some(unreachable), args, stdin);
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {said}");
        assert!(
            said.contains("warning"),
            "{args:?} says the store was not changed: {said}"
        );
        said
    };
    run(&["remove", "alice"], None);
    run(&["end-sessions", "bob"], None);
    run(
        &["set-password", "carol", "--password-stdin"],
        Some("carol's brand new passphrase 99\n"),
    );
    for (who, cookie) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let (st, body) = get_json(&s, "/profile", cookie).await;
        assert_eq!(st, 401, "{who}'s session outlived the change: {body}");
    }
    let list = s.cli(&["list"], None);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("alice"));
    assert!(!s.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_beside_a_memory_store_signs_users_out() {
    let s = Server::start(Options {
        sessions: Some("memory".into()),
        ..Default::default()
    });
    s.add_user("alice", "user");
    s.add_user("bob", "user");
    let alice = login(&s, "alice", PASSWORD).await;
    let bob = login(&s, "bob", PASSWORD).await;
    assert!(s.cli(&["remove", "alice"], None).status.success());
    assert!(s.cli(&["end-sessions", "bob"], None).status.success());
    assert_eq!(get_json(&s, "/profile", &alice).await.0, 401);
    assert_eq!(get_json(&s, "/profile", &bob).await.0, 401);
    // bob signs in again and stays signed in.
    let again = login(&s, "bob", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &again).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_revocation_is_seen_by_the_server_at_once() {
    let s = server(&[]);
    for round in 0..15 {
        let cookie = login(&s, "alice", PASSWORD).await;
        assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);
        assert!(s.cli(&["end-sessions", "alice"], None).status.success());
        let (st, body) = get_json(&s, "/profile", &cookie).await;
        assert_eq!(st, 401, "round {round}: {body}");
    }
}

// ----------------------------------------------------------------- the log

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_usernames_do_not_flood_the_log() {
    let s = server(&[]);
    let c = client();
    let long = "x".repeat(60_000);
    let before = s.log().len();
    for _ in 0..25 {
        let (st, _, _) = sign_in(&c, &s, &long, "a password of no use", None).await;
        assert!(st == 401 || st == 429, "{st}");
    }
    let grew = s.log().len() - before;
    eprintln!("25 sign-ins with a 60 KB username added {grew} bytes of log");
    assert!(grew < 25 * 1024, "the log grew by {grew} bytes");
    assert!(
        !s.log().contains(&"x".repeat(65)),
        "more than 64 characters logged"
    );
}

// --------------------------------------------------------- cookie bytes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_byte_in_one_cookie_leaves_the_session_cookie_readable() {
    let s = server(&[]);
    let cookie = login(&s, "alice", PASSWORD).await;
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!(
        "GET /profile HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncookie: theme=",
        s.addr
    )
    .into_bytes();
    req.extend_from_slice(b"caf\xe9; ");
    req.extend_from_slice(cookie.as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    sock.write_all(&req).unwrap();
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("alice"), "{answer}");
}

// ------------------------------------------------------------------ sign-up

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_sign_up_from_one_address_gets_429() {
    let s = server(&["--allow-signup"]);
    let c = client();
    let attempt = |name: String| {
        c.post(s.url("/signup"))
            .json(&json!({ "username": name, "password": "a long enough passphrase for sign-up" }))
            .send()
    };
    // Every attempt counts: a taken name, a refused one, a fresh one.
    let names = ["alice", "ALICE", "\u{430}lice", "bob-new", "carol-new"];
    for (i, name) in names.iter().enumerate() {
        let st = attempt(name.to_string()).await.unwrap().status().as_u16();
        assert!(st != 429 && st < 500, "attempt {i} ({name}): {st}");
    }
    let res = attempt("dave-new".into()).await.unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let v: Value = res.json().await.unwrap();
    assert!(v["detail"].is_string(), "{v}");
}
