//! `GET /healthz`, `GET /readyz`, `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::error::detail;

use crate::app::AppState;

pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// 200 only when both the session store and the users database answer.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let bound = std::time::Duration::from_millis(1800);
    let (sessions, users) = tokio::join!(
        tokio::time::timeout(bound, app.auth.ready()),
        tokio::time::timeout(bound, app.users.ping()),
    );
    let mut problems = Vec::new();
    match sessions {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(e.to_string()),
        Err(_) => problems.push("session store timed out".into()),
    }
    match users {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(e.to_string()),
        Err(_) => problems.push(format!("{} timed out", app.users.label())),
    }
    if problems.is_empty() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        detail(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Not ready: {}", problems.join("; ")),
        )
    }
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
