//! `session-bytes [N] [SESSIONS_PER_USER]`: what one session costs in
//! latchkey's memory store. Files N realistic sessions (default 200,000;
//! a ~110-character user agent, an IPv4 address, ids and secrets as the
//! server makes them, SESSIONS_PER_USER sessions per user, default 2) into
//! `latchkey::store::MemoryStore` through the public `SessionStore::create`,
//! and prints one JSON line with:
//!
//! - `rss_bytes_per_session`: growth of the process's resident set
//!   (`VmRSS` in `/proc/self/status`) over N: what the machine pays,
//!   allocator overhead and hash-table slack included;
//! - `heap_bytes_per_session`: growth of the bytes the program asked the
//!   allocator for (a counting global allocator): the data structures alone.
//!
//! Used by `bench/scale.sh`; never shipped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use latchkey::session::{CsrfSecret, SessionId, SessionRecord, SessionToken};
use latchkey::store::{MemoryStore, SessionStore};

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is
// added on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resident set size in bytes, from `/proc/self/status`.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

const USER_AGENTS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
];

/// One session as `Latchkey::login` makes it.
fn record(i: usize, per_user: usize, now: i64) -> SessionRecord {
    let user = i / per_user;
    SessionRecord {
        id: SessionId::generate(),
        token_hash: Some(SessionToken::generate().hash()),
        // User ids are 32 hex characters, as the server's user table makes them.
        user_id: format!("{user:032x}").into(),
        username: format!("user{user}").into(),
        role: "user".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 30 * 60 * 1000,
        // Each sign-in brings its own copy, as from a request's header.
        user_agent: USER_AGENTS[i % USER_AGENTS.len()].into(),
        ip: Some(std::net::Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8).into()),
        csrf_secret: CsrfSecret::generate(),
        user_version: 0,
        data: None,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.parse().expect("N is a number"))
        .unwrap_or(200_000);
    let per_user: usize = args
        .next()
        .map(|s| s.parse().expect("SESSIONS_PER_USER is a number"))
        .unwrap_or(2)
        .max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let store = MemoryStore::new();
    // Warm up the allocator and the runtime with one session, then measure.
    rt.block_on(store.create(&record(n, per_user, now)))
        .expect("create");
    let (rss0, heap0) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let mut ua_bytes = 0usize;
    for i in 0..n {
        let r = record(i, per_user, now);
        ua_bytes += r.user_agent.len();
        rt.block_on(store.create(&r)).expect("create");
    }
    let (rss1, heap1) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    // Check that they are all there (and keep the store alive until now).
    let probe = record(n, per_user, now);
    let sessions = rt
        .block_on(store.list_user(&probe.user_id))
        .expect("list_user")
        .len();
    assert!(sessions >= 1, "the store lost sessions");
    let per = |a: usize, b: usize| b.saturating_sub(a) as f64 / n as f64;
    println!(
        "{{\"sessions\": {n}, \"sessions_per_user\": {per_user}, \"rss_bytes_per_session\": {:.1}, \
         \"heap_bytes_per_session\": {:.1}, \"rss_before_kb\": {}, \"rss_after_kb\": {}, \
         \"mean_user_agent_bytes\": {:.1}, \"record_struct_bytes\": {}}}",
        per(rss0, rss1),
        per(heap0, heap1),
        rss0 / 1024,
        rss1 / 1024,
        ua_bytes as f64 / n as f64,
        std::mem::size_of::<SessionRecord>(),
    );
}
