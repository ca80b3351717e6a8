//! `/logout`.

mod post;

use axum::routing;
use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/logout", routing::post(post::post))
}
