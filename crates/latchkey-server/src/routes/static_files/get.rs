//! `GET /static/style-N.css`.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;

use crate::pages;

pub async fn static_file(Path(file): Path<String>) -> Response {
    if file == format!("style-{}.css", pages::ASSET_VERSION) {
        pages::stylesheet().await
    } else if file == format!("passkeys-{}.js", pages::ASSET_VERSION) {
        pages::passkeys_js().await
    } else {
        crate::error::detail(StatusCode::NOT_FOUND, "Not Found")
    }
}
