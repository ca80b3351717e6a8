//! `POST /webauthn/login/start` and `finish`: a passkey completes the
//! request's pending sign-in, or signs in without a password.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::body::Input;
use latchkey::Auth;

use crate::app::AppState;
use crate::routes::Empty;

pub async fn start(State(app): State<AppState>, headers: HeaderMap, _: Input<Empty>) -> Response {
    match app.auth.passkey_login_start(&headers).await {
        Ok((options, cookie)) => {
            let mut res = Json(options).into_response();
            res.headers_mut().append(header::SET_COOKIE, cookie);
            res
        }
        Err(e) => e.into_response(),
    }
}

pub async fn finish(
    State(app): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Input(body): Input<serde_json::Value>,
) -> Response {
    match app
        .auth
        .passkey_login_finish(&headers, body, auth.meta())
        .await
    {
        Ok(done) => {
            app.metrics.login("success");
            if let Err(e) = app.users.touch_login(&done.record.user_id).await {
                tracing::warn!(error = %e, "could not record last sign-in");
            }
            let mut res = (
                done,
                Json(serde_json::json!({ "message": "Login successful!" })),
            )
                .into_response();
            let cookies = app.auth.cookies();
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, cookies.pending_removal());
            h.append(header::SET_COOKIE, cookies.ceremony_removal());
            res
        }
        Err(e) => {
            app.metrics.login("failure");
            e.into_response()
        }
    }
}
