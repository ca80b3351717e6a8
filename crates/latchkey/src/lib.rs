//! # latchkey
//!
//! Server-side session login for [axum], safe by default.
//!
//! - **Token and store.** A sign-in gives the browser a cookie holding only a
//!   random 256-bit token; the server keeps the session in a store you choose
//!   ([`store`]: memory, SQLite, PostgreSQL, Redis) under the token's SHA-256,
//!   so a copy of the store hands out no live sessions.
//! - **Timeouts.** Idle and absolute, enforced on the server; an
//!   authenticated request does not write to the store.
//! - **Checked against the user.** With [`Builder::users`], every session is
//!   checked against its user: removal, a new password or "sign out
//!   everywhere" end it on the next request, and the current role applies.
//! - **CSRF.** The [`layer`](Latchkey::layer) refuses unsafe cross-site
//!   requests; HTML forms carry a token ([`body::Input`] checks it).
//! - **Throttling.** Attempts are counted before their password is verified,
//!   per (username, address), per address and per account, and hold under
//!   concurrency; Argon2id runs on a bounded low-priority pool.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::{get, post}, Json, Router};
//! use latchkey::{body::Input, store::MemoryStore, Auth, Credentials, CurrentUser,
//!                Latchkey, LoginError, SignedIn};
//!
//! async fn login(auth: Auth, Input(creds): Input<Credentials>)
//!     -> Result<(SignedIn, Json<&'static str>), LoginError> {
//!     Ok((auth.login(&creds).await?, Json("signed in")))   // the cookie is set for you
//! }
//!
//! async fn profile(user: CurrentUser) -> String {          // 401 when signed out
//!     format!("hello {}", user.username())
//! }
//!
//! # fn users() -> impl latchkey::UserBackend + 'static { todo_users::Users }
//! # mod todo_users {
//! #     pub struct Users;
//! #     pub struct U;
//! #     impl latchkey::AuthUser for U {
//! #         fn id(&self) -> String { String::new() }
//! #         fn username(&self) -> &str { "" }
//! #         fn role(&self) -> &str { "" }
//! #         fn password_hash(&self) -> &str { "" }
//! #     }
//! #     #[latchkey::async_trait]
//! #     impl latchkey::UserBackend for Users {
//! #         type User = U;
//! #         async fn find_by_username(&self, _: &str) -> Result<Option<U>, latchkey::user::BackendError> { Ok(None) }
//! #         async fn find_by_id(&self, _: &str) -> Result<Option<U>, latchkey::user::BackendError> { Ok(None) }
//! #         async fn set_password_hash(&self, _: &str, _: &str) -> Result<(), latchkey::user::BackendError> { Ok(()) }
//! #     }
//! # }
//! let auth = Latchkey::builder()
//!     .secret([7u8; 32])                       // 32+ random bytes in real life
//!     .store(Arc::new(MemoryStore::new()))
//!     .users(users())                          // your UserBackend
//!     .build()
//!     .expect("valid configuration");
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/profile", get(profile))
//!     .layer(auth.layer());
//! # let _ = app;
//! ```
//!
//! Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
//! throttling needs each client's address, and sign-ins answer 503 without it.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | [`store::SqliteStore`] (sqlx's SQLite driver) |
//! | `memory` | yes | [`store::MemoryStore`], in-process |
//! | `zxcvbn` | yes | the guessability check in [`password::PasswordPolicy`] |
//! | `postgres` | no | [`store::PostgresStore`] (sqlx's PostgreSQL driver) |
//! | `redis` | no | [`store::RedisStore`] (the `redis` crate) |
//! | `passkeys` | no | [`passkeys`]: WebAuthn registration and sign-in (`webauthn-rs`, needs OpenSSL) |
//! | `test-suite` | no | [`store_suite!`]: the tests every store passes, for your own store |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod auth;
mod authenticator;
pub mod body;
mod builder;
mod client;
pub mod cookie;
mod csrf;
pub mod error;
pub mod extract;
pub mod forward;
mod hash_pool;
mod layer;
pub mod mail;
pub mod mfa;
#[cfg(feature = "passkeys")]
#[cfg_attr(docsrs, doc(cfg(feature = "passkeys")))]
pub mod passkeys;
pub mod password;
pub mod recovery;
pub mod redirect;
mod request_auth;
pub mod session;
mod sessions;
pub mod store;
pub mod throttle;
pub mod user;
mod user_check;
pub mod username;

pub use auth::{Config, Latchkey, SignedIn};
pub use builder::{Builder, ConfigError};
pub use client::RequestMeta;
pub use error::{Error, LoginError};
pub use extract::{Admin, CurrentUser, MaybeUser, Recent, RequireRole, Role, SignedInUser, User};
pub use layer::{LatchkeyFuture, LatchkeyLayer, LatchkeyService};
pub use request_auth::{Auth, Credentials, SignedOut};
pub use session::{CsrfSecret, SessionId, SessionRecord, SessionToken, Timeouts};
pub use sessions::{Sessions, MAX_SESSION_DATA};
pub use user::{AuthUser, UserBackend};

/// Implementing [`UserBackend`] needs this attribute on the `impl` block.
pub use async_trait::async_trait;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
