//! Stores that go away: the server fails closed (503 within 2 s, never a
//! bypass, never a 500, never a crash) and resumes by itself (`/readyz` 200
//! within 10 s of the store's return).
//!
//! Redis tests start their own throw-away `redis-server` on a free port;
//! the PostgreSQL test reaches the engine of `LATCHKEY_TEST_POSTGRES_URL`
//! through a TCP forwarder it can switch off and on. Every process and task
//! started here is stopped by a guard, also when an assertion fails.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::support::*;

/// Answers slower than this break the contract's "503 within 2 s".
const FAIL_FAST: Duration = Duration::from_secs(2);
/// The contract's bound for `/readyz` 200 after the store returns.
const RECOVERY: Duration = Duration::from_secs(10);

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client that gives up well after the bound, so a hang fails the test
/// with a measured time instead of stalling it.
fn outage_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap()
}

/// One request and how long it took: (status, JSON body or Null, elapsed).
async fn timed(req: reqwest::RequestBuilder) -> (u16, Value, Duration) {
    let t = Instant::now();
    let res = req.send().await.expect("request failed (hang or crash?)");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body, t.elapsed())
}

fn assert_running(s: &mut Server) {
    if let Some(status) = s.child.try_wait().unwrap() {
        panic!(
            "latchkey exited ({status}) during the outage; log:\n{}",
            s.log()
        );
    }
}

/// Asserts a fail-closed answer: 503 with a `detail`, within [`FAIL_FAST`].
fn assert_503(what: &str, (status, body, took): &(u16, Value, Duration)) {
    eprintln!("outage: {what} -> {status} in {took:?}");
    assert_eq!(*status, 503, "{what}: {body}");
    assert!(body["detail"].is_string(), "{what}: no detail in {body}");
    assert!(*took < FAIL_FAST, "{what} took {took:?}");
}

/// Polls `/readyz` until 200; returns how long that took from `since`.
async fn ready_within(s: &Server, since: Instant, bound: Duration) -> Duration {
    let c = outage_client();
    loop {
        let (st, body, _) = timed(c.get(s.url("/readyz"))).await;
        if st == 200 {
            return since.elapsed();
        }
        assert_eq!(st, 503, "{body}");
        assert!(
            since.elapsed() < bound,
            "/readyz not 200 within {bound:?}: {body}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login_body(s: &Server, password: &str) -> (u16, Value, Duration) {
    timed(
        outage_client()
            .post(s.url("/login"))
            .json(&json!({"username": "alice", "password": password})),
    )
    .await
}

// ---------------------------------------------------------------- Redis

/// A throw-away `redis-server` without persistence; killed on drop.
struct RedisProcess {
    port: u16,
    child: Option<Child>,
}

fn have_redis_server() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: redis-server is not installed; this Redis outage test did not run");
    }
    found
}

impl RedisProcess {
    fn start(port: u16) -> RedisProcess {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = RedisProcess {
            port,
            child: Some(child),
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !r.answers() {
            assert!(Instant::now() < end, "redis-server on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// PING over a raw socket.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    /// SIGKILL: the store vanishes without a goodbye.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers() {
    if !have_redis_server() {
        return;
    }
    let port = free_port();
    let mut redis = RedisProcess::start(port);
    let mut s = Server::start(Options {
        sessions: Some(redis.url()),
        ..Default::default()
    });
    s.add_user("alice", "user");
    let c = outage_client();
    let cookie = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);

    redis.kill();
    assert!(!redis.answers());
    for round in 0..3 {
        let r = timed(c.get(s.url("/profile")).header("cookie", &cookie)).await;
        assert_503(&format!("GET /profile #{round}"), &r);
        let r = login_body(&s, PASSWORD).await;
        assert_503(&format!("POST /login #{round}"), &r);
        let r = timed(c.get(s.url("/readyz"))).await;
        assert_503(&format!("GET /readyz #{round}"), &r);
        // Which store, never where (see readyz_names_the_store_and_nothing_else).
        assert_eq!(r.1, json!({"detail": "session store unavailable"}));
        let (st, _, took) = timed(c.get(s.url("/healthz"))).await;
        assert_eq!(st, 200, "/healthz during the outage");
        assert!(took < FAIL_FAST, "/healthz took {took:?}");
        assert_running(&mut s);
    }
    // Other routes behind a session fail closed the same way.
    let r = timed(c.get(s.url("/sessions")).header("cookie", &cookie)).await;
    assert_503("GET /sessions", &r);
    let r = timed(c.post(s.url("/logout")).header("cookie", &cookie)).await;
    assert_503("POST /logout", &r);
    assert_running(&mut s);

    let back = Instant::now();
    let redis = RedisProcess::start(port);
    let took = ready_within(&s, back, RECOVERY).await;
    eprintln!("outage: /readyz 200 {took:?} after redis restarted");
    assert!(redis.answers());
    // Redis ran without persistence: the old session is gone, and its
    // cookie is refused, not waved through.
    assert_eq!(
        get_json(&s, "/profile", &cookie).await,
        (401, json!({"detail": "Not authenticated"}))
    );
    let fresh = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &fresh).await.0, 200);
    assert_running(&mut s);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_startup_then_arrives() {
    if !have_redis_server() {
        return;
    }
    let port = free_port();
    let mut s = Server::start(Options {
        sessions: Some(format!("redis://127.0.0.1:{port}")),
        ..Default::default()
    });
    s.add_user("alice", "user");
    assert!(s.log().contains("listening on"));
    let c = outage_client();
    let r = timed(c.get(s.url("/readyz"))).await;
    assert_503("GET /readyz before redis", &r);
    let forged = format!("{}={}", s.cookie_name(), "A".repeat(43));
    let (st, body, took) = timed(c.get(s.url("/profile")).header("cookie", &forged)).await;
    eprintln!("outage: GET /profile before redis -> {st} in {took:?}");
    assert!(st == 503 || st == 401, "{st} {body}");
    assert!(took < FAIL_FAST, "took {took:?}");
    let r = login_body(&s, PASSWORD).await;
    assert_503("POST /login before redis", &r);
    // The log says which store and where.
    let address = format!("127.0.0.1:{port}");
    let log = s.wait_log(&address, Duration::from_secs(5));
    assert!(
        log.lines()
            .any(|l| l.contains("redis") && l.contains(&address) && l.contains("unavailable")),
        "no log line names the store and its address:\n{log}"
    );
    assert_running(&mut s);

    let back = Instant::now();
    let _redis = RedisProcess::start(port);
    let took = ready_within(&s, back, RECOVERY).await;
    eprintln!("outage: /readyz 200 {took:?} after redis started");
    let cookie = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);
    assert_eq!(get_json(&s, "/profile", &forged).await.0, 401);
    assert_running(&mut s);
}

// ----------------------------------------------------------- PostgreSQL

/// A TCP forwarder from a loopback port to PostgreSQL. `stop` closes the
/// listener and every connection it carries, as if the database vanished;
/// `start` on the same port brings it back. `freeze` keeps every socket
/// open but carries no more bytes, as a network partition does.
struct Forwarder {
    port: u16,
    target: String,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Forwarder {
    async fn new(target: String) -> Forwarder {
        let mut f = Forwarder {
            port: free_port(),
            target,
            accept: None,
            conns: Default::default(),
            frozen: tokio::sync::watch::channel(false).0,
        };
        f.start().await;
        f
    }

    async fn start(&mut self) {
        self.frozen.send_replace(false);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("forwarder port");
        let target = self.target.clone();
        let conns = self.conns.clone();
        let frozen = self.frozen.clone();
        self.accept = Some(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                let mut frozen = frozen.subscribe();
                let task = tokio::spawn(async move {
                    if *frozen.borrow_and_update() {
                        // Accepted, never answered; held until stopped.
                        return std::future::pending::<()>().await;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let froze = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        r = frozen.wait_for(|f| *f) => r.is_ok(),
                    };
                    if froze {
                        // Both sockets stay open and silent.
                        std::future::pending::<()>().await
                    }
                });
                let mut all = conns.lock().unwrap();
                all.retain(|t| !t.is_finished());
                all.push(task);
            }
        }));
    }

    /// Keeps every connection and accepts new ones, but carries no bytes.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Carries bytes again on new connections (frozen ones are cut).
    async fn thaw(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// Stops accepting and cuts every forwarded connection.
    async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        let conns: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in &conns {
            c.abort();
        }
        for c in conns {
            let _ = c.await;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// `url` with its host and port replaced by `127.0.0.1:port`.
fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{user}127.0.0.1:{port}{tail}")
}

/// `host:port` of a PostgreSQL URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

#[test]
fn url_rewriting() {
    assert_eq!(
        via_port("postgres://postgres@127.0.0.1:5432/test?options=x", 9),
        "postgres://postgres@127.0.0.1:9/test?options=x"
    );
    assert_eq!(
        via_port("postgres://db/test", 9),
        "postgres://127.0.0.1:9/test"
    );
    assert_eq!(
        host_port("postgres://u:p@db.example/test"),
        "db.example:5432"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_closed_and_recovers() {
    let Some(direct) = postgres_url() else {
        return;
    };
    let mut fwd = Forwarder::new(host_port(&direct)).await;
    let url = via_port(&direct, fwd.port);
    let mut s = Server::start(Options {
        database: Some(url),
        ..Default::default()
    });
    s.add_user("alice", "user");
    let c = outage_client();
    assert_eq!(timed(c.get(s.url("/readyz"))).await.0, 200);
    let cookie = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);

    fwd.stop().await;
    for round in 0..3 {
        let r = timed(c.get(s.url("/readyz"))).await;
        assert_503(&format!("GET /readyz #{round}"), &r);
        let r = login_body(&s, PASSWORD).await;
        assert_503(&format!("POST /login #{round}"), &r);
        let r = login_body(&s, "not the password at all").await;
        assert_503(&format!("POST /login, wrong password #{round}"), &r);
        let r = timed(c.get(s.url("/profile")).header("cookie", &cookie)).await;
        assert_503(&format!("GET /profile #{round}"), &r);
        assert_eq!(timed(c.get(s.url("/healthz"))).await.0, 200);
        assert_running(&mut s);
    }

    let back = Instant::now();
    fwd.start().await;
    let took = ready_within(&s, back, RECOVERY).await;
    eprintln!("outage: /readyz 200 {took:?} after PostgreSQL came back");
    // The session lived in PostgreSQL all along.
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);
    let fresh = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &fresh).await.0, 200);
    assert_running(&mut s);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

/// Users in PostgreSQL behind a partition that swallows packets (no
/// refusal, no reset), sessions in a Redis that still answers: sign-in
/// needs the users table, and so do signed-in requests (each session is
/// checked against its user): both must fail closed in time, not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_users_silent_partition_fails_closed() {
    let Some(redis) = redis_url() else {
        return;
    };
    let Some(direct) = postgres_url() else {
        return;
    };
    let mut fwd = Forwarder::new(host_port(&direct)).await;
    let mut s = Server::start(Options {
        database: Some(via_port(&direct, fwd.port)),
        sessions: Some(redis),
        ..Default::default()
    });
    s.add_user("alice", "user");
    let c = outage_client();
    assert_eq!(timed(c.get(s.url("/readyz"))).await.0, 200);
    let cookie = login(&s, "alice", PASSWORD).await;

    fwd.freeze();
    for round in 0..3 {
        let r = login_body(&s, PASSWORD).await;
        assert_503(&format!("POST /login, users frozen #{round}"), &r);
        let r = timed(c.get(s.url("/readyz"))).await;
        assert_503(&format!("GET /readyz, users frozen #{round}"), &r);
        // Sessions are checked against their user, who cannot be read:
        // fail closed (a removal there could not be seen), in time.
        let r = timed(c.get(s.url("/profile")).header("cookie", &cookie)).await;
        assert_503(&format!("GET /profile, users frozen #{round}"), &r);
        assert_running(&mut s);
    }

    let back = Instant::now();
    fwd.thaw().await;
    let took = ready_within(&s, back, RECOVERY).await;
    eprintln!("outage: /readyz 200 {took:?} after the partition healed");
    assert_eq!(get_json(&s, "/profile", &cookie).await.0, 200);
    let fresh = login(&s, "alice", PASSWORD).await;
    assert_eq!(get_json(&s, "/profile", &fresh).await.0, 200);
    assert_running(&mut s);
}

/// Users and sessions in PostgreSQL; the users table is held by another
/// transaction (a long migration, a stuck batch job), so lookups in it do
/// not answer while the connection itself is fine. Sign-in and signed-in
/// requests must fail closed within 2 s rather than wait for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_users_table_locked_fails_closed() {
    use sqlx::Connection;
    let Some(url) = postgres_url() else {
        return;
    };
    let mut s = Server::start(Options {
        database: Some(url.clone()),
        ..Default::default()
    });
    s.add_user("alice", "user");
    let cookie = login(&s, "alice", PASSWORD).await;

    // Dropped (and so released) even when an assertion fails.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE latchkey_users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    for round in 0..2 {
        let r = login_body(&s, PASSWORD).await;
        assert_503(&format!("POST /login, users locked #{round}"), &r);
        // Sessions are checked against their user: fail closed, in time.
        let r = timed(
            outage_client()
                .get(s.url("/profile"))
                .header("cookie", &cookie),
        )
        .await;
        assert_503(&format!("GET /profile, users locked #{round}"), &r);
        assert_running(&mut s);
    }
    let released = Instant::now();
    holder.close().await.unwrap();
    loop {
        let (st, body, _) = login_body(&s, PASSWORD).await;
        if st == 200 {
            break;
        }
        assert_eq!(st, 503, "{body}");
        assert!(
            released.elapsed() < RECOVERY,
            "sign-in did not recover: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "outage: sign-in works {:?} after the lock was released",
        released.elapsed()
    );
}

/// `/readyz` says which store is down in exactly one of two bodies, and
/// leaks nothing an outsider could use: no address, port, file path or
/// driver words. Those go to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_store_and_nothing_else() {
    fn assert_bare(what: &str, body: &Value, expected: &str, s: &Server, ports: &[u16]) {
        assert_eq!(*body, json!({ "detail": expected }), "{what}");
        let text = body.to_string().to_lowercase();
        let dir = s.dir.path().display().to_string().to_lowercase();
        let mut leaks = vec![
            "127.0.0.1",
            "localhost",
            "redis",
            "postgres",
            "sqlite",
            "latchkey.db",
            "refused",
            "os error",
            "timed out",
            "connection",
            "io error",
            "pool",
            &dir,
        ];
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        leaks.extend(ports.iter().map(String::as_str));
        for leak in leaks {
            assert!(!text.contains(leak), "{what}: {body} names {leak:?}");
        }
    }
    let c = outage_client();
    let dead_pg = free_port();
    let dead_users = format!("postgres://latchkey@127.0.0.1:{dead_pg}/latchkey");

    // Users unreachable (connected lazily), sessions fine.
    let mut s = Server::start(Options {
        database: Some(dead_users.clone()),
        sessions: Some("memory".into()),
        ..Default::default()
    });
    let r = timed(c.get(s.url("/readyz"))).await;
    assert_503("GET /readyz, users down", &r);
    assert_bare(
        "users down",
        &r.1,
        "user database unavailable",
        &s,
        &[dead_pg],
    );
    let log = s.wait_log("not ready: user database", Duration::from_secs(5));
    assert!(
        log.lines()
            .any(|l| l.contains("not ready") && l.contains(&format!("127.0.0.1:{dead_pg}"))),
        "the log does not name the database and its address:\n{log}"
    );
    assert_running(&mut s);
    drop(s);

    // Both down: the session store's body (the log names both).
    let dead_redis = free_port();
    let mut s = Server::start(Options {
        database: Some(dead_users),
        sessions: Some(format!("redis://127.0.0.1:{dead_redis}")),
        ..Default::default()
    });
    let r = timed(c.get(s.url("/readyz"))).await;
    assert_503("GET /readyz, both down", &r);
    assert_bare(
        "both down",
        &r.1,
        "session store unavailable",
        &s,
        &[dead_pg, dead_redis],
    );
    s.wait_log("not ready: user database", Duration::from_secs(5));
    let log = s.wait_log("not ready: session store", Duration::from_secs(5));
    assert!(log.contains(&format!("127.0.0.1:{dead_redis}")), "{log}");
    assert_running(&mut s);
    drop(s);

    // Sessions in a Redis that dies; users in SQLite, fine.
    if !have_redis_server() {
        return;
    }
    let port = free_port();
    let mut redis = RedisProcess::start(port);
    let mut s = Server::start(Options {
        sessions: Some(redis.url()),
        ..Default::default()
    });
    assert_eq!(timed(c.get(s.url("/readyz"))).await.0, 200);
    redis.kill();
    let r = timed(c.get(s.url("/readyz"))).await;
    assert_503("GET /readyz, sessions down", &r);
    assert_bare(
        "sessions down",
        &r.1,
        "session store unavailable",
        &s,
        &[port],
    );
    let log = s.wait_log("not ready: session store", Duration::from_secs(5));
    assert!(
        log.lines().any(|l| l.contains("not ready: session store")
            && l.contains(&format!("redis 127.0.0.1:{port}"))),
        "the log does not say why:\n{log}"
    );
    assert_running(&mut s);
}
