//! `/email`: changing one's address (recent authentication; mailed link),
//! and `/email/verify`: using that link.

mod post;
mod verify;

use axum::routing;
use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/email", routing::post(post::post))
        .route(
            "/email/verify",
            routing::get(verify::get).post(verify::post),
        )
}
