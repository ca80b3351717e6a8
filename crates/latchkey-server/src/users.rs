//! latchkey's own users table, on SQLite or PostgreSQL: one implementation
//! of the library's `UserBackend`, plus what the CLI and admin page need.

use async_trait::async_trait;
use latchkey::user::{AuthUser, BackendError, UserBackend};
use latchkey::username::{fold, normalize, UsernameError};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::OnceCell;

/// How long one users-table call may take before the request fails closed
/// with 503 (the session store's bound: the contract allows 2 s in all).
const USERS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Milliseconds since the Unix epoch, as the table stores times.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS latchkey_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT
)";

/// A new password that also ends every session (the version they carry
/// moves on): one statement, so no half of it can be lost.
const SET_HASH_ENDING_SESSIONS: &str = "UPDATE latchkey_users SET password_hash = $2, \
     session_version = session_version + 1 WHERE id = $1";

/// Changes to the table since [`SCHEMA`], applied in order at start-up
/// (inside the schema transaction). Each step is idempotent, so a database
/// of any age ends up the same, and a new column is one more line here.
const MIGRATIONS: &[Step] = &[
    // The comparison key (`latchkey::username::fold`): one account per name
    // whatever its case or width. NULL only for rows that predate it and
    // share a key with an older row (see `fill_username_keys`).
    Step::AddColumn("username_key", "TEXT"),
    Step::Sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS latchkey_users_username_key \
         ON latchkey_users (username_key)",
    ),
    Step::FillUsernameKeys,
    // Raised whenever all the user's sessions must end; sessions carry it.
    Step::AddColumn("session_version", "BIGINT NOT NULL DEFAULT 0"),
    // An optional address for recovery mail: unique by its lower-case key.
    Step::AddColumn("email", "TEXT"),
    Step::AddColumn("email_key", "TEXT"),
    Step::Sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS latchkey_users_email_key \
         ON latchkey_users (email_key)",
    ),
    Step::AddColumn("email_verified", "BIGINT NOT NULL DEFAULT 0"),
];

enum Step {
    /// `ALTER TABLE latchkey_users ADD COLUMN name type`, unless it is there.
    AddColumn(&'static str, &'static str),
    /// A statement that is idempotent by itself (`IF NOT EXISTS`).
    Sql(&'static str),
    /// Keys for rows that have none: the fold is Unicode work done in Rust.
    FillUsernameKeys,
}

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
    /// Address for recovery mail, if any.
    pub email: Option<String>,
    /// Confirmed by a link, or set by an admin.
    pub email_verified: bool,
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
    fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
    fn email_verified(&self) -> bool {
        self.email_verified
    }
}

/// What a role change or removal did. The last admin is refused as an
/// outcome, not an error, so every caller must say what to answer.
#[derive(Debug)]
#[must_use]
pub enum Change {
    Done(User),
    /// Nothing changed: the user is the only admin.
    LastAdmin(User),
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
        email: row.try_get("email")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
    })
}

/// Gives each row without a key its fold, oldest first. A row whose key an
/// older row already holds keeps none (two such names could be created
/// before keys existed) and is logged: it still signs in by its exact name.
async fn fill_username_keys(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, username FROM latchkey_users WHERE username_key IS NULL \
         ORDER BY created_at, id",
    )
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let username: String = row.try_get("username")?;
        let key = fold(&username);
        let done = sqlx::query(
            "UPDATE latchkey_users SET username_key = $1 WHERE id = $2 \
             AND NOT EXISTS (SELECT 1 FROM latchkey_users WHERE username_key = $1)",
        )
        .bind(&key)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 0 {
            let short: String = username.chars().take(64).collect();
            tracing::warn!(username = %short, "another user has the same name but for case or width; this one signs in only by its exact name until one of them is removed");
        }
    }
    Ok(())
}

/// Runs a schema transaction, again when SQLite refused it with "database
/// is locked": two processes migrating at once (a server starting and
/// `latchkey user add` beside it), the loser of SQLite's lock upgrade gets
/// that at once, whatever the busy timeout; its transaction rolled back, so
/// trying again is safe. PostgreSQL takes turns on an advisory lock instead.
pub(crate) async fn retry_if_locked<F, Fut>(postgres: bool, mut run: F) -> Result<(), sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match run().await {
            Err(e) if !postgres && tries < 10 && e.to_string().contains("database is locked") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            done => return done,
        }
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

    /// The connection pool, for the server's other tables in the same
    /// database (the mail queue), and whether it is PostgreSQL.
    pub fn shared_pool(&self) -> (&AnyPool, bool) {
        (&self.pool, self.postgres)
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
        let limit = USERS_TIMEOUT;
        tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
            Err(self.db()(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", limit.as_millis()),
            ))))
        })
    }

    async fn pool(&self) -> Result<&AnyPool, UsersError> {
        self.ready
            .get_or_try_init(|| retry_if_locked(self.postgres, || self.create_tables()))
            .await
            .map_err(self.db())?;
        Ok(&self.pool)
    }

    async fn create_tables(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            // Two instances starting at once take turns.
            sqlx::query("SELECT pg_advisory_xact_lock(7261837202)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(SCHEMA).execute(&mut *tx).await?;
        for step in MIGRATIONS {
            self.migrate(&mut tx, step).await?;
        }
        tx.commit().await
    }

    async fn migrate(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        step: &Step,
    ) -> Result<(), sqlx::Error> {
        match step {
            Step::AddColumn(name, kind) => {
                let exists: i64 = if self.postgres {
                    sqlx::query(
                        "SELECT COUNT(*) AS n FROM information_schema.columns \
                         WHERE table_schema = current_schema() \
                         AND table_name = 'latchkey_users' AND column_name = $1",
                    )
                } else {
                    sqlx::query(
                        "SELECT COUNT(*) AS n FROM pragma_table_info('latchkey_users') WHERE name = $1",
                    )
                }
                .bind(*name)
                .fetch_one(&mut **tx)
                .await?
                .try_get("n")?;
                if exists == 0 {
                    sqlx::query(&format!(
                        "ALTER TABLE latchkey_users ADD COLUMN {name} {kind}"
                    ))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            Step::Sql(sql) => {
                sqlx::query(sql).execute(&mut **tx).await?;
            }
            Step::FillUsernameKeys => fill_username_keys(tx).await?,
        }
        Ok(())
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

    /// The user `username` names, as a client typed it: compared by its
    /// folded form, so `ALICE` and fullwidth `ａｌｉｃｅ` find `alice`. A name
    /// too long (or empty) to be anyone's is `None` without asking the
    /// database, so login answers it like any unknown name (401). A name
    /// the rules now refuse matches only a row stored under exactly that
    /// name (created before the rules).
    pub async fn find(&self, username: &str) -> Result<Option<User>, UsersError> {
        let key = match normalize(username) {
            Ok(name) => Some(fold(&name)),
            Err(UsernameError::TooLong(_) | UsernameError::Empty) => return Ok(None),
            Err(_) => None,
        };
        self.bounded(async {
            let pool = self.pool().await?;
            // The exact stored name wins: a row left without a key (it
            // shared one with an older row) stays reachable by its name.
            let row = sqlx::query(
                "SELECT * FROM latchkey_users WHERE username = $1 OR username_key = $2 \
                 ORDER BY CASE WHEN username = $1 THEN 0 ELSE 1 END LIMIT 1",
            )
            .bind(username)
            .bind(key)
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

    /// Adds a user. `name` is the display form `normalize` returned (the
    /// caller reports a refused name its own way); a name whose folded
    /// form is taken is refused.
    pub async fn add(&self, name: &str, hash: &str, role: &str) -> Result<User, UsersError> {
        let key = fold(name);
        self.bounded(async {
            let pool = self.pool().await?;
            let user = User {
                id: hex::encode(rand::random::<[u8; 16]>()),
                username: name.to_owned(),
                password_hash: hash.to_owned(),
                role: role.to_owned(),
                created_at: now_ms(),
                last_login_at: None,
                session_version: 0,
                email: None,
                email_verified: false,
            };
            // No conflict target: a clash on the name or on its key is
            // the same "taken".
            let done = sqlx::query(
                "INSERT INTO latchkey_users \
                 (id, username, username_key, password_hash, role, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&user.id)
            .bind(&user.username)
            .bind(&key)
            .bind(&user.password_hash)
            .bind(&user.role)
            .bind(user.created_at)
            .execute(pool)
            .await
            .map_err(self.db())?;
            if done.rows_affected() == 0 {
                return Err(UsersError::Exists(user.username));
            }
            Ok(user)
        })
        .await
    }

    /// Runs one statement that changes the row `user` (bound as `$1`, then
    /// `extra`) and says whether it changed it. On PostgreSQL it takes the
    /// admins lock first: the last-admin condition inside the statement
    /// then reads a count no concurrent demotion or removal is changing
    /// (SQLite runs one writer at a time anyway).
    async fn change(
        &self,
        sql: &str,
        user: &User,
        extra: Option<&str>,
    ) -> Result<bool, UsersError> {
        let pool = self.pool().await?;
        let mut tx = pool.begin().await.map_err(self.db())?;
        if self.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7261837203)")
                .execute(&mut *tx)
                .await
                .map_err(self.db())?;
        }
        let mut query = sqlx::query(sql).bind(&user.id);
        if let Some(extra) = extra {
            query = query.bind(extra);
        }
        let done = query.execute(&mut *tx).await.map_err(self.db())?;
        tx.commit().await.map_err(self.db())?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives `username` a new role. Demoting the last admin is refused
    /// ([`Change::LastAdmin`]) unless `force`; the check is part of the
    /// UPDATE itself, so two admins demoting each other cannot both win.
    pub async fn set_role(
        &self,
        username: &str,
        role: &str,
        force: bool,
    ) -> Result<Change, UsersError> {
        self.bounded(async {
            let user = self.get(username).await?;
            let sql = if force {
                "UPDATE latchkey_users SET role = $2 WHERE id = $1"
            } else {
                "UPDATE latchkey_users SET role = $2 WHERE id = $1 AND \
                 ($2 = 'admin' OR role <> 'admin' OR \
                  (SELECT COUNT(*) FROM latchkey_users WHERE role = 'admin') > 1)"
            };
            if self.change(sql, &user, Some(role)).await? {
                Ok(Change::Done(user))
            } else {
                self.refused(user).await
            }
        })
        .await
    }

    /// Why a change to an existing row changed nothing: it was the last
    /// admin, or it has gone since it was read.
    async fn refused(&self, user: User) -> Result<Change, UsersError> {
        match self.find(&user.username).await? {
            Some(now) if now.id == user.id && now.role == "admin" => Ok(Change::LastAdmin(now)),
            _ => Err(UsersError::NotFound(user.username)),
        }
    }

    /// A new password from an admin or the CLI: also raises the session
    /// version, so every session of the user ends even if the session
    /// store cannot be reached.
    pub async fn set_hash(&self, username: &str, hash: &str) -> Result<User, UsersError> {
        self.bounded(async {
            let user = self.get(username).await?;
            self.write(SET_HASH_ENDING_SESSIONS, &[&user.id, hash])
                .await?;
            Ok(user)
        })
        .await
    }

    /// Removes `username`. Removing the last admin is refused
    /// ([`Change::LastAdmin`]) unless `force`, in the DELETE itself.
    pub async fn remove(&self, username: &str, force: bool) -> Result<Change, UsersError> {
        self.bounded(async {
            let user = self.get(username).await?;
            let sql = if force {
                "DELETE FROM latchkey_users WHERE id = $1"
            } else {
                "DELETE FROM latchkey_users WHERE id = $1 AND \
                 (role <> 'admin' OR \
                  (SELECT COUNT(*) FROM latchkey_users WHERE role = 'admin') > 1)"
            };
            if self.change(sql, &user, None).await? {
                Ok(Change::Done(user))
            } else {
                self.refused(user).await
            }
        })
        .await
    }

    /// The user with id `user_id`, if any.
    pub async fn by_id(&self, user_id: &str) -> Result<Option<User>, UsersError> {
        self.one_by("id", user_id).await
    }

    /// The row whose `column` is `value` (a unique column), if any.
    async fn one_by(&self, column: &'static str, value: &str) -> Result<Option<User>, UsersError> {
        let sql = format!("SELECT * FROM latchkey_users WHERE {column} = $1");
        self.bounded(async {
            let pool = self.pool().await?;
            let row = sqlx::query(&sql)
                .bind(value)
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
        let sql = "UPDATE latchkey_users SET session_version = session_version + 1 WHERE id = $1";
        self.write(sql, &[user_id]).await.map(drop)
    }

    /// The user whose address is `email`, compared case-insensitively.
    pub async fn by_email(&self, email: &str) -> Result<Option<User>, UsersError> {
        self.one_by("email_key", &email.trim().to_lowercase()).await
    }

    /// Sets (or with `None` removes) the user's address; `false` when
    /// another user has it (the unique index decides, so racing claims
    /// cannot both win).
    pub async fn set_email(
        &self,
        user_id: &str,
        email: Option<&str>,
        verified: bool,
    ) -> Result<bool, UsersError> {
        let email = email.map(str::trim);
        let key = email.map(str::to_lowercase);
        self.bounded(async {
            let pool = self.pool().await?;
            let done = sqlx::query(
                "UPDATE latchkey_users SET email = $2, email_key = $3, email_verified = $4 \
                 WHERE id = $1",
            )
            .bind(user_id)
            .bind(email)
            .bind(key)
            .bind(i64::from(verified && email.is_some()))
            .execute(pool)
            .await;
            match done {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(self.db()(e)),
            }
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
        let sql = "UPDATE latchkey_users SET password_hash = $2 WHERE id = $1";
        Ok(self.write(sql, &[user_id, hash]).await.map(drop)?)
    }

    async fn change_password_hash(&self, user_id: &str, hash: &str) -> Result<(), BackendError> {
        Ok(self
            .write(SET_HASH_ENDING_SESSIONS, &[user_id, hash])
            .await
            .map(drop)?)
    }

    async fn replace_password_hash(
        &self,
        user_id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, BackendError> {
        let sql =
            "UPDATE latchkey_users SET password_hash = $2 WHERE id = $1 AND password_hash = $3";
        Ok(self.write(sql, &[user_id, new, old]).await? > 0)
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, BackendError> {
        Ok(self.by_email(email).await?)
    }

    async fn set_email(
        &self,
        user_id: &str,
        email: Option<&str>,
        verified: bool,
    ) -> Result<bool, BackendError> {
        Ok(Users::set_email(self, user_id, email, verified).await?)
    }
}

impl Users {
    /// One bounded write with text parameters; the rows it changed.
    async fn write(&self, sql: &str, params: &[&str]) -> Result<u64, UsersError> {
        self.bounded(async {
            let pool = self.pool().await?;
            let mut query = sqlx::query(sql);
            for p in params {
                query = query.bind(*p);
            }
            let done = query.execute(pool).await.map_err(self.db())?;
            Ok(done.rows_affected())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(tag: &str) -> (String, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "latchkey-users-{tag}-{}-{}.db",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        (format!("sqlite://{}", path.display()), path)
    }

    #[tokio::test]
    async fn an_old_table_gets_keys_and_keeps_both_clashing_names() {
        let (url, path) = temp_db("migrate");
        {
            // The table as it was before keys, with two names that now fold alike.
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            sqlx::query(SCHEMA).execute(&pool).await.unwrap();
            for (id, name, at) in [("1", "alice", 1), ("2", "Alice", 2), ("3", "Bob", 3)] {
                sqlx::query("INSERT INTO latchkey_users VALUES ($1, $2, 'h', 'user', $3, NULL)")
                    .bind(id)
                    .bind(name)
                    .bind(at)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        for _ in 0..2 {
            // Twice: the steps are idempotent.
            let users = Users::open(&url).unwrap();
            assert_eq!(users.find("ALICE").await.unwrap().unwrap().id, "1");
            assert_eq!(users.find("ａｌｉｃｅ").await.unwrap().unwrap().id, "1");
            assert_eq!(users.find("Alice").await.unwrap().unwrap().id, "2");
            assert_eq!(users.find("bob").await.unwrap().unwrap().username, "Bob");
            assert!(matches!(
                users.add("BOB", "h", "user").await,
                Err(UsersError::Exists(_))
            ));
            assert_eq!(users.count().await.unwrap(), 3);
        }
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn the_last_admin_stays_unless_forced() {
        let (url, path) = temp_db("admin");
        let users = Users::open(&url).unwrap();
        users.add("root", "h", "admin").await.unwrap();
        users.add("Ann", "h", "user").await.unwrap();
        assert!(matches!(
            users.set_role("ROOT", "user", false).await.unwrap(),
            Change::LastAdmin(_)
        ));
        assert!(matches!(
            users.remove("root", false).await.unwrap(),
            Change::LastAdmin(_)
        ));
        assert!(matches!(
            users.set_role("root", "admin", false).await.unwrap(),
            Change::Done(_)
        ));
        // With a second admin, either may go.
        assert!(matches!(
            users.set_role("ann", "admin", false).await.unwrap(),
            Change::Done(_)
        ));
        assert!(matches!(
            users.set_role("root", "user", false).await.unwrap(),
            Change::Done(_)
        ));
        assert!(matches!(
            users.remove("ANN", false).await.unwrap(),
            Change::LastAdmin(_)
        ));
        assert!(matches!(
            users.remove("ann", true).await.unwrap(),
            Change::Done(_)
        ));
        assert!(users.find("ann").await.unwrap().is_none());
        assert!(matches!(
            users.remove("ann", false).await,
            Err(UsersError::NotFound(_))
        ));
        assert!(matches!(
            users.set_role("root", "admin", false).await.unwrap(),
            Change::Done(_)
        ));
        assert!(matches!(
            users.set_role("root", "user", true).await.unwrap(),
            Change::Done(_)
        ));
        assert_eq!(users.get("root").await.unwrap().role, "user");
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn names_that_cannot_be_anyones_find_nobody() {
        let (url, path) = temp_db("find");
        let users = Users::open(&url).unwrap();
        users.add("alice", "h", "user").await.unwrap();
        for name in [
            "",
            &"a".repeat(65),
            &"a".repeat(10_000),
            "\u{430}lice",
            ".alice",
        ] {
            assert!(users.find(name).await.unwrap().is_none(), "{name:?}");
        }
        let _ = std::fs::remove_file(&path);
    }
}
