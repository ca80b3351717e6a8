//! Typed errors, and the one place they become HTTP answers
//! (`{"detail": ...}` bodies, or a small page for browsers).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// Something latchkey depends on failed; the request fails closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The user backend did not answer.
    #[error("user store unavailable: {0}")]
    Backend(String),
    /// Password hashing failed (pool closed or a malformed stored hash).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Too many requests already wait for a password hash; try again shortly.
    #[error("too many sign-ins in progress")]
    Overloaded,
    /// The app's session data could not be stored: it does not serialise
    /// to JSON, or is over [`MAX_SESSION_DATA`](crate::MAX_SESSION_DATA).
    /// A bug in the app, answered 500.
    #[error("session data refused: {0}")]
    SessionData(String),
}

/// Why a sign-in did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user or wrong password: the same answer for both.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// Too many failures; try again after `retry_after`.
    #[error("Too many failed attempts. Try again in {} seconds.", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until the block lapses.
        retry_after: Duration,
    },
    /// The password was right and the user has a second factor: the
    /// sign-in is pending (answer it: 202 and the pending cookie), and
    /// [`Latchkey::complete_sign_in`](crate::Latchkey::complete_sign_in) finishes it.
    #[error("Second factor required.")]
    SecondFactorRequired(crate::mfa::PendingSignIn),
    /// A store or the hasher failed.
    #[error(transparent)]
    Unavailable(#[from] Error),
}

/// Why a password change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    /// The current password was wrong.
    #[error("Invalid credentials")]
    WrongPassword,
    /// The new password breaks the policy; the reason is user-facing.
    #[error("{0}")]
    Rejected(String),
    /// Too many wrong current passwords; try again after `retry_after`.
    #[error("Too many failed attempts. Try again in {} seconds.", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until the block lapses.
        retry_after: Duration,
    },
    /// A store or the hasher failed.
    #[error(transparent)]
    Unavailable(#[from] Error),
}

/// A user-backend failure as latchkey reports it (503, fail closed).
pub(crate) fn backend(e: crate::user::BackendError) -> Error {
    Error::Backend(e.to_string())
}

/// A JSON `{"detail": ...}` answer with `status`.
pub(crate) fn detail(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({ "detail": detail }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl IntoResponse for crate::body::BodyRejection {
    fn into_response(self) -> Response {
        use crate::body::BodyRejection as B;
        let status = match &self {
            B::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            B::Unreadable | B::MalformedJson(_) | B::MalformedForm => StatusCode::BAD_REQUEST,
            B::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            B::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            B::Csrf => StatusCode::FORBIDDEN,
            B::Auth(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        match self {
            B::Auth(rejection) => rejection.into_response(),
            other => detail(status, &other.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Overloaded = self {
            tracing::warn!("password hashing queue full; refusing a request with 503");
            let mut res = detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins in progress. Try again in a moment.",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
        if let Error::SessionData(_) = self {
            tracing::error!(error = %self, "the app's session data was not stored");
            return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        // The reason goes to the log, not to the client.
        tracing::error!(error = %self, "failing closed");
        detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable: a store did not answer. Try again shortly.",
        )
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        match self {
            LoginError::InvalidCredentials => {
                detail(StatusCode::UNAUTHORIZED, "Invalid credentials")
            }
            LoginError::Throttled { retry_after } => {
                let secs = retry_after.as_secs().max(1);
                let mut res = detail(StatusCode::TOO_MANY_REQUESTS, &self.to_string());
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                res
            }
            LoginError::SecondFactorRequired(pending) => pending.into_response(),
            LoginError::Unavailable(e) => e.into_response(),
        }
    }
}

impl IntoResponse for PasswordChangeError {
    fn into_response(self) -> Response {
        match self {
            PasswordChangeError::WrongPassword => {
                detail(StatusCode::FORBIDDEN, "Invalid credentials")
            }
            PasswordChangeError::Rejected(why) => detail(StatusCode::UNPROCESSABLE_ENTITY, &why),
            PasswordChangeError::Throttled { retry_after } => {
                LoginError::Throttled { retry_after }.into_response()
            }
            PasswordChangeError::Unavailable(e) => e.into_response(),
        }
    }
}
