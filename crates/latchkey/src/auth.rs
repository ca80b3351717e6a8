//! [`Latchkey`]: the handle an app keeps in its router. It signs users in
//! and out, finds the session behind a request, and ends sessions.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice};

use crate::client::RequestMeta;
use crate::cookie::CookieConfig;
use crate::error::{Error, LoginError, PasswordChangeError};
use crate::password::{HashParams, PasswordHasher, PasswordPolicy};
use crate::session::{now_ms, random_bytes, SessionRecord, SessionToken, Timeouts, TokenHash};
use crate::store::Store;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::user::{AuthUser, UserBackend};
use crate::user_check::UserCheck;
use crate::LatchkeyLayer;

/// Logs hold at most this many characters of a name a client sent.
const LOGGED_NAME_CHARS: usize = 64;

/// A client-sent name as logs may hold it: cut to [`LOGGED_NAME_CHARS`], so
/// a long hostile username cannot make every refused attempt a large log line.
fn clip(name: &str) -> &str {
    name.char_indices()
        .nth(LOGGED_NAME_CHARS)
        .map_or(name, |(i, _)| &name[..i])
}

/// The name attempts are counted under: the same for every spelling that
/// signs in to one account (`ALICE`, fullwidth `ａｌｉｃｅ`), so case variants
/// cannot stretch the limits. Names far too long to be anyone's are counted
/// as sent, without Unicode work on hostile input (they are hashed anyway).
fn throttle_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() > 4 * 1024 {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(crate::username::fold(name))
    }
}

/// Settings; start from [`Config::new`] and change what you need.
#[derive(Clone)]
pub struct Config {
    pub(crate) key: SecretSlice<u8>,
    pub(crate) timeouts: Timeouts,
    pub(crate) secure: bool,
    pub(crate) throttle: ThrottleConfig,
    pub(crate) policy: PasswordPolicy,
    pub(crate) hash_params: HashParams,
    pub(crate) hash_concurrency: usize,
    pub(crate) max_pending_logins: usize,
    pub(crate) login_path: String,
    pub(crate) trusted_origins: Vec<String>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
}

impl Config {
    /// Safe defaults around a server secret of 32 or more random bytes (it
    /// keys the sign-in forms' CSRF tokens): 30 min idle, 8 h absolute,
    /// `Secure` `__Host-` cookies, OWASP Argon2id, default throttling.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: SecretSlice::from(key.into()),
            timeouts: Timeouts::new(Duration::from_secs(30 * 60), Duration::from_secs(8 * 3600)),
            secure: true,
            throttle: ThrottleConfig::default(),
            policy: PasswordPolicy::default(),
            hash_params: HashParams::OWASP,
            hash_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_pending_logins: crate::password::DEFAULT_MAX_PENDING,
            login_path: "/login".into(),
            trusted_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }

    /// Idle and absolute timeouts (the absolute one rules when shorter).
    pub fn timeouts(mut self, idle: Duration, absolute: Duration) -> Self {
        self.timeouts = Timeouts::new(idle, absolute);
        self
    }

    /// `false` only for plain-HTTP development: cookies lose `Secure` and
    /// the `__Host-` prefix, and no HSTS header is sent.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Throttling limits.
    pub fn throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.throttle = throttle;
        self
    }

    /// Password rules for new passwords.
    pub fn password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Argon2id parameters for new hashes, and how many may run at once.
    pub fn hashing(mut self, params: HashParams, concurrency: usize) -> Self {
        self.hash_params = params;
        self.hash_concurrency = concurrency.max(1);
        self
    }

    /// How many requests may wait for a password hash at once (default
    /// 256); past that, sign-ins and password changes get 503 with
    /// `Retry-After` instead of queueing without bound.
    pub fn max_pending_logins(mut self, n: usize) -> Self {
        self.max_pending_logins = n.max(1);
        self
    }

    /// Where signed-out browsers are sent (default `/login`).
    pub fn login_path(mut self, path: impl Into<String>) -> Self {
        self.login_path = path.into();
        self
    }

    /// Origins besides the request's own allowed to send unsafe methods.
    pub fn trusted_origins(mut self, origins: Vec<String>) -> Self {
        self.trusted_origins = origins;
        self
    }

    /// Proxies whose `X-Forwarded-For` names the client; from any other
    /// peer the header is ignored.
    pub fn trusted_proxies(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The session timeouts in force.
    pub fn session_timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Whether cookies are `Secure` and HSTS is sent.
    pub fn is_secure(&self) -> bool {
        self.secure
    }
}

// The server secret must never reach a log through `{:?}`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("key", &"<redacted>")
            .field("timeouts", &self.timeouts)
            .field("secure", &self.secure)
            .field("throttle", &self.throttle)
            .field("policy", &self.policy)
            .field("hash_params", &self.hash_params)
            .field("hash_concurrency", &self.hash_concurrency)
            .field("max_pending_logins", &self.max_pending_logins)
            .field("login_path", &self.login_path)
            .field("trusted_origins", &self.trusted_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// What a session's user allows of it on this request.
enum Verdict {
    /// Valid: go on with this record (its role may have been refreshed).
    Keep(Arc<SessionRecord>),
    /// Not now, but not provably dead: refuse without deleting.
    Refuse,
    /// Dead for good: refuse and delete it.
    End,
}

/// A new session: send `set_cookie` as `Set-Cookie`.
pub struct LoginSuccess {
    /// The record as stored.
    pub record: SessionRecord,
    /// `Set-Cookie` header value carrying the new token.
    pub set_cookie: HeaderValue,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    throttle: Throttle,
    cookies: CookieConfig,
    touching: std::sync::Mutex<std::collections::HashSet<TokenHash>>,
    users: Option<UserCheck>,
}

/// The latchkey handle: cheap to clone, shared by the layer and extractors.
#[derive(Clone)]
pub struct Latchkey(pub(crate) Arc<Inner>);

impl Latchkey {
    /// Sessions and throttle counters in `store`, configured by `config`.
    /// Sessions are trusted as the store keeps them; prefer
    /// [`Latchkey::with_users`], which also checks each session's user.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        Self::build(config, store, None)
    }

    /// Like [`Latchkey::new`], and every session is checked against its
    /// user in `users` (looked up at most once a millisecond per user): a
    /// session whose user is gone or whose
    /// [`session_version`](AuthUser::session_version) moved on is refused,
    /// and the user's current role applies, even when the session store
    /// missed the change.
    pub fn with_users<B: UserBackend + 'static>(
        config: Config,
        store: Arc<dyn Store>,
        users: B,
    ) -> Self {
        Self::build(config, store, Some(UserCheck::new(users)))
    }

    fn build(config: Config, store: Arc<dyn Store>, users: Option<UserCheck>) -> Self {
        let counters: Arc<dyn crate::store::CounterStore> = store.clone();
        Self(Arc::new(Inner {
            hasher: PasswordHasher::with_max_pending(
                config.hash_params,
                config.hash_concurrency,
                config.max_pending_logins,
            ),
            throttle: Throttle::new(counters, config.throttle.clone()),
            cookies: CookieConfig::new(config.secure, config.timeouts.absolute()),
            touching: Default::default(),
            users,
            store,
            config,
        }))
    }

    /// The tower layer: makes this handle reachable from extractors, refuses
    /// cross-site unsafe requests and sets the security headers.
    pub fn layer(&self) -> LatchkeyLayer {
        LatchkeyLayer::new(self.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Cookie names and attributes.
    pub fn cookies(&self) -> &CookieConfig {
        &self.0.cookies
    }

    /// The Argon2id hasher (bounded pool).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.0.hasher
    }

    /// The rules for new passwords.
    pub fn policy(&self) -> &PasswordPolicy {
        &self.0.config.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// The live session behind the request's cookie, if any. Refreshes
    /// `last_seen_at` in the background at most every
    /// [`Timeouts::touch_interval`]: the hot path does not write per request.
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<Arc<SessionRecord>>, Error> {
        let Some(key) = self.0.cookies.token_hash(headers) else {
            return Ok(None);
        };
        let Some(record) = self.0.store.load(&key).await? else {
            return Ok(None);
        };
        let now = now_ms();
        let t = self.0.config.timeouts;
        if now
            >= record
                .expires_at
                .min(t.expires_at(record.created_at, record.last_seen_at))
        {
            let store = self.0.store.clone();
            tokio::spawn(async move { store.delete(&key).await });
            return Ok(None);
        }
        let record = match self.checked(record).await? {
            Verdict::Keep(record) => record,
            Verdict::Refuse => return Ok(None),
            Verdict::End => {
                let store = self.0.store.clone();
                tokio::spawn(async move { store.delete(&key).await });
                return Ok(None);
            }
        };
        if t.needs_touch(&record, now) && self.lock_touching().insert(key) {
            // One refresh in flight per session, however many requests race.
            let this = self.clone();
            let expires_at = t.expires_at(record.created_at, now);
            tokio::spawn(async move {
                if let Err(e) = this.0.store.touch(&key, now, expires_at).await {
                    tracing::warn!(error = %e, "could not record session activity");
                }
                this.lock_touching().remove(&key);
            });
        }
        Ok(Some(record))
    }

    /// The session as its user allows it now, with the user's current role.
    async fn checked(&self, record: Arc<SessionRecord>) -> Result<Verdict, Error> {
        let Some(users) = &self.0.users else {
            return Ok(Verdict::Keep(record));
        };
        let Some(user) = users.state(&record.user_id).await? else {
            return Ok(Verdict::End); // the user is gone
        };
        if record.user_version < user.version {
            return Ok(Verdict::End); // ended by "sign out everywhere" or a new password
        }
        if record.user_version > user.version {
            // Issued after the user row this process read: the read is stale.
            // Refused now (fail closed), kept for the next, fresher read.
            return Ok(Verdict::Refuse);
        }
        if *user.role == *record.role {
            return Ok(Verdict::Keep(record));
        }
        // The store missed a role change (or has not seen it yet).
        let mut current = (*record).clone();
        current.role = user.role.to_string();
        Ok(Verdict::Keep(Arc::new(current)))
    }

    fn lock_touching(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<TokenHash>> {
        self.0.touching.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_record(
        &self,
        user_id: String,
        username: String,
        role: String,
        user_version: u64,
        meta: &RequestMeta,
    ) -> (SessionToken, SessionRecord) {
        let token = SessionToken::generate();
        let now = now_ms();
        let record = SessionRecord {
            id: hex::encode(random_bytes::<16>()),
            token_hash: Some(token.hash()),
            user_id,
            username,
            role,
            created_at: now,
            last_seen_at: now,
            expires_at: self.0.config.timeouts.expires_at(now, now),
            user_agent: meta.user_agent.clone(),
            ip: meta.ip.clone(),
            csrf_secret: SessionToken::generate().as_str().to_owned(),
            user_version,
        };
        (token, record)
    }

    async fn issue(
        &self,
        token: SessionToken,
        record: SessionRecord,
    ) -> Result<LoginSuccess, Error> {
        self.0.store.create(&record).await?;
        Ok(LoginSuccess {
            set_cookie: self.0.cookies.session(&token),
            record,
        })
    }

    /// Signs `username` in. Takes a place in the hashing queue (503 when
    /// full), counts the attempt before verifying it (429 past a limit),
    /// verifies with Argon2id (a dummy hash for unknown users, so both cost
    /// the same), re-reads the user so a password change, removal or
    /// "sign out everywhere" during the hash fails the sign-in, ends the
    /// session the request came with (no fixation), upgrades a weak hash,
    /// and issues a fresh token carrying the user's current role.
    ///
    /// # Errors
    /// [`LoginError::InvalidCredentials`] for an unknown user or a wrong
    /// password alike, [`LoginError::Throttled`] past a limit, and
    /// [`LoginError::Unavailable`] when a store or the hasher fails (or is full).
    pub async fn login<B: UserBackend>(
        &self,
        backend: &B,
        username: &str,
        password: &str,
        meta: &RequestMeta,
        previous: Option<&SessionToken>,
    ) -> Result<LoginSuccess, LoginError> {
        let name = clip(username);
        let slot = self.0.hasher.slot()?;
        let throttle = &self.0.throttle;
        let attempt = match throttle
            .reserve(&throttle_name(username), &meta.ip)
            .await
            .map_err(Error::from)?
        {
            Ok(attempt) => attempt,
            Err(retry_after) => {
                tracing::warn!(target: "latchkey::audit", event = "login_throttled", username = name, ip = %meta.ip, retry_after = retry_after.as_secs());
                return Err(LoginError::Throttled { retry_after });
            }
        };
        let user = match backend.find_by_username(username).await {
            Ok(user) => user,
            Err(e) => {
                // Never judged on its password: an outage must not lock anyone out.
                throttle.abandon(attempt).await.map_err(Error::from)?;
                return Err(Error::Backend(e.to_string()).into());
            }
        };
        let ok = self
            .0
            .hasher
            .verify_in(slot, password, user.as_ref().map(|u| u.password_hash()))
            .await?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::warn!(target: "latchkey::audit", event = "login_failed", username = name, ip = %meta.ip);
            return Err(LoginError::InvalidCredentials);
        };
        let user = match self.still_current(backend, user).await {
            Ok(Some(user)) => user,
            found => {
                throttle.abandon(attempt).await.map_err(Error::from)?;
                found?;
                tracing::warn!(target: "latchkey::audit", event = "login_superseded", username = name, ip = %meta.ip);
                return Err(LoginError::InvalidCredentials);
            }
        };
        throttle.succeeded(attempt).await.map_err(Error::from)?;
        if self.0.hasher.needs_rehash(user.password_hash()) {
            self.rehash(backend, &user, password).await;
        }
        if let Some(previous) = previous {
            self.0
                .store
                .delete(&previous.hash())
                .await
                .map_err(Error::from)?;
        }
        let (token, record) = self.new_record(
            user.id(),
            user.username().to_owned(),
            user.role().to_owned(),
            user.session_version(),
            meta,
        );
        let done = self.issue(token, record).await?;
        tracing::info!(target: "latchkey::audit", event = "login", username = name, ip = %meta.ip, session = %done.record.id);
        Ok(done)
    }

    /// The user as the backend has them after a hash: `None` when they were
    /// removed, their password changed or their sessions were ended while
    /// the hash ran — a sign-in that was in flight must not outlive that.
    async fn still_current<B: UserBackend>(
        &self,
        backend: &B,
        verified: B::User,
    ) -> Result<Option<B::User>, Error> {
        let now = backend
            .find_by_id(&verified.id())
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        Ok(now.filter(|u| {
            u.session_version() == verified.session_version()
                && u.password_hash() == verified.password_hash()
        }))
    }

    async fn rehash<B: UserBackend>(&self, backend: &B, user: &B::User, password: &str) {
        let result = match self.0.hasher.hash(password).await {
            // Only over the hash this sign-in verified: a password changed
            // while the upgrade hashed must not be undone.
            Ok(hash) => backend
                .replace_password_hash(&user.id(), user.password_hash(), &hash)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(target: "latchkey::audit", event = "password_rehashed", username = user.username())
            }
            // The login still succeeds; the upgrade is retried next time.
            Err(e) => {
                tracing::warn!(username = user.username(), error = %e, "password hash upgrade failed")
            }
        }
    }

    /// Ends the request's session on the server (idempotent).
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), Error> {
        if let Some(token) = self.0.cookies.token(headers) {
            let key = token.hash();
            if let Some(record) = self.0.store.load(&key).await? {
                tracing::info!(target: "latchkey::audit", event = "logout", username = %record.username, session = %record.id);
            }
            self.0.store.delete(&key).await?;
        }
        Ok(())
    }

    /// The live sessions of `user_id`, oldest first.
    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, Error> {
        let now = now_ms();
        let mut all = self.0.store.list_user(user_id).await?;
        let version = match &self.0.users {
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
    pub async fn end_session(&self, user_id: &str, id: &str) -> Result<bool, Error> {
        let found = self
            .sessions_of(user_id)
            .await?
            .into_iter()
            .find(|r| crate::csrf::secrets_equal(&r.id, id));
        let Some(record) = found else {
            return Ok(false);
        };
        self.0.store.delete(&record.key()).await?;
        tracing::info!(target: "latchkey::audit", event = "session_revoked", username = %record.username, session = %record.id);
        Ok(true)
    }

    /// Ends every session of `user_id` except `keep`. Ending all of them
    /// (no `keep`) also raises the user's session version (with
    /// [`Latchkey::with_users`]) first, so a sign-in in flight cannot
    /// outlive it, and sessions stay refused even if the store delete fails.
    ///
    /// # Errors
    /// [`Error`] when the user backend or the store fails.
    pub async fn end_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, Error> {
        if let (Some(users), None) = (&self.0.users, keep) {
            users.bump(user_id).await?;
        }
        let n = self.0.store.delete_user(user_id, keep).await?;
        tracing::info!(target: "latchkey::audit", event = "sessions_ended", user_id, count = n);
        Ok(n)
    }

    /// Applies a role change to the user's live sessions (next request sees it).
    pub async fn set_role(&self, user_id: &str, role: &str) -> Result<(), Error> {
        if let Some(users) = &self.0.users {
            users.forget(user_id);
        }
        self.0.store.set_role(user_id, role).await?;
        tracing::info!(target: "latchkey::audit", event = "role_changed", user_id, role);
        Ok(())
    }

    /// Changes the signed-in user's password after checking the current
    /// one: every other session ends and this one gets a new token (same
    /// handle, same absolute deadline).
    pub async fn change_password<B: UserBackend>(
        &self,
        backend: &B,
        current: &SessionRecord,
        current_password: &str,
        new_password: &str,
        meta: &RequestMeta,
    ) -> Result<LoginSuccess, PasswordChangeError> {
        let name = clip(&current.username);
        let slot = self.0.hasher.slot()?;
        let throttle = &self.0.throttle;
        // Counted before verifying, like sign-ins: a stolen session cannot
        // be used to guess the password faster than the sign-in form allows.
        let attempt = match throttle
            .reserve(&throttle_name(&current.username), &meta.ip)
            .await
            .map_err(Error::from)?
        {
            Ok(attempt) => attempt,
            Err(retry_after) => return Err(PasswordChangeError::Throttled { retry_after }),
        };
        let user = match backend.find_by_id(&current.user_id).await {
            Ok(user) => user,
            Err(e) => {
                throttle.abandon(attempt).await.map_err(Error::from)?;
                return Err(Error::Backend(e.to_string()).into());
            }
        };
        let ok = self
            .0
            .hasher
            .verify_in(
                slot,
                current_password,
                user.as_ref().map(|u| u.password_hash()),
            )
            .await?;
        let Some(user) = user.filter(|_| ok) else {
            tracing::warn!(target: "latchkey::audit", event = "password_change_failed", username = name, ip = %meta.ip);
            return Err(PasswordChangeError::WrongPassword);
        };
        throttle.succeeded(attempt).await.map_err(Error::from)?;
        self.0
            .config
            .policy
            .check(user.username(), new_password)
            .map_err(PasswordChangeError::Rejected)?;
        let hash = self.0.hasher.hash(new_password).await?;
        let id = user.id();
        let backend_err = |e: crate::user::BackendError| Error::Backend(e.to_string());
        // One write: every session issued before is refused from here on,
        // also one a sign-in still in flight is about to create, and a
        // request cancelled after it leaves nothing half done.
        backend
            .change_password_hash(&id, &hash)
            .await
            .map_err(backend_err)?;
        if let Some(users) = &self.0.users {
            users.forget(&id);
        }
        self.0
            .store
            .delete_user(&id, None)
            .await
            .map_err(Error::from)?;
        let user = backend
            .find_by_id(&id)
            .await
            .map_err(backend_err)?
            .ok_or_else(|| Error::Backend("the user was removed during the change".into()))?;
        let (token, mut record) = self.new_record(
            id,
            user.username().to_owned(),
            user.role().to_owned(),
            user.session_version(),
            meta,
        );
        record.id = current.id.clone();
        record.created_at = current.created_at;
        record.expires_at = self
            .0
            .config
            .timeouts
            .expires_at(record.created_at, record.last_seen_at);
        let done = self.issue(token, record).await?;
        tracing::info!(target: "latchkey::audit", event = "password_changed", username = name, ip = %meta.ip, session = %done.record.id);
        Ok(done)
    }

    /// The CSRF token an HTML form must carry: the session's when signed
    /// in, else one bound (by HMAC with the server key) to a pre-session
    /// cookie; the second value is that cookie's `Set-Cookie` when the
    /// request lacked one.
    pub fn form_token(
        &self,
        headers: &HeaderMap,
        user: Option<&crate::CurrentUser>,
    ) -> (String, Option<HeaderValue>) {
        if let Some(user) = user {
            return (user.csrf_token().to_owned(), None);
        }
        let cookies = &self.0.cookies;
        let existing = cookies
            .pre_session_value(headers)
            .filter(|v| SessionToken::parse(v).is_some());
        let (value, set) = match existing {
            Some(v) => (v, None),
            None => {
                let v = SessionToken::generate().as_str().to_owned();
                let set = cookies.pre_session(&v);
                (v, Some(set))
            }
        };
        (
            crate::csrf::pre_session_token(self.0.config.key.expose_secret(), &value),
            set,
        )
    }

    /// Counts one sign-up attempt from the client (a taken name too):
    /// `Some(wait)` once the address made more than the per-(username,
    /// address) limit of attempts within the window.
    ///
    /// # Errors
    /// [`Error::Store`] when the counters cannot be reached.
    pub async fn signup_attempt(&self, meta: &RequestMeta) -> Result<Option<Duration>, Error> {
        Ok(self.0.throttle.signup(&meta.ip).await?)
    }

    /// Whether the store answers (for readiness probes).
    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.0.store.ping().await?)
    }

    /// Sweeps expired sessions and counters in the background, in small
    /// batches, every tenth of the idle timeout (1 s to 60 s).
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let store = self.0.store.clone();
        let every = (self.0.config.timeouts.idle() / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
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
