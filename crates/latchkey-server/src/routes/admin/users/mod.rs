//! `POST /admin/users/{name}/...`: the dashboard's actions on one user,
//! and how each is answered or refused.

mod end_sessions;
mod password;
mod remove;
mod reset_link;
mod role;

use crate::error::wants_html;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use latchkey::CurrentUser;

use super::page;
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::routes::see_other;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users/{name}/role", routing::post(role::set_role))
        .route(
            "/admin/users/{name}/end-sessions",
            routing::post(end_sessions::end_sessions),
        )
        .route("/admin/users/{name}/remove", routing::post(remove::remove))
        .route(
            "/admin/users/{name}/password",
            routing::post(password::reset_password),
        )
        .route(
            "/admin/users/{name}/reset-link",
            routing::post(reset_link::send_reset_link),
        )
}

/// A refused action: the dashboard with the reason for a browser, JSON else.
async fn refused(
    app: &AppState,
    headers: &HeaderMap,
    admin: &CurrentUser,
    status: StatusCode,
    why: String,
) -> Result<Response, ApiError> {
    if wants_html(headers) {
        return page(app, admin, status, Some(why)).await;
    }
    Err(ApiError::Detail(status, why))
}

/// Why the last admin stays (the CLI's `--force` can override it; the
/// dashboard cannot, so nobody locks every admin out from a browser).
fn last_admin(user: &crate::users::User, what: &str) -> String {
    format!(
        "{} is the last admin and cannot be {what}; make another user admin first.",
        user.username
    )
}

/// Answers an admin action: back to the dashboard (with a flash) for a
/// browser, JSON else.
fn done(app: &AppState, headers: &HeaderMap, message: String, what: Flash) -> Response {
    if wants_html(headers) {
        flash::set(app, see_other("/admin"), what)
    } else {
        Json(serde_json::json!({ "message": message })).into_response()
    }
}

/// Ends every session of a user whose change is already in the users table
/// (removed, or a new password: both refuse the old sessions on their next
/// request). A session store that cannot be reached now is logged, not an
/// error: the admin's change has happened and must not look as if it failed.
async fn end_all(app: &AppState, user_id: &str) -> Result<u64, ApiError> {
    match app.auth.sessions().end_all(user_id, None).await {
        Ok(n) => Ok(n),
        Err(latchkey::Error::Store(e)) => {
            tracing::warn!(error = %e, "sessions not deleted from the store; they are refused anyway and swept when they expire");
            Ok(0)
        }
        Err(e) => Err(e.into()),
    }
}
