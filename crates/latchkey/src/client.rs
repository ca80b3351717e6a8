//! Who the client is: its address (the socket peer, or `X-Forwarded-For`
//! from a trusted proxy) and user agent, as sessions record them and
//! throttling counts them.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap};

use crate::Latchkey;

/// Facts about the client a session records and throttling counts by.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    /// Client address: the socket peer, or `X-Forwarded-For` from a trusted proxy.
    pub ip: String,
    /// `User-Agent`, truncated to 256 characters.
    pub user_agent: String,
}

impl RequestMeta {
    fn from_parts(parts: &Parts, trusted_proxies: &[IpAddr]) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ip = match peer {
            Some(peer) if trusted_proxies.contains(&peer) => {
                forwarded_client(&parts.headers, trusted_proxies).unwrap_or(peer)
            }
            Some(peer) => peer,
            None => return Self::with_ip("unknown", &parts.headers),
        };
        Self::with_ip(&ip.to_string(), &parts.headers)
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

/// The right-most `X-Forwarded-For` address that is not a trusted proxy.
fn forwarded_client(headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let all: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    all.into_iter().rev().find(|ip| !trusted.contains(ip))
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let proxies = parts
            .extensions
            .get::<Latchkey>()
            .map(|l| l.0.config.trusted_proxies.clone())
            .unwrap_or_default();
        Ok(Self::from_parts(parts, &proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_is_read_right_to_left_past_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.1"),
        );
        assert_eq!(
            forwarded_client(&h, &[proxy]),
            Some("1.2.3.4".parse().unwrap())
        );
    }
}
