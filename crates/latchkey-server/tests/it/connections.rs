//! Connection limits against the real binary: the request-head deadline
//! (whatever the client speaks), the idle timeout, and `--max-connections`
//! with the file-descriptor cap, so `/healthz` answers with many idle
//! sockets open. Loopback only; every read has a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Options, Server, Target};

/// The test-only overrides of the 10 s head deadline and 60 s idle timeout.
const HEAD_ENV: &str = "LATCHKEY_TEST_HEAD_TIMEOUT_MS";
const IDLE_ENV: &str = "LATCHKEY_TEST_IDLE_TIMEOUT_MS";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn with_timeouts(head_ms: u64, idle_ms: u64, args: &[&str]) -> Options {
    Options {
        dev: true,
        env: vec![
            (HEAD_ENV.into(), head_ms.to_string()),
            (IDLE_ENV.into(), idle_ms.to_string()),
        ],
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    }
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(&s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    c
}

/// Reads (and discards, e.g. the server's HTTP/2 SETTINGS) until the server
/// closes the socket; returns how long after `since` that was, or None if
/// it was still open at `since + within`.
fn closed_after(c: &mut TcpStream, since: Instant, within: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    while since.elapsed() < within {
        match c.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(since.elapsed()), // reset by the server
        }
    }
    None
}

/// True if the server has closed `c` already (read 0 or reset, at once).
fn is_closed(c: &mut TcpStream) -> bool {
    closed_after(c, Instant::now(), Duration::from_millis(100)).is_some()
}

/// `GET /healthz` on a new connection; the status, or why there is none.
fn healthz(s: &Server, within: Duration) -> Result<u16, String> {
    let started = Instant::now();
    let mut c = TcpStream::connect(&s.addr).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(within)).unwrap();
    c.set_write_timeout(Some(within)).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(format!("no status line within {within:?}"));
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {:?}", started.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read after {:?}: {e}", started.elapsed())),
        }
    }
    let line = String::from_utf8_lossy(&got);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))
}

fn assert_healthz_answers(s: &Server, times: usize) {
    for i in 0..times {
        let started = Instant::now();
        match healthz(s, Duration::from_secs(2)) {
            Ok(200) => {}
            other => panic!(
                "healthz #{i}: {other:?} after {:?}; log:\n{}",
                started.elapsed(),
                s.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The real 10 s deadline: a socket that never sends a byte is closed.
#[test]
fn silent_connection_is_closed_at_the_head_deadline() {
    let s = Server::start(Options {
        dev: true,
        ..Options::default()
    });
    let mut c = connect(&s);
    let opened = Instant::now();
    let took = closed_after(&mut c, opened, Duration::from_secs(14))
        .expect("a silent connection was still open after 14 s");
    eprintln!("silent connection closed after {took:?}");
    assert!(
        took >= Duration::from_secs(9) && took <= Duration::from_millis(12_500),
        "closed after {took:?}, expected about 10 s"
    );
}

/// Whatever the client speaks, no complete request head in time means the
/// connection is closed: part of the HTTP/2 preface, the whole preface and
/// SETTINGS but no request, or part of an HTTP/1.1 head.
#[test]
fn incomplete_heads_are_closed_at_the_head_deadline() {
    let s = Server::start(with_timeouts(1_000, 60_000, &[]));
    let full_preface = [H2_PREFACE, H2_SETTINGS].concat();
    let cases: [(&str, &[u8]); 4] = [
        ("nothing", b""),
        ("partial HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        ("HTTP/2 preface and SETTINGS", &full_preface),
        (
            "partial HTTP/1.1 head",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        ),
    ];
    let mut conns: Vec<_> = cases
        .iter()
        .map(|(what, bytes)| {
            let mut c = connect(&s);
            c.write_all(bytes).unwrap();
            (what, c, Instant::now())
        })
        .collect();
    for (what, c, opened) in &mut conns {
        let took = closed_after(c, *opened, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{what}: still open after 5 s (deadline 1 s)"));
        eprintln!("{what}: closed after {took:?}");
        assert!(
            took >= Duration::from_millis(800),
            "{what}: closed after {took:?}, before the 1 s deadline"
        );
    }
}

/// Sends `GET /healthz` over an HTTP/2 prior-knowledge connection.
async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<axum::body::Body>,
    s: &Server,
) -> u16 {
    let req = hyper::Request::get(s.url("/healthz"))
        .body(axum::body::Body::empty())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("HTTP/2 request timed out")
        .expect("HTTP/2 request failed")
        .status()
        .as_u16()
}

/// An HTTP/2 connection is closed gracefully after the idle timeout without
/// a request (counted from the last request, not the first), and not
/// before; the head deadline no longer applies once a request came.
#[tokio::test]
async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
    let s = Server::start(with_timeouts(1_000, 3_000, &[]));
    let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let ended = conn.await;
        let _ = done_tx.send((Instant::now(), ended));
    });
    assert_eq!(h2_get(&mut sender, &s).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(done.try_recv().is_err(), "closed 2 s after a request");
    assert_eq!(h2_get(&mut sender, &s).await, 200);
    let last = Instant::now();
    let (closed, ended) = tokio::time::timeout(Duration::from_secs(8), done)
        .await
        .expect("idle HTTP/2 connection still open 8 s after its last request (idle timeout 3 s)")
        .unwrap();
    // Gracefully: GOAWAY, then the close, not a reset.
    assert!(ended.is_ok(), "the idle connection was cut: {ended:?}");
    let took = closed - last;
    eprintln!("idle HTTP/2 connection closed {took:?} after its last request");
    assert!(
        took >= Duration::from_millis(2_700),
        "closed {took:?} after the last request, before the 3 s idle timeout"
    );
}

/// An HTTP/1.1 keep-alive connection that goes quiet after a response is
/// closed too, within the idle timeout (hyper's head timeout starts when it
/// waits for the next request head).
#[test]
fn idle_http1_keep_alive_connection_is_closed() {
    let s = Server::start(with_timeouts(1_000, 3_000, &[]));
    let mut c = connect(&s);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).expect("a response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let answered = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let took = closed_after(&mut c, answered, Duration::from_secs(6))
        .expect("idle keep-alive connection still open 6 s after its response");
    eprintln!("idle HTTP/1.1 keep-alive connection closed {took:?} after its response");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
}

/// Opens `n` connections that send nothing and waits until the server has
/// had time to accept them.
fn idle_sockets(s: &Server, n: usize) -> Vec<TcpStream> {
    let conns = (0..n).map(|_| connect(s)).collect();
    std::thread::sleep(Duration::from_millis(500));
    conns
}

/// Under `ulimit -n 64`, 80 silent sockets do not stop the server: it caps
/// its connections below the limit and closes the oldest idle one for each
/// new client.
#[test]
fn healthz_answers_with_more_idle_sockets_than_file_descriptors() {
    let s = Server::start_with_nofile(
        Options {
            dev: true,
            ..Options::default()
        },
        64,
    );
    let _idle = idle_sockets(&s, 80);
    assert_healthz_answers(&s, 5);
    let _more = idle_sockets(&s, 40);
    assert_healthz_answers(&s, 5);
    assert!(
        s.log().contains("max-connections"),
        "no log line about the lowered connection cap:\n{}",
        s.log()
    );
}

/// `--max-connections 10` with 30 silent sockets: `/healthz` still answers,
/// the oldest silent sockets were closed and the newest kept.
#[test]
fn max_connections_closes_the_oldest_idle_connection() {
    let s = Server::start(Options {
        dev: true,
        args: vec!["--max-connections".into(), "10".into()],
        ..Options::default()
    });
    let mut idle = idle_sockets(&s, 30);
    assert_healthz_answers(&s, 5);
    let closed: Vec<bool> = idle.iter_mut().map(is_closed).collect();
    // 30 sockets and 5 probes through 10 places: the first 25 made room.
    assert!(
        closed[..20].iter().all(|&c| c),
        "the oldest idle sockets stayed open: {closed:?}"
    );
    assert!(
        closed[25..].iter().all(|&c| !c),
        "the newest idle sockets were closed: {closed:?}"
    );
}

/// When every connection has a request in flight, the oldest busy one is
/// closed for the new one: slow requests held open on every connection
/// (one HEADERS frame each, say) cannot lock new clients out.
#[test]
fn at_the_cap_with_every_connection_busy_the_oldest_is_closed() {
    let s = Server::start(Options {
        dev: true,
        args: vec!["--max-connections".into(), "4".into()],
        ..Options::default()
    });
    let body = br#"{"username":"nobody","password":"not the password at all"}"#;
    // A request whose body has not all arrived is in flight.
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(head.as_bytes()).unwrap();
            c.write_all(&body[..10]).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = connect(&s);
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "/healthz at the cap with every connection busy: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_after(&mut busy[0], Instant::now(), Duration::from_secs(3)).is_some(),
        "the oldest busy connection was not closed for the new one"
    );
    for (i, c) in busy.iter_mut().enumerate().skip(1) {
        c.write_all(&body[10..]).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 "),
            "busy connection {i} got no answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// If the fd limit drops below the cap after start-up (so accept meets
/// EMFILE), the server frees idle connections instead of stalling, and
/// `/healthz` still answers.
#[cfg(target_os = "linux")]
#[test]
fn accept_out_of_file_descriptors_frees_idle_connections() {
    let s = Server::start(Options {
        dev: true,
        ..Options::default()
    });
    let pid = i32::try_from(s.child.id()).unwrap();
    rlimit::prlimit(pid, rlimit::Resource::NOFILE, Some((64, 64)), None)
        .expect("lower the server's file limit");
    let _idle = idle_sockets(&s, 80);
    assert_healthz_answers(&s, 5);
    assert!(
        s.log().contains("accept failed"),
        "accept never ran out of file descriptors; the test proves nothing:\n{}",
        s.log()
    );
}
