//! `/admin` (role `admin`): the dashboard, and its actions on one user
//! under `/admin/users/{name}/...`.

mod get;
mod users;

use axum::extract::FromRequestParts;
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Router;
use latchkey::extract::AuthRejection;
use latchkey::{Admin, CurrentUser, RequireRole};

use crate::app::AppState;
use crate::error::ApiError;
use crate::pages::{forbidden, render, when, AdminPage, Nav, UserRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", routing::get(get::get))
        .merge(users::router())
}

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

/// A signed-in admin who signed in or re-authenticated within the
/// re-authentication window: every admin action that changes something.
pub struct RecentAdmin(pub CurrentUser);

impl<S: Send + Sync> FromRequestParts<S> for RecentAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let AdminUser(admin) = AdminUser::from_request_parts(parts, state).await?;
        latchkey::Recent::<CurrentUser>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(RecentAdmin(admin))
    }
}

/// The dashboard, with `error` above the list when an action was refused.
async fn page(
    app: &AppState,
    user: &CurrentUser,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, ApiError> {
    let mut users = Vec::new();
    for u in app.users.list().await? {
        // One small read per user: the dashboard is not the hot path.
        let mfa = app.auth.factor_summary(&u.id).await?.any();
        users.push(UserRow {
            last_login: u.last_login_at.map(when).unwrap_or_else(|| "never".into()),
            is_self: u.id == user.user_id(),
            has_email: u.email.is_some(),
            mfa,
            username: u.username,
            role: u.role,
        });
    }
    let page = AdminPage {
        nav: Nav::of(user),
        csrf: user.csrf_token(),
        username: user.username().to_owned(),
        users,
        error,
        min_len: app.auth.policy().min_chars,
        mail: app.auth.mail_enabled(),
    };
    Ok(render(status, page))
}
