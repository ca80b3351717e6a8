//! `POST /signup`: creates an account and signs it in (404 unless
//! `--allow-signup`).

use crate::error::detail;
use crate::error::wants_html;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::extract::MaybeUser;
use latchkey::RequestMeta;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::form;
use crate::app::AppState;
use crate::error::{not_found, ApiError};
use crate::flash::{self, Flash};
use crate::routes::see_other;
use crate::users::UsersError;

#[derive(Deserialize)]
pub struct SignupBody {
    username: String,
    password: secrecy::SecretString,
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    meta: RequestMeta,
    MaybeUser(user): MaybeUser,
    Input(body): Input<SignupBody>,
) -> Result<Response, ApiError> {
    if !app.allow_signup {
        return Ok(not_found(headers).await);
    }
    let html = wants_html(&headers);
    let refuse = |status: StatusCode, why: String, username: String| {
        if html {
            form(&app, &headers, user.as_ref(), status, username, Some(why))
        } else {
            detail(status, &why)
        }
    };
    // Every attempt counts, a refused or taken name too: sign-up must not
    // become a free way to probe names or to spend Argon2 time.
    if let Some(wait) = app.auth.signup_attempt(&meta).await? {
        let secs = wait.as_secs().max(1);
        let why = format!(
            "Too many sign-up attempts. Try again in {}.",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        );
        let mut res = refuse(StatusCode::TOO_MANY_REQUESTS, why, body.username);
        res.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
        return Ok(res);
    }
    let name = match latchkey::username::normalize(&body.username) {
        Ok(name) => name,
        Err(why) => {
            return Ok(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                why.to_string(),
                body.username,
            ))
        }
    };
    if let Err(why) = app
        .auth
        .policy()
        .check(&name, body.password.expose_secret())
    {
        return Ok(refuse(StatusCode::UNPROCESSABLE_ENTITY, why, body.username));
    }
    let hash = app
        .auth
        .hasher()
        .hash(body.password.expose_secret())
        .await?;
    match app.users.add(&name, &hash, "user").await {
        Ok(_) => {}
        Err(UsersError::Exists(_)) => return Ok(refuse(
            StatusCode::CONFLICT,
            "That username is taken (names are compared ignoring case and width); choose another."
                .into(),
            body.username,
        )),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(target: "latchkey::audit", event = "signed_up", username = %name, ip = %meta.ip);
    // Sign the new user in, as a sign-in would (a fresh token, no fixation).
    let previous = app.auth.cookies().token(&headers);
    let signed_in = app
        .auth
        .login(
            &app.users,
            &name,
            body.password.expose_secret(),
            &meta,
            previous.as_ref(),
        )
        .await;
    let done = match signed_in {
        Ok(done) => {
            if let Err(e) = app.users.touch_login(&done.record.user_id).await {
                tracing::warn!(error = %e, "could not record last sign-in");
            }
            Some(done)
        }
        Err(e) => {
            tracing::warn!(error = %e, "sign-in after sign-up failed; the user can sign in by hand");
            None
        }
    };
    let mut res = match (html, &done) {
        (true, Some(_)) => flash::set(&app, see_other("/profile"), Flash::SignedUp),
        (true, None) => flash::set(&app, see_other("/login"), Flash::SignedUpSignIn),
        (false, _) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "message": format!("Account {name} created.") })),
        )
            .into_response(),
    };
    if let Some(done) = done {
        res.headers_mut()
            .append(header::SET_COOKIE, done.set_cookie);
    }
    Ok(res)
}
