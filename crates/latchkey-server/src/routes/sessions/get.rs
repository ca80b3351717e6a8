//! `GET /sessions`: the signed-in user's sessions, as a page or JSON.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::CurrentUser;

use crate::app::AppState;
use crate::error::ApiError;
use crate::pages::{ago, device, render, rfc3339, when, Nav, SessionRow, SessionsPage};

pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    let sessions = app.auth.sessions().of_user(user.user_id()).await?;
    let current = |id: &latchkey::SessionId| *id == user.session_id();
    if wants_html(&headers) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut rows: Vec<SessionRow> = sessions
            .iter()
            .map(|s| SessionRow {
                id: s.id.to_string(),
                device: device(&s.user_agent),
                user_agent: s.user_agent.to_string(),
                ip: s.ip_text(),
                started: when(s.created_at),
                last_seen_ago: ago(s.last_seen_at, now),
                last_seen: when(s.last_seen_at),
                current: current(&s.id),
            })
            .collect();
        // This device first, then the most recently active.
        rows.sort_by(|a, b| {
            b.current
                .cmp(&a.current)
                .then_with(|| b.last_seen.cmp(&a.last_seen))
        });
        let page = SessionsPage {
            nav: Nav::of(&user),
            csrf: user.csrf_token(),
            sessions: rows,
        };
        return Ok(render(StatusCode::OK, page));
    }
    let body: Vec<_> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "created_at": rfc3339(s.created_at),
                "last_seen_at": rfc3339(s.last_seen_at),
                "user_agent": s.user_agent,
                "ip": s.ip_text(),
                "current": current(&s.id),
            })
        })
        .collect();
    Ok(Json(body).into_response())
}
