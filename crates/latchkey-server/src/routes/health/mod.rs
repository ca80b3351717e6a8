//! `/healthz`, `/readyz` and `/metrics`: for load balancers, orchestrators
//! and monitoring.

mod healthz;
mod metrics;
mod readyz;

use axum::routing;
use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", routing::get(healthz::healthz))
        .route("/readyz", routing::get(readyz::readyz))
        .route("/metrics", routing::get(metrics::metrics))
}
