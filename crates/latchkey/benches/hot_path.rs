//! Micro-benchmarks of the pieces of latchkey's per-request hot path,
//! through the public API only:
//!
//! ```text
//! cargo bench -p latchkey --bench hot_path
//! ```
//!
//! - `cookie`: finding the session cookie among several in a `Cookie`
//!   header and hashing it (`CookieConfig::token_hash`, what every request
//!   does), and the copying `CookieConfig::token`;
//! - `token_hash`: SHA-256 of a token (`SessionToken::hash`);
//! - `store_load`: `load` of a session already in the store's cache, from
//!   `MemoryStore` and from `SqliteStore` (which also checks the database's
//!   revocation log, at most once a millisecond);
//! - `session`: `Latchkey::session`, cookie to live session (memory store);
//! - `router`: one `GET /profile` through an axum `Router` with
//!   `tower::ServiceExt::oneshot`: with `latchkey.layer()` and a
//!   `CurrentUser` handler, signed in (memory store), and the same router and
//!   handler body with no latchkey at all.
//!
//! The async ones run each iteration with `block_on` on a current-thread
//! tokio runtime; `runtime::block_on_ready` is that cost alone.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use divan::{black_box, Bencher};
use latchkey::store::{MemoryStore, SessionStore, SqliteStore, Store};
use latchkey::{CsrfSecret, CurrentUser, Latchkey, SessionId, SessionRecord, SessionToken};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

fn main() {
    // 1,000 samples of 64 iterations each, so that one noisy moment on a
    // shared machine moves a median little (`--sample-count` and
    // `--sample-size` override them).
    divan::Divan::default()
        .sample_count(1000)
        .sample_size(64)
        .config_with_args()
        .main();
    let _ = std::fs::remove_dir_all(scratch_dir());
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("latchkey-hot-path-{}", std::process::id()))
}

/// A live session for `token`, as a sign-in would file it.
fn record(token: &SessionToken) -> SessionRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    SessionRecord {
        id: SessionId::generate(),
        token_hash: Some(token.hash()),
        user_id: "4f1c2b7a9e3d5c8b1a2f4e6d8c0b2a4f".into(),
        username: "bench".into(),
        role: "admin".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 8 * 3600 * 1000,
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                     Chrome/124.0.0.0 Safari/537.36"
            .into(),
        ip: Some(std::net::Ipv4Addr::new(198, 51, 100, 7).into()),
        csrf_secret: CsrfSecret::generate(),
        user_version: 0,
        data: None,
    }
}

fn latchkey_with(store: Arc<dyn Store>) -> Latchkey {
    Latchkey::builder()
        .secret([7u8; 32])
        .store(store)
        .build()
        .expect("a valid configuration")
}

/// A browser's `Cookie` header: analytics and preference cookies around
/// latchkey's pre-session CSRF cookie and its session cookie.
fn cookie_header(auth: &Latchkey, token: &SessionToken) -> HeaderValue {
    let c = auth.cookies();
    HeaderValue::from_str(&format!(
        "_ga=GA1.2.1234567890.1700000000; theme=dark; lang=en-GB; {}=p2Jx0Qm3r7vT9wYc1bN4eH6kL8sD0fG2aZ5uI7oP9qW; \
         {}={}; consent=analytics%3Dno%26ads%3Dno",
        c.csrf_name,
        c.name,
        token.as_str()
    ))
    .expect("a valid header")
}

/// A `Latchkey` on a memory store holding one live session, and the
/// `Cookie` header that carries it.
fn signed_in(rt: &Runtime) -> (Latchkey, HeaderValue) {
    let store = Arc::new(MemoryStore::new());
    let token = SessionToken::generate();
    rt.block_on(store.create(&record(&token)))
        .expect("a session");
    let auth = latchkey_with(store);
    let cookie = cookie_header(&auth, &token);
    (auth, cookie)
}

mod runtime {
    use super::*;

    #[divan::bench]
    fn block_on_ready(bencher: Bencher) {
        let rt = runtime();
        bencher.bench_local(|| rt.block_on(black_box(async { 1 })));
    }
}

mod cookie {
    use super::*;

    fn headers() -> (Latchkey, HeaderMap) {
        let auth = latchkey_with(Arc::new(MemoryStore::new()));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            cookie_header(&auth, &SessionToken::generate()),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static("bench"));
        (auth, headers)
    }

    /// Find the session cookie among six and hash it: the hot path.
    #[divan::bench]
    fn token_hash(bencher: Bencher) {
        let (auth, headers) = headers();
        bencher.bench_local(|| auth.cookies().token_hash(black_box(&headers)));
    }

    /// The same, copying the token out (sign-out, sign-in).
    #[divan::bench]
    fn token(bencher: Bencher) {
        let (auth, headers) = headers();
        bencher.bench_local(|| auth.cookies().token(black_box(&headers)));
    }
}

#[divan::bench]
fn token_hash(bencher: Bencher) {
    let token = SessionToken::generate();
    bencher.bench_local(|| black_box(&token).hash());
}

mod store_load {
    use super::*;

    fn bench_load(bencher: Bencher, rt: &Runtime, store: impl SessionStore) {
        let token = SessionToken::generate();
        let key = token.hash();
        rt.block_on(store.create(&record(&token)))
            .expect("a session");
        // Loaded once, so it is in the cache.
        assert!(rt.block_on(store.load(&key)).expect("a load").is_some());
        bencher.bench_local(|| rt.block_on(store.load(black_box(&key))));
    }

    #[divan::bench]
    fn memory(bencher: Bencher) {
        let rt = runtime();
        bench_load(bencher, &rt, MemoryStore::new());
    }

    #[divan::bench]
    fn sqlite(bencher: Bencher) {
        let rt = runtime();
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let url = format!("sqlite://{}", dir.join("sessions.db").display());
        let store = rt
            .block_on(SqliteStore::open(&url))
            .expect("a SQLite store");
        bench_load(bencher, &rt, store);
    }
}

/// `Latchkey::session`: cookie, store, timeout checks (memory store).
#[divan::bench]
fn session(bencher: Bencher) {
    let rt = runtime();
    let (auth, cookie) = signed_in(&rt);
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, cookie);
    assert!(rt
        .block_on(auth.session(&headers))
        .expect("a session")
        .is_some());
    bencher.bench_local(|| rt.block_on(auth.session(black_box(&headers))));
}

mod router {
    use super::*;

    async fn profile(user: CurrentUser) -> String {
        format!("Welcome to your profile, {}!", user.username())
    }

    async fn floor() -> String {
        format!("Welcome to your profile, {}!", "bench")
    }

    fn bench_router(bencher: Bencher, rt: &Runtime, app: Router, cookie: HeaderValue) {
        let request = || {
            Request::get("/profile")
                .header(header::COOKIE, cookie.clone())
                .body(Body::empty())
                .expect("a request")
        };
        let first = rt
            .block_on(app.clone().oneshot(request()))
            .expect("a response");
        assert_eq!(first.status(), StatusCode::OK);
        bencher
            .with_inputs(request)
            .bench_local_values(|req| rt.block_on(app.clone().oneshot(req)));
    }

    /// `latchkey.layer()` and a `CurrentUser` handler, signed in.
    #[divan::bench]
    fn latchkey(bencher: Bencher) {
        let rt = runtime();
        let (auth, cookie) = signed_in(&rt);
        let app = Router::new()
            .route("/profile", get(profile))
            .layer(auth.layer());
        bench_router(bencher, &rt, app, cookie);
    }

    /// The same request and handler body with no session at all.
    #[divan::bench]
    fn no_latchkey(bencher: Bencher) {
        let rt = runtime();
        let (auth, cookie) = signed_in(&rt);
        drop(auth);
        let app = Router::new().route("/profile", get(floor));
        bench_router(bencher, &rt, app, cookie);
    }
}
