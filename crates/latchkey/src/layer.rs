//! [`LatchkeyLayer`]: puts the [`Latchkey`] handle where extractors find it,
//! refuses cross-site unsafe requests, and sets security headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use tower::{Layer, Service};
use tower_http::csrf::{Csrf, CsrfLayer};

use crate::csrf::RejectFn;
use crate::Latchkey;

/// See the module docs. Made by [`Latchkey::layer`].
#[derive(Clone)]
pub struct LatchkeyLayer {
    auth: Latchkey,
    cross_origin: CsrfLayer<RejectFn>,
}

impl LatchkeyLayer {
    pub(crate) fn new(auth: Latchkey) -> Self {
        // Built (and its origins checked) once, by `Builder::build`.
        let cross_origin = auth.cross_origin().clone();
        Self { auth, cross_origin }
    }
}

impl<S> Layer<S> for LatchkeyLayer {
    type Service = LatchkeyService<Csrf<S, RejectFn>>;

    fn layer(&self, inner: S) -> Self::Service {
        LatchkeyService {
            inner: self.cross_origin.layer(inner),
            auth: self.auth.clone(),
        }
    }
}

/// The service [`LatchkeyLayer`] wraps around a router.
#[derive(Clone)]
pub struct LatchkeyService<S> {
    inner: S,
    auth: Latchkey,
}

const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");
const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
);

impl<S> Service<Request> for LatchkeyService<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let secure = self.auth.config().is_secure();
        req.extensions_mut().insert(self.auth.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            let h = res.headers_mut();
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
                h.insert(header::CONTENT_SECURITY_POLICY, CSP);
            }
            if secure {
                h.insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
            }
            Ok(res)
        })
    }
}
