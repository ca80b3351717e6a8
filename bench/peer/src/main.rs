//! `bench-peer`: the servers latchkey is measured against, serving the same
//! `GET /profile` JSON as `latchkey serve`.
//!
//! ```text
//! bench-peer --mode floor        --bind 127.0.0.1:PORT
//! bench-peer --mode memory       --bind 127.0.0.1:PORT
//! bench-peer --mode sqlite       --bind 127.0.0.1:PORT --db PATH
//! bench-peer --mode sqlite-save  --bind 127.0.0.1:PORT --db PATH
//! bench-peer --mode redis        --bind 127.0.0.1:PORT --redis redis://HOST:PORT/DB
//! ```
//!
//! - `floor`: a bare axum handler with no session at all: the most any
//!   session layer could reach.
//! - `memory`, `sqlite`: tower-sessions + axum-login as their documentation
//!   sets them up, with the memory store or tower-sessions-sqlx-store's SQLite
//!   store (WAL, `synchronous=NORMAL`, 8 connections: the options latchkey's
//!   own SQLite store uses), a 30-minute inactivity expiry (latchkey's default
//!   idle timeout) and the expired-session deletion task every 60 s.
//! - `sqlite-save`: the same with `with_always_save(true)`, which is what
//!   makes tower-sessions' inactivity expiry actually slide: every request
//!   writes the session back.
//! - `redis`: the same with tower-sessions-redis-store's Redis store over a
//!   fred pool of 6 connections (its documentation's example). Its keys are
//!   the bare session ids, with no prefix, so the bench gives it an empty
//!   Redis database of its own (the `/DB` of the URL). Redis expires each
//!   session by its key's TTL: no deletion task.
//!
//! The user lives in memory (one user, `BENCH_USERNAME`, default `bench`,
//! role `admin`; password from `BENCH_PASSWORD`), so the peers pay for their
//! session store and nothing else: axum-login's per-request `get_user` is a
//! map lookup here, not a database query. That favours the peers.
//!
//! `POST /login` takes JSON `{"username", "password"}` and verifies an
//! Argon2id hash (OWASP parameters: 19 MiB, t=2, p=1) on tokio's blocking
//! pool, as axum-login's examples do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tower_sessions::cookie::time;
use tower_sessions::{
    ExpiredDeletion as _, Expiry, MemoryStore, SessionManagerLayer, SessionStore,
};
use tower_sessions_redis_store::fred::prelude::{
    ClientLike as _, Config as RedisConfig, Pool as RedisPool,
};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_sqlx_store::SqliteStore;

#[derive(Clone)]
struct User {
    id: i64,
    username: String,
    role: String,
    password_hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    // As axum-login's examples: a password change invalidates sessions.
    fn session_auth_hash(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Debug)]
struct BackendError(String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

/// Users by id and by name, in memory.
#[derive(Clone)]
struct Backend {
    by_id: Arc<HashMap<i64, User>>,
    ids: Arc<HashMap<String, i64>>,
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendError> {
        let user = self
            .ids
            .get(&creds.username)
            .and_then(|id| self.by_id.get(id))
            .cloned();
        let Some(user) = user else {
            return Ok(None);
        };
        let hash = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(creds.password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|e| BackendError(e.to_string()))?;
        Ok(ok.then_some(user))
    }

    async fn get_user(&self, id: &i64) -> Result<Option<User>, BackendError> {
        Ok(self.by_id.get(id).cloned())
    }
}

#[derive(Serialize)]
struct Profile<'a> {
    message: String,
    username: &'a str,
    role: &'a str,
}

fn profile_json(username: &str, role: &str) -> Response {
    Json(Profile {
        message: format!("Welcome to your profile, {username}!"),
        username,
        role,
    })
    .into_response()
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

async fn floor_profile() -> Response {
    profile_json("bench", "admin")
}

async fn profile(auth: AuthSession<Backend>) -> Response {
    match &auth.user {
        Some(user) => profile_json(&user.username, &user.role),
        None => detail(StatusCode::UNAUTHORIZED, "Not authenticated"),
    }
}

async fn login(mut auth: AuthSession<Backend>, Json(creds): Json<Credentials>) -> Response {
    match auth.authenticate(creds).await {
        Ok(Some(user)) => match auth.login(&user).await {
            Ok(()) => Json(json!({ "message": "Login successful!" })).into_response(),
            Err(e) => detail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Ok(None) => detail(StatusCode::UNAUTHORIZED, "Invalid credentials"),
        Err(e) => detail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn owasp_hash(password: &str) -> String {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters");
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16-byte salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn session_app<S: SessionStore + Clone>(store: S, always_save: bool, backend: Backend) -> Router {
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(30)))
        .with_always_save(always_save);
    let auth = AuthManagerLayerBuilder::new(backend, sessions).build();
    Router::new()
        .route("/profile", get(profile))
        .route("/login", post(login))
        .layer(auth)
}

struct Args {
    mode: String,
    bind: SocketAddr,
    db: Option<String>,
    redis: Option<String>,
}

fn usage(message: &str) -> ! {
    eprintln!("error: {message}");
    eprintln!("usage: bench-peer --mode floor|memory|sqlite|sqlite-save|redis --bind ADDR [--db PATH] [--redis URL]");
    std::process::exit(2)
}

fn args() -> Args {
    let mut mode = None;
    let mut bind = None;
    let mut db = None;
    let mut redis = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--mode" => mode = Some(value),
            "--bind" => {
                bind = Some(
                    value
                        .parse()
                        .unwrap_or_else(|e| usage(&format!("--bind {value}: {e}"))),
                )
            }
            "--db" => db = Some(value),
            "--redis" => redis = Some(value),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    Args {
        mode: mode.unwrap_or_else(|| usage("--mode is required")),
        bind: bind.unwrap_or_else(|| usage("--bind is required")),
        db,
        redis,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let username = std::env::var("BENCH_USERNAME").unwrap_or_else(|_| "bench".into());
    let backend = || {
        let password = std::env::var("BENCH_PASSWORD")
            .unwrap_or_else(|_| usage("BENCH_PASSWORD must hold the user's password"));
        let user = User {
            id: 1,
            username: username.clone(),
            role: "admin".into(),
            password_hash: owasp_hash(&password),
        };
        Backend {
            ids: Arc::new(HashMap::from([(user.username.clone(), user.id)])),
            by_id: Arc::new(HashMap::from([(user.id, user)])),
        }
    };
    let app = match args.mode.as_str() {
        "floor" => Router::new().route("/profile", get(floor_profile)),
        "memory" => session_app(MemoryStore::default(), false, backend()),
        "sqlite" | "sqlite-save" => {
            let path = args
                .db
                .as_deref()
                .unwrap_or_else(|| usage("--db PATH is required with the sqlite modes"));
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .unwrap_or_else(|e| usage(&format!("--db {path}: {e}")))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .expect("open the SQLite database");
            let store = SqliteStore::new(pool);
            store.migrate().await.expect("create the sessions table");
            tokio::spawn(
                store
                    .clone()
                    .continuously_delete_expired(tokio::time::Duration::from_secs(60)),
            );
            session_app(store, args.mode == "sqlite-save", backend())
        }
        "redis" => {
            let url = args
                .redis
                .as_deref()
                .unwrap_or_else(|| usage("--redis URL is required with the redis mode"));
            let config = RedisConfig::from_url(url)
                .unwrap_or_else(|e| usage(&format!("--redis {url}: {e}")));
            let pool = RedisPool::new(config, None, None, None, 6).expect("a Redis pool");
            pool.init().await.expect("connect to Redis");
            session_app(RedisStore::new(pool), false, backend())
        }
        other => usage(&format!("unknown mode {other}")),
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", args.bind));
    eprintln!(
        "bench-peer {} listening on http://{}",
        args.mode,
        listener.local_addr().expect("local address")
    );
    axum::serve(listener, app).await.expect("serve");
}
