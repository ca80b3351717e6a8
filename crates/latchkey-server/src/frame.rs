//! The server's one per-request layer, outside latchkey's own: the request
//! deadline (408), error bodies (`{"detail"}`, pages for browsers), the
//! flash message and the response counter. Written as a tower service with
//! a plain future rather than four `from_fn` middlewares, each of which
//! cost every request a boxed future and a cloned service (about 40% of a
//! signed-in GET's CPU before; README "How the hot path is built").

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::Service;

use crate::app::AppState;
use crate::error;
use crate::flash;

/// How long one request may take before 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// See the module docs.
#[derive(Clone)]
pub struct Frame<S> {
    inner: S,
    app: AppState,
}

impl<S> Frame<S> {
    pub fn new(app: AppState, inner: S) -> Self {
        Self { inner, app }
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Frame<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrameFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Proxies pass on the browser's Accept: /auth/verify still answers
        // them, never a page.
        let html = error::wants_html(req.headers())
            && req.uri().path() != crate::routes::auth::VERIFY_PATH;
        let back_to = if html { error::return_path(&req) } else { None };
        let inner = match flash::read(&self.app, req.headers()) {
            // The common case: nothing to box.
            None => Inner::Plain {
                future: self.inner.call(req),
            },
            // A page after a redirect that left a message: the page is
            // rendered inside the message's task-local scope.
            Some(raw) => Inner::Flash {
                future: Box::pin(flash::scoped(self.app.clone(), raw, self.inner.call(req))),
            },
        };
        FrameFuture {
            inner,
            deadline: tokio::time::sleep(REQUEST_TIMEOUT),
            html,
            back_to,
            app: self.app.clone(),
        }
    }
}

pin_project! {
    /// The future of [`Frame`].
    pub struct FrameFuture<F> {
        #[pin]
        inner: Inner<F>,
        #[pin]
        deadline: tokio::time::Sleep,
        html: bool,
        back_to: Option<String>,
        app: AppState,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Plain { #[pin] future: F },
        Flash { future: Boxed },
    }
}

impl<F> Future for FrameFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = match this.inner.project() {
            InnerProj::Plain { future } => future.poll(cx),
            InnerProj::Flash { future } => future.as_mut().poll(cx),
        };
        let res = match answered {
            Poll::Ready(Ok(res)) => res,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => {
                    crate::error::detail(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        let mut res = error::json_detail(res);
        if *this.html {
            res = error::browser_page(res, this.back_to.take());
        }
        this.app.metrics.response(res.status().as_u16());
        Poll::Ready(Ok(res))
    }
}
