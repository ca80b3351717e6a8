//! `GET /`: browsers go to their profile (or sign in); scripts get a hint.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

pub async fn home(headers: HeaderMap) -> Response {
    if crate::error::wants_html(&headers) {
        return Redirect::to("/profile").into_response();
    }
    axum::Json(serde_json::json!({ "message": "latchkey. POST to /login to authenticate." }))
        .into_response()
}
