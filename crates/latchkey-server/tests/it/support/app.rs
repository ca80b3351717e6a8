//! [`TestApp`]: the server built through the library (`latchkey_server`)
//! inside the test process, on a free loopback port, with a fresh SQLite
//! database of its own and a client that keeps its cookies.

use std::sync::{Arc, Mutex};

use clap::Parser;
use latchkey_server::cli::{Cli, Command};
use latchkey_server::Serving;
use tokio::sync::oneshot;

use super::{client, Options, Share, Target, TempDir, SECRET};

/// `latchkey serve` in this process: the arguments go through the same
/// command line, `Serving::start` and `Serving::serve` as the binary's
/// (connection handling and client addresses included), without a process
/// to spawn or a log to wait for. It stops when dropped.
///
/// No log: tests that read the server's log, send it signals, restart it
/// or set its environment use [`super::Server`].
pub struct TestApp {
    /// Dropped first: the server drains and stops (its files go after).
    _stop: oneshot::Sender<()>,
    pub base: String,
    pub addr: String,
    pub database: String,
    pub sessions: Option<String>,
    pub dir: Arc<TempDir>,
    pub dev: bool,
    /// The built-in client's cookies: (name, value).
    jar: Mutex<Vec<(String, String)>>,
    _share: Option<Share>,
}

impl TestApp {
    /// Starts the app on 127.0.0.1:0 with `opts` (whose `env` must be
    /// empty: this process has one environment for every test).
    pub async fn spawn(opts: Options) -> TestApp {
        assert!(
            opts.env.is_empty(),
            "TestApp runs in the test process: pass flags in `args`, or use Server"
        );
        let share = Share::take();
        let dir = Arc::new(TempDir::new());
        let database = opts.database.clone().unwrap_or_else(|| dir.sqlite_url());
        let mut argv = vec!["latchkey".to_owned(), "serve".to_owned()];
        argv.extend(opts.serve_args(&database));
        if !opts.dev {
            argv.extend(["--secret-key".to_owned(), SECRET.to_owned()]);
        }
        let Command::Serve(args) = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .command
        else {
            unreachable!("{argv:?} is a serve command")
        };
        let serving = Serving::start(args)
            .await
            .unwrap_or_else(|f| panic!("server did not start: {}", f.message()));
        let addr = serving.local_addr().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serving.serve(async {
            let _ = stopped.await;
        }));
        TestApp {
            _stop: stop,
            base: format!("http://{addr}"),
            addr,
            database,
            sessions: opts.sessions,
            dir,
            dev: opts.dev,
            jar: Mutex::new(Vec::new()),
            _share: share,
        }
    }

    /// Sends `req` (made with [`client()`]) with the built-in client's
    /// cookies, and keeps the cookies the response sets or expires.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let cookies = self.cookies();
        let req = if cookies.is_empty() {
            req
        } else {
            req.header("cookie", cookies)
        };
        let res = req.send().await.unwrap();
        let mut jar = self.jar.lock().unwrap();
        for line in res.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
            jar.retain(|(n, _)| n != name);
            if !value.is_empty() && !line.to_ascii_lowercase().contains("max-age=0") {
                jar.push((name.to_owned(), value.to_owned()));
            }
        }
        res
    }

    /// The built-in client's `Cookie` header value ("" when it has none).
    pub fn cookies(&self) -> String {
        let jar = self.jar.lock().unwrap();
        let pairs: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(client().get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.send(client().post(self.url(path)).json(&body)).await
    }

    /// Signs the built-in client in with JSON.
    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({ "username": user, "password": password });
        self.post("/login", body).await
    }

    pub async fn get_profile(&self) -> reqwest::Response {
        self.get("/profile").await
    }

    pub async fn logout(&self) -> reqwest::Response {
        self.send(client().post(self.url("/logout"))).await
    }
}
