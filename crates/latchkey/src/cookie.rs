//! The session cookie: its name, attributes, and reading it back.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};

use crate::session::SessionToken;

/// How the session cookie is written.
#[derive(Clone, Debug)]
pub struct CookieConfig {
    /// `__Host-latchkey` when secure, `latchkey` in development;
    /// `__Secure-latchkey` with a [`domain`](Self::domain).
    pub name: String,
    /// Name of the pre-session CSRF cookie used by sign-in forms. It stays
    /// on latchkey's own host (`__Host-` when secure), domain or not.
    pub csrf_name: String,
    /// Name of the pending sign-in cookie (password right, second factor next).
    pub pending_name: String,
    /// Name of the passkey sign-in ceremony cookie.
    pub ceremony_name: String,
    /// Whether to set `Secure` (off only for plain-HTTP development).
    pub secure: bool,
    /// `Max-Age`: the absolute timeout, never more.
    pub max_age: Duration,
    /// `Domain` of the session cookie, shared with the subdomains
    /// (forward authentication); `None`: this host only.
    pub domain: Option<String>,
}

impl CookieConfig {
    /// `__Host-` prefixed and `Secure` when `secure`, else plain names.
    pub fn new(secure: bool, max_age: Duration) -> Self {
        let prefix = if secure { "__Host-" } else { "" };
        Self {
            name: format!("{prefix}latchkey"),
            csrf_name: format!("{prefix}latchkey-csrf"),
            pending_name: format!("{prefix}latchkey-mfa"),
            ceremony_name: format!("{prefix}latchkey-webauthn"),
            secure,
            max_age,
            domain: None,
        }
    }

    /// The session cookie shared with `domain` and its subdomains:
    /// `__Host-` forbids `Domain`, so a secure cookie becomes
    /// `__Secure-latchkey` (still `Secure`, and a subdomain's plain
    /// `latchkey` cookie cannot pose as it); `latchkey` in development.
    pub fn with_domain(mut self, domain: Option<String>) -> Self {
        if domain.is_some() {
            self.name = if self.secure {
                "__Secure-latchkey".into()
            } else {
                "latchkey".into()
            };
        }
        self.domain = domain;
        self
    }

    fn build(&self, name: &str, value: &str, max_age: Duration, domain: bool) -> HeaderValue {
        let mut c = Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64));
        if let (true, Some(d)) = (domain, &self.domain) {
            c = c.domain(d.as_str());
        }
        // Token, names and the (checked) domain are ASCII by construction.
        HeaderValue::from_str(&c.build().to_string()).expect("cookie is valid header text")
    }

    /// `Set-Cookie` value carrying `token`.
    pub fn session(&self, token: &SessionToken) -> HeaderValue {
        self.build(&self.name, token.as_str(), self.max_age, true)
    }

    /// `Set-Cookie` value that expires the session cookie now (with the
    /// same `Domain`, or the browser would keep it).
    pub fn removal(&self) -> HeaderValue {
        self.build(&self.name, "", Duration::ZERO, true)
    }

    /// `Set-Cookie` value for the pre-session CSRF cookie.
    pub fn pre_session(&self, value: &str) -> HeaderValue {
        self.build(&self.csrf_name, value, self.max_age, false)
    }

    /// `Set-Cookie` value for a pending sign-in, living `ttl`.
    pub fn pending(&self, token: &SessionToken, ttl: Duration) -> HeaderValue {
        self.build(&self.pending_name, token.as_str(), ttl, false)
    }

    /// `Set-Cookie` value that expires the pending sign-in cookie now.
    pub fn pending_removal(&self) -> HeaderValue {
        self.build(&self.pending_name, "", Duration::ZERO, false)
    }

    /// The pending sign-in token in the request, if any.
    pub fn pending_token(&self, headers: &HeaderMap) -> Option<SessionToken> {
        cookie_values(headers, &self.pending_name).find_map(SessionToken::parse)
    }

    /// `Set-Cookie` value for a passkey sign-in ceremony, living `ttl`.
    pub fn ceremony(&self, token: &SessionToken, ttl: Duration) -> HeaderValue {
        self.build(&self.ceremony_name, token.as_str(), ttl, false)
    }

    /// `Set-Cookie` value that expires the ceremony cookie now.
    pub fn ceremony_removal(&self) -> HeaderValue {
        self.build(&self.ceremony_name, "", Duration::ZERO, false)
    }

    /// The passkey ceremony token in the request, if any.
    pub fn ceremony_token(&self, headers: &HeaderMap) -> Option<SessionToken> {
        cookie_values(headers, &self.ceremony_name).find_map(SessionToken::parse)
    }

    /// The session token in the request, if one well-formed cookie carries it.
    /// Malformed or foreign values are ignored, never passed on.
    pub fn token(&self, headers: &HeaderMap) -> Option<SessionToken> {
        cookie_values(headers, &self.name).find_map(SessionToken::parse)
    }

    /// The store key of the request's session token, without copying the
    /// token (the hot path).
    pub fn token_hash(&self, headers: &HeaderMap) -> Option<crate::session::TokenHash> {
        cookie_values(headers, &self.name)
            .find(|v| SessionToken::is_well_formed(v))
            .map(crate::session::hash_token)
    }

    /// The pre-session CSRF cookie's value, if present.
    pub fn pre_session_value(&self, headers: &HeaderMap) -> Option<String> {
        cookie_values(headers, &self.csrf_name)
            .next()
            .map(str::to_owned)
    }
}

/// Every value of cookie `name` across all `Cookie` headers. Headers are
/// split as bytes, so a non-ASCII byte in one pair (a tracker's cookie,
/// say) hides only that pair, not its neighbours; pairs that are not text
/// are skipped.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let (k, v) = std::str::from_utf8(pair).ok()?.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookie_has_every_attribute() {
        let c = CookieConfig::new(true, Duration::from_secs(8 * 3600));
        let t = SessionToken::generate();
        let v = c.session(&t).to_str().unwrap().to_owned();
        assert!(v.starts_with(&format!("__Host-latchkey={}", t.as_str())));
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=28800",
        ] {
            assert!(v.contains(attr), "{v} lacks {attr}");
        }
        assert!(!v.contains("Domain"));
    }

    #[test]
    fn a_cookie_domain_makes_a_secure_prefixed_domain_cookie() {
        let c = CookieConfig::new(true, Duration::from_secs(3600))
            .with_domain(Some("example.com".into()));
        let t = SessionToken::generate();
        let v = c.session(&t).to_str().unwrap().to_owned();
        assert!(
            v.starts_with(&format!("__Secure-latchkey={}", t.as_str())),
            "{v}"
        );
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Domain=example.com",
            "Max-Age=3600",
        ] {
            assert!(v.contains(attr), "{v} lacks {attr}");
        }
        let gone = c.removal().to_str().unwrap().to_owned();
        assert!(gone.starts_with("__Secure-latchkey=;"), "{gone}");
        assert!(
            gone.contains("Domain=example.com") && gone.contains("Max-Age=0"),
            "{gone}"
        );
        // The sign-in form's cookie stays on latchkey's own host.
        let pre = c.pre_session("x").to_str().unwrap().to_owned();
        assert!(pre.starts_with("__Host-latchkey-csrf=x"), "{pre}");
        assert!(!pre.contains("Domain"), "{pre}");
        // The token is read back under the new name only.
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("__Host-latchkey={}", t.as_str())).unwrap(),
        );
        assert_eq!(c.token(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("__Secure-latchkey={}", t.as_str())).unwrap(),
        );
        assert_eq!(c.token(&h), Some(t));

        let dev = CookieConfig::new(false, Duration::from_secs(60))
            .with_domain(Some("example.test".into()));
        let v = dev
            .session(&SessionToken::generate())
            .to_str()
            .unwrap()
            .to_owned();
        assert!(v.starts_with("latchkey="), "{v}");
        assert!(
            v.contains("Domain=example.test") && !v.contains("Secure"),
            "{v}"
        );
    }

    #[test]
    fn dev_cookie_is_plain_and_not_secure() {
        let c = CookieConfig::new(false, Duration::from_secs(60));
        let v = c
            .session(&SessionToken::generate())
            .to_str()
            .unwrap()
            .to_owned();
        assert!(v.starts_with("latchkey="));
        assert!(!v.contains("Secure"));
    }

    #[test]
    fn reads_the_token_among_other_cookies_and_ignores_junk() {
        let c = CookieConfig::new(true, Duration::from_secs(60));
        let t = SessionToken::generate();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=b; __Host-latchkey=junk"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=y; __Host-latchkey={}", t.as_str())).unwrap(),
        );
        assert_eq!(c.token(&h), Some(t));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-latchkey=;;;=;"),
        );
        assert_eq!(c.token(&h), None);
    }

    #[test]
    fn a_non_ascii_byte_in_one_cookie_hides_only_that_cookie() {
        let c = CookieConfig::new(true, Duration::from_secs(60));
        let t = SessionToken::generate();
        for raw in [
            format!(
                "tracker=caf\u{e9}; __Host-latchkey={}; __Host-latchkey-csrf=p",
                t.as_str()
            ),
            format!(
                "__Host-latchkey={}; x=\u{ff}\u{fe}; __Host-latchkey-csrf=p",
                t.as_str()
            ),
            format!(
                "__Host-latchkey-csrf=p; __Host-latchkey={}; z=\u{c3}",
                t.as_str()
            ),
        ] {
            // Latin-1 bytes as a browser may send them: not valid UTF-8.
            let bytes: Vec<u8> = raw.chars().map(|ch| ch as u32 as u8).collect();
            let mut h = HeaderMap::new();
            h.append(header::COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
            assert!(h.get(header::COOKIE).unwrap().to_str().is_err());
            assert_eq!(c.token(&h).as_ref(), Some(&t), "{raw}");
            assert_eq!(c.token_hash(&h), Some(t.hash()), "{raw}");
            assert_eq!(c.pre_session_value(&h).as_deref(), Some("p"), "{raw}");
        }
        // UTF-8 in another cookie's value is no obstacle either.
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(
                format!("n=\u{e9}t\u{e9}; __Host-latchkey={}", t.as_str()).as_bytes(),
            )
            .unwrap(),
        );
        assert_eq!(c.token(&h), Some(t));
    }

    #[test]
    fn a_mangled_session_cookie_is_no_token_and_no_panic() {
        let c = CookieConfig::new(true, Duration::from_secs(60));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"__Host-latchkey=\xe9\xe9").unwrap(),
        );
        assert_eq!(c.token(&h), None);
    }
}
