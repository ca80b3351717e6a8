//! `GET /admin` (role `admin`) and the dashboard's user actions.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::extract::wants_html;
use latchkey::{Admin, RequireRole};
use serde::Deserialize;

use super::see_other;
use crate::app::AppState;
use crate::error::ApiError;
use crate::pages::{render, when, AdminPage, Nav, UserRow};

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    RequireRole(user, _): RequireRole<Admin>,
) -> Result<Response, ApiError> {
    if !wants_html(&headers) {
        return Ok(Json(
            serde_json::json!({ "message": format!("Admin dashboard for {}.", user.username()) }),
        )
        .into_response());
    }
    let users = app
        .users
        .list()
        .await?
        .into_iter()
        .map(|u| UserRow {
            last_login: u.last_login_at.map(when).unwrap_or_else(|| "never".into()),
            username: u.username,
            role: u.role,
        })
        .collect();
    let page = AdminPage {
        nav: Nav::of(&user),
        flash: None,
        csrf: user.csrf_token().to_owned(),
        username: user.username().to_owned(),
        users,
    };
    Ok(render(StatusCode::OK, page))
}

#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
}

/// Answers an admin action: back to the dashboard for a browser, JSON else.
fn done(headers: &HeaderMap, message: String) -> Response {
    if wants_html(headers) {
        see_other("/admin")
    } else {
        Json(serde_json::json!({ "message": message })).into_response()
    }
}

pub async fn set_role(
    State(app): State<AppState>,
    headers: HeaderMap,
    RequireRole(admin, _): RequireRole<Admin>,
    Path(name): Path<String>,
    Input(body): Input<RoleBody>,
) -> Result<Response, ApiError> {
    crate::cli::valid_role(&body.role)
        .map_err(|e| ApiError::Detail(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let user = app.users.set_role(&name, &body.role).await?;
    app.auth.set_role(&user.id, &body.role).await?;
    tracing::info!(target: "latchkey::audit", event = "role_changed", by = admin.username(), username = %name, role = %body.role);
    Ok(done(&headers, format!("{name} is now {}.", body.role)))
}

pub async fn end_sessions(
    State(app): State<AppState>,
    headers: HeaderMap,
    RequireRole(admin, _): RequireRole<Admin>,
    Path(name): Path<String>,
    _: Input<super::logout::Empty>,
) -> Result<Response, ApiError> {
    let user = app.users.get(&name).await?;
    let keep = (user.id == admin.user_id()).then(|| admin.token().hash());
    let n = app.auth.end_user_sessions(&user.id, keep.as_ref()).await?;
    app.metrics.sessions_revoked.inc_by(n);
    Ok(done(&headers, format!("Ended {n} sessions of {name}.")))
}

pub async fn remove(
    State(app): State<AppState>,
    headers: HeaderMap,
    RequireRole(admin, _): RequireRole<Admin>,
    Path(name): Path<String>,
    _: Input<super::logout::Empty>,
) -> Result<Response, ApiError> {
    if name == admin.username() {
        return Err(ApiError::Detail(
            StatusCode::CONFLICT,
            "You cannot remove yourself; ask another admin.".into(),
        ));
    }
    let user = app.users.remove(&name).await?;
    app.auth.end_user_sessions(&user.id, None).await?;
    tracing::info!(target: "latchkey::audit", event = "user_removed", by = admin.username(), username = %name);
    Ok(done(&headers, format!("Removed {name}.")))
}
