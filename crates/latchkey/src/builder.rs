//! [`Builder`]: how a [`Latchkey`] is made. Every mistake it can see is a
//! [`ConfigError`] from [`Builder::build`], at start-up, never a panic at
//! the first request.

use std::sync::Arc;
use std::time::Duration;

use crate::password::{HashParams, PasswordPolicy};
use crate::store::Store;
use crate::throttle::ThrottleConfig;
use crate::user::UserBackend;
use crate::user_check::UserCheck;
use crate::{Config, Latchkey};

/// The fewest secret bytes accepted: the key behind sign-in forms' tokens.
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// What [`Builder::build`] refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No [`Builder::secret`].
    #[error("no server secret: give Builder::secret 32 or more random bytes (e.g. `openssl rand -hex 32`, decoded)")]
    MissingSecret,
    /// A secret too short to key anything.
    #[error("the server secret is {0} bytes; it must be at least 32 random bytes")]
    WeakSecret(usize),
    /// No [`Builder::store`].
    #[error("no session store: give Builder::store one, e.g. latchkey::store::open(\"sqlite://app.db\")")]
    MissingStore,
    /// A timeout under a second.
    #[error("the {0} timeout must be at least 1 s")]
    Timeout(&'static str),
    /// A trusted origin that is not `scheme://host[:port]`.
    #[error("{0}")]
    TrustedOrigin(String),
    /// A relying party id and origin that do not fit together.
    #[error("{0}")]
    Passkeys(String),
    /// A mailer without a public URL to build links from.
    #[error("a mailer needs Builder::public_url (the base of links in mail, e.g. https://login.example.com)")]
    MissingPublicUrl,
    /// A public URL that is not `http(s)://host[:port][/path]`.
    #[error(
        "public URL {0:?} is not http(s)://HOST[:PORT][/PATH] (e.g. https://login.example.com)"
    )]
    PublicUrl(String),
    /// A cookie domain that is no host name, or does not cover the public URL's host.
    #[error("{0}")]
    CookieDomain(String),
    /// An allowed redirect host that is no host name or `*.domain`.
    #[error("{0}")]
    RedirectHost(String),
}

/// Configures a [`Latchkey`]: start from [`Latchkey::builder`].
///
/// ```
/// use std::sync::Arc;
/// use latchkey::{store::MemoryStore, Latchkey};
///
/// let auth = Latchkey::builder()
///     .secret([7u8; 32])
///     .store(Arc::new(MemoryStore::new()))
///     .build()
///     .expect("valid configuration");
/// # let _ = auth;
/// ```
#[must_use = "call .build() to make the Latchkey"]
pub struct Builder {
    secret: Option<Vec<u8>>,
    store: Option<Arc<dyn Store>>,
    users: Option<UserCheck>,
    mailer: Option<Arc<dyn crate::mail::Mailer>>,
    factors: Option<Arc<dyn crate::mfa::FactorStore>>,
    #[cfg(feature = "passkeys")]
    passkeys: Option<(String, String)>,
    cookie_domain: Option<String>,
    redirect_hosts: Vec<String>,
    config: Config,
}

impl Latchkey {
    /// A [`Builder`] with safe defaults: 30 min idle, 8 h absolute,
    /// `Secure` `__Host-` cookies, OWASP Argon2id, default throttling.
    pub fn builder() -> Builder {
        Builder {
            secret: None,
            store: None,
            users: None,
            mailer: None,
            factors: None,
            #[cfg(feature = "passkeys")]
            passkeys: None,
            cookie_domain: None,
            redirect_hosts: Vec::new(),
            config: Config::new(Vec::new()),
        }
    }
}

impl Builder {
    /// The server secret: 32 or more random bytes (it keys the sign-in
    /// forms' CSRF tokens). Held in a zeroing type; never printed.
    pub fn secret(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(key.into());
        self
    }

    /// Where sessions and throttle counters live.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The app's users. Sign-ins ([`Auth::login`](crate::Auth::login)) use
    /// them, and every session is checked against its user (looked up at
    /// most once a millisecond per user): a session whose user is gone or
    /// whose [`session_version`](crate::AuthUser::session_version) moved on
    /// is refused, and the user's current role applies, even when the
    /// session store missed the change.
    pub fn users<B: UserBackend + 'static>(mut self, users: B) -> Self {
        self.users = Some(UserCheck::new(users));
        self
    }

    /// Idle and absolute timeouts (the absolute one rules when shorter).
    pub fn timeouts(mut self, idle: Duration, absolute: Duration) -> Self {
        self.config = self.config.timeouts(idle, absolute);
        self
    }

    /// `false` only for plain-HTTP development: cookies lose `Secure` and
    /// the `__Host-` prefix, and no HSTS header is sent.
    pub fn secure(mut self, secure: bool) -> Self {
        self.config = self.config.secure(secure);
        self
    }

    /// Throttling limits.
    pub fn throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.config = self.config.throttle(throttle);
        self
    }

    /// Rules for new passwords.
    pub fn password_policy(mut self, policy: PasswordPolicy) -> Self {
        self.config = self.config.password_policy(policy);
        self
    }

    /// Argon2id parameters for new hashes, and how many may run at once.
    pub fn hashing(mut self, params: HashParams, concurrency: usize) -> Self {
        self.config = self.config.hashing(params, concurrency);
        self
    }

    /// How many requests may wait for a password hash at once (default 256).
    pub fn max_pending_logins(mut self, n: usize) -> Self {
        self.config = self.config.max_pending_logins(n);
        self
    }

    /// Where signed-out browsers are sent (default `/login`).
    pub fn login_path(mut self, path: impl Into<String>) -> Self {
        self.config = self.config.login_path(path);
        self
    }

    /// Origins besides the request's own allowed to send unsafe methods.
    pub fn trusted_origins(mut self, origins: Vec<String>) -> Self {
        self.config = self.config.trusted_origins(origins);
        self
    }

    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names
    /// the client; from any other peer the header is ignored.
    pub fn trusted_proxies(mut self, proxies: Vec<ipnet::IpNet>) -> Self {
        self.config = self.config.trusted_proxies(proxies);
        self
    }

    /// Sends the recovery flows' mail (reset links, address verification,
    /// notices): without one, those flows answer
    /// [`RecoveryError::MailOff`](crate::recovery::RecoveryError::MailOff).
    /// Needs [`public_url`](Self::public_url) for the links.
    pub fn mailer(mut self, mailer: Arc<dyn crate::mail::Mailer>) -> Self {
        self.mailer = Some(mailer);
        self
    }

    /// The base of links in mail, e.g. `https://login.example.com`.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.config.recovery.public_url = Some(url.into());
        self
    }

    /// How long mailed links work (default 15 minutes).
    pub fn link_ttl(mut self, ttl: Duration) -> Self {
        self.config.recovery.link_ttl = ttl;
        self
    }

    /// How long a sign-in or re-authentication counts as recent for
    /// sensitive actions ([`Recent`](crate::Recent); default 10 minutes),
    /// and where browsers are sent to re-authenticate (default `/reauth`).
    pub fn reauth(mut self, window: Duration, path: impl Into<String>) -> Self {
        self.config.recovery.reauth_window = window;
        self.config.recovery.reauth_path = path.into();
        self
    }

    /// Where second factors live ([`mfa`](crate::mfa)): with a store, users
    /// may enrol TOTP, and a user with a factor signs in in two steps.
    /// `issuer` names the service in authenticator apps (default `latchkey`).
    pub fn factors(
        mut self,
        factors: Arc<dyn crate::mfa::FactorStore>,
        issuer: impl Into<String>,
    ) -> Self {
        self.factors = Some(factors);
        self.config.issuer = issuer.into();
        self
    }

    /// Turns passkeys on ([`passkeys`](crate::passkeys)): the relying party
    /// id (a domain, e.g. `example.com`) and the origin browsers use (e.g.
    /// `https://login.example.com`). Needs [`factors`](Self::factors),
    /// where credentials are kept.
    #[cfg(feature = "passkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "passkeys")))]
    pub fn passkeys(mut self, rp_id: impl Into<String>, origin: impl Into<String>) -> Self {
        self.passkeys = Some((rp_id.into(), origin.into()));
        self
    }

    /// Shares the session with `domain` and its subdomains, for apps
    /// guarded by forward authentication on other subdomains: the cookie
    /// gets `Domain=domain` and becomes `__Secure-latchkey` (`__Host-`
    /// forbids `Domain`; `latchkey` when not [`secure`](Self::secure)).
    /// Unsafe requests a browser sends from `domain` or a subdomain
    /// (`https`, or `http` when not secure) count as same-site for the
    /// cross-origin check, and the domain and its subdomains become
    /// allowed redirect hosts. It must cover the public URL's host.
    /// Every subdomain then receives the session cookie: use it only when
    /// they are all yours.
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie_domain = Some(domain.into());
        self
    }

    /// Hosts besides the defaults (the [public URL](Self::public_url)'s
    /// host, the [cookie domain](Self::cookie_domain) and its subdomains)
    /// that a sign-in's `rd` or `next` may send the browser to: host names
    /// or addresses, compared by name whatever the port, and `*.domain`
    /// for the subdomains of `domain` (not `domain` itself).
    pub fn allowed_redirect_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redirect_hosts
            .extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Where the app serves forward authentication (e.g. `/auth/verify`,
    /// answered with [`forward::Forwarded`](crate::forward::Forwarded)): the
    /// layer's cross-origin check leaves that path alone, since what a
    /// proxy asks about is another request, on another host, which the
    /// endpoint judges itself ([`Forwarded::is_cross_site`](crate::forward::Forwarded::is_cross_site)).
    pub fn forward_auth_path(mut self, path: impl Into<String>) -> Self {
        self.config.forward_auth_path = Some(path.into());
        self
    }

    /// The handle, once everything checks out.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first problem and its fix.
    pub fn build(self) -> Result<Latchkey, ConfigError> {
        let secret = self.secret.ok_or(ConfigError::MissingSecret)?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::WeakSecret(secret.len()));
        }
        let store = self.store.ok_or(ConfigError::MissingStore)?;
        let t = self.config.session_timeouts();
        if t.idle() < Duration::from_secs(1) {
            return Err(ConfigError::Timeout("idle"));
        }
        if t.absolute() < Duration::from_secs(1) {
            return Err(ConfigError::Timeout("absolute"));
        }
        let cross_origin = crate::csrf::cross_origin_layer(&self.config.trusted_origins)
            .map_err(ConfigError::TrustedOrigin)?;
        if self.mailer.is_some() && self.config.recovery.public_url.is_none() {
            return Err(ConfigError::MissingPublicUrl);
        }
        #[cfg(feature = "passkeys")]
        let webauthn = match &self.passkeys {
            Some((rp_id, origin)) => {
                Some(crate::passkeys::relying_party(rp_id, origin).map_err(ConfigError::Passkeys)?)
            }
            None => None,
        };
        let mut config = self.config;
        redirect_rules(
            &mut config,
            self.cookie_domain.as_deref(),
            &self.redirect_hosts,
        )?;
        let config = config.with_key(secret);
        Ok(Latchkey::assemble(
            config,
            store,
            self.users,
            cross_origin,
            self.mailer,
            self.factors,
            #[cfg(feature = "passkeys")]
            webauthn,
        ))
    }
}

/// Checks the public URL, the cookie domain and the redirect hosts, and
/// puts the cookie domain and every allowed host (defaults first) in `config`.
fn redirect_rules(
    config: &mut Config,
    cookie_domain: Option<&str>,
    extra_hosts: &[String],
) -> Result<(), ConfigError> {
    use crate::redirect::{cookie_domain_covers, parse_cookie_domain, RedirectHosts};

    let mut hosts = RedirectHosts::new();
    let public_url = match &config.recovery.public_url {
        Some(raw) => {
            let url = url::Url::parse(raw).map_err(|_| ConfigError::PublicUrl(raw.clone()))?;
            let host = url
                .host_str()
                .filter(|_| matches!(url.scheme(), "http" | "https") && url.username().is_empty())
                .ok_or_else(|| ConfigError::PublicUrl(raw.clone()))?;
            hosts
                .add(host)
                .map_err(|_| ConfigError::PublicUrl(raw.clone()))?;
            Some(raw.clone())
        }
        None => None,
    };
    if let Some(raw) = cookie_domain {
        let domain = parse_cookie_domain(raw).map_err(ConfigError::CookieDomain)?;
        if let Some(public_url) = &public_url {
            cookie_domain_covers(&domain, public_url).map_err(ConfigError::CookieDomain)?;
        }
        hosts.add_domain_and_subdomains(&domain);
        config.cookie_domain = Some(domain);
    }
    for entry in extra_hosts {
        hosts.add(entry).map_err(ConfigError::RedirectHost)?;
    }
    config.redirect_hosts = hosts;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::new())
    }

    #[test]
    fn mistakes_are_config_errors() {
        let e = Latchkey::builder().store(store()).build().err().unwrap();
        assert!(matches!(e, ConfigError::MissingSecret), "{e}");
        let e = Latchkey::builder()
            .secret(*b"short")
            .store(store())
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, ConfigError::WeakSecret(5)), "{e}");
        let e = Latchkey::builder().secret([1u8; 32]).build().err().unwrap();
        assert!(matches!(e, ConfigError::MissingStore), "{e}");
        let e = Latchkey::builder()
            .secret([1u8; 32])
            .store(store())
            .trusted_origins(vec!["not an origin".into()])
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, ConfigError::TrustedOrigin(_)), "{e}");
        let e = Latchkey::builder()
            .secret([1u8; 32])
            .store(store())
            .timeouts(Duration::from_millis(10), Duration::from_secs(60))
            .build()
            .err()
            .unwrap();
        assert!(matches!(e, ConfigError::Timeout("idle")), "{e}");
    }

    fn build(b: Builder) -> Result<Latchkey, ConfigError> {
        b.secret([1u8; 32]).store(store()).build()
    }

    #[test]
    fn redirect_hosts_default_to_the_public_url_and_the_cookie_domain() {
        let auth = build(
            Latchkey::builder()
                .public_url("https://login.example.com/auth")
                .cookie_domain(".Example.com")
                .allowed_redirect_hosts(["wiki.example.org", "*.apps.example.net"]),
        )
        .unwrap();
        let c = auth.config();
        assert_eq!(c.cookie_domain(), Some("example.com"));
        assert_eq!(
            c.redirect_hosts().to_string(),
            "login.example.com,example.com,*.example.com,wiki.example.org,*.apps.example.net"
        );
        assert_eq!(auth.cookies().name, "__Secure-latchkey");
        // No public URL and no cookie domain: only what is given.
        let auth = build(Latchkey::builder().allowed_redirect_hosts(["a.example"])).unwrap();
        assert_eq!(auth.config().redirect_hosts().to_string(), "a.example");
        assert_eq!(auth.cookies().name, "__Host-latchkey");
    }

    #[test]
    fn bad_forward_auth_settings_are_config_errors() {
        let e = build(Latchkey::builder().cookie_domain("127.0.0.1"))
            .err()
            .unwrap();
        assert!(matches!(e, ConfigError::CookieDomain(_)), "{e}");
        let e = build(
            Latchkey::builder()
                .public_url("https://login.example.com")
                .cookie_domain("example.org"),
        )
        .err()
        .unwrap();
        assert!(
            matches!(&e, ConfigError::CookieDomain(m) if m.contains("does not cover")),
            "{e}"
        );
        let e = build(Latchkey::builder().allowed_redirect_hosts(["https://x.example/"]))
            .err()
            .unwrap();
        assert!(matches!(e, ConfigError::RedirectHost(_)), "{e}");
        let e = build(Latchkey::builder().public_url("login.example.com"))
            .err()
            .unwrap();
        assert!(matches!(e, ConfigError::PublicUrl(_)), "{e}");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let auth = Latchkey::builder()
            .secret([0xabu8; 32])
            .store(store())
            .build()
            .unwrap();
        let shown = format!("{:?}", auth.config());
        assert!(
            shown.contains("<redacted>") && !shown.contains("171"),
            "{shown}"
        );
    }
}
