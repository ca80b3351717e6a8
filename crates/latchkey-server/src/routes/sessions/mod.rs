//! `GET /sessions`, `DELETE /sessions/{id}`, and the page's POST buttons.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::error::detail;
use latchkey::extract::wants_html;
use latchkey::CurrentUser;

use super::logout::{signed_out, Empty};
use super::see_other;
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::pages::{ago, device, render, rfc3339, when, Nav, SessionRow, SessionsPage};

pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
) -> Result<Response, ApiError> {
    let sessions = app.auth.sessions().of_user(user.user_id()).await?;
    let current = |id: &str| id == user.session_id();
    if wants_html(&headers) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut rows: Vec<SessionRow> = sessions
            .iter()
            .map(|s| SessionRow {
                id: s.id.clone(),
                device: device(&s.user_agent),
                user_agent: s.user_agent.clone(),
                ip: s.ip.clone(),
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
            csrf: user.csrf_token().to_owned(),
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
                "ip": s.ip,
                "current": current(&s.id),
            })
        })
        .collect();
    Ok(Json(body).into_response())
}

/// Ends one of the caller's sessions; `None` when it is not theirs.
async fn end(app: &AppState, user: &CurrentUser, id: &str) -> Result<Option<bool>, ApiError> {
    if !app.auth.sessions().end(user.user_id(), id).await? {
        return Ok(None);
    }
    app.metrics.sessions_revoked.inc();
    Ok(Some(id == user.session_id()))
}

pub async fn delete(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match end(&app, &user, &id).await? {
        None => Ok(detail(StatusCode::NOT_FOUND, "Session not found")),
        Some(true) => Ok(signed_out(&app, StatusCode::NO_CONTENT.into_response())),
        Some(false) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub async fn revoke(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    match end(&app, &user, &id).await? {
        None => Ok(detail(StatusCode::NOT_FOUND, "Session not found")),
        Some(true) => Ok(flash::set(
            &app,
            signed_out(&app, see_other("/login")),
            Flash::SignedOut,
        )),
        Some(false) => Ok(flash::set(
            &app,
            see_other("/sessions"),
            Flash::SessionRevoked,
        )),
    }
}

pub async fn revoke_others(
    State(app): State<AppState>,
    headers: HeaderMap,
    user: CurrentUser,
    _: Input<Empty>,
) -> Result<Response, ApiError> {
    let n = app
        .auth
        .sessions()
        .end_all(user.user_id(), Some(&user.token_hash()))
        .await?;
    app.metrics.sessions_revoked.inc_by(n);
    if wants_html(&headers) {
        return Ok(flash::set(
            &app,
            see_other("/sessions"),
            Flash::OthersRevoked,
        ));
    }
    Ok(
        Json(serde_json::json!({ "message": format!("Ended {n} other sessions.") }))
            .into_response(),
    )
}
