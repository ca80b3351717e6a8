//! [`Auth`]: the per-request handle a sign-in or sign-out handler takes.
//! It already knows the request's cookie, client address and user agent,
//! and what it returns sets (or clears) the cookie for you.
//!
//! ```
//! use axum::{routing::post, Json, Router};
//! use latchkey::{body::Input, Auth, Credentials, LoginError, SignedIn, SignedOut};
//!
//! async fn login(
//!     auth: Auth,
//!     Input(creds): Input<Credentials>,
//! ) -> Result<(SignedIn, Json<&'static str>), LoginError> {
//!     Ok((auth.login(&creds).await?, Json("signed in")))
//! }
//!
//! async fn logout(auth: Auth) -> Result<(SignedOut, Json<&'static str>), latchkey::Error> {
//!     Ok((auth.logout().await?, Json("signed out")))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/logout", post(logout));
//! # let _ = app;
//! ```

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderValue};
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{Error, LoginError, PasswordChangeError};
use crate::extract::{AuthRejection, CurrentUser};
use crate::session::SessionToken;
use crate::user::UserBackend;
use crate::{Latchkey, RequestMeta, SignedIn};

/// What a sign-in form or JSON body carries. The password is held in a
/// zeroing type and never printed.
#[derive(Deserialize)]
pub struct Credentials {
    /// The name as the user typed it (compared case- and width-blind).
    pub username: String,
    /// The password.
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Sign-in and sign-out for this request.
pub struct Auth {
    latchkey: Latchkey,
    meta: RequestMeta,
    token: Option<SessionToken>,
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let latchkey = parts
            .extensions
            .get::<Latchkey>()
            .cloned()
            .ok_or_else(|| AuthRejection::MissingLayer.into_response())?;
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        let token = latchkey.cookies().token(&parts.headers);
        Ok(Self {
            latchkey,
            meta,
            token,
        })
    }
}

impl Auth {
    /// Signs the user in with the users given to
    /// [`Builder::users`](crate::Builder::users): throttled, verified, a
    /// fresh token (the request's old session ends). Return the
    /// [`SignedIn`] from the handler and the cookie is set.
    ///
    /// # Errors
    /// As [`Latchkey::login`]; without [`Builder::users`](crate::Builder::users),
    /// [`LoginError::Unavailable`] (use [`Auth::login_with`]).
    pub async fn login(&self, creds: &Credentials) -> Result<SignedIn, LoginError> {
        let users = self.latchkey.directory().ok_or_else(|| {
            Error::Backend(
                "no users configured: call Builder::users, or use Auth::login_with".into(),
            )
        })?;
        self.sign_in(users, creds).await
    }

    /// [`Auth::login`] against `users`.
    ///
    /// # Errors
    /// As [`Latchkey::login`].
    pub async fn login_with<B: UserBackend>(
        &self,
        users: &B,
        creds: &Credentials,
    ) -> Result<SignedIn, LoginError> {
        self.sign_in(users, creds).await
    }

    async fn sign_in(
        &self,
        users: &dyn crate::user_check::Directory,
        creds: &Credentials,
    ) -> Result<SignedIn, LoginError> {
        self.latchkey
            .sign_in(
                users,
                &creds.username,
                creds.password.expose_secret(),
                &self.meta,
                self.token.as_ref(),
            )
            .await
    }

    /// Ends this request's session on the server (idempotent). Return the
    /// [`SignedOut`] from the handler and the cookie is cleared.
    ///
    /// # Errors
    /// [`Error::Store`] when the store cannot be reached.
    pub async fn logout(&self) -> Result<SignedOut, Error> {
        if let Some(token) = &self.token {
            self.latchkey.end_token(token).await?;
        }
        Ok(SignedOut {
            cookie: self.latchkey.cookies().removal(),
        })
    }

    /// Changes `user`'s password after checking the current one: their other
    /// sessions end and this one gets a new token (set by the [`SignedIn`]).
    ///
    /// # Errors
    /// As [`Latchkey::change_password`].
    pub async fn change_password<B: UserBackend>(
        &self,
        users: &B,
        user: &CurrentUser,
        current_password: &str,
        new_password: &str,
    ) -> Result<SignedIn, PasswordChangeError> {
        self.latchkey
            .new_password(
                users,
                user.session(),
                current_password,
                new_password,
                &self.meta,
            )
            .await
    }

    /// Stores `value` as the app's data of `user`'s session (this
    /// request's), read back with [`CurrentUser::data`]; `false` when the
    /// session has ended meanwhile. See [`Sessions::set_data`](crate::Sessions::set_data).
    ///
    /// # Errors
    /// As [`Sessions::set_data`](crate::Sessions::set_data).
    pub async fn set_data<T: serde::Serialize + ?Sized>(
        &self,
        user: &CurrentUser,
        value: &T,
    ) -> Result<bool, Error> {
        self.latchkey
            .sessions()
            .set_data(user.session(), Some(value))
            .await
    }

    /// The client as sessions record it and throttling counts it.
    pub fn meta(&self) -> &RequestMeta {
        &self.meta
    }

    /// The handle behind this request.
    pub fn latchkey(&self) -> &Latchkey {
        &self.latchkey
    }
}

impl IntoResponseParts for SignedIn {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.headers_mut()
            .append(header::SET_COOKIE, self.set_cookie);
        Ok(res)
    }
}

/// A signed-out answer: the cookie expired, and the browser asked to drop
/// the site's cookies (`Clear-Site-Data`).
#[must_use = "return it from the handler so the cookie is cleared"]
pub struct SignedOut {
    cookie: HeaderValue,
}

impl IntoResponseParts for SignedOut {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        let h = res.headers_mut();
        h.append(header::SET_COOKIE, self.cookie);
        h.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
        Ok(res)
    }
}
