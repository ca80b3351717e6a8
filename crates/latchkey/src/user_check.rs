//! Checking a session against its user: a session whose user is gone, or
//! whose user's [`session_version`](crate::AuthUser::session_version) moved
//! on, is refused even if the session store missed the change (it was down,
//! or the change came from somewhere that cannot reach it, such as the CLI
//! beside a `memory` store). The role comes from the user too, so a role
//! change takes effect on the next request whatever the store holds.
//!
//! Each user is looked up at most once per [`RECHECK_EVERY`] per process:
//! a busy user costs one backend read a millisecond, not one per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::sync::Cache;

use crate::error::Error;
use crate::user::{AuthUser, BackendError, UserBackend};

/// How old a user's looked-up state may be before a request reads it again.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_millis(1);
/// Users whose state is kept per process.
const CAPACITY: usize = 100_000;

/// What a session is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserState {
    pub(crate) version: u64,
    pub(crate) role: Arc<str>,
}

/// The object-safe part of a [`UserBackend`] that the checks need.
#[async_trait]
trait Lookup: Send + Sync {
    async fn state(&self, user_id: &str) -> Result<Option<UserState>, BackendError>;
    async fn bump(&self, user_id: &str) -> Result<(), BackendError>;
}

#[async_trait]
impl<B: UserBackend> Lookup for B {
    async fn state(&self, user_id: &str) -> Result<Option<UserState>, BackendError> {
        Ok(self.find_by_id(user_id).await?.map(|u| UserState {
            version: u.session_version(),
            role: u.role().into(),
        }))
    }

    async fn bump(&self, user_id: &str) -> Result<(), BackendError> {
        self.bump_session_version(user_id).await
    }
}

/// A backend's users, looked up with a short-lived cache.
pub(crate) struct UserCheck {
    backend: Box<dyn Lookup>,
    seen: Cache<String, (Instant, Option<UserState>)>,
}

impl UserCheck {
    pub(crate) fn new<B: UserBackend + 'static>(backend: B) -> Self {
        Self {
            backend: Box::new(backend),
            seen: Cache::new(CAPACITY),
        }
    }

    /// The user's current state (`None`: no such user), at most
    /// [`RECHECK_EVERY`] old.
    pub(crate) async fn state(&self, user_id: &str) -> Result<Option<UserState>, Error> {
        if let Some((at, state)) = self.seen.get(user_id) {
            if at.elapsed() < RECHECK_EVERY {
                return Ok(state);
            }
        }
        let asked = Instant::now();
        let state = self
            .backend
            .state(user_id)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        self.seen.insert(user_id.to_owned(), (asked, state.clone()));
        Ok(state)
    }

    /// Raises the user's session version and forgets what was cached.
    pub(crate) async fn bump(&self, user_id: &str) -> Result<(), Error> {
        let done = self
            .backend
            .bump(user_id)
            .await
            .map_err(|e| Error::Backend(e.to_string()));
        self.seen.remove(user_id);
        done
    }

    /// Forgets a user's cached state (after a change made in this process).
    pub(crate) fn forget(&self, user_id: &str) {
        self.seen.remove(user_id);
    }
}
