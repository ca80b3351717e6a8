//! Checking a session against its user: a session whose user is gone, or
//! whose user's [`session_version`](crate::AuthUser::session_version) moved
//! on, is refused even if the session store missed the change (it was down,
//! or the change came from somewhere that cannot reach it, such as the CLI
//! beside a `memory` store). The role comes from the user too, so a role
//! change takes effect on the next request whatever the store holds.
//!
//! Each user is looked up at most once per [`RECHECK_EVERY`] per process:
//! a busy user costs one backend read a millisecond, not one per request.
//! Requests that find the entry out of date while a read of it is under way
//! (begun less than [`RECHECK_EVERY`] ago) wait for that read instead of
//! starting their own: without this, every request in flight at each
//! expiry read the backend (5% of a signed-in GET's CPU on a backend
//! thread, and as much again in context switches, by `perf`).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub(crate) email: Option<Arc<str>>,
    pub(crate) email_verified: bool,
}

/// A user as sign-in and the checks see them, whatever the app's type.
#[derive(Clone)]
pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) role: String,
    pub(crate) password_hash: String,
    pub(crate) version: u64,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
}

impl Account {
    fn of<U: AuthUser>(u: &U) -> Self {
        Self {
            id: u.id(),
            username: u.username().to_owned(),
            role: u.role().to_owned(),
            password_hash: u.password_hash().to_owned(),
            version: u.session_version(),
            email: u.email().map(str::to_owned),
            email_verified: u.email_verified(),
        }
    }
}

/// The object-safe face of a [`UserBackend`]: sign-in, password changes
/// and the per-session checks all go through it, so they are written once
/// and a handle can keep the app's backend without its type.
#[async_trait]
pub(crate) trait Directory: Send + Sync {
    async fn by_name(&self, name: &str) -> Result<Option<Account>, BackendError>;
    async fn by_id(&self, id: &str) -> Result<Option<Account>, BackendError>;
    async fn bump(&self, id: &str) -> Result<(), BackendError>;
    async fn change_hash(&self, id: &str, hash: &str) -> Result<(), BackendError>;
    async fn replace_hash(&self, id: &str, old: &str, new: &str) -> Result<bool, BackendError>;
    async fn by_email(&self, email: &str) -> Result<Option<Account>, BackendError>;
    async fn set_email(
        &self,
        id: &str,
        email: Option<&str>,
        verified: bool,
    ) -> Result<bool, BackendError>;
    /// The app's own user value, for the [`User`](crate::User) extractor.
    async fn user_by_id(&self, id: &str) -> Result<Option<Box<dyn Any + Send>>, BackendError>;
}

#[async_trait]
impl<B: UserBackend> Directory for B {
    async fn by_name(&self, name: &str) -> Result<Option<Account>, BackendError> {
        Ok(self.find_by_username(name).await?.as_ref().map(Account::of))
    }
    async fn by_id(&self, id: &str) -> Result<Option<Account>, BackendError> {
        Ok(self.find_by_id(id).await?.as_ref().map(Account::of))
    }
    async fn bump(&self, id: &str) -> Result<(), BackendError> {
        self.bump_session_version(id).await
    }
    async fn change_hash(&self, id: &str, hash: &str) -> Result<(), BackendError> {
        self.change_password_hash(id, hash).await
    }
    async fn replace_hash(&self, id: &str, old: &str, new: &str) -> Result<bool, BackendError> {
        self.replace_password_hash(id, old, new).await
    }
    async fn by_email(&self, email: &str) -> Result<Option<Account>, BackendError> {
        Ok(self.find_by_email(email).await?.as_ref().map(Account::of))
    }
    async fn set_email(
        &self,
        id: &str,
        email: Option<&str>,
        verified: bool,
    ) -> Result<bool, BackendError> {
        UserBackend::set_email(self, id, email, verified).await
    }
    async fn user_by_id(&self, id: &str) -> Result<Option<Box<dyn Any + Send>>, BackendError> {
        Ok(self
            .find_by_id(id)
            .await?
            .map(|u| Box::new(u) as Box<dyn Any + Send>))
    }
}

/// One read of a user's state under way: when it began, and its answer.
type Lookup = (Instant, Arc<tokio::sync::OnceCell<Option<UserState>>>);

/// A backend's users, looked up with a short-lived cache.
pub(crate) struct UserCheck {
    pub(crate) backend: Box<dyn Directory>,
    seen: Cache<String, (Instant, Option<UserState>)>,
    /// [`RECHECK_EVERY`]; a test widens it to take wall time out of its
    /// counts.
    recheck: Duration,
    /// Reads under way, by user id; a change made here removes its user's.
    reading: std::sync::Mutex<std::collections::HashMap<String, Lookup>>,
    /// Raised by every change made here: a lookup that started before one
    /// may have read the old row, so it is not cached.
    changes: AtomicU64,
}

impl UserCheck {
    pub(crate) fn new<B: UserBackend + 'static>(backend: B) -> Self {
        Self {
            backend: Box::new(backend),
            seen: Cache::new(CAPACITY),
            recheck: RECHECK_EVERY,
            reading: Default::default(),
            changes: AtomicU64::new(0),
        }
    }

    /// The user's current state (`None`: no such user), at most
    /// [`RECHECK_EVERY`] old.
    pub(crate) async fn state(&self, user_id: &str) -> Result<Option<UserState>, Error> {
        if let Some((at, state)) = self.seen.get(user_id) {
            if at.elapsed() < self.recheck {
                return Ok(state);
            }
        }
        // Join a read begun less than RECHECK_EVERY ago (its answer is as
        // fresh as a cached one would be), else begin one.
        let (asked, lookup) = {
            let mut reading = self.reading();
            match reading.get(user_id) {
                Some((at, cell)) if at.elapsed() < self.recheck => (*at, cell.clone()),
                _ => {
                    let fresh: Lookup = (Instant::now(), Default::default());
                    reading.insert(user_id.to_owned(), fresh.clone());
                    fresh
                }
            }
        };
        // If the reader is cancelled, a waiter reads in its place.
        let state = lookup
            .get_or_try_init(|| self.read(user_id, asked))
            .await?
            .clone();
        let mut reading = self.reading();
        if reading
            .get(user_id)
            .is_some_and(|(_, cell)| Arc::ptr_eq(cell, &lookup))
        {
            reading.remove(user_id);
        }
        Ok(state)
    }

    fn reading(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Lookup>> {
        self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One backend read, cached unless a change was made meanwhile.
    async fn read(&self, user_id: &str, asked: Instant) -> Result<Option<UserState>, Error> {
        let changes = self.changes.load(Ordering::Acquire);
        let state = self
            .backend
            .by_id(user_id)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?
            .map(|a| UserState {
                version: a.version,
                role: a.role.into(),
                email: a.email.map(Into::into),
                email_verified: a.email_verified,
            });
        if self.changes.load(Ordering::Acquire) == changes {
            self.seen.insert(user_id.to_owned(), (asked, state.clone()));
            // A change between the check and the insert (its `forget` ran
            // before the insert): take the possibly stale entry out again.
            if self.changes.load(Ordering::Acquire) != changes {
                self.seen.remove(user_id);
            }
        }
        Ok(state)
    }

    /// Raises the user's session version and forgets what was cached.
    pub(crate) async fn bump(&self, user_id: &str) -> Result<(), Error> {
        let done = self
            .backend
            .bump(user_id)
            .await
            .map_err(|e| Error::Backend(e.to_string()));
        self.forget(user_id);
        done
    }

    /// Forgets a user's cached state (after a change made in this process).
    pub(crate) fn forget(&self, user_id: &str) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        // Requests from now on read anew rather than join a read that may
        // have begun before the change.
        self.reading().remove(user_id);
        self.seen.remove(user_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct One;
    impl AuthUser for One {
        fn id(&self) -> String {
            "1".into()
        }
        fn username(&self) -> &str {
            "one"
        }
        fn role(&self) -> &str {
            "user"
        }
        fn password_hash(&self) -> &str {
            ""
        }
    }

    /// Counts reads; each takes 5 ms.
    struct Slow(Arc<AtomicUsize>);
    #[async_trait]
    impl UserBackend for Slow {
        type User = One;
        async fn find_by_username(&self, _: &str) -> Result<Option<One>, BackendError> {
            Ok(None)
        }
        async fn find_by_id(&self, _: &str) -> Result<Option<One>, BackendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(Some(One))
        }
        async fn set_password_hash(&self, _: &str, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn requests_racing_an_expiry_share_one_read_and_a_change_starts_another() {
        let reads = Arc::new(AtomicUsize::new(0));
        // A window no scheduling delay can outlast: what is counted is
        // the joining, not how fast 32 tasks start on a busy machine.
        let mut check = UserCheck::new(Slow(reads.clone()));
        check.recheck = Duration::from_secs(60);
        let check = Arc::new(check);
        let mut racing = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let check = check.clone();
            racing.spawn(async move { check.state("1").await.unwrap().is_some() });
        }
        while let Some(found) = racing.join_next().await {
            assert!(found.unwrap());
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "32 racing requests, one read"
        );

        // A change made here: requests after it never join the read before
        // it (the first forget only empties the cache, so `before` reads).
        check.forget("1");
        let (before, after) = tokio::join!(check.state("1"), async {
            tokio::task::yield_now().await;
            check.forget("1");
            check.state("1").await
        });
        assert!(before.unwrap().is_some() && after.unwrap().is_some());
        assert_eq!(
            reads.load(Ordering::SeqCst),
            3,
            "the read after forget is its own"
        );
    }
}
