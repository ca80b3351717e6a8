//! `POST /admin/users/{name}/remove`: removes a user and ends their
//! sessions (never oneself, never the last admin).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use latchkey::body::Input;

use super::{done, end_all, last_admin, refused};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::Flash;
use crate::routes::admin::RecentAdmin;
use crate::routes::Empty;
use crate::users::Change;

pub async fn remove(
    State(app): State<AppState>,
    headers: HeaderMap,
    RecentAdmin(admin): RecentAdmin,
    Path(name): Path<String>,
    _: Input<Empty>,
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
