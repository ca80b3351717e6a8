//! `GET /profile`: the signed-in user.

use crate::error::wants_html;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use latchkey::CurrentUser;

use crate::app::AppState;
use crate::pages::{render, when, Nav, ProfilePage};

pub async fn get(State(app): State<AppState>, headers: HeaderMap, user: CurrentUser) -> Response {
    if wants_html(&headers) {
        let s = user.session();
        let t = app.auth.config().session_timeouts();
        let page = ProfilePage {
            nav: Nav::of(&user),
            username: user.username().to_owned(),
            role: user.role().to_owned(),
            started: when(s.created_at),
            idle: humantime::format_duration(t.idle()).to_string(),
            ends: when(s.created_at + t.absolute().as_millis() as i64),
        };
        return render(StatusCode::OK, page);
    }
    Json(serde_json::json!({
        "message": format!("Welcome to your profile, {}!", user.username()),
        "username": user.username(),
        "role": user.role(),
    }))
    .into_response()
}
