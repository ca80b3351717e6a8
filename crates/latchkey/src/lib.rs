//! # latchkey
//!
//! Server-side session login for [axum]: an unguessable cookie token, sessions
//! kept (hashed) in a store you choose, idle and absolute timeouts, Argon2id on a
//! bounded blocking pool, CSRF protection and login throttling — on by default.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use latchkey::{CurrentUser, Latchkey, Config, store::MemoryStore};
//!
//! async fn profile(user: CurrentUser) -> String {
//!     format!("hello {}", user.username())
//! }
//!
//! # async fn run() {
//! let store = std::sync::Arc::new(MemoryStore::new());
//! let auth = Latchkey::new(Config::new([7u8; 32]), store);
//! let app: Router = Router::new()
//!     .route("/profile", get(profile))
//!     .layer(auth.layer());
//! # }
//! ```
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
//! | `test-suite` | no | [`store_suite!`]: the tests every store passes, for your own store |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
pub mod body;
mod client;
pub mod cookie;
pub mod csrf;
pub mod error;
pub mod extract;
mod hash_pool;
mod layer;
pub mod password;
pub mod session;
pub mod store;
pub mod throttle;
pub mod user;
mod user_check;
pub mod username;

pub use auth::{Config, Latchkey, LoginSuccess};
pub use client::RequestMeta;
pub use error::{Error, LoginError};
pub use extract::{Admin, CurrentUser, MaybeUser, RequireRole, Role};
pub use layer::LatchkeyLayer;
pub use session::{SessionRecord, SessionToken, Timeouts};
pub use user::{AuthUser, UserBackend};
