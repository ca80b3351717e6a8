//! [`Sessions`]: the sessions of users as an app, its admin pages or a
//! command-line tool manage them — list, end one, end all, carry a role
//! change, sweep, readiness — with an audit event wherever it acts. A
//! [`Latchkey`](crate::Latchkey) has one ([`Latchkey::sessions`](crate::Latchkey::sessions));
//! a tool without a server secret builds one from the store alone.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::session::{now_ms, SessionRecord, TokenHash};
use crate::store::Store;
use crate::user_check::UserCheck;

/// The most JSON a session's app data may hold: it is read with the session
/// on every request, so keep it small (ids, preferences, a cart's keys).
pub const MAX_SESSION_DATA: usize = 16 * 1024;

/// See the module docs.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    users: Option<Arc<UserCheck>>,
    sweep_every: Duration,
}

impl Sessions {
    /// The sessions in `store`, for a tool that has no [`Latchkey`](crate::Latchkey)
    /// (the `latchkey user` CLI): its changes are logged like the server's.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            users: None,
            sweep_every: Duration::from_secs(60),
        }
    }

    pub(crate) fn with_users(
        store: Arc<dyn Store>,
        users: Option<Arc<UserCheck>>,
        idle: Duration,
    ) -> Self {
        Self {
            store,
            users,
            // A tenth of the idle timeout, 1 s to 60 s.
            sweep_every: (idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    /// Stores `value` (as JSON) as the app's data of `session`, replacing
    /// what was there; `None` clears it. `false` when the session has ended
    /// meanwhile (it is not brought back). One store write: call it when
    /// the data changes, not on every request.
    ///
    /// ```
    /// # async fn demo(auth: latchkey::Latchkey, signed_in: &latchkey::SignedIn) -> Result<(), latchkey::Error> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Prefs { theme: String }
    /// auth.sessions()
    ///     .set_data(&signed_in.record, Some(&Prefs { theme: "dark".into() }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::SessionData`] when `value` does not serialise or is over
    /// [`MAX_SESSION_DATA`] bytes; [`Error::Store`] when the store fails.
    pub async fn set_data<T: serde::Serialize + ?Sized>(
        &self,
        session: &SessionRecord,
        value: Option<&T>,
    ) -> Result<bool, Error> {
        let data = value
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::SessionData(e.to_string()))?;
        if let Some(d) = &data {
            if d.len() > MAX_SESSION_DATA {
                return Err(Error::SessionData(format!(
                    "{} bytes of JSON, over the {MAX_SESSION_DATA}-byte limit",
                    d.len()
                )));
            }
        }
        let mut record = session.clone();
        record.data = data.map(Into::into);
        Ok(self.store.update(&record).await?)
    }

    /// The live sessions of `user_id`, oldest first.
    ///
    /// # Errors
    /// [`Error`] when the store or the user backend fails.
    pub async fn of_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, Error> {
        let now = now_ms();
        let mut all = self.store.list_user(user_id).await?;
        let version = match &self.users {
            Some(users) => match users.state(user_id).await? {
                Some(u) => Some(u.version),
                None => return Ok(Vec::new()), // the user is gone
            },
            None => None,
        };
        // Sessions issued before the user's last "sign out everywhere" are
        // refused on use; they are not listed either.
        all.retain(|r| r.expires_at > now && version.is_none_or(|v| v == r.user_version));
        Ok(all)
    }

    /// Ends the session with public handle `id` if it belongs to `user_id`;
    /// `false` when there is no such session of theirs.
    pub async fn end(&self, user_id: &str, id: &str) -> Result<bool, Error> {
        use subtle::ConstantTimeEq;
        let Some(id) = crate::session::SessionId::parse(id) else {
            return Ok(false);
        };
        let found = self
            .of_user(user_id)
            .await?
            .into_iter()
            .find(|r| bool::from(r.id.0.ct_eq(&id.0)));
        let Some(record) = found else {
            return Ok(false);
        };
        self.store.delete(&record.key()).await?;
        tracing::info!(target: "latchkey::audit", event = "session_revoked", username = %record.username, session = %record.id);
        Ok(true)
    }

    /// Ends every session of `user_id` except `keep`. With
    /// [`Builder::users`](crate::Builder::users) it first raises the user's
    /// session version, so a sign-in in flight cannot outlive it and the
    /// sessions stay refused even if the store delete fails; the kept
    /// session is filed again under the new version (same token, so its
    /// cookie keeps working).
    ///
    /// # Errors
    /// [`Error`] when the user backend or the store fails.
    pub async fn end_all(&self, user_id: &str, keep: Option<&TokenHash>) -> Result<u64, Error> {
        if let Some(users) = &self.users {
            let kept = match keep {
                Some(key) => self.store.load(key).await?,
                None => None,
            };
            users.bump(user_id).await?;
            if let (Some(kept), Some(now)) = (kept, users.state(user_id).await?) {
                let mut again = (*kept).clone();
                again.user_version = now.version;
                // Delete then create: the stores have no "update one field"
                // operation, and a request in between is refused, not let in.
                self.store.delete(&again.key()).await?;
                self.store.create(&again).await?;
            }
        }
        let n = self.store.delete_user(user_id, keep).await?;
        tracing::info!(target: "latchkey::audit", event = "sessions_ended", user_id, count = n);
        Ok(n)
    }

    /// Applies a role change to the user's live sessions (next request sees it).
    pub async fn set_role(&self, user_id: &str, role: &str) -> Result<(), Error> {
        if let Some(users) = &self.users {
            users.forget(user_id);
        }
        self.store.set_role(user_id, role).await?;
        tracing::info!(target: "latchkey::audit", event = "role_changed", user_id, role);
        Ok(())
    }

    /// Whether the store answers (for readiness probes).
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.store.ping().await?)
    }

    /// Sweeps expired sessions and counters in the background, in small
    /// batches, every tenth of the idle timeout (1 s to 60 s).
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let every = self.sweep_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.sweep(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(swept = n, "expired sessions removed"),
                    Err(e) => tracing::warn!(error = %e, "session sweep failed; will retry"),
                }
            }
        })
    }
}
