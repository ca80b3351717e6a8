//! SQLite store: the default; one file, survives restarts, shared by every
//! process that opens the same file (WAL mode).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::{sql::sql_store_impl, CounterStore, SessionStore, StoreError};
use crate::session::{now_ms, SessionRecord, TokenHash};

const SCHEMA: &str = include_str!("../../schema/sqlite.sql");

/// Sessions and counters in a SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    label: String,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `sqlite://PATH` and its tables.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let label = format!(
            "sqlite {}",
            url.trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
        );
        let fail = |e: sqlx::Error| StoreError::Unavailable {
            store: label.clone(),
            reason: e.to_string(),
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(super::OPERATION_TIMEOUT)
            .connect_with(connect_options(url).map_err(fail)?)
            .await
            .map_err(fail)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(fail)?;
        Ok(Self { pool, label })
    }

    /// Wraps a pool the app already has (the tables are created on `open`
    /// only; call [`SqliteStore::open`] once, or run `schema/sqlite.sql`).
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            label: "sqlite".into(),
        }
    }

    async fn pool(&self) -> Result<SqlitePool, sqlx::Error> {
        Ok(self.pool.clone())
    }

    async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        super::bounded(&self.label, async {
            fut.await.map_err(|e| StoreError::Unavailable {
                store: self.label.clone(),
                reason: e.to_string(),
            })
        })
        .await
    }
}

/// Connection options every latchkey SQLite pool uses: WAL so readers never
/// wait on the writer, and a busy timeout so two processes can share a file.
pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5)))
}

sql_store_impl!(SqliteStore, SqliteRow);

#[cfg(test)]
mod tests {
    crate::store::suite::store_suite!(async {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-test-{}",
            crate::session::SessionToken::generate().as_str()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("s.db").display());
        Some(super::SqliteStore::open(&url).await.unwrap())
    });
}
