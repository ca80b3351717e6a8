//! latchkey's own users table, on SQLite or PostgreSQL: one implementation
//! of the library's `UserBackend`, plus what the CLI and admin page need.

use async_trait::async_trait;
use latchkey::session::now_ms;
use latchkey::user::{AuthUser, BackendError, UserBackend};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::OnceCell;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS latchkey_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT,
    session_version BIGINT NOT NULL DEFAULT 0
)";

/// Added in 0.2; a table made by 0.1 lacks it. (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`: its "duplicate column" error means done.)
const ADD_SESSION_VERSION: &str =
    "ALTER TABLE latchkey_users ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0";

/// One row of the users table.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    /// Raised whenever all the user's sessions must end; sessions carry it.
    pub session_version: i64,
}

impl AuthUser for User {
    fn id(&self) -> String {
        self.id.clone()
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
    fn session_version(&self) -> u64 {
        self.session_version.max(0) as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user named {0:?}")]
    NotFound(String),
    #[error("users database {label} unavailable: {source}")]
    Db {
        label: String,
        #[source]
        source: sqlx::Error,
    },
}

/// The users table. Works through sqlx's `Any` driver: both engines accept
/// the same `$N` SQL, and this is not the hot path.
#[derive(Clone)]
pub struct Users {
    pool: AnyPool,
    postgres: bool,
    label: String,
    ready: std::sync::Arc<OnceCell<()>>,
}

fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: row.try_get("role")?,
        created_at: row.try_get("created_at")?,
        last_login_at: row.try_get("last_login_at")?,
        session_version: row.try_get("session_version")?,
    })
}

/// Usernames: 1 to 64 characters of letters, digits and `._@-`, starting
/// with a letter or digit, so they are safe in logs, pages and URL paths
/// (a name like `..` would be a path segment browsers rewrite).
pub fn valid_username(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(char::is_alphanumeric)
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid username {name:?}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        ))
    }
}

impl Users {
    /// Connects lazily: a database that is down at start-up makes calls
    /// fail (503) until it answers.
    pub fn open(url: &str) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        // The same "kind address" wording the session store's errors use.
        let label = latchkey::store::describe(url);
        let url = if url.starts_with("sqlite:") && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_millis(1200))
            .connect_lazy(&url)
            .map_err(|e| format!("bad database URL: {e}"))?;
        Ok(Self {
            pool,
            postgres,
            label,
            ready: Default::default(),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn db(&self) -> impl Fn(sqlx::Error) -> UsersError + '_ {
        |source| UsersError::Db {
            label: self.label.clone(),
            source,
        }
    }

    /// Runs one users-table operation under the store's operation timeout,
    /// so a database that stops answering (a partition, a held lock) fails
    /// closed with 503 within the contract's 2 s instead of hanging.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, UsersError>>,
    ) -> Result<T, UsersError> {
        let limit = latchkey::store::OPERATION_TIMEOUT;
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(self.db()(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", limit.as_millis()),
            ))))
        })
    }

    async fn pool(&self) -> Result<&AnyPool, UsersError> {
        self.ready
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await?;
                if self.postgres {
                    // Two instances starting at once take turns.
                    sqlx::query("SELECT pg_advisory_xact_lock(7261837202)")
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(SCHEMA).execute(&mut *tx).await?;
                if self.postgres {
                    let ddl = ADD_SESSION_VERSION.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS");
                    sqlx::query(&ddl).execute(&mut *tx).await?;
                } else if let Err(e) = sqlx::query(ADD_SESSION_VERSION).execute(&mut *tx).await {
                    if !e.to_string().contains("duplicate column") {
                        return Err(e);
                    }
                }
                tx.commit().await
            })
            .await
            .map_err(self.db())?;
        Ok(&self.pool)
    }

    pub async fn ping(&self) -> Result<(), UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(self.db())?;
            Ok(())
        })
        .await
    }

    pub async fn find(&self, username: &str) -> Result<Option<User>, UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            let row = sqlx::query("SELECT * FROM latchkey_users WHERE username = $1")
                .bind(username)
                .fetch_optional(pool)
                .await
                .map_err(self.db())?;
            row.as_ref()
                .map(user_from_row)
                .transpose()
                .map_err(self.db())
        })
        .await
    }

    pub async fn get(&self, username: &str) -> Result<User, UsersError> {
        self.find(username)
            .await?
            .ok_or_else(|| UsersError::NotFound(username.to_owned()))
    }

    pub async fn list(&self) -> Result<Vec<User>, UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            let rows = sqlx::query("SELECT * FROM latchkey_users ORDER BY username")
                .fetch_all(pool)
                .await
                .map_err(self.db())?;
            rows.iter()
                .map(user_from_row)
                .collect::<Result<_, _>>()
                .map_err(self.db())
        })
        .await
    }

    pub async fn count(&self) -> Result<i64, UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            let row = sqlx::query("SELECT COUNT(*) AS n FROM latchkey_users")
                .fetch_one(pool)
                .await
                .map_err(self.db())?;
            row.try_get("n").map_err(self.db())
        })
        .await
    }

    pub async fn add(&self, username: &str, hash: &str, role: &str) -> Result<User, UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            let user = User {
                id: hex::encode(rand::random::<[u8; 16]>()),
                username: username.to_owned(),
                password_hash: hash.to_owned(),
                role: role.to_owned(),
                created_at: now_ms(),
                last_login_at: None,
                session_version: 0,
            };
            let done = sqlx::query(
                "INSERT INTO latchkey_users (id, username, password_hash, role, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING",
            )
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map_err(self.db())?;
            if done.rows_affected() == 0 {
                return Err(UsersError::Exists(username.to_owned()));
            }
            Ok(user)
        })
        .await
    }

    async fn update(&self, sql: &str, username: &str, value: &str) -> Result<User, UsersError> {
        self.bounded(async {
            let user = self.get(username).await?;
            let pool = self.pool().await?;
            sqlx::query(sql)
                .bind(&user.id)
                .bind(value)
                .execute(pool)
                .await
                .map_err(self.db())?;
            Ok(user)
        })
        .await
    }

    pub async fn set_role(&self, username: &str, role: &str) -> Result<User, UsersError> {
        self.update(
            "UPDATE latchkey_users SET role = $2 WHERE id = $1",
            username,
            role,
        )
        .await
    }

    /// A new password from an admin or the CLI: also raises the session
    /// version, so every session of the user ends even if the session
    /// store cannot be reached.
    pub async fn set_hash(&self, username: &str, hash: &str) -> Result<User, UsersError> {
        self.update(
            "UPDATE latchkey_users SET password_hash = $2, \
             session_version = session_version + 1 WHERE id = $1",
            username,
            hash,
        )
        .await
    }

    pub async fn remove(&self, username: &str) -> Result<User, UsersError> {
        self.bounded(async {
            let user = self.get(username).await?;
            let pool = self.pool().await?;
            sqlx::query("DELETE FROM latchkey_users WHERE id = $1")
                .bind(&user.id)
                .execute(pool)
                .await
                .map_err(self.db())?;
            Ok(user)
        })
        .await
    }

    /// The user with id `user_id`, if any.
    pub async fn by_id(&self, user_id: &str) -> Result<Option<User>, UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            let row = sqlx::query("SELECT * FROM latchkey_users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await
                .map_err(self.db())?;
            row.as_ref()
                .map(user_from_row)
                .transpose()
                .map_err(self.db())
        })
        .await
    }

    /// Ends every session of the user, wherever it is stored: sessions
    /// issued under an older version are refused.
    pub async fn bump_session_version(&self, user_id: &str) -> Result<(), UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            sqlx::query(
                "UPDATE latchkey_users SET session_version = session_version + 1 WHERE id = $1",
            )
            .bind(user_id)
            .execute(pool)
            .await
            .map_err(self.db())?;
            Ok(())
        })
        .await
    }

    pub async fn touch_login(&self, user_id: &str) -> Result<(), UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            sqlx::query("UPDATE latchkey_users SET last_login_at = $2 WHERE id = $1")
                .bind(user_id)
                .bind(now_ms())
                .execute(pool)
                .await
                .map_err(self.db())?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl UserBackend for Users {
    type User = User;

    async fn find_by_username(&self, username: &str) -> Result<Option<User>, BackendError> {
        Ok(self.find(username).await?)
    }

    async fn find_by_id(&self, user_id: &str) -> Result<Option<User>, BackendError> {
        Ok(self.by_id(user_id).await?)
    }

    async fn bump_session_version(&self, user_id: &str) -> Result<(), BackendError> {
        Ok(Users::bump_session_version(self, user_id).await?)
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        Ok(self
            .bounded(async {
                let pool = self.pool().await?;
                sqlx::query("UPDATE latchkey_users SET password_hash = $2 WHERE id = $1")
                    .bind(user_id)
                    .bind(hash)
                    .execute(pool)
                    .await
                    .map_err(self.db())?;
                Ok(())
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_username;

    #[test]
    fn usernames_are_safe_in_paths_and_logs() {
        for ok in ["alice", "a.b-c_d@example.com", "Zoë", "x"] {
            assert!(valid_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".alice",
            "-x",
            "a b",
            "a/b",
            "a\nb",
            &"a".repeat(65),
        ] {
            assert!(valid_username(bad).is_err(), "{bad:?}");
        }
    }
}
