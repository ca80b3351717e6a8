//! Extractors: the Rust form of FastAPI's `Depends(is_authenticated)`.
//! A handler that takes [`CurrentUser`] cannot run for a signed-out request;
//! [`RequireRole`] adds a role check (403).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{detail, Error};
use std::sync::Arc;

use crate::session::{SessionId, SessionRecord, TokenHash};
use crate::Latchkey;

/// The signed-in user of this request.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    // Shared with the store's cache: cloning a CurrentUser is one refcount.
    record: Arc<SessionRecord>,
}

impl CurrentUser {
    /// The user's id in the backend.
    pub fn user_id(&self) -> &str {
        &self.record.user_id
    }
    /// The user's name.
    pub fn username(&self) -> &str {
        &self.record.username
    }
    /// The user's current role.
    pub fn role(&self) -> &str {
        &self.record.role
    }
    /// The session's public handle.
    pub fn session_id(&self) -> SessionId {
        self.record.id
    }
    /// The token HTML forms of this session must carry.
    pub fn csrf_token(&self) -> String {
        self.record.csrf_secret.form_token()
    }
    /// The whole session record.
    pub fn session(&self) -> &SessionRecord {
        &self.record
    }
    /// The store key of this session (to keep it when ending the others).
    pub fn token_hash(&self) -> TokenHash {
        self.record.key()
    }
    /// The app's data in this session, as stored by
    /// [`Auth::set_data`](crate::Auth::set_data): `None` when there is none
    /// or it does not decode as `T` (after a change of the type, say).
    /// Read with the session itself: no store access.
    ///
    /// ```
    /// use latchkey::CurrentUser;
    /// #[derive(serde::Deserialize)]
    /// struct Cart { items: Vec<u32> }
    /// async fn cart(user: CurrentUser) -> String {
    ///     let items = user.data::<Cart>().map_or(0, |c| c.items.len());
    ///     format!("{items} items")
    /// }
    /// ```
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.record.data.as_deref()?).ok()
    }
}

/// The signed-in user as the app's own type `U` (the
/// [`UserBackend::User`](crate::UserBackend::User) given to
/// [`Builder::users`](crate::Builder::users)), read from the backend for
/// this request: one backend read, so take [`CurrentUser`] where the id,
/// name and role are enough. 401 like [`CurrentUser`] when signed out or
/// the user is gone.
///
/// ```
/// use latchkey::User;
/// # #[derive(Clone)] struct Member { name: String, todo_count: u32 }
/// async fn profile(User(member): User<Member>) -> String {
///     format!("{} has {} todos", member.name, member.todo_count)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct User<U>(pub U);

impl<S: Send + Sync, U: Send + Sync + 'static> FromRequestParts<S> for User<U> {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        let latchkey = parts
            .extensions
            .get::<Latchkey>()
            .cloned()
            .ok_or(AuthRejection::MissingLayer)?;
        let users = latchkey
            .directory()
            .ok_or(AuthRejection::Misconfigured("User<T> needs Builder::users"))?;
        let found = users
            .user_by_id(current.user_id())
            .await
            .map_err(|e| AuthRejection::Unavailable(Error::Backend(e.to_string())))?;
        let Some(found) = found else {
            return Err(AuthRejection::Unauthenticated {
                redirect: login_redirect(parts),
            });
        };
        found.downcast::<U>().map(|u| User(*u)).map_err(|_| {
            AuthRejection::Misconfigured("User<T> names a type other than the UserBackend's User")
        })
    }
}

/// Whether the client asked for a page rather than JSON.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Why an extractor refused the request.
#[derive(Debug)]
pub enum AuthRejection {
    /// No live session. Browsers asking for a page are sent to sign in.
    Unauthenticated {
        /// `/login?next=...` for a browser's GET, else `None`.
        redirect: Option<String>,
    },
    /// Signed in, but the role does not allow this. The default answer is
    /// JSON `{"detail": "Forbidden"}`; `html` says the client asked for a
    /// page, for apps that render their own.
    Forbidden {
        /// The client's `Accept` names `text/html`.
        html: bool,
    },
    /// The session's user has not proved who they are within the
    /// re-authentication window ([`Recent`]): 403 with `"reauth": true`,
    /// or for a browser a 303 to the re-authentication page.
    ReauthRequired {
        /// Where to send a browser (`/reauth?next=...`), if it is one.
        redirect: Option<String>,
    },
    /// The store failed: fail closed.
    Unavailable(Error),
    /// The app forgot `.layer(latchkey.layer())`.
    MissingLayer,
    /// An extractor the configuration cannot serve (a bug in the app,
    /// answered 500 with this text).
    Misconfigured(&'static str),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Unauthenticated { redirect: Some(to) } => {
                Redirect::to(&to).into_response()
            }
            AuthRejection::Unauthenticated { redirect: None } => {
                detail(StatusCode::UNAUTHORIZED, "Not authenticated")
            }
            // No HTML here: an app that serves pages matches `Forbidden { html: true }`
            // and renders its own (the latchkey server does, in routes/admin.rs).
            AuthRejection::Forbidden { .. } => detail(StatusCode::FORBIDDEN, "Forbidden"),
            AuthRejection::ReauthRequired { redirect: Some(to) } => {
                Redirect::to(&to).into_response()
            }
            AuthRejection::ReauthRequired { redirect: None } => {
                let body = serde_json::json!({
                    "detail": "Re-authentication required",
                    "reauth": true,
                });
                (
                    StatusCode::FORBIDDEN,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response()
            }
            AuthRejection::Unavailable(e) => e.into_response(),
            AuthRejection::MissingLayer => detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "latchkey is not installed: add .layer(latchkey.layer()) to the router",
            ),
            AuthRejection::Misconfigured(why) => {
                tracing::error!(problem = why, "latchkey extractor misconfigured");
                detail(StatusCode::INTERNAL_SERVER_ERROR, why)
            }
        }
    }
}

/// Looks the session up once per request and caches the answer.
async fn lookup(parts: &mut Parts) -> Result<Option<CurrentUser>, AuthRejection> {
    if let Some(cached) = parts.extensions.get::<Option<CurrentUser>>() {
        return Ok(cached.clone());
    }
    let auth = parts
        .extensions
        .get::<Latchkey>()
        .cloned()
        .ok_or(AuthRejection::MissingLayer)?;
    let found = auth
        .session(&parts.headers)
        .await
        .map_err(AuthRejection::Unavailable)?
        .map(|record| CurrentUser { record });
    parts.extensions.insert(found.clone());
    Ok(found)
}

fn login_redirect(parts: &Parts) -> Option<String> {
    if parts.method != axum::http::Method::GET || !wants_html(&parts.headers) {
        return None;
    }
    let login = parts
        .extensions
        .get::<Latchkey>()?
        .config()
        .login_path
        .clone();
    let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let next: String =
        percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC).collect();
    Some(format!("{login}?next={next}"))
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        lookup(parts)
            .await?
            .ok_or_else(|| AuthRejection::Unauthenticated {
                redirect: login_redirect(parts),
            })
    }
}

/// The signed-in user if there is one; never refuses (except 503).
#[derive(Clone, Debug)]
pub struct MaybeUser(pub Option<CurrentUser>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(lookup(parts).await?))
    }
}

/// A role a guard can require.
pub trait Role: Send + Sync + 'static {
    /// The role's name as stored (`"admin"`).
    const NAME: &'static str;
}

/// The `admin` role.
#[derive(Debug)]
pub struct Admin;

impl Role for Admin {
    const NAME: &'static str = "admin";
}

/// A signed-in user with role `R`; others get 403, signed-out requests 401.
#[derive(Debug)]
pub struct RequireRole<R: Role>(pub CurrentUser, pub PhantomData<R>);

impl<S: Send + Sync, R: Role> FromRequestParts<S> for RequireRole<R> {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.role() != R::NAME {
            return Err(AuthRejection::Forbidden {
                html: wants_html(&parts.headers),
            });
        }
        Ok(RequireRole(user, PhantomData))
    }
}

/// An extractor that carries the signed-in user: [`Recent`] wraps any of them.
pub trait SignedInUser {
    /// The user and session behind the request.
    fn current_user(&self) -> &CurrentUser;
}

impl SignedInUser for CurrentUser {
    fn current_user(&self) -> &CurrentUser {
        self
    }
}

impl<R: Role> SignedInUser for RequireRole<R> {
    fn current_user(&self) -> &CurrentUser {
        &self.0
    }
}

/// A sensitive action: `T` (a [`CurrentUser`] or [`RequireRole`]) whose
/// user signed in or re-authenticated within the re-authentication window
/// ([`Builder::reauth`](crate::Builder::reauth), default 10 minutes).
/// Otherwise [`AuthRejection::ReauthRequired`]: 403 `{"detail":
/// "Re-authentication required", "reauth": true}`, or a browser is sent to
/// `/reauth?next=...`. Mark a handler sensitive by its signature:
///
/// ```
/// use latchkey::{Admin, Recent, RequireRole};
/// async fn remove_user(Recent(admin): Recent<RequireRole<Admin>>) -> String {
///     format!("{} may do this", admin.0.username())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Recent<T = CurrentUser>(pub T);

impl<S, T> FromRequestParts<S> for Recent<T>
where
    S: Send + Sync,
    T: FromRequestParts<S, Rejection = AuthRejection> + SignedInUser + Send,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let inner = T::from_request_parts(parts, state).await?;
        let latchkey = parts
            .extensions
            .get::<Latchkey>()
            .cloned()
            .ok_or(AuthRejection::MissingLayer)?;
        let recent = latchkey
            .is_recent(inner.current_user().session())
            .await
            .map_err(AuthRejection::Unavailable)?;
        if recent {
            return Ok(Recent(inner));
        }
        Err(AuthRejection::ReauthRequired {
            redirect: reauth_redirect(&latchkey, parts),
        })
    }
}

/// `/reauth?next=...` for a browser: back to the page it asked for, or for
/// a form POST to the same-host page the form was on.
fn reauth_redirect(latchkey: &Latchkey, parts: &Parts) -> Option<String> {
    if !wants_html(&parts.headers) {
        return None;
    }
    let next = if parts.method == axum::http::Method::GET {
        parts.uri.path_and_query().map(|p| p.as_str().to_owned())
    } else {
        same_host_referer(&parts.headers)
    };
    let next = next.unwrap_or_else(|| "/".to_owned());
    let next: String =
        percent_encoding::utf8_percent_encode(&next, percent_encoding::NON_ALPHANUMERIC).collect();
    Some(format!(
        "{}?next={next}",
        latchkey.config().recovery.reauth_path
    ))
}

/// The path of `Referer` when it names this request's own host.
fn same_host_referer(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let rest = referer
        .strip_prefix("https://")
        .or_else(|| referer.strip_prefix("http://"))?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    (authority.eq_ignore_ascii_case(host) && !path.starts_with("//")).then(|| path.to_owned())
}
