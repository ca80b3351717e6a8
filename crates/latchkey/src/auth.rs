//! [`Latchkey`]: the handle an app keeps in its router. It signs users in
//! and out, finds the session behind a request, and ends sessions.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice};

use crate::authenticator::{Refusal, Who};
use crate::client::RequestMeta;
use crate::cookie::CookieConfig;
use crate::csrf::RejectFn;
use crate::error::{Error, LoginError, PasswordChangeError};
use crate::password::{HashParams, PasswordHasher, PasswordPolicy};
use crate::session::{
    now_ms, CsrfSecret, SessionId, SessionRecord, SessionToken, Timeouts, TokenHash,
};
use crate::sessions::Sessions;
use crate::store::Store;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::user::UserBackend;
use crate::user_check::{Directory, UserCheck};
use crate::LatchkeyLayer;
use tower_http::csrf::CsrfLayer;

/// Logs hold at most this many characters of a name a client sent.
const LOGGED_NAME_CHARS: usize = 64;

/// A client-sent name as logs may hold it: cut to [`LOGGED_NAME_CHARS`], so
/// a long hostile username cannot make every refused attempt a large log line.
pub(crate) fn clip(name: &str) -> &str {
    name.char_indices()
        .nth(LOGGED_NAME_CHARS)
        .map_or(name, |(i, _)| &name[..i])
}

/// The name attempts are counted under: the same for every spelling that
/// signs in to one account (`ALICE`, fullwidth `ａｌｉｃｅ`), so case variants
/// cannot stretch the limits. Names far too long to be anyone's are counted
/// as sent, without Unicode work on hostile input (they are hashed anyway).
pub(crate) fn throttle_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() > 4 * 1024 {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(crate::username::fold(name))
    }
}

/// Settings in force, as [`Latchkey::builder`] made them (read them with
/// [`Latchkey::config`]).
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
    pub(crate) recovery: crate::recovery::RecoveryConfig,
    /// The issuer authenticator apps show beside TOTP codes.
    pub(crate) issuer: String,
    /// The session cookie's `Domain` (checked by the builder).
    pub(crate) cookie_domain: Option<String>,
    /// Hosts `rd` and `next` may name, defaults included.
    pub(crate) redirect_hosts: crate::redirect::RedirectHosts,
    /// The forward-auth endpoint, which does its own cross-origin check.
    pub(crate) forward_auth_path: Option<String>,
}

impl Config {
    /// Safe defaults around a server secret of 32 or more random bytes (it
    /// keys the sign-in forms' CSRF tokens): 30 min idle, 8 h absolute,
    /// `Secure` `__Host-` cookies, OWASP Argon2id, default throttling.
    pub(crate) fn new(key: impl Into<Vec<u8>>) -> Self {
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
            recovery: Default::default(),
            issuer: "latchkey".into(),
            cookie_domain: None,
            redirect_hosts: Default::default(),
            forward_auth_path: None,
        }
    }

    /// Idle and absolute timeouts (the absolute one rules when shorter).
    pub(crate) fn timeouts(mut self, idle: Duration, absolute: Duration) -> Self {
        self.timeouts = Timeouts::new(idle, absolute);
        self
    }

    /// `false` only for plain-HTTP development: cookies lose `Secure` and
    /// the `__Host-` prefix, and no HSTS header is sent.
    pub(crate) fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Throttling limits.
    pub(crate) fn throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.throttle = throttle;
        self
    }

    /// Password rules for new passwords.
    pub(crate) fn password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Argon2id parameters for new hashes, and how many may run at once.
    pub(crate) fn hashing(mut self, params: HashParams, concurrency: usize) -> Self {
        self.hash_params = params;
        self.hash_concurrency = concurrency.max(1);
        self
    }

    /// How many requests may wait for a password hash at once (default
    /// 256); past that, sign-ins and password changes get 503 with
    /// `Retry-After` instead of queueing without bound.
    pub(crate) fn max_pending_logins(mut self, n: usize) -> Self {
        self.max_pending_logins = n.max(1);
        self
    }

    /// Where signed-out browsers are sent (default `/login`).
    pub(crate) fn login_path(mut self, path: impl Into<String>) -> Self {
        self.login_path = path.into();
        self
    }

    /// Origins besides the request's own allowed to send unsafe methods.
    pub(crate) fn trusted_origins(mut self, origins: Vec<String>) -> Self {
        self.trusted_origins = origins;
        self
    }

    /// Proxies whose `X-Forwarded-For` names the client; from any other
    /// peer the header is ignored.
    pub(crate) fn trusted_proxies(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    pub(crate) fn with_key(mut self, key: Vec<u8>) -> Self {
        self.key = SecretSlice::from(key);
        self
    }

    /// The session timeouts in force.
    pub fn session_timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// How long mailed links work.
    pub fn link_ttl(&self) -> Duration {
        self.recovery.link_ttl
    }

    /// How long a sign-in or re-authentication counts as recent.
    pub fn reauth_window(&self) -> Duration {
        self.recovery.reauth_window
    }

    /// Whether cookies are `Secure` and HSTS is sent.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The session cookie's `Domain`, if it is shared with subdomains.
    pub fn cookie_domain(&self) -> Option<&str> {
        self.cookie_domain.as_deref()
    }

    /// The hosts `rd` and `next` may send a browser to, defaults included.
    pub fn redirect_hosts(&self) -> &crate::redirect::RedirectHosts {
        &self.redirect_hosts
    }

    /// The base of links in mail and of the sign-in URL forward
    /// authentication redirects to.
    pub fn public_url(&self) -> Option<&str> {
        self.recovery.public_url.as_deref()
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
            .field("recovery", &self.recovery)
            .field("issuer", &self.issuer)
            .field("cookie_domain", &self.cookie_domain)
            .field("redirect_hosts", &self.redirect_hosts)
            .field("forward_auth_path", &self.forward_auth_path)
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
pub struct SignedIn {
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
    pub(crate) users: Option<Arc<UserCheck>>,
    sessions: Sessions,
    cross_origin: CsrfLayer<RejectFn>,
    pub(crate) mailer: Option<Arc<dyn crate::mail::Mailer>>,
    pub(crate) factors: Option<Arc<dyn crate::mfa::FactorStore>>,
    /// Factor summaries for display (profile pages), at most a second old.
    pub(crate) factor_cache: crate::mfa::SummaryCache,
    #[cfg(feature = "passkeys")]
    pub(crate) webauthn: Option<Arc<webauthn_rs::Webauthn>>,
}

/// The latchkey handle: cheap to clone, shared by the layer and extractors.
#[derive(Clone)]
pub struct Latchkey(pub(crate) Arc<Inner>);

impl Latchkey {
    pub(crate) fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        users: Option<UserCheck>,
        cross_origin: CsrfLayer<RejectFn>,
        mailer: Option<Arc<dyn crate::mail::Mailer>>,
        factors: Option<Arc<dyn crate::mfa::FactorStore>>,
        #[cfg(feature = "passkeys")] webauthn: Option<webauthn_rs::Webauthn>,
    ) -> Self {
        let counters: Arc<dyn crate::store::CounterStore> = store.clone();
        let users = users.map(Arc::new);
        let sessions = Sessions::with_users(store.clone(), users.clone(), config.timeouts.idle());
        Self(Arc::new(Inner {
            sessions,
            hasher: PasswordHasher::with_max_pending(
                config.hash_params,
                config.hash_concurrency,
                config.max_pending_logins,
            ),
            throttle: Throttle::new(counters, config.throttle.clone()),
            cookies: CookieConfig::new(config.secure, config.timeouts.absolute())
                .with_domain(config.cookie_domain.clone()),
            touching: Default::default(),
            users,
            cross_origin,
            store,
            config,
            mailer,
            factors,
            factor_cache: Default::default(),
            #[cfg(feature = "passkeys")]
            webauthn: webauthn.map(Arc::new),
        }))
    }

    /// Listing, ending and sweeping sessions (what admin pages need).
    pub fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    pub(crate) fn cross_origin(&self) -> &CsrfLayer<RejectFn> {
        &self.0.cross_origin
    }

    pub(crate) fn directory(&self) -> Option<&dyn Directory> {
        self.0.users.as_ref().map(|u| u.backend.as_ref())
    }

    /// Forgets what this process cached of a user after changing them.
    pub(crate) fn forget_user(&self, user_id: &str) {
        if let Some(check) = &self.0.users {
            check.forget(user_id);
        }
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

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.0.throttle
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
        current.role = user.role.clone();
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
            id: SessionId::generate(),
            token_hash: Some(token.hash()),
            user_id: user_id.into(),
            username: username.into(),
            role: role.into(),
            created_at: now,
            last_seen_at: now,
            expires_at: self.0.config.timeouts.expires_at(now, now),
            user_agent: meta.user_agent.as_str().into(),
            ip: meta.ip.parse().ok(),
            csrf_secret: CsrfSecret::generate(),
            user_version,
            data: None,
        };
        (token, record)
    }

    /// A new session for `user` in place of the request's own, if any (a
    /// sign-in completed by a second step: no fixation).
    pub(crate) async fn replace_session(
        &self,
        headers: &HeaderMap,
        user: &crate::user_check::Account,
        meta: &RequestMeta,
    ) -> Result<SignedIn, Error> {
        if let Some(previous) = self.0.cookies.token(headers) {
            self.0.store.delete(&previous.hash()).await?;
        }
        self.issue_for(user, meta).await
    }

    /// A new session for `user`.
    pub(crate) async fn issue_for(
        &self,
        user: &crate::user_check::Account,
        meta: &RequestMeta,
    ) -> Result<SignedIn, Error> {
        let (token, record) = self.new_record(
            user.id.clone(),
            user.username.clone(),
            user.role.clone(),
            user.version,
            meta,
        );
        self.issue(token, record).await
    }

    async fn issue(&self, token: SessionToken, record: SessionRecord) -> Result<SignedIn, Error> {
        self.0.store.create(&record).await?;
        Ok(SignedIn {
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
    /// In a handler, [`Auth::login`](crate::Auth::login) does this with the
    /// request's own address and cookie.
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
    ) -> Result<SignedIn, LoginError> {
        self.sign_in(backend, username, password, meta, previous)
            .await
    }

    pub(crate) async fn sign_in(
        &self,
        users: &dyn Directory,
        username: &str,
        password: &str,
        meta: &RequestMeta,
        previous: Option<&SessionToken>,
    ) -> Result<SignedIn, LoginError> {
        let user = match self
            .authenticate_sign_in(users, username, password, meta)
            .await
        {
            Ok(crate::authenticator::Verified::Done(user)) => user,
            Ok(crate::authenticator::Verified::NeedsFactor(user, methods)) => {
                let pending = self.open_pending(&user, methods, meta).await?;
                return Err(LoginError::SecondFactorRequired(pending));
            }
            Err(Refusal::Throttled(retry_after)) => {
                return Err(LoginError::Throttled { retry_after })
            }
            Err(Refusal::Invalid) => return Err(LoginError::InvalidCredentials),
            Err(Refusal::Unavailable(e)) => return Err(e.into()),
        };
        if let Some(previous) = previous {
            self.0
                .store
                .delete(&previous.hash())
                .await
                .map_err(Error::from)?;
        }
        let (token, record) =
            self.new_record(user.id, user.username, user.role, user.version, meta);
        let done = self.issue(token, record).await?;
        tracing::info!(target: "latchkey::audit", event = "login", username = clip(username), ip = %meta.ip, session = %done.record.id);
        Ok(done)
    }

    /// Ends the request's session on the server (idempotent). In a
    /// handler, [`Auth::logout`](crate::Auth::logout) also clears the cookie.
    ///
    /// # Errors
    /// [`Error::Store`] when the store cannot be reached.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), Error> {
        match self.0.cookies.token(headers) {
            Some(token) => self.end_token(&token).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn end_token(&self, token: &SessionToken) -> Result<(), Error> {
        let key = token.hash();
        if let Some(record) = self.0.store.load(&key).await? {
            tracing::info!(target: "latchkey::audit", event = "logout", username = %record.username, session = %record.id);
        }
        self.0.store.delete(&key).await?;
        Ok(())
    }

    /// Changes the signed-in user's password after checking the current
    /// one: every other session ends and this one gets a new token (same
    /// handle, same absolute deadline). Attempts are counted like sign-ins.
    ///
    /// # Errors
    /// [`PasswordChangeError::WrongPassword`], [`PasswordChangeError::Throttled`],
    /// [`PasswordChangeError::Rejected`] (the policy's reason), or
    /// [`PasswordChangeError::Unavailable`].
    pub async fn change_password<B: UserBackend>(
        &self,
        backend: &B,
        current: &SessionRecord,
        current_password: &str,
        new_password: &str,
        meta: &RequestMeta,
    ) -> Result<SignedIn, PasswordChangeError> {
        self.new_password(backend, current, current_password, new_password, meta)
            .await
    }

    pub(crate) async fn new_password(
        &self,
        users: &dyn Directory,
        current: &SessionRecord,
        current_password: &str,
        new_password: &str,
        meta: &RequestMeta,
    ) -> Result<SignedIn, PasswordChangeError> {
        let who = Who::Id {
            id: &current.user_id,
            name: &current.username,
        };
        let user = match self.authenticate(users, who, current_password, meta).await {
            Ok(user) => user,
            Err(Refusal::Throttled(retry_after)) => {
                return Err(PasswordChangeError::Throttled { retry_after })
            }
            Err(Refusal::Invalid) => {
                tracing::warn!(target: "latchkey::audit", event = "password_change_failed", username = clip(&current.username), ip = %meta.ip);
                return Err(PasswordChangeError::WrongPassword);
            }
            Err(Refusal::Unavailable(e)) => return Err(e.into()),
        };
        self.0
            .config
            .policy
            .check(&user.username, new_password)
            .map_err(PasswordChangeError::Rejected)?;
        let hash = self.0.hasher.hash(new_password).await?;
        // One write: every session issued before is refused from here on,
        // also one a sign-in still in flight is about to create, and a
        // request cancelled after it leaves nothing half done.
        users
            .change_hash(&user.id, &hash)
            .await
            .map_err(crate::error::backend)?;
        if let Some(check) = &self.0.users {
            check.forget(&user.id);
        }
        self.0
            .store
            .delete_user(&user.id, None)
            .await
            .map_err(Error::from)?;
        let user = users
            .by_id(&user.id)
            .await
            .map_err(crate::error::backend)?
            .ok_or_else(|| Error::Backend("the user was removed during the change".into()))?;
        self.notify(&user, crate::mail::Notice::PasswordChanged)
            .await;
        let (token, mut record) =
            self.new_record(user.id, user.username, user.role, user.version, meta);
        record.id = current.id;
        record.created_at = current.created_at;
        record.expires_at = self
            .0
            .config
            .timeouts
            .expires_at(record.created_at, record.last_seen_at);
        let done = self.issue(token, record).await?;
        tracing::info!(target: "latchkey::audit", event = "password_changed", username = clip(&done.record.username), ip = %meta.ip, session = %done.record.id);
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
            return (user.csrf_token(), None);
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
}
