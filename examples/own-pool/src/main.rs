//! An axum app that already has a database: one sqlx pool holds its own
//! `members` table and latchkey's sessions. Run it with
//! `cargo run -p own-pool`, then:
//!
//! ```text
//! curl -i -X POST localhost:3000/login -H 'content-type: application/json' \
//!      -d '{"username":"ada","password":"analytical engine notes"}'
//! curl -b 'latchkey=TOKEN' localhost:3000/me
//! ```

use std::error::Error;
use std::str::FromStr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey::body::Input;
use latchkey::store::SqliteStore;
use latchkey::user::BackendError;
use latchkey::{async_trait, Auth, AuthUser, Credentials, CurrentUser, Latchkey, LoginError};
use latchkey::{SignedIn, SignedOut, UserBackend};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

/// The app's table. `session_version` lets latchkey end every session of a
/// member at once (password change, "sign out everywhere"), even one whose
/// sign-in was in flight; `COLLATE NOCASE` because latchkey passes the name
/// as typed.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE COLLATE NOCASE,
    is_staff INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT NOT NULL,
    session_version INTEGER NOT NULL DEFAULT 0
)";

/// One row of `members`.
struct Member {
    id: i64,
    handle: String,
    is_staff: bool,
    password_hash: String,
    session_version: i64,
}

type Row = (i64, String, bool, String, i64);
const BY_HANDLE: &str =
    "SELECT id, handle, is_staff, password_hash, session_version FROM members WHERE handle = $1";
// latchkey's ids are strings; SQLite compares a text `$1` with the INTEGER
// column as a number, so the id binds as it comes.
const BY_ID: &str =
    "SELECT id, handle, is_staff, password_hash, session_version FROM members WHERE id = $1";

impl From<Row> for Member {
    fn from((id, handle, is_staff, password_hash, session_version): Row) -> Self {
        Member {
            id,
            handle,
            is_staff,
            password_hash,
            session_version,
        }
    }
}

impl AuthUser for Member {
    fn id(&self) -> String {
        self.id.to_string()
    }
    fn username(&self) -> &str {
        &self.handle
    }
    fn role(&self) -> &str {
        if self.is_staff {
            "admin"
        } else {
            "user"
        }
    }
    fn password_hash(&self) -> &str {
        &self.password_hash
    }
    fn session_version(&self) -> u64 {
        self.session_version.max(0) as u64
    }
}

/// latchkey's view of the `members` table.
#[derive(Clone)]
struct Members(SqlitePool);

impl Members {
    async fn find(&self, sql: &str, value: &str) -> Result<Option<Member>, BackendError> {
        let row: Option<Row> = sqlx::query_as(sql)
            .bind(value)
            .fetch_optional(&self.0)
            .await?;
        Ok(row.map(Member::from))
    }

    /// Runs one statement; returns how many rows it changed.
    async fn write(&self, sql: &str, args: &[&str]) -> Result<u64, BackendError> {
        let mut query = sqlx::query(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        Ok(query.execute(&self.0).await?.rows_affected())
    }
}

#[async_trait]
impl UserBackend for Members {
    type User = Member;

    async fn find_by_username(&self, username: &str) -> Result<Option<Member>, BackendError> {
        self.find(BY_HANDLE, username).await
    }

    async fn find_by_id(&self, user_id: &str) -> Result<Option<Member>, BackendError> {
        self.find(BY_ID, user_id).await
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        let sql = "UPDATE members SET password_hash = $2 WHERE id = $1";
        self.write(sql, &[user_id, hash]).await.map(drop)
    }

    async fn bump_session_version(&self, user_id: &str) -> Result<(), BackendError> {
        let sql = "UPDATE members SET session_version = session_version + 1 WHERE id = $1";
        self.write(sql, &[user_id]).await.map(drop)
    }

    /// One statement, so a cancelled request cannot store the new password
    /// and leave the old sessions valid.
    async fn change_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        let sql = "UPDATE members SET password_hash = $2, session_version = session_version + 1 \
                   WHERE id = $1";
        self.write(sql, &[user_id, hash]).await.map(drop)
    }

    /// Conditional, so a hash upgrade at sign-in never overwrites a password
    /// changed meanwhile.
    async fn replace_password_hash(
        &self,
        user_id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, BackendError> {
        let sql = "UPDATE members SET password_hash = $2 WHERE id = $1 AND password_hash = $3";
        Ok(self.write(sql, &[user_id, new, old]).await? == 1)
    }
}

async fn login(
    auth: Auth,
    Input(creds): Input<Credentials>,
) -> Result<(SignedIn, &'static str), LoginError> {
    Ok((auth.login(&creds).await?, "signed in"))
}

async fn logout(auth: Auth) -> Result<(SignedOut, &'static str), latchkey::Error> {
    Ok((auth.logout().await?, "signed out"))
}

async fn me(user: CurrentUser) -> Json<serde_json::Value> {
    Json(
        serde_json::json!({ "id": user.user_id(), "username": user.username(), "role": user.role() }),
    )
}

/// The app's one pool. WAL lets latchkey's cache read while the app writes.
async fn open_db(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePool::connect_with(options).await?;
    sqlx::query(SCHEMA).execute(&pool).await?;
    Ok(pool)
}

/// The routes, with sessions kept in `pool`'s database and checked against
/// its `members` table: a member deleted by any means is signed out.
async fn app(pool: SqlitePool) -> Result<(Router, Latchkey), Box<dyn Error>> {
    let auth = Latchkey::builder()
        // Development settings: plain-HTTP cookies. Use a real secret in production.
        .secret(*b"example-secret-key-of-32-bytes!!")
        .secure(false)
        .store(Arc::new(SqliteStore::from_pool(pool.clone()).await?))
        .users(Members(pool))
        .build()?;
    auth.sessions().spawn_sweeper();
    let router = Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .layer(auth.layer());
    Ok((router, auth))
}

/// Adds a member unless the handle is taken.
async fn add_member(
    pool: &SqlitePool,
    auth: &Latchkey,
    handle: &str,
    password: &str,
) -> Result<(), Box<dyn Error>> {
    let hash = auth.hasher().hash(password).await?;
    sqlx::query("INSERT OR IGNORE INTO members (handle, password_hash) VALUES ($1, $2)")
        .bind(handle)
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let pool = open_db("sqlite://own-pool.db").await?;
    let (router, auth) = app(pool.clone()).await?;
    add_member(&pool, &auth, "ada", "analytical engine notes").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("own-pool on http://127.0.0.1:3000 (user ada, password \"analytical engine notes\")");
    // Throttling needs each client's address: serve with connect info.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    /// Calls the app as a served request would arrive: with the client's
    /// address, which latchkey needs to throttle sign-ins per client.
    async fn call(app: &axum::Router, req: Request<Body>) -> axum::response::Response {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
        app.clone()
            .layer(axum::extract::connect_info::MockConnectInfo(peer))
            .oneshot(req)
            .await
            .unwrap()
    }

    fn login(user: &str) -> Request<Body> {
        Request::post("/login")
            .header("content-type", "application/json")
            .body(Body::from(format!(
                r#"{{"username":"{user}","password":"analytical engine notes"}}"#
            )))
            .unwrap()
    }

    fn me(cookie: &str) -> Request<Body> {
        Request::get("/me")
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap()
    }

    /// A database file of its own, in the temp dir.
    fn temp_db() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("own-pool-{}-{nanos}.db", std::process::id()));
        format!("sqlite://{}", path.display())
    }

    #[tokio::test]
    async fn a_member_removed_from_the_table_is_signed_out() {
        let pool = super::open_db(&temp_db()).await.unwrap();
        let (app, auth) = super::app(pool.clone()).await.unwrap();
        super::add_member(&pool, &auth, "ada", "analytical engine notes")
            .await
            .unwrap();

        let res = call(&app, login("Ada")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = res.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let res = call(&app, me(&cookie)).await;
        assert_eq!(res.status(), StatusCode::OK);

        // The app's own SQL, behind latchkey's back.
        sqlx::query("DELETE FROM members WHERE handle = 'ada'")
            .execute(&pool)
            .await
            .unwrap();
        // latchkey looks a session's user up at most once a millisecond.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let res = call(&app, me(&cookie)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = call(&app, login("ada")).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    /// What a password change or "sign out everywhere" does, done by hand.
    #[tokio::test]
    async fn a_raised_session_version_ends_the_members_sessions() {
        let pool = super::open_db(&temp_db()).await.unwrap();
        let (app, auth) = super::app(pool.clone()).await.unwrap();
        super::add_member(&pool, &auth, "ada", "analytical engine notes")
            .await
            .unwrap();
        let res = call(&app, login("ada")).await;
        let cookie = res.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        assert_eq!(call(&app, me(&cookie)).await.status(), StatusCode::OK);

        use latchkey::UserBackend as _;
        super::Members(pool.clone())
            .bump_session_version("1")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let res = call(&app, me(&cookie)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = call(&app, login("ada")).await;
        assert_eq!(res.status(), StatusCode::OK, "signing in again works");
    }

    #[tokio::test]
    async fn logout_ends_the_session_in_the_apps_database() {
        let pool = super::open_db(&temp_db()).await.unwrap();
        let (app, auth) = super::app(pool.clone()).await.unwrap();
        super::add_member(&pool, &auth, "ada", "analytical engine notes")
            .await
            .unwrap();
        let res = call(&app, login("ada")).await;
        let cookie = res.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM latchkey_sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "the session is a row in the app's database");

        let req = Request::post("/logout")
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&app, req).await.status(), StatusCode::OK);
        let res = call(&app, me(&cookie)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}
