//! `POST /password`: changes the signed-in user's own password.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::error::PasswordChangeError;
use latchkey::{CurrentUser, RequestMeta};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::page;
use crate::app::AppState;
use crate::flash::{self, Flash};
use crate::routes::see_other;

#[derive(Deserialize)]
pub struct PasswordBody {
    current_password: secrecy::SecretString,
    new_password: secrecy::SecretString,
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    meta: RequestMeta,
    user: CurrentUser,
    Input(body): Input<PasswordBody>,
) -> Response {
    let result = app
        .auth
        .change_password(
            &app.users,
            user.session(),
            body.current_password.expose_secret(),
            body.new_password.expose_secret(),
            &meta,
        )
        .await;
    let html = wants_html(&headers);
    match result {
        Ok(done) => {
            app.metrics.password_changes.inc();
            let mut res = if html {
                flash::set(&app, see_other("/profile"), Flash::PasswordChanged)
            } else {
                Json(serde_json::json!({ "message": "Password changed." })).into_response()
            };
            res.headers_mut()
                .append(header::SET_COOKIE, done.set_cookie);
            res
        }
        Err(e @ (PasswordChangeError::WrongPassword | PasswordChangeError::Rejected(_)))
            if html =>
        {
            let status = match e {
                PasswordChangeError::WrongPassword => StatusCode::FORBIDDEN,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            page(&app, &user, status, Some(e.to_string()))
        }
        Err(e) => e.into_response(),
    }
}
