//! Builds the application: shared state and the router with its layers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use latchkey::body::BODY_LIMIT;
use latchkey::Latchkey;
use tower_http::timeout::TimeoutLayer;

use crate::error::{error_bodies, method_not_allowed, not_found};
use crate::flash;
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

/// How long one request may take before 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let auth_layer = state.auth.layer();
    Router::new()
        .merge(routes::home::router())
        .merge(routes::login::router())
        .merge(routes::logout::router())
        .merge(routes::profile::router())
        .merge(routes::password::router())
        .merge(routes::sessions::router())
        .merge(routes::admin::router())
        .merge(routes::setup::router())
        .merge(routes::signup::router())
        .merge(routes::health::router())
        .merge(routes::static_files::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(error_bodies))
        .layer(middleware::from_fn_with_state(state.clone(), flash::layer))
        .layer(auth_layer)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

async fn count_responses(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    app.metrics.response(res.status().as_u16());
    res
}
