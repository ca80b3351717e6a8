//! `GET /admin` (role `admin`) and the dashboard's user actions.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::{request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::extract::{wants_html, AuthRejection};
use latchkey::{Admin, CurrentUser, RequireRole};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::see_other;
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::{self, Flash};
use crate::pages::{forbidden, render, when, AdminPage, Nav, UserRow};
use crate::users::Change;

/// A signed-in admin. Other roles get 403: the site's own page for a
/// browser (with the usual header and a way back), JSON for scripts.
pub struct AdminUser(pub CurrentUser);

impl<S: Send + Sync> FromRequestParts<S> for AdminUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match RequireRole::<Admin>::from_request_parts(parts, state).await {
            Ok(RequireRole(user, _)) => Ok(AdminUser(user)),
            Err(AuthRejection::Forbidden { html: true }) => {
                // The lookup is cached: this does not ask the store again.
                let user = CurrentUser::from_request_parts(parts, state).await.ok();
                Err(forbidden(user.as_ref().and_then(Nav::of)))
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    AdminUser(user): AdminUser,
) -> Result<Response, ApiError> {
    if !wants_html(&headers) {
        return Ok(Json(
            serde_json::json!({ "message": format!("Admin dashboard for {}.", user.username()) }),
        )
        .into_response());
    }
    page(&app, &user, StatusCode::OK, None).await
}

/// The dashboard, with `error` above the list when an action was refused.
async fn page(
    app: &AppState,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, ApiError> {
    let users = app
        .users
        .list()
        .await?
        .into_iter()
        .map(|u| UserRow {
            last_login: u.last_login_at.map(when).unwrap_or_else(|| "never".into()),
            is_self: u.id == user.user_id(),
            username: u.username,
            role: u.role,
        })
        .collect();
    let page = AdminPage {
        nav: Nav::of(user),
        csrf: user.csrf_token().to_owned(),
        username: user.username().to_owned(),
        users,
        error,
        min_len: app.auth.policy().min_chars,
    };
    Ok(render(status, page))
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

#[derive(Deserialize)]
pub struct RoleBody {
    role: String,
}

#[derive(Deserialize)]
pub struct ResetBody {
    new_password: secrecy::SecretString,
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

pub async fn set_role(
    State(app): State<AppState>,
    headers: HeaderMap,
    AdminUser(admin): AdminUser,
    Path(name): Path<String>,
    Input(body): Input<RoleBody>,
) -> Result<Response, ApiError> {
    let role = body.role.trim();
    if let Err(why) = crate::cli::valid_role(role) {
        return refused(
            &app,
            &headers,
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        )
        .await;
    }
    let user = match app.users.set_role(&name, role, false).await? {
        Change::Done(user) => user,
        Change::LastAdmin(user) => {
            return refused(
                &app,
                &headers,
                &admin,
                StatusCode::CONFLICT,
                last_admin(&user, "demoted"),
            )
            .await;
        }
    };
    // The users table has the new role, and sessions read it from there;
    // a store that cannot be told now is no reason to report a failure.
    if let Err(e) = app.auth.sessions().set_role(&user.id, role).await {
        tracing::warn!(error = %e, "role not updated in the session store; sessions read it from the users table anyway");
    }
    tracing::info!(target: "latchkey::audit", event = "role_changed", by = admin.username(), username = %name, role = %role);
    Ok(done(
        &app,
        &headers,
        format!("{name} is now {role}."),
        Flash::RoleChanged,
    ))
}

/// An admin sets a new password for another user (same rules as any new
/// password); every session of that user ends.
pub async fn reset_password(
    State(app): State<AppState>,
    headers: HeaderMap,
    AdminUser(admin): AdminUser,
    Path(name): Path<String>,
    Input(body): Input<ResetBody>,
) -> Result<Response, ApiError> {
    let user = app.users.get(&name).await?;
    if user.id == admin.user_id() {
        let why = "Change your own password on the Password page; it asks for the current one."
            .to_owned();
        return refused(&app, &headers, &admin, StatusCode::CONFLICT, why).await;
    }
    if let Err(why) = app
        .auth
        .policy()
        .check(&user.username, body.new_password.expose_secret())
    {
        let why = format!("Password for {name} not changed: {why}");
        return refused(
            &app,
            &headers,
            &admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            why,
        )
        .await;
    }
    let hash = app
        .auth
        .hasher()
        .hash(body.new_password.expose_secret())
        .await?;
    app.users.set_hash(&name, &hash).await?;
    let n = end_all(&app, &user.id).await?;
    app.metrics.sessions_revoked.inc_by(n);
    tracing::info!(target: "latchkey::audit", event = "password_reset", by = admin.username(), username = %name, sessions_ended = n);
    Ok(done(
        &app,
        &headers,
        format!("Password of {name} reset; ended {n} sessions."),
        Flash::PasswordReset,
    ))
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

pub async fn end_sessions(
    State(app): State<AppState>,
    headers: HeaderMap,
    AdminUser(admin): AdminUser,
    Path(name): Path<String>,
    _: Input<super::logout::Empty>,
) -> Result<Response, ApiError> {
    let user = app.users.get(&name).await?;
    let keep = (user.id == admin.user_id()).then(|| admin.token_hash());
    let n = match keep {
        Some(keep) => app.auth.sessions().end_all(&user.id, Some(&keep)).await?,
        None => end_all(&app, &user.id).await?,
    };
    app.metrics.sessions_revoked.inc_by(n);
    Ok(done(
        &app,
        &headers,
        format!("Ended {n} sessions of {name}."),
        Flash::UserSessionsEnded,
    ))
}

pub async fn remove(
    State(app): State<AppState>,
    headers: HeaderMap,
    AdminUser(admin): AdminUser,
    Path(name): Path<String>,
    _: Input<super::logout::Empty>,
) -> Result<Response, ApiError> {
    // By id, not by the name typed: `ALICE` is alice too.
    if app.users.get(&name).await?.id == admin.user_id() {
        let why = "You cannot remove yourself; ask another admin.".to_owned();
        return refused(&app, &headers, &admin, StatusCode::CONFLICT, why).await;
    }
    let user = match app.users.remove(&name, false).await? {
        Change::Done(user) => user,
        Change::LastAdmin(user) => {
            return refused(
                &app,
                &headers,
                &admin,
                StatusCode::CONFLICT,
                last_admin(&user, "removed"),
            )
            .await;
        }
    };
    end_all(&app, &user.id).await?;
    tracing::info!(target: "latchkey::audit", event = "user_removed", by = admin.username(), username = %name);
    Ok(done(
        &app,
        &headers,
        format!("Removed {name}."),
        Flash::UserRemoved,
    ))
}
