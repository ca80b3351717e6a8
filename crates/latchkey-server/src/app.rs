//! Builds the application: shared state and the router with its layers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
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
        .route("/login", get(routes::login::get).post(routes::login::post))
        .route("/logout", post(routes::logout::post))
        .route("/profile", get(routes::profile::get))
        .route("/admin", get(routes::admin::get))
        .route("/admin/users/{name}/role", post(routes::admin::set_role))
        .route(
            "/admin/users/{name}/end-sessions",
            post(routes::admin::end_sessions),
        )
        .route("/admin/users/{name}/remove", post(routes::admin::remove))
        .route(
            "/admin/users/{name}/password",
            post(routes::admin::reset_password),
        )
        .route("/sessions", get(routes::sessions::list))
        .route("/sessions/{id}", delete(routes::sessions::delete))
        .route("/sessions/{id}/revoke", post(routes::sessions::revoke))
        .route(
            "/sessions/revoke-others",
            post(routes::sessions::revoke_others),
        )
        .route(
            "/password",
            get(routes::password::get).post(routes::password::post),
        )
        .route("/setup", get(routes::setup::get).post(routes::setup::post))
        .route(
            "/signup",
            get(routes::signup::get).post(routes::signup::post),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/static/{file}", get(routes::static_file))
        .route("/", get(routes::home))
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
