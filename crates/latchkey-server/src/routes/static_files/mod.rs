//! `/static/{file}`: the stylesheet, under a versioned name.

mod get;

use axum::routing;
use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/static/{file}", routing::get(get::static_file))
}
