//! `POST /admin/users/{name}/end-sessions`: signs a user out everywhere
//! (an admin ending their own keeps this session).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use latchkey::body::Input;

use super::{done, end_all};
use crate::app::AppState;
use crate::error::ApiError;
use crate::flash::Flash;
use crate::routes::admin::RecentAdmin;
use crate::routes::Empty;

pub async fn end_sessions(
    State(app): State<AppState>,
    headers: HeaderMap,
    RecentAdmin(admin): RecentAdmin,
    Path(name): Path<String>,
    _: Input<Empty>,
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
