//! [`Latchkey`]: the handle an app keeps in its router. It signs users in
//! and out, finds the session behind a request, and ends sessions.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use crate::client::RequestMeta;
use crate::cookie::CookieConfig;
use crate::error::{Error, LoginError, PasswordChangeError};
use crate::password::{HashParams, PasswordHasher, PasswordPolicy};
use crate::session::{now_ms, random_bytes, SessionRecord, SessionToken, Timeouts, TokenHash};
use crate::store::Store;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::user::{AuthUser, UserBackend};
use crate::LatchkeyLayer;

/// Settings; start from [`Config::new`] and change what you need.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) key: Vec<u8>,
    pub(crate) timeouts: Timeouts,
    pub(crate) secure: bool,
    pub(crate) throttle: ThrottleConfig,
    pub(crate) policy: PasswordPolicy,
    pub(crate) hash_params: HashParams,
    pub(crate) hash_concurrency: usize,
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
            key: key.into(),
            timeouts: Timeouts::new(Duration::from_secs(30 * 60), Duration::from_secs(8 * 3600)),
            secure: true,
            throttle: ThrottleConfig::default(),
            policy: PasswordPolicy::default(),
            hash_params: HashParams::OWASP,
            hash_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
}

/// The latchkey handle: cheap to clone, shared by the layer and extractors.
#[derive(Clone)]
pub struct Latchkey(pub(crate) Arc<Inner>);

impl Latchkey {
    /// Sessions and throttle counters in `store`, configured by `config`.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        let counters: Arc<dyn crate::store::CounterStore> = store.clone();
        Self(Arc::new(Inner {
            hasher: PasswordHasher::new(config.hash_params, config.hash_concurrency),
            throttle: Throttle::new(counters, config.throttle.clone()),
            cookies: CookieConfig::new(config.secure, config.timeouts.absolute()),
            touching: Default::default(),
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

    fn lock_touching(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<TokenHash>> {
        self.0.touching.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_record(
        &self,
        user_id: String,
        username: String,
        role: String,
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

    /// Signs `username` in. Throttles first, verifies with Argon2id (a dummy
    /// hash for unknown users, so both cost the same), ends the session the
    /// request came with (no fixation), upgrades a weak hash, and issues a
    /// fresh token.
    pub async fn login<B: UserBackend>(
        &self,
        backend: &B,
        username: &str,
        password: &str,
        meta: &RequestMeta,
        previous: Option<&SessionToken>,
    ) -> Result<LoginSuccess, LoginError> {
        let throttle = &self.0.throttle;
        if let Some(retry_after) = throttle
            .blocked_for(username, &meta.ip)
            .await
            .map_err(Error::from)?
        {
            tracing::warn!(target: "latchkey::audit", event = "login_throttled", username, ip = %meta.ip, retry_after = retry_after.as_secs());
            return Err(LoginError::Throttled { retry_after });
        }
        let user = backend
            .find_by_username(username)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        let ok = self
            .0
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash()))
            .await?;
        let Some(user) = user.filter(|_| ok) else {
            throttle
                .failed(username, &meta.ip)
                .await
                .map_err(Error::from)?;
            tracing::warn!(target: "latchkey::audit", event = "login_failed", username, ip = %meta.ip);
            return Err(LoginError::InvalidCredentials);
        };
        throttle
            .succeeded(username, &meta.ip)
            .await
            .map_err(Error::from)?;
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
            meta,
        );
        let done = self.issue(token, record).await?;
        tracing::info!(target: "latchkey::audit", event = "login", username, ip = %meta.ip, session = %done.record.id);
        Ok(done)
    }

    async fn rehash<B: UserBackend>(&self, backend: &B, user: &B::User, password: &str) {
        let result = match self.0.hasher.hash(password).await {
            Ok(hash) => backend
                .set_password_hash(&user.id(), &hash)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
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
        all.retain(|r| r.expires_at > now);
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

    /// Ends every session of `user_id` except `keep`.
    pub async fn end_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, Error> {
        let n = self.0.store.delete_user(user_id, keep).await?;
        tracing::info!(target: "latchkey::audit", event = "sessions_ended", user_id, count = n);
        Ok(n)
    }

    /// Applies a role change to the user's live sessions (next request sees it).
    pub async fn set_role(&self, user_id: &str, role: &str) -> Result<(), Error> {
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
        let throttle = &self.0.throttle;
        if throttle
            .blocked_for(&current.username, &meta.ip)
            .await
            .map_err(Error::from)?
            .is_some()
        {
            return Err(PasswordChangeError::WrongPassword);
        }
        let user = backend
            .find_by_username(&current.username)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?
            .filter(|u| u.id() == current.user_id);
        let ok = self
            .0
            .hasher
            .verify(current_password, user.as_ref().map(|u| u.password_hash()))
            .await?;
        let Some(user) = user.filter(|_| ok) else {
            throttle
                .failed(&current.username, &meta.ip)
                .await
                .map_err(Error::from)?;
            tracing::warn!(target: "latchkey::audit", event = "password_change_failed", username = %current.username, ip = %meta.ip);
            return Err(PasswordChangeError::WrongPassword);
        };
        self.0
            .config
            .policy
            .check(user.username(), new_password)
            .map_err(PasswordChangeError::Rejected)?;
        let hash = self.0.hasher.hash(new_password).await?;
        backend
            .set_password_hash(&user.id(), &hash)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        self.0
            .store
            .delete_user(&user.id(), None)
            .await
            .map_err(Error::from)?;
        let (token, mut record) = self.new_record(
            user.id(),
            user.username().to_owned(),
            user.role().to_owned(),
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
        tracing::info!(target: "latchkey::audit", event = "password_changed", username = user.username(), ip = %meta.ip, session = %done.record.id);
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
            crate::csrf::pre_session_token(&self.0.config.key, &value),
            set,
        )
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
