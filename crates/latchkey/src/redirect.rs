//! Where a browser may be sent back to after signing in: [`RedirectHosts`],
//! the hosts an absolute `rd` or `next` URL may name (exact names and
//! `*.suffix`, compared by host name, not port), and the strict parser
//! that reads such a URL. Anything else is refused, so a sign-in link can
//! never be turned into an open redirect.

use url::{Host, Url};

/// Longest URL accepted as a redirect target, in bytes.
pub const MAX_URL_LEN: usize = 4096;

/// One allowed host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// This host only.
    Exact(String),
    /// Every subdomain of this domain, not the domain itself.
    Subdomains(String),
}

/// The hosts `rd` and `next` may name. [`Builder::build`](crate::Builder::build)
/// starts from the public URL's host and the cookie domain (itself and its
/// subdomains) and adds [`Builder::allowed_redirect_hosts`](crate::Builder::allowed_redirect_hosts).
///
/// ```
/// use latchkey::redirect::RedirectHosts;
///
/// let hosts = RedirectHosts::parse(["login.example.com", "*.example.com"]).unwrap();
/// assert!(hosts.check("https://wiki.example.com:8443/page?x=1").is_some());
/// assert!(hosts.check("https://example.com/").is_none());          // not a subdomain
/// assert!(hosts.check("https://example.com@evil.example/").is_none());
/// assert!(hosts.check("//evil.example").is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedirectHosts {
    entries: Vec<Entry>,
}

impl RedirectHosts {
    /// No host allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry of `list` (see [`add`](Self::add)).
    ///
    /// # Errors
    /// The first entry that is not a host name, an address or `*.domain`.
    pub fn parse<I, S>(list: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut hosts = Self::new();
        for entry in list {
            hosts.add(entry.as_ref())?;
        }
        Ok(hosts)
    }

    /// Allows `entry`: a host name (`app.example.com`, IDN names too), an IP
    /// address, or `*.example.com` for every subdomain of `example.com`
    /// (but not `example.com` itself). No scheme, port or path.
    ///
    /// # Errors
    /// Says what is wrong with `entry`.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        let refuse = |why: &str| {
            Err(format!(
                "allowed redirect host {entry:?}: {why} (use e.g. app.example.com or *.example.com)"
            ))
        };
        if let Some(suffix) = entry.strip_prefix("*.") {
            match host_name(suffix) {
                Some(Host::Domain(d)) => self.push(Entry::Subdomains(d)),
                Some(_) => return refuse("a wildcard needs a domain name, not an address"),
                None => return refuse("not a host name"),
            }
        } else if entry.contains('*') {
            return refuse("a wildcard is allowed only as a leading \"*.\"");
        } else {
            match host_name(entry) {
                Some(host) => self.push(Entry::Exact(host.to_string())),
                None => return refuse("not a host name or an IP address"),
            }
        }
        Ok(())
    }

    fn push(&mut self, entry: Entry) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// Allows `domain` and all its subdomains (the cookie domain).
    pub(crate) fn add_domain_and_subdomains(&mut self, domain: &str) {
        self.push(Entry::Exact(domain.to_owned()));
        self.push(Entry::Subdomains(domain.to_owned()));
    }

    /// The hosts as Content-Security-Policy sources, any port
    /// (`app.example.com:*`, `*.example.com:*`), space-separated; IPv6
    /// addresses, which CSP cannot name, are left out.
    pub(crate) fn csp_sources(&self) -> String {
        let sources: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Exact(h) if h.starts_with('[') => None,
                Entry::Exact(h) => Some(format!("{h}:*")),
                Entry::Subdomains(d) => Some(format!("*.{d}:*")),
            })
            .collect();
        sources.join(" ")
    }

    /// Whether no host is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `host` (as [`Url::host_str`] gives it: lower case, IDN in
    /// punycode, IPv6 in brackets) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Exact(h) => h == host,
            Entry::Subdomains(d) => host
                .strip_suffix(d.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        })
    }

    /// `raw` as a redirect target: an absolute `http(s)` URL (see
    /// [`parse_absolute`]) whose host is allowed; `None` otherwise.
    pub fn check(&self, raw: &str) -> Option<Url> {
        let url = parse_absolute(raw)?;
        self.allows(url.host_str()?).then_some(url)
    }
}

impl std::fmt::Display for RedirectHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            match e {
                Entry::Exact(h) => write!(f, "{sep}{h}")?,
                Entry::Subdomains(d) => write!(f, "{sep}*.{d}")?,
            }
        }
        Ok(())
    }
}

/// A host name or address as URLs carry it (lower case, IDN as punycode).
/// An IPv6 address may come with or without brackets.
fn host_name(text: &str) -> Option<Host> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let host = if text.contains(':') && !text.starts_with('[') {
        Host::parse(&format!("[{text}]")).ok()?
    } else {
        Host::parse(text).ok()?
    };
    // A trailing dot is another name to a browser's cookie and origin
    // rules; refuse rather than guess.
    match &host {
        Host::Domain(d) if d.ends_with('.') || d.contains(':') => None,
        _ => Some(host),
    }
}

/// A cookie domain as browsers match it: a host name (no address, no
/// port), lower case, IDN as punycode; one leading dot is dropped.
///
/// # Errors
/// Says what is wrong with `text`.
pub fn parse_cookie_domain(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let name = trimmed.strip_prefix('.').unwrap_or(trimmed);
    match host_name(name) {
        Some(Host::Domain(d)) if !d.starts_with('.') && !d.contains("..") => Ok(d),
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => Err(format!(
            "cookie domain {trimmed:?} is an address; a cookie domain is a host name such as example.com"
        )),
        _ => Err(format!(
            "cookie domain {trimmed:?} is not a host name (use e.g. example.com)"
        )),
    }
}

/// Checks that the cookie domain `domain` (as [`parse_cookie_domain`]
/// gives it) covers the host of `public_url`, where the cookie is set:
/// browsers refuse a cookie for another domain.
///
/// # Errors
/// Says which host it does not cover.
pub fn cookie_domain_covers(domain: &str, public_url: &str) -> Result<(), String> {
    let host = Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if within(&host, domain) {
        return Ok(());
    }
    Err(format!(
        "cookie domain {domain:?} does not cover the public URL's host {host:?}: browsers \
         refuse a cookie for another domain (set --public-url to a URL on {domain}, or use its \
         host or a parent domain of it as the cookie domain)"
    ))
}

/// Whether `host` is `domain` or one of its subdomains.
pub(crate) fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
}

/// Reads `raw` as an absolute `http` or `https` URL, refusing the forms
/// that browsers and URL parsers read differently, which are how redirect
/// checks get fooled: anything but `http://` or `https://` written out
/// (`//evil`, `https:evil`, `javascript:`), a third slash, credentials
/// (`https://good@evil`), backslashes, whitespace and control characters
/// (which parsers silently drop), and more than [`MAX_URL_LEN`] bytes.
pub fn parse_absolute(raw: &str) -> Option<Url> {
    if raw.len() > MAX_URL_LEN
        || raw
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    let rest = strip_prefix_ignore_case(raw, "https://")
        .or_else(|| strip_prefix_ignore_case(raw, "http://"))?;
    if rest.starts_with('/') {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.host_str().is_some_and(|h| !h.is_empty());
    plain.then_some(url)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl crate::Latchkey {
    /// Where `raw` (a sign-in's `rd` or `next`) may send a browser: an
    /// absolute URL on an [allowed host](crate::Config::redirect_hosts),
    /// serialised by the URL parser (ASCII, safe for `Location`); `None`
    /// for anything else. Same-site paths are the app's to allow.
    pub fn redirect_url(&self, raw: &str) -> Option<Url> {
        self.config().redirect_hosts.check(raw)
    }

    /// The sign-in page's absolute URL (`PUBLIC_URL/login`), with `rd`
    /// when given and allowed; `None` without a public URL.
    pub fn sign_in_url(&self, rd: Option<&Url>) -> Option<String> {
        let config = self.config();
        let base = config.public_url()?;
        let mut url = Url::parse(&format!("{base}{}", config.login_path)).ok()?;
        if let Some(rd) = rd.filter(|u| {
            u.host_str()
                .is_some_and(|h| config.redirect_hosts.allows(h))
        }) {
            url.query_pairs_mut().append_pair("rd", rd.as_str());
        }
        Some(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> RedirectHosts {
        let mut h = RedirectHosts::parse(["login.example.com", "127.0.0.1", "::1"]).unwrap();
        h.add_domain_and_subdomains("example.org");
        h.add("*.apps.example.net").unwrap();
        h
    }

    #[test]
    fn tricky_redirects_are_refused() {
        let h = hosts();
        for bad in [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "https:evil.example",
            "https:/evil.example",
            "https:///login.example.com/",
            "https://login.example.com@evil.example/",
            "https://evil.example@login.example.com/",
            "https://user:pass@login.example.com/",
            "https://evil.example\\.login.example.com/",
            "https://evil.example\\@login.example.com/",
            "https://login.example.com.evil.example/",
            "https://login.example.comevil.example/",
            "https://evil.example/login.example.com",
            "https://evil.example?login.example.com",
            "https://evil.example#login.example.com",
            "https://evilexample.org/",
            "https://.example.org/",
            "https://example.net/",
            "https://apps.example.net/",
            "https://login.example.com./",
            "https://login.exa\tmple.com/",
            "https://login.example.com\n.evil.example/",
            "https://login.example.com\r\nLocation: https://evil/",
            " https://login.example.com/",
            "https://login.example.com/\u{0}",
            "https://login.example.com/ x",
            "https://login.example.com%2eevil.example/",
            "https://login.example.com%40evil.example/",
            "javascript:alert(1)",
            "JavaScript://login.example.com/%0aalert(1)",
            "data:text/html,hi",
            "ftp://login.example.com/",
            "ws://login.example.com/",
            "http://127.0.0.2/",
            "http://[::2]/",
            "/profile",
            "",
            "https://",
        ] {
            assert!(h.check(bad).is_none(), "{bad:?} was accepted");
        }
        let long = format!("https://login.example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(h.check(&long).is_none());
    }

    #[test]
    fn allowed_hosts_pass_whatever_their_port() {
        let h = hosts();
        for (good, host) in [
            ("https://login.example.com/", "login.example.com"),
            ("HTTPS://LOGIN.EXAMPLE.COM/x", "login.example.com"),
            (
                "https://login.example.com:8443/a?b=c#d",
                "login.example.com",
            ),
            ("http://login.example.com:80/", "login.example.com"),
            ("https://example.org/", "example.org"),
            ("https://wiki.example.org/page", "wiki.example.org"),
            ("https://a.b.example.org/", "a.b.example.org"),
            ("https://x.apps.example.net/", "x.apps.example.net"),
            ("http://127.0.0.1:3000/app", "127.0.0.1"),
            ("http://[::1]:8080/", "[::1]"),
        ] {
            let url = h
                .check(good)
                .unwrap_or_else(|| panic!("{good:?} was refused"));
            assert_eq!(url.host_str(), Some(host), "{good}");
        }
        // What comes back is serialised by the URL parser: ASCII, encoded.
        let url = h
            .check("https://login.example.com/caf\u{e9}?q=\"<x>\"")
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://login.example.com/caf%C3%A9?q=%22%3Cx%3E%22"
        );
    }

    #[test]
    fn entries_are_host_names_addresses_or_wildcards() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.example.com",
            "example.*",
            "https://example.com",
            "example.com/path",
            "example.com:443",
            "*.127.0.0.1",
            "exa mple.com",
            "example.com.",
        ] {
            assert!(RedirectHosts::parse([bad]).is_err(), "{bad:?}");
        }
        let h = RedirectHosts::parse(["Example.COM", " *.Apps.Example.com ", "[::1]"]).unwrap();
        assert_eq!(h.to_string(), "example.com,*.apps.example.com,[::1]");
        assert_eq!(h.csp_sources(), "example.com:* *.apps.example.com:*");
        // IDN names are compared in punycode, as URLs carry them.
        let h = RedirectHosts::parse(["b\u{fc}cher.example"]).unwrap();
        assert!(h.check("https://xn--bcher-kva.example/").is_some());
        assert!(h.check("https://b\u{fc}cher.example/").is_some());
    }

    #[test]
    fn cookie_domains_are_host_names() {
        assert_eq!(parse_cookie_domain("Example.COM").unwrap(), "example.com");
        assert_eq!(parse_cookie_domain(".example.com").unwrap(), "example.com");
        for bad in [
            "",
            ".",
            "..example.com",
            "127.0.0.1",
            "[::1]",
            "example.com:8443",
            "a b",
            "example.com/x",
            "example.com.",
        ] {
            assert!(parse_cookie_domain(bad).is_err(), "{bad:?}");
        }
        assert!(within("example.com", "example.com"));
        assert!(within("app.example.com", "example.com"));
        assert!(!within("badexample.com", "example.com"));
        assert!(!within(".example.com", "example.com"));
    }
}
