//! The HTTP listener. axum's `serve` has no header-read timeout or header
//! size cap, so connections are driven by hyper-util directly: slow or
//! oversized headers are cut off, silent and idle connections are closed,
//! open connections are capped, and shutdown drains in-flight requests.

mod conn;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;

use crate::app::AppService;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use conn::{Admission, Connections, Next, Slot, TrackedBody};

/// A client must send its whole request head within this time of
/// connecting (whatever it speaks), and hyper holds each later HTTP/1 head
/// to the same.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight this long is closed: HTTP/2 has
/// no idle timeout of its own, and idle sockets cost file descriptors.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request heads larger than this are refused (431 or a closed connection).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// File descriptors left free below the limit for the stores' pools, the
/// database files and the log.
const FD_HEADROOM: u64 = 32;
/// The connection cap never drops below this, however low the fd limit.
const MIN_CONNECTIONS: u64 = 8;
/// An idle connection told to close (HTTP/2 GOAWAY) is cut off after this
/// if the client ignores it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// After accept fails (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one "connection cap reached" warning this often.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The head deadline and idle timeout in force: the constants, unless a
/// test shortens them with the hidden variables below (test-only: they
/// let the suite check both rules in seconds instead of minutes).
#[derive(Clone, Copy)]
struct Timeouts {
    head: Duration,
    idle: Duration,
}

impl Timeouts {
    fn from_env() -> Self {
        let ms = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                // Test-only; clamped so a stray value can neither disable
                // a deadline nor overflow the clock.
                .map(|ms| Duration::from_millis(ms.clamp(100, 600_000)))
        };
        Self {
            head: ms("LATCHKEY_TEST_HEAD_TIMEOUT_MS").unwrap_or(HEAD_TIMEOUT),
            idle: ms("LATCHKEY_TEST_IDLE_TIMEOUT_MS").unwrap_or(IDLE_TIMEOUT),
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one and returns the
/// connection cap to use: `requested`, lowered (with a warning) to leave
/// `FD_HEADROOM` descriptors free, so a flood of sockets meets the cap,
/// not EMFILE.
pub fn connection_cap(requested: u32) -> usize {
    let requested = u64::from(requested);
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|e| {
            // E.g. an unlimited hard limit the kernel will not grant: keep the soft one.
            tracing::debug!(error = %e, "could not raise the file-descriptor limit");
            rlimit::Resource::NOFILE.get().map(|(soft, _)| soft)
        })
        .unwrap_or(u64::MAX);
    let room = limit.saturating_sub(FD_HEADROOM).max(MIN_CONNECTIONS);
    let cap = if requested > room {
        tracing::warn!(
            "--max-connections {requested} lowered to {room}: the file-descriptor limit is {limit} (raise it with ulimit -n or LimitNOFILE=)"
        );
        room
    } else {
        requested
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

pub async fn serve(
    listener: TcpListener,
    app: AppService,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let timeouts = Timeouts::from_env();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.head)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let connections = Connections::new(max_connections);
    let (stop, stopped) = watch::channel(());
    let mut last_cap_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors despite the cap (the stores
                    // took more): free an idle connection's, back off, go on.
                    if is_fd_exhaustion(&e) {
                        connections.close_oldest_idle();
                    }
                    tracing::warn!(error = %e, "accept failed");
                    // Only running out of something is worth waiting for;
                    // a client's own failure (an aborted handshake) is not.
                    if is_resource_exhaustion(&e) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match connections.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Replaced(slot) => {
                warn_at_cap(
                    &mut last_cap_warning,
                    connections.max(),
                    "closing the oldest idle (or, if all are busy, the oldest) connection for each new one",
                );
                slot
            }
        };
        tokio::spawn(drive(
            &builder,
            &app,
            stream,
            peer,
            slot,
            timeouts,
            stopped.clone(),
        ));
    }
    drop(listener);
    drop(stopped);
    let _ = stop.send(());
    tokio::select! {
        () = stop.closed() => {},
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; exiting anyway"),
    }
}

fn warn_at_cap(last: &mut Option<Instant>, max: usize, what: &str) {
    if last.is_none_or(|t| t.elapsed() >= CAP_WARNING_EVERY) {
        *last = Some(Instant::now());
        tracing::warn!("{max} connections open (--max-connections): {what}");
    }
}

/// EMFILE or ENFILE (the same numbers on Linux, macOS and the BSDs).
fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Out of descriptors, buffers or memory (ENOBUFS 105, ENOMEM 12 on Linux).
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    is_fd_exhaustion(e) || matches!(e.raw_os_error(), Some(12 | 105))
}

/// Serves one connection until it ends, closing it when it breaks the head
/// deadline or idle timeout, is evicted, or the server shuts down. Dropping
/// the connection closes the socket.
fn drive(
    builder: &Builder<TokioExecutor>,
    app: &AppService,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    timeouts: Timeouts,
    mut stopped: watch::Receiver<()>,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let activity = slot.activity.clone();
    let app = app.clone();
    let tracked = activity.clone();
    let service = tower::service_fn(move |req: axum::http::Request<Incoming>| {
        let in_flight = tracked.request();
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        let answer = app.clone().oneshot(req);
        async move {
            let res = answer.await?;
            Ok::<_, std::convert::Infallible>(res.map(|body| TrackedBody::wrap(body, in_flight)))
        }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    async move {
        let _slot = slot;
        tokio::pin!(conn);
        let mut closing = false;
        let mut wake = Instant::now() + timeouts.head;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                () = activity.evicted() => {
                    tracing::debug!(%peer, "closing an idle connection to make room for a new one");
                    return;
                }
                () = tokio::time::sleep_until(wake) => {
                    if closing {
                        tracing::debug!(%peer, "connection did not close in time; dropping it");
                        return;
                    }
                    match activity.next(Instant::now(), timeouts.head, timeouts.idle) {
                        Next::Wait(at) => wake = at,
                        Next::Close => {
                            tracing::debug!(%peer, "no request head within {:?}; closing", timeouts.head);
                            return;
                        }
                        Next::Retire => {
                            tracing::debug!(%peer, "idle for {:?}; closing", timeouts.idle);
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                            wake = Instant::now() + CLOSE_GRACE;
                        }
                    }
                }
                // Err: the server is gone too; either way, drain.
                _ = stopped.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    wake = Instant::now() + DRAIN_TIMEOUT;
                }
            }
        }
    }
}
