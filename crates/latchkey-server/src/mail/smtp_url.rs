//! `--smtp-url`: where mail goes, parsed once at start-up. Its password is
//! a secret: no `Debug`, `Display` or error of this module prints it.

use std::fmt;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};

/// The forms `--smtp-url` takes, for error messages.
const FORMS: &str = "use smtp://HOST:PORT (plain, a local relay), \
    smtp+starttls://USER:PASS@HOST:587 or smtps://USER:PASS@HOST:465";

/// What a user name must percent-encode to print back as a URL.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: plain text, for a relay on the same host or network.
    Plain,
    /// `smtp+starttls://`: plain, upgraded to TLS (refused if the server cannot).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

impl Security {
    fn scheme(self) -> &'static str {
        match self {
            Security::Plain => "smtp",
            Security::StartTls => "smtp+starttls",
            Security::Tls => "smtps",
        }
    }
}

/// A parsed `--smtp-url`. Prints as the URL with `***` for the password.
#[derive(Clone)]
pub struct SmtpUrl {
    pub security: Security,
    pub host: String,
    pub port: u16,
    /// User name and password, percent-decoded.
    credentials: Option<(String, SecretString)>,
}

impl SmtpUrl {
    /// Parses `text`. Errors name what is wrong and the fix, and never
    /// repeat the password.
    pub fn parse(text: &str) -> Result<SmtpUrl, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| format!("not a URL ({e}); {FORMS}"))?;
        let security = match url.scheme() {
            "smtp" => Security::Plain,
            "smtp+starttls" => Security::StartTls,
            "smtps" => Security::Tls,
            other => return Err(format!("unknown scheme {other:?}; {FORMS}")),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            // lettre connects to (host, port): the address without brackets.
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(format!("no host; {FORMS}")),
        };
        let port = match url.port() {
            Some(0) => return Err(format!("port 0 cannot be connected to; {FORMS}")),
            Some(p) => p,
            None => match security {
                Security::Plain => 25,
                Security::StartTls => 587,
                Security::Tls => 465,
            },
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("nothing may follow HOST:PORT; {FORMS}"));
        }
        let decode = |part: &str, what: &str| {
            percent_decode_str(part)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => {
                return Err(format!("a password needs a user name (USER:PASS@HOST); {FORMS}"))
            }
            (_, None) => {
                return Err(format!(
                    "a user name needs its password (USER:PASS@HOST, percent-encode ':' '@' '/' in either); {FORMS}"
                ))
            }
            (user, Some(pass)) => Some((
                decode(user, "user name")?,
                SecretString::from(decode(pass, "password")?),
            )),
        };
        if credentials.is_some() && security == Security::Plain {
            return Err(
                "smtp:// would send the password in plain text: use smtp+starttls://USER:PASS@HOST:587 or smtps://USER:PASS@HOST:465"
                    .into(),
            );
        }
        let parsed = SmtpUrl {
            security,
            host,
            port,
            credentials,
        };
        // A host TLS cannot check is refused now, not at the first mail.
        parsed.builder()?;
        Ok(parsed)
    }

    /// The user name, if the URL has credentials.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(u, _)| u.as_str())
    }

    /// The transport that sends through this server, every SMTP command
    /// bounded by `timeout`. A connection per mail: mail is rare, and a
    /// fresh connection never finds a relay that went away meanwhile.
    pub fn transport(
        &self,
        timeout: Duration,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let builder = self.builder()?.port(self.port).timeout(Some(timeout));
        Ok(match &self.credentials {
            Some((user, pass)) => builder
                .credentials(Credentials::new(
                    user.clone(),
                    pass.expose_secret().to_owned(),
                ))
                .build(),
            None => builder.build(),
        })
    }

    /// Fails only for a host name TLS cannot check.
    fn builder(&self) -> Result<AsyncSmtpTransportBuilder, String> {
        type Smtp = AsyncSmtpTransport<Tokio1Executor>;
        match self.security {
            Security::Plain => Ok(Smtp::builder_dangerous(self.host.as_str())),
            Security::StartTls => Smtp::starttls_relay(&self.host),
            Security::Tls => Smtp::relay(&self.host),
        }
        .map_err(|e| {
            format!(
                "host {:?} cannot be used with TLS ({e}); {FORMS}",
                self.host
            )
        })
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.security.scheme())?;
        if let Some(user) = self.user() {
            let user = percent_encoding::utf8_percent_encode(user, USERINFO);
            write!(f, "{user}:***@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

/// Parses `--smtp-url` for clap without echoing a refused value (clap's
/// own error would print it, password and all).
#[derive(Clone)]
pub struct SmtpUrlParser;

impl clap::builder::TypedValueParser for SmtpUrlParser {
    type Value = SmtpUrl;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SmtpUrl, clap::Error> {
        let refused = |why: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --smtp-url (LATCHKEY_SMTP_URL): {why}\n"),
            )
        };
        let text = value.to_str().ok_or_else(|| refused("not UTF-8 text"))?;
        SmtpUrl::parse(text).map_err(|e| refused(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_and_its_default_port() {
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (u.security, u.host.as_str(), u.port),
            (Security::Plain, "127.0.0.1", 2525)
        );
        assert_eq!(u.user(), None);
        assert_eq!(SmtpUrl::parse("smtp://relay.local").unwrap().port, 25);

        let u = SmtpUrl::parse("smtp+starttls://me:pw@mail.example.com").unwrap();
        assert_eq!((u.security, u.port), (Security::StartTls, 587));
        assert_eq!(u.user(), Some("me"));

        let u = SmtpUrl::parse("smtps://me:pw@mail.example.com:2465/").unwrap();
        assert_eq!((u.security, u.port), (Security::Tls, 2465));
        assert_eq!(
            SmtpUrl::parse("smtps://me:pw@mail.example.com")
                .unwrap()
                .port,
            465
        );

        let u = SmtpUrl::parse("smtp://[::1]:25").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.to_string(), "smtp://[::1]:25");
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let u = SmtpUrl::parse("smtps://ops%40example.com:p%3Ass%2Fw%40rd%25@mail.example.com")
            .unwrap();
        assert_eq!(u.user(), Some("ops@example.com"));
        let (_, pass) = u.credentials.as_ref().unwrap();
        assert_eq!(pass.expose_secret(), "p:ss/w@rd%");
        // Printed back as a URL that parses to the same user.
        assert_eq!(
            u.to_string(),
            "smtps://ops%40example.com:***@mail.example.com:465"
        );
    }

    #[test]
    fn the_password_never_prints() {
        let u = SmtpUrl::parse("smtps://me:hunter2-secret@mail.example.com:465").unwrap();
        for shown in [format!("{u}"), format!("{u:?}"), format!("{u:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("smtps://me:***@mail.example.com:465"),
                "{shown}"
            );
        }
        // Nor does clap's error for a refused URL that carries one.
        use clap::builder::TypedValueParser;
        let cmd = clap::Command::new("t");
        let refused = SmtpUrlParser
            .parse_ref(
                &cmd,
                None,
                std::ffi::OsStr::new("smtp://me:hunter2-secret@relay:25"),
            )
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("hunter2"), "{refused}");
        assert!(refused.contains("plain text"), "{refused}");
    }

    #[test]
    fn bad_urls_name_the_fix() {
        for (bad, says) in [
            ("mail.example.com", "not a URL"),
            ("http://mail.example.com", "unknown scheme \"http\""),
            ("smtp://", "no host"),
            ("smtp://relay:0", "port 0"),
            ("smtp://relay:99999", "not a URL"),
            ("smtp://relay:25/inbox", "nothing may follow"),
            ("smtp://relay:25?tls=1", "nothing may follow"),
            ("smtps://:pw@relay", "needs a user name"),
            ("smtps://me@relay", "needs its password"),
            ("smtp://me:pw@relay", "plain text"),
            ("smtps://me:%FF%FE@relay", "not UTF-8"),
        ] {
            let e = SmtpUrl::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: one line: {e}");
            if !e.contains("UTF-8") {
                assert!(
                    e.contains("smtps://USER:PASS@HOST:465"),
                    "{bad}: names the fix: {e}"
                );
            }
        }
    }
}
