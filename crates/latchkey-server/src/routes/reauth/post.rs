//! `POST /reauth`: checks the password again (throttled like sign-ins).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::error::PasswordChangeError;
use latchkey::{CurrentUser, RequestMeta};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::page;
use crate::app::AppState;
use crate::error::wants_html;
use crate::routes::{safe_next, see_other};

#[derive(Deserialize)]
pub struct ReauthBody {
    password: Option<SecretString>,
    /// A TOTP or recovery code, instead of the password.
    code: Option<crate::routes::CodeField>,
    next: Option<String>,
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    meta: RequestMeta,
    user: CurrentUser,
    Input(body): Input<ReauthBody>,
) -> Response {
    let html = wants_html(&headers);
    let next = safe_next(body.next.as_deref());
    // Neither a password nor a code: nothing is checked and nothing is
    // counted, the same refusal as a wrong one.
    let result = match (&body.password, &body.code) {
        (Some(p), _) => {
            app.auth
                .reauthenticate(user.session(), p.expose_secret(), &meta)
                .await
        }
        (None, Some(c)) => {
            app.auth
                .reauthenticate_code(user.session(), &c.text(), &meta)
                .await
        }
        (None, None) => Err(PasswordChangeError::WrongPassword),
    };
    match result {
        Ok(()) if html => see_other(&next),
        Ok(()) => Json(serde_json::json!({ "message": "Confirmed." })).into_response(),
        Err(PasswordChangeError::WrongPassword) if html => page(
            &app,
            &headers,
            &user,
            StatusCode::FORBIDDEN,
            next,
            Some("Invalid credentials".into()),
        ),
        Err(e) => e.into_response(),
    }
}
