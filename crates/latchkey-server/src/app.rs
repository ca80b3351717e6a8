//! Builds the application: shared state and the router with its layers.

use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use latchkey::body::BODY_LIMIT;
use latchkey::{Latchkey, LatchkeyService};
use tower::Layer;

use crate::error::{method_not_allowed, not_found};
use crate::frame::Frame;
use crate::metrics::Metrics;
use crate::routes;
use crate::users::Users;

/// What every handler can reach.
pub struct App {
    pub auth: Latchkey,
    pub users: Users,
    /// First-run code while no user exists; `None` once used.
    pub setup_code: Mutex<Option<String>>,
    /// `--allow-signup`: anyone may create an account (role `user`).
    pub allow_signup: bool,
    pub metrics: Metrics,
}

pub type AppState = Arc<App>;

/// The whole application as one service: [`Frame`] (deadline, error
/// bodies, flash, metrics) around latchkey's layer (cross-origin check,
/// session handle, security headers) around the router. The two wrap the
/// router from outside rather than through `Router::layer`, which would
/// wrap every route's handler and run per route.
pub type AppService = Frame<LatchkeyService<Router>>;

pub fn service(state: AppState) -> AppService {
    let latchkey = state.auth.layer();
    Frame::new(state.clone(), latchkey.layer(router(state)))
}

fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::home::router())
        .merge(routes::auth::router())
        .merge(routes::login::router())
        .merge(routes::logout::router())
        .merge(routes::profile::router())
        .merge(routes::password::router())
        .merge(routes::email::router())
        .merge(routes::reauth::router())
        .merge(routes::mfa::router())
        .merge(routes::webauthn::router())
        .merge(routes::sessions::router())
        .merge(routes::admin::router())
        .merge(routes::setup::router())
        .merge(routes::signup::router())
        .merge(routes::health::router())
        .merge(routes::static_files::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
