//! [`LatchkeyLayer`]: puts the [`Latchkey`] handle where extractors find it,
//! refuses cross-site unsafe requests, and sets security headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::csrf::{Csrf, CsrfLayer};

use crate::csrf::RejectFn;
use crate::Latchkey;

/// See the module docs. Made by [`Latchkey::layer`].
#[derive(Clone)]
pub struct LatchkeyLayer {
    auth: Latchkey,
    cross_origin: CsrfLayer<RejectFn>,
    csp: HeaderValue,
}

impl LatchkeyLayer {
    pub(crate) fn new(auth: Latchkey) -> Self {
        // Built (and its origins checked) once, by `Builder::build`.
        let cross_origin = auth.cross_origin().clone();
        let csp = content_security_policy(auth.config());
        Self {
            auth,
            cross_origin,
            csp,
        }
    }
}

/// Pages' policy. `form-action` also governs where a form's answer may
/// redirect (browsers enforce it on redirects), so a sign-in that returns
/// the browser to an allowed redirect host needs that host listed: each
/// with any port (hosts are allowed whatever their port), and without a
/// scheme (the page's own, or https from an http page). An IPv6 address
/// cannot be written as a CSP source; a sign-in sent back to one stays on
/// the sign-in page's site.
fn content_security_policy(config: &crate::Config) -> HeaderValue {
    let sources = config.redirect_hosts.csp_sources();
    if sources.is_empty() {
        return CSP;
    }
    HeaderValue::try_from(format!(
        "default-src 'self'; frame-ancestors 'none'; form-action 'self' {sources}; base-uri 'none'"
    ))
    // Checked host names and addresses: always header text.
    .unwrap_or(CSP)
}

impl<S: Clone> Layer<S> for LatchkeyLayer {
    type Service = LatchkeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LatchkeyService {
            checked: self.cross_origin.layer(inner.clone()),
            exempt: inner,
            auth: self.auth.clone(),
            csp: self.csp.clone(),
        }
    }
}

/// The service [`LatchkeyLayer`] wraps around a router: the cross-origin
/// check, then the router, then the security headers. No allocation per
/// request of its own: its future is a plain struct around the inner one.
///
/// It holds the router twice, behind tower-http's check and bare: the few
/// requests that check must not judge (the forward-auth endpoint, and
/// same-site requests from the cookie domain, which need the request's
/// headers to recognise while the check's bypass hook sees only method and
/// URI) go to the bare one.
#[derive(Clone)]
pub struct LatchkeyService<S> {
    checked: Csrf<S, RejectFn>,
    exempt: S,
    auth: Latchkey,
    csp: HeaderValue,
}

const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");
const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
);

impl<S> Service<Request> for LatchkeyService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = LatchkeyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both handles ready, whichever the request goes to (for a router,
        // both always are).
        std::task::ready!(self.checked.poll_ready(cx))?;
        self.exempt.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let secure = self.auth.config().is_secure();
        req.extensions_mut().insert(self.auth.clone());
        let inner = if crate::csrf::exempt(self.auth.config(), &req) {
            Inner::Exempt {
                future: self.exempt.call(req),
            }
        } else {
            Inner::Checked {
                future: self.checked.call(req),
            }
        };
        LatchkeyFuture {
            inner,
            secure,
            csp: self.csp.clone(),
        }
    }
}

pin_project! {
    /// The future of [`LatchkeyService`]: the inner answer with the
    /// security headers added.
    pub struct LatchkeyFuture<F>
    where
        F: Future,
    {
        #[pin]
        inner: Inner<F>,
        secure: bool,
        csp: HeaderValue,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F>
    where
        F: Future,
    {
        Checked { #[pin] future: tower_http::csrf::ResponseFuture<F> },
        Exempt { #[pin] future: F },
    }
}

impl<F, E> Future for LatchkeyFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = match this.inner.project() {
            InnerProj::Checked { future } => std::task::ready!(future.poll(cx))?,
            InnerProj::Exempt { future } => std::task::ready!(future.poll(cx))?,
        };
        security_headers(res.headers_mut(), *this.secure, this.csp);
        Poll::Ready(Ok(res))
    }
}

fn security_headers(h: &mut HeaderMap, secure: bool, csp: &HeaderValue) {
    // Session answers must never sit in a shared or back-button cache;
    // routes that serve static assets set their own Cache-Control.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    if secure {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
}
