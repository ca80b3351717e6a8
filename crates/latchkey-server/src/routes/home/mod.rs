//! `/`.

mod get;

use axum::routing;
use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/", routing::get(get::home))
}
