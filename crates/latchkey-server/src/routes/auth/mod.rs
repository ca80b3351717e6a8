//! `/auth/verify`: forward authentication for reverse proxies.

mod verify;

use axum::routing;
use axum::Router;

use crate::app::AppState;

/// The forward-auth endpoint: every method, since proxies may ask with the
/// original request's method.
pub const VERIFY_PATH: &str = "/auth/verify";

pub fn router() -> Router<AppState> {
    Router::new().route(VERIFY_PATH, routing::any(verify::verify))
}
