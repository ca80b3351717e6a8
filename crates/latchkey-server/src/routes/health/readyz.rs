//! `GET /readyz`: whether both stores answer.

use crate::error::detail;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::app::AppState;

/// 200 only when both the session store and the users database answer.
/// A 503 names which one is down, and nothing more: its address, file path
/// and driver error go to the log, not to whoever can reach `/readyz`.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let bound = std::time::Duration::from_millis(1800);
    let (sessions, users) = tokio::join!(
        tokio::time::timeout(bound, app.auth.sessions().ready()),
        tokio::time::timeout(bound, app.users.ping()),
    );
    let sessions_ok = match sessions {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: session store unavailable");
            false
        }
        Err(_) => {
            tracing::warn!("not ready: session store timed out after {bound:?}");
            false
        }
    };
    let users_ok = match users {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: user database unavailable");
            false
        }
        Err(_) => {
            let label = app.users.label();
            tracing::warn!("not ready: user database {label} timed out after {bound:?}");
            false
        }
    };
    // One of the two documented bodies, also when both are down: the
    // session store's (nothing works without it); the log names both.
    if !sessions_ok {
        detail(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
    } else if !users_ok {
        detail(StatusCode::SERVICE_UNAVAILABLE, "user database unavailable")
    } else {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    }
}
