//! The bench/compare app with tower-sessions + axum-login: a SQLite users
//! table, `POST /login`, `GET /profile`, `GET /admin` (role `admin`),
//! `POST /logout`, sessions in SQLite so they survive a restart.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
use serde::Deserialize;
use serde_json::json;
use sqlx::SqlitePool;
use tower_sessions::cookie::time::Duration;
use tower_sessions::{ExpiredDeletion, Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;

#[derive(Clone)]
struct User {
    id: i64,
    username: String,
    role: String,
    password_hash: String,
}

// Written by hand so the password hash stays out of logs.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    // A new password ends the user's sessions.
    fn session_auth_hash(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    TaskJoin(#[from] tokio::task::JoinError),
}

/// The users table, read by axum-login at sign-in and on every request.
#[derive(Clone)]
struct Users(SqlitePool);

type Row = (i64, String, String, String);
const SELECT: &str = "SELECT id, username, role, password_hash FROM users";

fn user((id, username, role, password_hash): Row) -> User {
    User {
        id,
        username,
        role,
        password_hash,
    }
}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendError> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE username = ?"))
            .bind(&creds.username)
            .fetch_optional(&self.0)
            .await?;
        let Some(user) = row.map(user) else {
            return Ok(None);
        };
        // Argon2 is slow on purpose: keep it off the async threads.
        let hash = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(creds.password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await?;
        Ok(ok.then_some(user))
    }

    async fn get_user(&self, user_id: &UserId<Self>) -> Result<Option<User>, BackendError> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE id = ?"))
            .bind(user_id)
            .fetch_optional(&self.0)
            .await?;
        Ok(row.map(user))
    }
}

type Auth = AuthSession<Users>;

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

async fn login(mut auth: Auth, Json(creds): Json<Credentials>) -> Response {
    let user = match auth.authenticate(creds).await {
        Ok(Some(user)) => user,
        Ok(None) => return detail(StatusCode::UNAUTHORIZED, "Invalid credentials"),
        Err(_) => return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    };
    match auth.login(&user).await {
        Ok(()) => Json(json!({ "message": "signed in" })).into_response(),
        Err(_) => detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

async fn logout(mut auth: Auth) -> Response {
    match auth.logout().await {
        Ok(_) => Json(json!({ "message": "signed out" })).into_response(),
        Err(_) => detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

async fn profile(auth: Auth) -> Response {
    match auth.user {
        Some(user) => Json(json!({ "username": user.username, "role": user.role })).into_response(),
        None => detail(StatusCode::UNAUTHORIZED, "Not authenticated"),
    }
}

async fn admin(auth: Auth) -> Response {
    match auth.user {
        Some(user) if user.role == "admin" => {
            let message = format!("welcome to the admin page, {}", user.username);
            Json(json!({ "message": message })).into_response()
        }
        Some(_) => detail(StatusCode::FORBIDDEN, "Forbidden"),
        None => detail(StatusCode::UNAUTHORIZED, "Not authenticated"),
    }
}

fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Opens (or creates) the database at `db_url` and builds the app.
async fn app(db_url: &str) -> Result<Router, Box<dyn std::error::Error>> {
    let options = db_url.parse::<sqlx::sqlite::SqliteConnectOptions>()?;
    let pool = SqlitePool::connect_with(options.create_if_missing(true)).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,
         role TEXT NOT NULL, password_hash TEXT NOT NULL)",
    )
    .execute(&pool)
    .await?;
    // Two demo users on first start.
    for (name, role) in [("ada", "admin"), ("charles", "user")] {
        let hash = hash_password("analytical engine notes")?;
        sqlx::query("INSERT OR IGNORE INTO users (username, role, password_hash) VALUES (?, ?, ?)")
            .bind(name)
            .bind(role)
            .bind(hash)
            .execute(&pool)
            .await?;
    }
    let store = SqliteStore::new(pool.clone());
    store.migrate().await?;
    tokio::spawn(
        store
            .clone()
            .continuously_delete_expired(tokio::time::Duration::from_secs(60)),
    );
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false) // plain-HTTP development; drop this behind HTTPS
        .with_expiry(Expiry::OnInactivity(Duration::minutes(30)));
    let auth = AuthManagerLayerBuilder::new(Users(pool), sessions).build();
    Ok(Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/profile", get(profile))
        .route("/admin", get(admin))
        .layer(auth))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://app.db".into());
    let app = app(&db_url).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    async fn send(app: &axum::Router, req: Request<Body>) -> axum::response::Response {
        let client = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
        let app = app.clone().layer(MockConnectInfo(client));
        app.oneshot(req).await.unwrap()
    }

    fn get(uri: &str, cookie: &str) -> Request<Body> {
        let req = Request::get(uri).header(header::COOKIE, cookie);
        req.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn sign_in_profile_admin_refused_sign_out() {
        let db = std::env::temp_dir().join(format!("peer-app-{}.db", std::process::id()));
        let url = format!("sqlite://{}", db.display());
        let app = super::app(&url).await.unwrap();

        let body = r#"{"username":"charles","password":"analytical engine notes"}"#;
        let req = Request::post("/login").header(header::CONTENT_TYPE, "application/json");
        let res = send(&app, req.body(Body::from(body)).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let set_cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();

        assert_eq!(
            send(&app, get("/profile", &cookie)).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&app, get("/admin", &cookie)).await.status(),
            StatusCode::FORBIDDEN
        );
        let req = Request::post("/logout").header(header::COOKIE, &cookie);
        let res = send(&app, req.body(Body::empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = send(&app, get("/profile", &cookie)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
}
