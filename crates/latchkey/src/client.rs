//! Who the client is: its address (the socket peer, or `X-Forwarded-For`
//! from a trusted proxy) and user agent, as sessions record them and
//! throttling counts them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::Response;
use ipnet::{IpNet, Ipv6Net};

use crate::Latchkey;

/// Facts about the client a session records and throttling counts by.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    /// Client address: the socket peer, or `X-Forwarded-For` from a trusted
    /// proxy. IPv4 clients are always plain IPv4 text, also when a
    /// dual-stack listener saw them as `::ffff:a.b.c.d`.
    pub ip: String,
    /// `User-Agent`, truncated to 256 characters.
    pub user_agent: String,
}

impl RequestMeta {
    /// `None` when the server did not record the socket peer.
    fn from_parts(parts: &Parts, trusted_proxies: &[IpNet]) -> Option<Self> {
        let peer = peer(parts)?.to_canonical();
        let ip = if is_trusted(peer, trusted_proxies) {
            forwarded_client(&parts.headers, trusted_proxies).unwrap_or(peer)
        } else {
            peer
        };
        Some(Self::with_ip(&ip.to_string(), &parts.headers))
    }

    fn with_ip(ip: &str, headers: &HeaderMap) -> Self {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect();
        Self {
            ip: ip.to_owned(),
            user_agent,
        }
    }
}

/// The socket peer, from `into_make_service_with_connect_info` (or axum's
/// `MockConnectInfo` in tests).
pub(crate) fn peer(parts: &Parts) -> Option<IpAddr> {
    if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        return Some(addr.ip());
    }
    parts
        .extensions
        .get::<MockConnectInfo<SocketAddr>>()
        .map(|MockConnectInfo(addr)| addr.ip())
}

/// Whether `ip` (already canonical) is one of the trusted proxies. An entry
/// written as `::ffff:a.b.c.d` still matches the canonical IPv4 peer.
pub(crate) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    trusted
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`203.0.113.9:4711`, `[2001:db8::1]:4711`) or in brackets. `None` for
/// anything else (`unknown`, obfuscated names, garbage, non-UTF-8).
fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// The client behind a trusted peer: walking `X-Forwarded-For` right to
/// left, the first entry that is not a trusted proxy. An entry that is not
/// an address ends the walk: whoever wrote it (and everything to its left)
/// is not trusted, so the last address read — the entry to its right, or
/// `None` for the peer — is the client. When every entry is a trusted
/// proxy, the left-most one is.
fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    // Repeated headers are one list in order; read it from the end.
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','));
    let mut client = None;
    for entry in entries {
        let Some(ip) = parse_entry(entry) else {
            break;
        };
        client = Some(ip);
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// The key per-address throttling counts by: an IPv6 client by its /64
/// (one subscriber usually holds a whole /64, so per-address limits would
/// otherwise be per-guess), an IPv4 one by its address.
pub(crate) fn address_bucket(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => Ipv6Net::new(v6, 64)
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| ip.to_owned()),
        Err(_) => ip.to_owned(),
    }
}

/// Set once the missing-`ConnectInfo` error has been logged.
static MISSING_PEER_LOGGED: AtomicBool = AtomicBool::new(false);

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    /// 503 when the socket peer is unknown: counting every client as one
    /// address would throttle them all together, or not at all.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let proxies = parts
            .extensions
            .get::<Latchkey>()
            .map_or(&[][..], |l| &l.0.config.trusted_proxies[..]);
        match Self::from_parts(parts, proxies) {
            Some(meta) => Ok(meta),
            None => {
                if !MISSING_PEER_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "latchkey cannot see client addresses, so it refuses sign-ins (503): \
                         serve the router with \
                         `into_make_service_with_connect_info::<SocketAddr>()` \
                         (or insert `ConnectInfo<SocketAddr>` per connection)"
                    );
                }
                Err(crate::error::detail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Client address unavailable",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderValue, Request};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .unwrap()
            })
            .collect()
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// The address `RequestMeta` records for `peer` with these headers.
    fn meta_ip(peer: &str, headers: HeaderMap, trusted: &[IpNet]) -> String {
        let mut req = Request::get("/").body(()).unwrap();
        *req.headers_mut() = headers;
        req.extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        let (parts, ()) = req.into_parts();
        RequestMeta::from_parts(&parts, trusted).unwrap().ip
    }

    #[test]
    fn forwarded_for_is_read_right_to_left_past_trusted_proxies() {
        let h = xff(&["6.6.6.6, 1.2.3.4, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &nets(&["10.0.0.1"])), ip("1.2.3.4"));
    }

    #[test]
    fn trusted_proxies_may_be_cidr_ranges_of_both_families() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8", "127.0.0.1"]);
        let h = xff(&["198.51.100.7, fd12::3, 10.200.1.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("198.51.100.7"));
        let h = xff(&["198.51.100.7, 11.0.0.1, 10.0.0.2"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("11.0.0.1"));
        assert_eq!(
            meta_ip("10.9.9.9:443", xff(&["203.0.113.5"]), &trusted),
            "203.0.113.5"
        );
        assert_eq!(
            meta_ip("[fd00::1]:443", xff(&["203.0.113.5"]), &trusted),
            "203.0.113.5"
        );
        // A peer outside every range: its header is ignored.
        assert_eq!(
            meta_ip("11.1.1.1:443", xff(&["203.0.113.5"]), &trusted),
            "11.1.1.1"
        );
        assert_eq!(
            meta_ip("[fe00::1]:443", xff(&["203.0.113.5"]), &trusted),
            "fe00::1"
        );
    }

    #[test]
    fn mapped_ipv4_peer_matches_its_ipv4_entry_and_is_recorded_plain() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(
            meta_ip("[::ffff:127.0.0.1]:5000", xff(&["203.0.113.9"]), &trusted),
            "203.0.113.9"
        );
        assert_eq!(
            meta_ip("[::ffff:10.1.2.3]:5000", xff(&["203.0.113.9"]), &trusted),
            "203.0.113.9"
        );
        // Untrusted mapped peer: recorded (and so counted) as plain IPv4.
        assert_eq!(
            meta_ip(
                "[::ffff:198.51.100.1]:5000",
                xff(&["203.0.113.9"]),
                &trusted
            ),
            "198.51.100.1"
        );
        // A mapped entry in the header is plain IPv4 too, and a mapped
        // proxy entry in the list matches the canonical peer.
        assert_eq!(
            meta_ip("10.0.0.1:1", xff(&["::ffff:203.0.113.9"]), &trusted),
            "203.0.113.9"
        );
        assert_eq!(
            meta_ip(
                "192.0.2.1:1",
                xff(&["203.0.113.9"]),
                &nets(&["::ffff:192.0.2.1"])
            ),
            "203.0.113.9"
        );
    }

    #[test]
    fn forwarded_entries_may_carry_ports() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff(&["203.0.113.9:4711, 10.0.0.3:80"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::1]:4711, [fd00::2]:80"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("2001:db8::1"));
        let h = xff(&["[2001:db8::1]"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("2001:db8::1"));
        let h = xff(&["2001:db8::1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn an_entry_that_is_not_an_address_ends_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The entry right of the garbage is the client, even a trusted one.
        let h = xff(&["1.1.1.1, garbage, 10.0.0.5, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("10.0.0.5"));
        let h = xff(&["1.1.1.1, unknown, 198.51.100.2, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("198.51.100.2"));
        // Garbage right next to the peer: the peer is the client.
        let h = xff(&["1.1.1.1, not-an-ip"]);
        assert_eq!(forwarded_client(&h, &trusted), None);
        assert_eq!(meta_ip("10.0.0.1:1", h, &trusted), "10.0.0.1");
        let h = xff(&["1.1.1.1, , 10.0.0.2"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("10.0.0.2"));
        // A non-UTF-8 entry is not an address either.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"9.9.9.9, \xff, 10.0.0.7").unwrap(),
        );
        assert_eq!(forwarded_client(&h, &trusted), ip("10.0.0.7"));
    }

    #[test]
    fn nothing_left_of_the_client_counts_and_headers_join_in_order() {
        let trusted = nets(&["10.0.0.0/8"]);
        // A client-forged prefix is left of the client: ignored.
        let h = xff(&["10.0.0.9, 6.6.6.6, 203.0.113.1, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("203.0.113.1"));
        // Two headers are one list; the second one's entries are right-most.
        let h = xff(&["6.6.6.6", "203.0.113.1, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("203.0.113.1"));
        let h = xff(&["6.6.6.6", "10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("6.6.6.6"));
        // Every entry a proxy: the left-most is the origin.
        let h = xff(&["10.0.0.3, 10.0.0.1"]);
        assert_eq!(forwarded_client(&h, &trusted), ip("10.0.0.3"));
        // No header: the peer.
        assert_eq!(forwarded_client(&HeaderMap::new(), &trusted), None);
    }

    #[test]
    fn address_bucket_groups_ipv6_by_64() {
        assert_eq!(
            address_bucket("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(address_bucket("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(address_bucket("::1"), "::/64");
        assert_eq!(address_bucket("203.0.113.9"), "203.0.113.9");
        assert_eq!(address_bucket("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(address_bucket("unknown"), "unknown");
        assert_eq!(address_bucket(""), "");
    }

    async fn who(app: Router, req: Request<Body>) -> (StatusCode, String) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn app() -> Router {
        Router::new().route("/", get(|meta: RequestMeta| async move { meta.ip }))
    }

    #[tokio::test]
    async fn without_connect_info_the_extractor_fails_closed() {
        let req = Request::get("/").body(Body::empty()).unwrap();
        let (status, body) = who(app(), req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(json["detail"].is_string(), "{body}");
        assert!(MISSING_PEER_LOGGED.load(Ordering::Relaxed));
        // And again (logged once, refused every time).
        let req = Request::get("/").body(Body::empty()).unwrap();
        assert_eq!(who(app(), req).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn with_connect_info_the_peer_is_the_client() {
        let mut req = Request::get("/").body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(
            "[::ffff:192.0.2.4]:999".parse().unwrap(),
        ));
        assert_eq!(
            who(app(), req).await,
            (StatusCode::OK, "192.0.2.4".to_owned())
        );
        let app = app().layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        let req = Request::get("/").body(Body::empty()).unwrap();
        assert_eq!(
            who(app, req).await,
            (StatusCode::OK, "127.0.0.1".to_owned())
        );
    }
}
