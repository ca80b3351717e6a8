//! `GET /healthz`: the process answers.

use axum::response::{IntoResponse, Response};
use axum::Json;

pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}
