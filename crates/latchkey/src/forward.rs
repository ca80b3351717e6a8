//! Forward authentication: a reverse proxy (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `ForwardAuth`) asks whether the request it holds
//! may go on to the app behind it. [`Forwarded`] is that request as the
//! proxy describes it in `X-Forwarded-*` headers, believed only from a
//! [trusted proxy](crate::Builder::trusted_proxies): from anyone else those
//! headers are ignored and the request itself is the one judged, so a
//! client cannot name the URL it is sent back to, nor the host its `Origin`
//! is compared with.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method};
use url::{Origin, Url};

use crate::extract::AuthRejection;
use crate::redirect::parse_absolute;
use crate::Latchkey;

/// The request a proxy asks about.
///
/// ```
/// use latchkey::forward::Forwarded;
/// use latchkey::MaybeUser;
/// use axum::http::StatusCode;
///
/// async fn verify(MaybeUser(user): MaybeUser, fwd: Forwarded) -> StatusCode {
///     if fwd.is_cross_site() {
///         return StatusCode::FORBIDDEN; // the guarded app gets latchkey's CSRF check
///     }
///     if user.is_some() { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Forwarded {
    method: Method,
    trusted: bool,
    default_scheme: &'static str,
    // The headers the answers come from, kept as sent (each a reference
    // count) and parsed only when asked: a signed-in GET parses nothing.
    forwarded_host: Field,
    forwarded_proto: Field,
    forwarded_uri: Field,
    original_url: Field,
    host: Field,
    origin: Field,
    sec_fetch_site: Field,
}

impl Forwarded {
    /// Reads the request: its `X-Forwarded-*` headers when the socket peer
    /// is a trusted proxy, else the request itself.
    pub fn from_parts(parts: &Parts, latchkey: &Latchkey) -> Self {
        let config = latchkey.config();
        let trusted = crate::client::peer(parts)
            .is_some_and(|p| crate::client::is_trusted(p.to_canonical(), &config.trusted_proxies));
        let h = &parts.headers;
        let from_proxy = |name: &str| {
            if trusted {
                Field::of(h, name)
            } else {
                Field::Absent
            }
        };
        let method = match from_proxy("x-forwarded-method") {
            Field::Absent => parts.method.clone(),
            // One that cannot be read is judged as an unsafe method.
            m => m
                .text()
                .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .unwrap_or(Method::POST),
        };
        // HTTP/2 carries the host as the URI's authority.
        let host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).map_or(Field::Many, Field::One),
            None => Field::of(h, header::HOST.as_str()),
        };
        Self {
            method,
            trusted,
            default_scheme: if config.is_secure() { "https" } else { "http" },
            forwarded_host: from_proxy("x-forwarded-host"),
            forwarded_proto: from_proxy("x-forwarded-proto"),
            forwarded_uri: from_proxy("x-forwarded-uri"),
            original_url: from_proxy("x-original-url"),
            host,
            origin: Field::of(h, header::ORIGIN.as_str()),
            sec_fetch_site: Field::of(h, "sec-fetch-site"),
        }
    }

    /// The original request's method (`X-Forwarded-Method`, or this request's).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The original URL, rebuilt from `X-Forwarded-Proto`, `-Host` and
    /// `-Uri` (or read from `X-Original-URL`) when a trusted proxy sent
    /// them and they make a well-formed `http(s)` URL. Its host is not yet
    /// checked against the allowed redirect hosts
    /// ([`Latchkey::redirect_url`] does that).
    pub fn url(&self) -> Option<Url> {
        self.rebuild()?.0
    }

    /// Whether the socket peer is a trusted proxy (its headers counted).
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }

    /// Whether a browser sent the original request cross-site with an
    /// unsafe method, by latchkey's own rules (Go's
    /// `CrossOriginProtection`), judged against the original request's
    /// origin rather than latchkey's: any method but `GET`, `HEAD` and
    /// `OPTIONS` with `Sec-Fetch-Site` other than `same-origin` or `none`
    /// (`cross-site`, `same-site`), or without it, an `Origin` (`null`
    /// included) that is not the original request's scheme, host and port.
    /// A request with neither header (curl, scripts) is not burdened.
    pub fn is_cross_site(&self) -> bool {
        if matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return false;
        }
        match &self.sec_fetch_site {
            Field::Absent => {}
            site => match site.text() {
                Some("same-origin" | "none") => return false,
                Some("") => {}
                _ => return true,
            },
        }
        match &self.origin {
            Field::Absent => false,
            origin => match origin.text() {
                Some("") => false,
                Some(o) => {
                    let theirs = Url::parse(o).ok().map(|u| u.origin());
                    theirs.is_none() || theirs != self.target_origin()
                }
                None => true,
            },
        }
    }

    /// The original request's origin: the forwarded one from a trusted
    /// proxy that sent one, else this request's own `Host` with the scheme
    /// latchkey is served over.
    fn target_origin(&self) -> Option<Origin> {
        match self.rebuild() {
            Some((_, origin)) => origin,
            None => {
                let host = self.host.text().filter(|h| plain_authority(h))?;
                Url::parse(&format!("{}://{host}", self.default_scheme))
                    .ok()
                    .map(|u| u.origin())
            }
        }
    }

    /// The original URL and origin from a trusted proxy's headers:
    /// `X-Forwarded-Host` (with `-Proto` and `-Uri`) first, else
    /// `X-Original-URL`. `None` when it sent neither.
    fn rebuild(&self) -> Option<(Option<Url>, Option<Origin>)> {
        if let Field::Absent = self.forwarded_host {
            let url = parse_absolute(self.original_url.text()?);
            let origin = url.as_ref().map(Url::origin);
            return Some((url, origin));
        }
        let host = self.forwarded_host.text().filter(|h| plain_authority(h));
        let proto = match &self.forwarded_proto {
            Field::Absent => Some(self.default_scheme),
            p => p.text().and_then(scheme),
        };
        let (Some(host), Some(proto)) = (host, proto) else {
            return Some((None, None));
        };
        let origin = Url::parse(&format!("{proto}://{host}"))
            .ok()
            .map(|u| u.origin());
        let uri = match &self.forwarded_uri {
            Field::Absent => Some("/"),
            uri => uri.text(),
        };
        let url = uri
            .filter(|u| u.starts_with('/'))
            .and_then(|uri| parse_absolute(&format!("{proto}://{host}{uri}")))
            // The path cannot move the host: defence in depth.
            .filter(|u| Some(u.origin()) == origin);
        Some((url, origin))
    }
}

/// One header as the request carried it.
#[derive(Clone, Debug)]
enum Field {
    Absent,
    One(HeaderValue),
    /// Sent more than once: ambiguous (which did the proxy write?), so
    /// never read.
    Many,
}

impl Field {
    fn of(h: &HeaderMap, name: &str) -> Self {
        let mut all = h.get_all(name).iter();
        match (all.next(), all.next()) {
            (None, _) => Field::Absent,
            (Some(v), None) => Field::One(v.clone()),
            _ => Field::Many,
        }
    }

    /// The value as text; `None` when absent, repeated or not visible ASCII.
    fn text(&self) -> Option<&str> {
        match self {
            Field::One(v) => v.to_str().ok().map(str::trim),
            _ => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Forwarded {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let latchkey = parts
            .extensions
            .get::<Latchkey>()
            .cloned()
            .ok_or(AuthRejection::MissingLayer)?;
        Ok(Self::from_parts(parts, &latchkey))
    }
}

/// A host with an optional port, and nothing else: no path, credentials
/// or list that a URL parser would read another way.
fn plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        })
}

fn scheme(proto: &str) -> Option<&'static str> {
    if proto.eq_ignore_ascii_case("https") {
        Some("https")
    } else if proto.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::extract::ConnectInfo;
    use axum::http::Request;

    use super::*;
    use crate::store::MemoryStore;

    fn latchkey() -> Latchkey {
        Latchkey::builder()
            .secret([3u8; 32])
            .store(Arc::new(MemoryStore::new()))
            .trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()])
            .build()
            .unwrap()
    }

    fn ask(peer: &str, method: &str, headers: &[(&str, &str)]) -> Forwarded {
        let mut req = Request::builder()
            .method(method)
            .uri("/auth/verify")
            .header("host", "login.example.com");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        let (parts, ()) = req.into_parts();
        Forwarded::from_parts(&parts, &latchkey())
    }

    const PROXY: &str = "10.0.0.1:5000";
    const STRANGER: &str = "203.0.113.7:5000";

    fn forwarded<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/docs/a?b=c"),
        ];
        h.extend_from_slice(extra);
        h
    }

    #[test]
    fn a_trusted_proxy_names_the_original_request() {
        let f = ask(PROXY, "GET", &forwarded(&[("x-forwarded-method", "post")]));
        assert!(f.is_trusted());
        assert_eq!(f.method(), Method::POST);
        assert_eq!(
            f.url().unwrap().as_str(),
            "https://app.example.com/docs/a?b=c"
        );
        let f = ask(
            PROXY,
            "GET",
            &[("x-original-url", "https://app.example.com:8443/x")],
        );
        assert_eq!(f.url().unwrap().as_str(), "https://app.example.com:8443/x");
        // X-Forwarded-Host wins over X-Original-URL.
        let f = ask(
            PROXY,
            "GET",
            &forwarded(&[("x-original-url", "https://other.example.com/")]),
        );
        assert_eq!(f.url().unwrap().host_str(), Some("app.example.com"));
    }

    #[test]
    fn a_strangers_forwarded_headers_count_for_nothing() {
        let f = ask(
            STRANGER,
            "GET",
            &forwarded(&[
                ("x-forwarded-method", "DELETE"),
                ("x-original-url", "https://evil.example/"),
            ]),
        );
        assert!(!f.is_trusted());
        assert_eq!(f.method(), Method::GET);
        assert!(f.url().is_none());
        // Its Origin is compared with its own Host, not the forged one.
        let f = ask(
            STRANGER,
            "POST",
            &forwarded(&[("origin", "https://app.example.com")]),
        );
        assert!(f.is_cross_site());
        let f = ask(
            STRANGER,
            "POST",
            &forwarded(&[("origin", "https://login.example.com")]),
        );
        assert!(!f.is_cross_site());
    }

    #[test]
    fn malformed_forwarded_parts_rebuild_no_url() {
        for bad in [
            [
                ("x-forwarded-host", "evil.example/x"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-forwarded-host", "good@evil.example"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-uri", "x"),
            ],
            [
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-uri", "/a\\b"),
            ],
            [
                ("x-forwarded-host", "a.example, b.example"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-proto", "gopher"),
            ],
            [
                ("x-original-url", "//evil.example/"),
                ("x-forwarded-uri", "/"),
            ],
            [
                ("x-original-url", "https://good@evil.example/"),
                ("x-forwarded-uri", "/"),
            ],
        ] {
            assert!(ask(PROXY, "GET", &bad).url().is_none(), "{bad:?}");
        }
    }

    #[test]
    fn unsafe_cross_site_methods_are_cross_site() {
        let cross = |method: &str, extra: &[(&str, &str)]| {
            let mut h = forwarded(extra);
            h.push(("x-forwarded-method", method));
            ask(PROXY, "GET", &h).is_cross_site()
        };
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(cross(m, &[("sec-fetch-site", "cross-site")]), "{m}");
            assert!(cross(m, &[("sec-fetch-site", "same-site")]), "{m}");
            assert!(cross(m, &[("origin", "https://evil.example")]), "{m}");
            assert!(cross(m, &[("origin", "null")]), "{m}");
            assert!(cross(m, &[("origin", "http://app.example.com")]), "{m}");
            assert!(
                cross(m, &[("origin", "https://app.example.com:8443")]),
                "{m}"
            );
            assert!(!cross(m, &[("sec-fetch-site", "same-origin")]), "{m}");
            assert!(!cross(m, &[("origin", "https://app.example.com")]), "{m}");
            assert!(!cross(m, &[]), "{m}: no browser headers, not burdened");
        }
        for m in ["GET", "HEAD", "OPTIONS"] {
            assert!(!cross(m, &[("sec-fetch-site", "cross-site")]), "{m}");
        }
    }
}
