//! The command line: `latchkey serve` and `latchkey user ...`.
//! Every option also reads an environment variable; the flag wins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_database_url, parse_duration, parse_secret, parse_sessions_url, Secret};
use crate::mail::{SmtpUrl, SmtpUrlParser};

#[derive(Parser, Debug)]
#[command(
    name = "latchkey",
    version,
    about = "Session login server: JSON for scripts, pages for browsers.",
    long_about = "Session login server: JSON for scripts, pages for browsers.\n\n\
Quick start (development, plain HTTP on localhost):\n  \
latchkey serve --dev\n  \
latchkey user add alice --role admin\n\n\
Production: give a secret (openssl rand -hex 32) in LATCHKEY_SECRET_KEY or --secret-key-file,\n\
and serve behind HTTPS."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing buys nothing"
)]
pub enum Command {
    /// Run the login server.
    Serve(ServeArgs),
    /// Manage users: add, list, remove, set-password, set-role, end-sessions.
    #[command(subcommand)]
    User(UserCommand),
}

/// Where users and sessions live.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Users database (and sessions, unless --sessions): sqlite://PATH or postgres://...
    #[arg(long, env = "LATCHKEY_DATABASE_URL", default_value = "sqlite://latchkey.db", value_name = "URL", value_parser = parse_database_url)]
    pub database: String,
    /// Session store: memory, sqlite://PATH, postgres://... or redis://... [default: the database]
    #[arg(long, env = "LATCHKEY_SESSIONS_URL", value_name = "URL", value_parser = parse_sessions_url)]
    pub sessions: Option<String>,
}

impl StoreArgs {
    pub fn sessions_url(&self) -> &str {
        self.sessions.as_deref().unwrap_or(&self.database)
    }
}

/// Password rules for new passwords.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Fewest characters a new password may have.
    #[arg(long, env = "LATCHKEY_MIN_PASSWORD_LENGTH", default_value_t = 15, value_name = "N", value_parser = clap::value_parser!(u16).range(8..=256))]
    pub min_password_length: u16,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "LATCHKEY_BIND",
        default_value = "127.0.0.1:8000",
        value_name = "ADDR"
    )]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub stores: StoreArgs,
    /// File holding the server secret (64+ hex characters, or base64:... of 32+ bytes).
    #[arg(long, value_name = "PATH")]
    pub secret_key_file: Option<PathBuf>,
    /// The server secret itself (prefer the environment variable to the flag).
    #[arg(long, env = "LATCHKEY_SECRET_KEY", value_name = "SECRET", value_parser = SecretParser, hide_env_values = true, hide = true)]
    pub secret_key: Option<Secret>,
    /// Development mode: make and keep a secret beside the database, and
    /// send cookies without Secure so plain-HTTP localhost works.
    #[arg(long, env = "LATCHKEY_DEV", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub dev: bool,
    /// Let anyone create an account (role "user") at /signup; off by default.
    #[arg(long, env = "LATCHKEY_ALLOW_SIGNUP", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub allow_signup: bool,
    /// Sign out after this long without a request.
    #[arg(long, env = "LATCHKEY_IDLE_TIMEOUT", default_value = "30m", value_name = "DUR", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Sign out this long after sign-in, active or not.
    #[arg(long, env = "LATCHKEY_ABSOLUTE_TIMEOUT", default_value = "8h", value_name = "DUR", value_parser = parse_duration)]
    pub absolute_timeout: Duration,
    /// The base of links in mail and redirects, e.g. https://login.example.com (default http://BIND with --dev; needed for mail without it).
    #[arg(long, env = "LATCHKEY_PUBLIC_URL", value_name = "URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// The passkeys' relying party id: the public URL's host (default) or a parent domain of it.
    #[arg(long, env = "LATCHKEY_RP_ID", value_name = "DOMAIN")]
    pub rp_id: Option<String>,
    /// How long password-reset and verification links in mail work.
    #[arg(long, env = "LATCHKEY_RESET_TTL", default_value = "15m", value_name = "DUR", value_parser = parse_duration)]
    pub reset_ttl: Duration,
    /// How long a sign-in or re-authentication counts as recent for sensitive actions (changing the email address, ending other sessions, admin changes).
    #[arg(long, env = "LATCHKEY_REAUTH_WINDOW", default_value = "10m", value_name = "DUR", value_parser = parse_duration)]
    pub reauth_window: Duration,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Proxies whose X-Forwarded-For names the client: comma-separated addresses and CIDR ranges (e.g. 10.0.0.0/8,fd00::/8,127.0.0.1).
    #[arg(
        long,
        env = "LATCHKEY_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "IP|CIDR,...",
        // A bare address is a one-address range (/32 or /128).
        value_parser = |s: &str| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| "expected an IP address or a CIDR range, e.g. 127.0.0.1, ::1 or 10.0.0.0/8")
        }
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Share the session with this domain's subdomains (apps guarded by forward auth): the cookie becomes __Secure-latchkey with Domain=DOMAIN (latchkey with --dev).
    #[arg(long, env = "LATCHKEY_COOKIE_DOMAIN", value_name = "DOMAIN", value_parser = latchkey::redirect::parse_cookie_domain)]
    pub cookie_domain: Option<String>,
    /// Hosts a sign-in's rd or next may send the browser to, besides the public URL's host and the cookie domain with its subdomains (comma-separated; *.example.com for subdomains).
    #[arg(
        long,
        env = "LATCHKEY_ALLOWED_REDIRECT_HOSTS",
        value_delimiter = ',',
        value_name = "HOST,...",
        value_parser = |s: &str| {
            latchkey::redirect::RedirectHosts::parse([s]).map(|_| s.trim().to_owned())
        }
    )]
    pub allowed_redirect_hosts: Vec<String>,
    /// Origins besides this server's own allowed to POST (comma-separated, e.g. https://app.example.com).
    #[arg(
        long,
        env = "LATCHKEY_TRUSTED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN,..."
    )]
    pub trusted_origins: Vec<String>,
    /// Failed logins for one username from one address before 429.
    #[arg(
        long,
        env = "LATCHKEY_MAX_FAILURES_PER_USER_ADDRESS",
        default_value_t = 5,
        value_name = "N"
    )]
    pub max_failures_per_user_address: u64,
    /// Failed logins from one address, any usernames, before 429.
    #[arg(
        long,
        env = "LATCHKEY_MAX_FAILURES_PER_ADDRESS",
        default_value_t = 100,
        value_name = "N"
    )]
    pub max_failures_per_address: u64,
    /// Consecutive failures of one account, all addresses, before it is locked until they lapse.
    #[arg(
        long,
        env = "LATCHKEY_MAX_FAILURES_PER_ACCOUNT",
        default_value_t = 100,
        value_name = "N"
    )]
    pub max_failures_per_account: u64,
    /// Window the per-address limits count in.
    #[arg(long, env = "LATCHKEY_FAILURE_WINDOW", default_value = "15m", value_name = "DUR", value_parser = parse_duration)]
    pub failure_window: Duration,
    /// Requests that may wait for a password hash at once; past that, new
    /// sign-ins get 503 with Retry-After instead of queueing without bound.
    #[arg(long, env = "LATCHKEY_MAX_PENDING_LOGINS", default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_logins: u32,
    /// Most connections open at once (lowered to fit the file-descriptor
    /// limit); at the cap a new client replaces the oldest idle connection.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = 4096, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Send mail through this SMTP server: smtp://HOST:PORT (plain, a local relay),
    /// smtp+starttls://USER:PASS@HOST:587 or smtps://USER:PASS@HOST:465
    /// (percent-encode special characters in USER and PASS).
    #[arg(long, env = "LATCHKEY_SMTP_URL", value_name = "URL", value_parser = SmtpUrlParser, hide_env_values = true)]
    pub smtp_url: Option<SmtpUrl>,
    /// The mail's From: an address, or "Name <address>".
    #[arg(long, env = "LATCHKEY_MAIL_FROM", value_name = "ADDR", value_parser = parse_mailbox)]
    pub mail_from: Option<lettre::message::Mailbox>,
}

fn parse_mailbox(text: &str) -> Result<lettre::message::Mailbox, String> {
    text.trim().parse().map_err(|e| {
        format!("not a mail address ({e}); use e.g. latchkey@example.com or \"Latchkey <latchkey@example.com>\"")
    })
}

/// Parses the secret like `parse_secret`, but a refused value is never
/// echoed back (clap's own error would print it).
#[derive(Clone)]
struct SecretParser;

impl clap::builder::TypedValueParser for SecretParser {
    type Value = Secret;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Secret, clap::Error> {
        let refused = |why: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid secret key (LATCHKEY_SECRET_KEY): {why}\n"),
            )
        };
        let text = value.to_str().ok_or_else(|| refused("not UTF-8 text"))?;
        parse_secret(text).map_err(|e| refused(&e))
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (prompts for the password twice, or reads one line with --password-stdin).
    Add {
        name: String,
        /// The user's role.
        #[arg(long, default_value = "user")]
        role: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The user's email address (for recovery mail); set here, it counts as verified.
        #[arg(long, value_name = "ADDR", value_parser = parse_email)]
        email: Option<String>,
        #[command(flatten)]
        stores: StoreArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Set a user's email address (it counts as verified).
    SetEmail {
        name: String,
        #[arg(value_parser = parse_email)]
        email: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Print a one-time password-reset link for a user (no mail needed).
    ResetLink {
        name: String,
        /// How long the link works.
        #[arg(long, default_value = "1h", value_name = "DUR", value_parser = parse_duration)]
        ttl: Duration,
        /// The server's public URL, the base of the link.
        #[arg(long, env = "LATCHKEY_PUBLIC_URL", default_value = "http://127.0.0.1:8000", value_name = "URL", value_parser = parse_public_url)]
        public_url: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// List users with their roles.
    List {
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Remove a user and end all their sessions.
    Remove {
        name: String,
        /// Remove the user even if they are the last admin.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Set a user's password and end all their sessions.
    SetPassword {
        name: String,
        /// Read the password from one line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        stores: StoreArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a user's role; it takes effect on their next request.
    SetRole {
        name: String,
        role: String,
        /// Demote the user even if they are the last admin.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Turn every second factor of a user off (TOTP, recovery codes) and end their sessions.
    ResetMfa {
        name: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
    /// Sign a user out everywhere.
    EndSessions {
        name: String,
        #[command(flatten)]
        stores: StoreArgs,
    },
}

/// An email address, as `latchkey::recovery::normalize_email` accepts it.
pub fn parse_email(text: &str) -> Result<String, String> {
    latchkey::recovery::normalize_email(text)
        .ok_or_else(|| format!("{text:?} is not an email address (use e.g. alice@example.com)"))
}

/// `http(s)://HOST[:PORT][/PATH]`, kept without a trailing `/`.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("{e}: use e.g. https://login.example.com"))?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if !ok {
        return Err(
            "a public URL is http(s)://HOST[:PORT][/PATH], without credentials, query or fragment"
                .into(),
        );
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Roles: a short word, so they are safe in logs and pages.
pub fn valid_role(role: &str) -> Result<(), String> {
    let ok = !role.is_empty()
        && role.len() <= 32
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid role {role:?}: use 1-32 letters, digits, '_' or '-'"
        ))
    }
}
