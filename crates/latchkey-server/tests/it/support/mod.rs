//! Test harness. A server runs on a free loopback port with its own
//! temporary directory, and tests talk to it over real HTTP: the real
//! `latchkey` binary in a process of its own ([`Server`]), or the same app
//! built through the library inside this test process ([`TestApp`]). The
//! request helpers take either ([`Target`]).
#![allow(dead_code)]

mod app;
/// A real SMTP server (aiosmtpd) writing a Maildir: the server's own mail
/// tests' sink, shared rather than copied.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../src/mail/tests/sink.rs"]
pub mod smtp;

pub use app::TestApp;

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "tangerine orbit kayak murmur";
pub const SECRET: &str = "8f1c3a5e7b9d0f2a4c6e8a0b2d4f6a8c0e2a4c6e8b0d2f4a6c8e0a2c4e6a8b0d";

/// A unique name for schemas, prefixes and directories.
pub fn unique(tag: &str) -> String {
    format!("{tag}{}{:x}", std::process::id(), rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

// ------------------------------------------------------------------ quiet

/// Every test runs in this one process, two at a time on a 2-core machine.
/// A test that measures time takes the machine [`alone`]; every server the
/// harness starts holds a [`Share`] while it runs.
struct Quiet {
    shares: usize,
    alone: bool,
    /// Tests waiting in `alone`: no new share is given out while nothing
    /// runs, so they get their turn.
    pending: usize,
}

static QUIET: Mutex<Quiet> = Mutex::new(Quiet {
    shares: 0,
    alone: false,
    pending: 0,
});
static QUIET_CHANGED: Condvar = Condvar::new();

thread_local! {
    /// This thread's test holds the machine alone: its own servers take no share.
    static ALONE_HERE: Cell<bool> = const { Cell::new(false) };
}

fn quiet() -> MutexGuard<'static, Quiet> {
    QUIET.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by a running server; other tests' servers share the machine.
pub struct Share(());

impl Share {
    /// Waits while a test has the machine alone (or is about to).
    fn take() -> Option<Share> {
        if ALONE_HERE.get() {
            return None;
        }
        let mut q = quiet();
        while q.alone || (q.pending > 0 && q.shares == 0) {
            q = QUIET_CHANGED.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.shares += 1;
        Some(Share(()))
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        quiet().shares -= 1;
        QUIET_CHANGED.notify_all();
    }
}

/// The machine to this test alone, until dropped: waits until no other
/// test's server runs, and keeps new ones from starting. A server it
/// starts itself (on its own thread) takes no share.
pub struct Alone(());

pub async fn alone() -> Alone {
    quiet().pending += 1;
    loop {
        {
            let mut q = quiet();
            if q.shares == 0 && !q.alone {
                q.pending -= 1;
                q.alone = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ALONE_HERE.set(true);
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE_HERE.set(false);
        quiet().alone = false;
        QUIET_CHANGED.notify_all();
    }
}

// ----------------------------------------------------------------- server

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_latchkey")
}

/// A fresh temporary directory, removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("latchkey-it-"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.0.join("latchkey.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server, in a process of its own or in this one: what the
/// request helpers and the `latchkey user ...` commands need of it.
pub trait Target {
    /// `http://127.0.0.1:PORT`.
    fn base(&self) -> &str;
    fn dev(&self) -> bool;
    fn database(&self) -> &str;
    fn sessions(&self) -> Option<&str>;

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    fn cookie_name(&self) -> &'static str {
        if self.dev() {
            "latchkey"
        } else {
            "__Host-latchkey"
        }
    }

    /// Runs `latchkey user ...` against this server's stores.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        cli(self.database(), self.sessions(), args, stdin)
    }

    /// `latchkey user add NAME --email ADDR` (role `user`, verified address).
    fn add_user_with_email(&self, name: &str, email: &str) {
        let out = self.cli(
            &["add", name, "--email", email, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn add_user(&self, name: &str, role: &str) {
        let out = self.cli(
            &["add", name, "--role", role, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `Target` from the fields both kinds of server have.
macro_rules! target_from_fields {
    ($($server:ty),*) => {$(
        impl Target for $server {
            fn base(&self) -> &str {
                &self.base
            }
            fn dev(&self) -> bool {
                self.dev
            }
            fn database(&self) -> &str {
                &self.database
            }
            fn sessions(&self) -> Option<&str> {
                self.sessions.as_deref()
            }
        }
    )*};
}

target_from_fields!(Server, TestApp);

/// How to start a server.
#[derive(Clone, Default)]
pub struct Options {
    pub dev: bool,
    pub database: Option<String>,
    pub sessions: Option<String>,
    pub idle: Option<&'static str>,
    pub absolute: Option<&'static str>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Options {
    /// `serve`'s arguments after the sub-command, but for the secret (the
    /// environment of a process, `--secret-key` in this one).
    fn serve_args(&self, database: &str) -> Vec<String> {
        let mut args: Vec<String> = ["--bind", "127.0.0.1:0", "--database", database]
            .map(String::from)
            .to_vec();
        if let Some(s) = &self.sessions {
            args.extend(["--sessions".to_owned(), s.clone()]);
        }
        if self.dev {
            args.push("--dev".to_owned());
        }
        if let Some(d) = self.idle {
            args.extend(["--idle-timeout".to_owned(), d.to_owned()]);
        }
        if let Some(d) = self.absolute {
            args.extend(["--absolute-timeout".to_owned(), d.to_owned()]);
        }
        args.extend(self.args.iter().cloned());
        args
    }
}

/// A running `latchkey serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
    pub database: String,
    pub sessions: Option<String>,
    pub dir: Arc<TempDir>,
    pub dev: bool,
    /// Released after the process is killed (fields drop after `drop`).
    _share: Option<Share>,
}

impl Server {
    pub fn start(opts: Options) -> Server {
        Self::start_in(Arc::new(TempDir::new()), opts)
    }

    /// Starts a server whose SQLite files (if any) live in `dir`.
    pub fn start_in(dir: Arc<TempDir>, opts: Options) -> Server {
        let database = opts.database.clone().unwrap_or_else(|| dir.sqlite_url());
        Self::launch(Command::new(bin()), dir, database, opts)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let l = self.log();
            if l.contains(needle) {
                return l;
            }
            assert!(Instant::now() < end, "log never showed {needle:?}:\n{l}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < end, "server did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `latchkey user ARGS...` with the given stores.
pub fn cli(
    database: &str,
    sessions: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("user").args(args).args(["--database", database]);
    if let Some(s) = sessions {
        cmd.args(["--sessions", s]);
    }
    cmd.env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn latchkey user");
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// A client that neither follows redirects nor keeps cookies: tests see
/// every `Set-Cookie` and `Location` themselves.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The value of cookie `name` set by `res`, if any.
pub fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.to_owned())
}

/// The token in a `Set-Cookie` line.
pub fn token_of(set_cookie_line: &str) -> String {
    set_cookie_line
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// POST /login with JSON from a fresh client, no cookie: the response.
pub async fn sign_in(s: &impl Target, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(s.url("/login"))
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
}

/// The `Cookie` header value for the session cookie `res` sets.
pub fn session_cookie(s: &impl Target, res: &reqwest::Response) -> String {
    let line = set_cookie(res, s.cookie_name()).expect("session cookie");
    format!("{}={}", s.cookie_name(), token_of(&line))
}

/// Signs in with JSON and returns the `Cookie` header value to send.
pub async fn login(s: &impl Target, user: &str, password: &str) -> String {
    let res = sign_in(s, user, password).await;
    assert_eq!(
        res.status(),
        200,
        "login failed: {}",
        res.text().await.unwrap()
    );
    session_cookie(s, &res)
}

/// POSTs JSON to `path` with `cookie`: the response.
pub async fn post(
    s: &impl Target,
    path: &str,
    cookie: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    client()
        .post(s.url(path))
        .header("cookie", cookie)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// DELETE `path` with `cookie`: the response.
pub async fn delete(s: &impl Target, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .delete(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// GET `path` with `cookie`; returns (status, body JSON or Null).
pub async fn get_json(s: &impl Target, path: &str, cookie: &str) -> (u16, serde_json::Value) {
    let res = client()
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Environment URLs for engine tests, or a loud skip.
pub fn postgres_base() -> Option<String> {
    match std::env::var("LATCHKEY_TEST_POSTGRES_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            eprintln!(
                "SKIPPED: LATCHKEY_TEST_POSTGRES_URL is not set; this PostgreSQL test did not run"
            );
            None
        }
    }
}

pub fn redis_base() -> Option<String> {
    match std::env::var("LATCHKEY_TEST_REDIS_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            eprintln!("SKIPPED: LATCHKEY_TEST_REDIS_URL is not set; this Redis test did not run");
            None
        }
    }
}

/// A PostgreSQL URL whose connections use a new, empty schema.
pub fn postgres_url() -> Option<String> {
    let base = postgres_base()?;
    let schema = unique("lk_it_");
    psql(&base, &format!("CREATE SCHEMA {schema}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Runs SQL with psql (on every machine that runs PostgreSQL).
pub fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Redis URL with a key prefix of its own.
pub fn redis_url() -> Option<String> {
    let base = redis_base()?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}prefix={}:", unique("lk_it_")))
}

impl Server {
    /// Like `start`, but the server runs with soft and hard file-descriptor
    /// limits of `nofile` (`ulimit -n` in a shell that then execs it).
    pub fn start_with_nofile(opts: Options, nofile: u64) -> Server {
        let dir = Arc::new(TempDir::new());
        let database = opts.database.clone().unwrap_or_else(|| dir.sqlite_url());
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(bin());
        Self::launch(cmd, dir, database, opts)
    }

    /// Adds `serve` and the options to `cmd` (which runs the binary, or a
    /// wrapper that execs it), starts it and waits for its address.
    fn launch(mut cmd: Command, dir: Arc<TempDir>, database: String, opts: Options) -> Server {
        let share = Share::take();
        cmd.current_dir(dir.path())
            .arg("serve")
            .args(opts.serve_args(&database))
            .env("LATCHKEY_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if opts.dev {
            cmd.env_remove("LATCHKEY_SECRET_KEY");
        } else {
            cmd.env("LATCHKEY_SECRET_KEY", SECRET);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn latchkey");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let addr = line[i + 20..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
            database,
            sessions: opts.sessions,
            dir,
            dev: opts.dev,
            _share: share,
        }
    }
}

/// POSTs JSON to `path` (with `cookie` when given); returns (status, body
/// JSON or Null).
pub async fn post_json(
    s: &impl Target,
    path: &str,
    cookie: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = client().post(s.url(path)).json(&body);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}
