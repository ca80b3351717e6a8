//! Connection bookkeeping for the listener: which connections are open, in
//! the order they came, and whether each has a request in flight. The
//! listener uses it to close connections that never send a request, that
//! stay idle, or that must make room under `--max-connections`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The open connections, oldest first, at most `max` of them.
pub(super) struct Connections {
    max: usize,
    open: Mutex<Open>,
}

struct Open {
    next_id: u64,
    by_age: BTreeMap<u64, Arc<Activity>>,
}

/// What `admit` did with a new connection.
pub(super) enum Admission {
    /// There was room.
    Admitted(Slot),
    /// At the cap: the oldest idle connection (or, when every one is busy,
    /// the oldest of all) was told to close for it.
    Replaced(Slot),
}

impl Connections {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(Open {
                next_id: 0,
                by_age: BTreeMap::new(),
            }),
        })
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // The table stays consistent if a holder panicked: every change is one call.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for a just-accepted connection, if it can.
    pub(super) fn admit(self: &Arc<Self>) -> Admission {
        let mut open = self.lock();
        let replaced = open.by_age.len() >= self.max;
        if replaced && !Self::evict_oldest_idle(&mut open) {
            // Every connection busy: refusing the new one would let slow
            // requests held open on every connection lock all clients out.
            Self::evict_oldest(&mut open);
        }
        let id = open.next_id;
        open.next_id += 1;
        let activity = Arc::new(Activity::new());
        open.by_age.insert(id, activity.clone());
        let slot = Slot {
            id,
            activity,
            connections: self.clone(),
        };
        if replaced {
            Admission::Replaced(slot)
        } else {
            Admission::Admitted(slot)
        }
    }

    /// Closes the oldest connection with no request in flight, to free its
    /// file descriptor; false if every connection is busy.
    pub(super) fn close_oldest_idle(&self) -> bool {
        Self::evict_oldest_idle(&mut self.lock())
    }

    fn evict_oldest(open: &mut Open) {
        if let Some((_, activity)) = open.by_age.pop_first() {
            activity.evicted.notify_one();
        }
    }

    fn evict_oldest_idle(open: &mut Open) -> bool {
        let Some(id) = open
            .by_age
            .iter()
            .find(|(_, a)| a.in_flight.load(Ordering::Acquire) == 0)
            .map(|(&id, _)| id)
        else {
            return false;
        };
        if let Some(activity) = open.by_age.remove(&id) {
            // A stored permit: the connection's task sees it even if it is
            // not waiting right now.
            activity.evicted.notify_one();
        }
        true
    }
}

/// A connection's place in the table; it leaves when the connection ends.
pub(super) struct Slot {
    id: u64,
    pub(super) activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.lock().by_age.remove(&self.id);
    }
}

/// What a connection's task should do next, by the rules in `Activity::next`.
pub(super) enum Next {
    /// Nothing yet; look again at this time.
    Wait(Instant),
    /// No complete request head in time: close at once.
    Close,
    /// Idle too long: close gracefully (GOAWAY, or end of keep-alive).
    Retire,
}

/// One connection's requests: how many are in flight and when the last ended.
pub(super) struct Activity {
    accepted: Instant,
    spoke: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `accepted` at which the last request ended.
    quiet_since_ms: AtomicU64,
    evicted: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            spoke: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
            evicted: Notify::new(),
        }
    }

    /// Completes when the connection was closed to make room for another.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Marks a request in flight until the guard (kept by the response
    /// body) is dropped.
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        self.spoke.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// The head deadline runs from accept until the first request; after
    /// that the idle timeout runs whenever no request is in flight.
    pub(super) fn next(&self, now: Instant, head: Duration, idle: Duration) -> Next {
        if !self.spoke.load(Ordering::Acquire) {
            let deadline = self.accepted + head;
            return if now >= deadline {
                Next::Close
            } else {
                Next::Wait(deadline)
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Next::Wait(now + idle);
        }
        let quiet_since =
            self.accepted + Duration::from_millis(self.quiet_since_ms.load(Ordering::Acquire));
        let deadline = quiet_since + idle;
        if now >= deadline {
            Next::Retire
        } else {
            Next::Wait(deadline)
        }
    }
}

/// A request in flight on its connection.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count drops, so whoever sees 0 sees this time.
        a.quiet_since_ms.fetch_max(ms, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until hyper has sent
/// it (or the connection ended) and drops it.
pub(super) struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(super) fn wrap(body: Body, in_flight: InFlight) -> Body {
        Body::new(Self {
            body,
            _in_flight: in_flight,
        })
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
