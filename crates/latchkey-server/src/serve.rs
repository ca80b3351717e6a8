//! `latchkey serve`: checks the configuration, opens the stores, serves
//! until SIGTERM or Ctrl-C, then drains requests in flight.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey::password::PasswordPolicy;
use latchkey::throttle::ThrottleConfig;
use latchkey::Latchkey;

use crate::app::{service, App};
use crate::cli::ServeArgs;
use crate::config::{dev_secret, dev_secret_path, read_secret_file, Secret};
use crate::mail::{LogMailer, Outbox};
use crate::metrics::Metrics;
use crate::users::Users;
use crate::Failure;

fn secret(args: &ServeArgs) -> Result<Secret, Failure> {
    if let Some(path) = &args.secret_key_file {
        return read_secret_file(path).map_err(Failure::usage);
    }
    if let Some(secret) = &args.secret_key {
        return Ok(secret.clone());
    }
    if args.dev {
        let path = dev_secret_path(&args.stores.database);
        let (secret, made) = dev_secret(&path).map_err(Failure::runtime)?;
        if made {
            tracing::warn!(path = %path.display(), "--dev: made a new secret key and saved it beside the database; never use --dev in production");
        }
        return Ok(secret);
    }
    Err(Failure::usage(
        "no secret key: set LATCHKEY_SECRET_KEY=$(openssl rand -hex 32), or pass --secret-key-file PATH, or use --dev on a development machine",
    ))
}

pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    Serving::start(args).await?.serve(shutdown_signal()).await;
    tracing::info!("latchkey stopped");
    Ok(())
}

/// A server whose stores are open and whose address is bound, ready to
/// serve: `latchkey serve` is [`Serving::start`], then [`Serving::serve`]
/// until SIGTERM or Ctrl-C. Tests start one in-process the same way.
pub struct Serving {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
    max_connections: usize,
    /// Stopped after the last request: mail queued meanwhile still counts.
    outbox: Option<Arc<Outbox>>,
}

impl Serving {
    /// Checks the configuration, opens the stores, starts the session
    /// sweeper and binds `--bind` (port 0: a free port, see
    /// [`Serving::local_addr`]).
    pub async fn start(args: ServeArgs) -> Result<Serving, Failure> {
        // Before the secret: --dev would log making one first, and the
        // first line of standard error must name the problem.
        let public_url =
            (args.public_url.clone()).or_else(|| args.dev.then(|| format!("http://{}", args.bind)));
        if let (Some(domain), Some(url)) = (&args.cookie_domain, &public_url) {
            latchkey::redirect::cookie_domain_covers(domain, url).map_err(Failure::usage)?;
        }
        let secret = secret(&args)?;
        // Before the stores open files, so the limit they see is the raised one.
        let max_connections = crate::http::connection_cap(args.max_connections);
        let sessions_url = args.stores.sessions_url().to_owned();
        let store = latchkey::store::open(&sessions_url)
            .await
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let users = Users::open(&args.stores.database).map_err(Failure::usage)?;

        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .map_err(|e| Failure::runtime(format!("cannot listen on {}: {e}", args.bind)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        // Links in mail: the public URL, or with --dev this listener's own.
        let public_url = args
            .public_url
            .clone()
            .or_else(|| args.dev.then(|| format!("http://{addr}")));

        let metrics = Metrics::new();
        let outbox = match &args.smtp_url {
            Some(smtp) => {
                if public_url.is_none() {
                    return Err(Failure::usage(
                        "--smtp-url needs --public-url (the base of links in mail, e.g. https://login.example.com)",
                    ));
                }
                Some(
                    Outbox::start(
                        &users,
                        secrecy::ExposeSecret::expose_secret(&secret.0),
                        smtp,
                        mail_from(&args, public_url.as_deref())?,
                        metrics.mail.clone(),
                    )
                    .map_err(Failure::usage)?,
                )
            }
            None => None,
        };
        let mailer: Option<Arc<dyn latchkey::mail::Mailer>> = match (&outbox, args.dev) {
            (Some(outbox), _) => Some(outbox.clone()),
            (None, true) => Some(Arc::new(LogMailer)),
            (None, false) => None,
        };

        // Sessions are checked against the users table too, so a removal or
        // "sign out everywhere" the session store missed still ends them.
        let auth = Latchkey::builder()
            .secret(secrecy::ExposeSecret::expose_secret(&secret.0).to_vec())
            .store(store)
            .users(users.clone())
            .timeouts(args.idle_timeout, args.absolute_timeout)
            .secure(!args.dev)
            .password_policy(PasswordPolicy {
                min_chars: args.policy.min_password_length as usize,
                ..PasswordPolicy::default()
            })
            .throttle(ThrottleConfig {
                per_user_and_address: args.max_failures_per_user_address,
                per_address: args.max_failures_per_address,
                account_hard_limit: args.max_failures_per_account,
                window: args.failure_window,
                ..ThrottleConfig::default()
            })
            .max_pending_logins(args.max_pending_logins as usize)
            .trusted_proxies(args.trusted_proxies.clone())
            .trusted_origins(args.trusted_origins.clone())
            .allowed_redirect_hosts(args.allowed_redirect_hosts.clone())
            .forward_auth_path(crate::routes::auth::VERIFY_PATH)
            .link_ttl(args.reset_ttl)
            .reauth(args.reauth_window, "/reauth");
        let auth = match &public_url {
            Some(url) => auth.public_url(url.clone()),
            None => auth,
        };
        let auth = match &mailer {
            Some(m) => auth.mailer(m.clone()),
            None => auth,
        };
        // Authenticator apps show the issuer beside the code: the public
        // host, so two deployments are told apart.
        let issuer = public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "latchkey".into());
        let factors = crate::factors::open(&args.stores.database).map_err(Failure::usage)?;
        let auth = auth.factors(factors, issuer);
        // Passkeys need an origin: the public URL (with --dev, this listener).
        // An IP address cannot be a relying party id: then passkeys stay off
        // unless --rp-id names a domain (with --dev, browse localhost).
        let parsed = public_url.as_deref().and_then(|u| url::Url::parse(u).ok());
        let auth = match (&public_url, parsed.as_ref().and_then(|u| u.domain())) {
            (Some(url), Some(domain)) => {
                let rp_id = args.rp_id.clone().unwrap_or_else(|| domain.to_owned());
                auth.passkeys(rp_id, url.clone())
            }
            (Some(url), None) if args.rp_id.is_some() => {
                auth.passkeys(args.rp_id.clone().unwrap_or_default(), url.clone())
            }
            (Some(url), None) => {
                tracing::info!("passkeys are off: the public URL {url} has no domain name (use e.g. --public-url http://localhost:PORT)");
                auth
            }
            (None, _) => auth,
        };
        let auth = match &args.cookie_domain {
            Some(domain) => auth.cookie_domain(domain.clone()),
            None => auth,
        };
        let auth = auth
            .build()
            // A bad trusted origin and the like: a usage error at start-up.
            .map_err(|e| Failure::usage(e.to_string()))?;
        auth.sessions().spawn_sweeper();

        let app = Arc::new(App {
            auth,
            users,
            setup_code: Mutex::new(None),
            allow_signup: args.allow_signup,
            metrics,
        });
        tracing::info!(
            "latchkey listening on http://{addr} (users: {}, sessions: {}{})",
            app.users.label(),
            latchkey::store::describe(&sessions_url),
            if args.dev { ", dev mode" } else { "" }
        );
        Ok(Serving {
            listener,
            addr,
            app,
            max_connections,
            outbox,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then drains requests in flight.
    /// Meanwhile store outages are logged, and the first-run setup link too
    /// once the stores answer and no user exists.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::spawn(watch_stores(self.app.clone(), self.addr));
        crate::http::serve(
            self.listener,
            service(self.app),
            self.max_connections,
            shutdown,
        )
        .await;
        if let Some(outbox) = self.outbox {
            outbox.stop().await;
        }
    }
}

/// Logs store outages (naming the store and its address) until both answer,
/// then, if no user exists yet, prints the one-time setup link.
async fn watch_stores(app: Arc<App>, addr: SocketAddr) {
    let mut warned = false;
    loop {
        let sessions = app.auth.sessions().ready().await;
        let users = app.users.count().await;
        match (sessions, users) {
            (Ok(()), Ok(count)) => {
                if warned {
                    tracing::info!("stores answer again; serving");
                }
                if count == 0 {
                    first_run(&app, addr);
                }
                return;
            }
            (s, u) => {
                if let Err(e) = s {
                    tracing::error!("{e}; answering 503 until it returns");
                }
                if let Err(e) = u {
                    tracing::error!("{e}; answering 503 until it returns");
                }
                warned = true;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn first_run(app: &App, addr: SocketAddr) {
    let code = hex::encode(rand::random::<[u8; 16]>());
    *app.setup_code.lock().unwrap_or_else(|e| e.into_inner()) = Some(code.clone());
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    tracing::warn!(
        "no users yet: open http://{host}/setup?code={code} to create the first admin (works once), or run: latchkey user add NAME --role admin"
    );
}

/// The mail's From. Without `--mail-from` there is none yet to give.
/// `--mail-from`, or `latchkey@HOST` of the public URL.
fn mail_from(
    args: &ServeArgs,
    public_url: Option<&str>,
) -> Result<lettre::message::Mailbox, Failure> {
    if let Some(from) = &args.mail_from {
        return Ok(from.clone());
    }
    let host = public_url
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    host.and_then(|h| format!("latchkey@{h}").parse().ok())
        .ok_or_else(|| {
            Failure::usage(
                "--smtp-url needs a sender: pass --mail-from ADDR (or set LATCHKEY_MAIL_FROM), e.g. --mail-from latchkey@example.com",
            )
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
