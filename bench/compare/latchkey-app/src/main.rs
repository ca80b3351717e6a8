//! The bench/compare app with latchkey: a SQLite users table, `POST /login`,
//! `GET /profile`, `GET /admin` (role `admin`), `POST /logout`, sessions in
//! SQLite so they survive a restart.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey::body::Input;
use latchkey::store::SqliteStore;
use latchkey::user::BackendError;
use latchkey::{async_trait, Admin, Auth, AuthUser, Credentials, CurrentUser, Latchkey};
use latchkey::{LoginError, RequireRole, SignedIn, SignedOut, UserBackend};
use serde_json::{json, Value};
use sqlx::SqlitePool;

struct User {
    id: i64,
    username: String,
    role: String,
    password_hash: String,
}

impl AuthUser for User {
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn username(&self) -> &str {
        &self.username
    }
    fn role(&self) -> &str {
        &self.role
    }
    fn password_hash(&self) -> &str {
        &self.password_hash
    }
}

/// The users table, read by latchkey at sign-in and on every request.
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

#[async_trait]
impl UserBackend for Users {
    type User = User;

    async fn find_by_username(&self, username: &str) -> Result<Option<User>, BackendError> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE username = ?"))
            .bind(username)
            .fetch_optional(&self.0)
            .await?;
        Ok(row.map(user))
    }

    async fn find_by_id(&self, user_id: &str) -> Result<Option<User>, BackendError> {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE id = ?"))
            .bind(user_id)
            .fetch_optional(&self.0)
            .await?;
        Ok(row.map(user))
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(user_id)
            .execute(&self.0)
            .await?;
        Ok(())
    }
}

async fn login(
    auth: Auth,
    Input(creds): Input<Credentials>,
) -> Result<(SignedIn, Json<Value>), LoginError> {
    Ok((
        auth.login(&creds).await?,
        Json(json!({ "message": "signed in" })),
    ))
}

async fn logout(auth: Auth) -> Result<(SignedOut, Json<Value>), latchkey::Error> {
    Ok((
        auth.logout().await?,
        Json(json!({ "message": "signed out" })),
    ))
}

async fn profile(user: CurrentUser) -> Json<Value> {
    Json(json!({ "username": user.username(), "role": user.role() }))
}

async fn admin(RequireRole(user, _): RequireRole<Admin>) -> Json<Value> {
    Json(json!({ "message": format!("welcome to the admin page, {}", user.username()) }))
}

/// Opens (or creates) the database at `db_url` and builds the app.
async fn app(db_url: &str, secret: Vec<u8>) -> Result<Router, Box<dyn std::error::Error>> {
    let options = db_url.parse::<sqlx::sqlite::SqliteConnectOptions>()?;
    let pool = SqlitePool::connect_with(options.create_if_missing(true)).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,
         role TEXT NOT NULL, password_hash TEXT NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let auth = Latchkey::builder()
        .secret(secret)
        .secure(false) // plain-HTTP development; drop this behind HTTPS
        .store(Arc::new(SqliteStore::open(db_url).await?))
        .users(Users(pool.clone()))
        .build()?;
    // Two demo users on first start.
    for (name, role) in [("ada", "admin"), ("charles", "user")] {
        let hash = auth.hasher().hash("analytical engine notes").await?;
        sqlx::query("INSERT OR IGNORE INTO users (username, role, password_hash) VALUES (?, ?, ?)")
            .bind(name)
            .bind(role)
            .bind(hash)
            .execute(&pool)
            .await?;
    }
    auth.sessions().spawn_sweeper();
    Ok(Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/profile", get(profile))
        .route("/admin", get(admin))
        .layer(auth.layer()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://app.db".into());
    let secret = std::env::var("SESSION_SECRET").map_err(|_| "set SESSION_SECRET (32+ bytes)")?;
    let app = app(&db_url, secret.into_bytes()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).await?;
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
        let db = std::env::temp_dir().join(format!("latchkey-app-{}.db", std::process::id()));
        let url = format!("sqlite://{}", db.display());
        let app = super::app(&url, vec![7; 32]).await.unwrap();

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
