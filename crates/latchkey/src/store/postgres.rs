//! PostgreSQL store: sessions and counters shared by several instances.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use tokio::sync::OnceCell;

use super::{sql::sql_store_impl, CounterStore, SessionStore, StoreError};
use crate::session::{now_ms, SessionRecord, TokenHash};

const SCHEMA: &str = include_str!("../../schema/postgres.sql");

/// Sessions and counters in PostgreSQL. Connects lazily: a database that is
/// down at start-up makes operations fail (503) until it answers.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    label: String,
    schema_ready: std::sync::Arc<OnceCell<()>>,
}

impl PostgresStore {
    /// A store for `postgres://...` with a pool of its own (up to 16
    /// connections); tables are created on first use.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the URL does not parse. Nothing
    /// connects here: an unreachable server fails the first operation.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let label = format!("postgres {}", super::redact_url(url));
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable {
            store: label.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            pool: pool_options().connect_lazy_with(options),
            label,
            schema_ready: Default::default(),
        })
    }

    /// A store on the app's own pool: the sessions live in the app's
    /// database (in the pool's `search_path`), next to its tables. As with
    /// [`open`](Self::open), latchkey's tables are created on first use;
    /// call [`migrate`](Self::migrate) to make them now.
    ///
    /// Operations wait at most the pool's acquire timeout for a connection
    /// (and 1.5 s in all): a short one (`open` uses 1.2 s) turns an outage
    /// into a quick 503 rather than a queue of stuck requests.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://app@localhost/app").await?;
    /// let store = latchkey::store::PostgresStore::from_pool(pool);
    /// store.migrate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pool(pool: PgPool) -> Self {
        let options = pool.connect_options();
        let label = format!("postgres {}:{}", options.get_host(), options.get_port());
        Self {
            pool,
            label,
            schema_ready: Default::default(),
        }
    }

    /// Creates latchkey's tables and indexes if missing and upgrades those
    /// an older version made. Idempotent, and safe when several instances
    /// start at once (they take turns on an advisory lock). Every store runs
    /// it once before its first operation anyway; call it at start-up to
    /// see a problem there rather than as 503s.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database cannot be reached or a
    /// statement fails (say, the role may not create tables).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.pool()
            .await
            .map(drop)
            .map_err(|e| StoreError::Unavailable {
                store: self.label.clone(),
                reason: e.to_string(),
            })
    }

    /// The pool, after making sure the tables exist. Two instances starting
    /// at once serialise on an advisory lock, so the DDL never races.
    async fn pool(&self) -> Result<PgPool, sqlx::Error> {
        self.schema_ready
            .get_or_try_init(|| create_schema(self.pool.clone(), SCHEMA))
            .await?;
        Ok(self.pool.clone())
    }
}

/// Pool settings for PostgreSQL: a short acquire timeout so an outage turns
/// into a 503 quickly instead of a queue of stuck requests.
pub(super) fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_millis(1200))
}

/// Runs idempotent DDL under a transaction-scoped advisory lock.
///
/// Boxed as `Send` here, where lifetimes are concrete: sqlx's transaction
/// executor otherwise trips the compiler's higher-ranked `Send` inference
/// inside `async_trait` methods.
pub(super) fn create_schema(
    pool: PgPool,
    ddl: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send>> {
    Box::pin(async move {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7261837201)")
            .execute(&mut *tx)
            .await?;
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await
    })
}

sql_store_impl!(PostgresStore, PgRow);

// Every request reads PostgreSQL: revocations by any instance are seen at once.
#[async_trait::async_trait]
impl SessionStore for PostgresStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.db_create(record).await
    }
    async fn load(
        &self,
        key: &TokenHash,
    ) -> Result<Option<std::sync::Arc<SessionRecord>>, StoreError> {
        self.db_load(key).await
    }
    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.db_touch(key, last_seen_at, expires_at).await
    }
    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        self.db_update(record).await
    }
    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        self.db_delete(key).await
    }
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.db_list_user(user_id).await
    }
    async fn delete_user(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, StoreError> {
        self.db_delete_user(user_id, keep).await
    }
    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        self.db_set_role(user_id, role).await
    }
    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        self.db_sweep(now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.db_ping().await
    }
}

#[cfg(test)]
mod tests {
    crate::store::suite::store_suite!(async {
        let url = crate::store::suite::postgres_url().await?;
        Some(super::PostgresStore::open(&url).unwrap())
    });

    /// The same suite on a pool the app made, tables made by `migrate`.
    mod from_pool {
        crate::store::suite::store_suite!(async {
            let url = crate::store::suite::postgres_url().await?;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let store = crate::store::PostgresStore::from_pool(pool);
            store.migrate().await.unwrap();
            Some(store)
        });
    }
}
