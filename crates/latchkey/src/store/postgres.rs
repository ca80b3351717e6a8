//! PostgreSQL store: sessions and counters shared by several instances.
//!
//! Each instance caches the sessions it reads; revocations are announced
//! with `pg_notify` in the revoking statement itself and the
//! [`bus`](super::bus) keeps every instance's cache exact.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::{mpsc, OnceCell};

use super::bus::{Bus, Revoked, Transport};
use super::cache::SessionCache;
use super::sql::{session_columns, sql_store_impl, sql_ticket_impl};
use super::{CounterStore, SessionStore, StoreError};
use crate::session::{now_ms, SessionRecord, TokenHash};

const SCHEMA: &str = include_str!("../../schema/postgres.sql");

/// Sessions and counters in PostgreSQL. Connects lazily: a database that is
/// down at start-up makes operations fail (503) until it answers.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    label: String,
    schema_ready: Arc<OnceCell<()>>,
    cache: Arc<SessionCache>,
    /// Started at the first operation (inside the runtime).
    bus: Arc<OnceLock<Bus>>,
    transport: Arc<PgTransport>,
}

/// The bus over `LISTEN/NOTIFY` on a channel named for the database and
/// schema, so stores in different schemas of one database keep apart.
struct PgTransport {
    pool: PgPool,
    label: String,
    channel: OnceCell<String>,
}

impl PgTransport {
    fn fail(&self, e: sqlx::Error) -> StoreError {
        StoreError::Unavailable {
            store: self.label.clone(),
            reason: e.to_string(),
        }
    }

    async fn channel(&self) -> Result<&str, StoreError> {
        self.channel
            .get_or_try_init(|| async {
                super::bounded(&self.label, async {
                    sqlx::query_scalar::<_, String>(
                        "SELECT 'latchkey_' || substr(md5(current_database() || '.' || COALESCE(current_schema(), '')), 1, 16)",
                    )
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| self.fail(e))
                })
                .await
            })
            .await
            .map(String::as_str)
    }
}

#[async_trait]
impl Transport for PgTransport {
    async fn publish(&self, message: String) -> Result<(), StoreError> {
        let channel = self.channel().await?;
        super::bounded(&self.label, async {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(message)
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(|e| self.fail(e))
        })
        .await
    }

    async fn listen(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        let channel = self.channel().await?.to_owned();
        let listener = super::bounded(&self.label, async {
            let mut l = PgListener::connect_with(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
            l.listen(&channel).await.map_err(|e| self.fail(e))?;
            Ok(l)
        })
        .await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(forward(listener, tx));
        Ok(rx)
    }
}

/// Passes notifications on until the connection drops (`try_recv` says so
/// with `None`; `recv` would reconnect silently and hide the gap) or the
/// bus stops listening.
async fn forward(mut listener: PgListener, tx: mpsc::Sender<String>) {
    while let Ok(Some(n)) = listener.try_recv().await {
        if tx.send(n.payload().to_owned()).await.is_err() {
            return;
        }
    }
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
        Ok(Self::assemble(
            pool_options().connect_lazy_with(options),
            label,
        ))
    }

    fn assemble(pool: PgPool, label: String) -> Self {
        Self {
            transport: Arc::new(PgTransport {
                pool: pool.clone(),
                label: label.clone(),
                channel: OnceCell::new(),
            }),
            pool,
            label,
            schema_ready: Default::default(),
            cache: Arc::new(SessionCache::new()),
            bus: Default::default(),
        }
    }

    fn bus(&self) -> &Bus {
        self.bus
            .get_or_init(|| Bus::start(self.transport.clone(), self.cache.clone()))
    }

    /// Runs a revoking statement whose first parameters are `binds`... and
    /// whose last two are the bus channel and message, so the revocation
    /// and its announcement commit together; then waits for every instance
    /// to drop it. Returns the rows the statement changed.
    async fn revoke(
        &self,
        what: Revoked<'_>,
        sql: &'static str,
        binds: Binds<'_>,
    ) -> Result<u64, StoreError> {
        let bus = self.bus();
        let announcement = bus.announce(what);
        let channel = self.transport.channel().await?;
        let n = self
            .run(async {
                let q = sqlx::query(sql);
                let q = match binds {
                    Binds::Key(k) => q.bind(k.0.to_vec()),
                    Binds::KeyData(k, d) => q.bind(k.0.to_vec()).bind(d),
                    Binds::UserKeep(u, keep) => q.bind(u).bind(keep),
                    Binds::UserRole(u, r) => q.bind(u).bind(r),
                };
                let row = q
                    .bind(channel)
                    .bind(&announcement.message)
                    .fetch_one(&self.pool().await?)
                    .await?;
                row.try_get::<i64, _>("n")
            })
            .await?;
        bus.settle(announcement).await;
        Ok(n.max(0) as u64)
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
        Self::assemble(pool, label)
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

sql_store_impl!(PostgresStore, PgRow, sqlx::PgConnection);
sql_ticket_impl!(PostgresStore);

/// The parameters a revoking statement takes before channel and message.
enum Binds<'a> {
    Key(&'a TokenHash),
    KeyData(&'a TokenHash, Option<&'a str>),
    UserKeep(&'a str, Vec<u8>),
    UserRole(&'a str, &'a str),
}

// Reads come from the cache while the bus hears (see store/bus.rs);
// revocations announce themselves in the same statement.
#[async_trait]
impl SessionStore for PostgresStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.db_create(record).await?;
        if self.bus().serving() {
            self.cache
                .insert_new(record.key(), Arc::new(record.clone()));
        }
        Ok(())
    }
    async fn load(&self, key: &TokenHash) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let bus = self.bus();
        self.cache
            .load_through(|| bus.serving(), key, self.db_load(key))
            .await
    }
    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let generation = self.cache.generation();
        self.db_touch(key, last_seen_at, expires_at).await?;
        self.cache
            .touched(key, last_seen_at, expires_at, generation);
        Ok(())
    }
    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        let key = record.key();
        let write = self.revoke(
            Revoked::Session(&key),
            "WITH u AS (UPDATE latchkey_sessions SET data = $2 WHERE token_hash = $1 RETURNING 1) \
             SELECT pg_notify($3, $4)::text AS sent, (SELECT count(*) FROM u) AS n",
            Binds::KeyData(&key, record.data.as_deref()),
        );
        let n = self.cache.evicting(&key, write).await?;
        Ok(n > 0)
    }
    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        let write = self.revoke(
            Revoked::Session(key),
            "WITH d AS (DELETE FROM latchkey_sessions WHERE token_hash = $1 RETURNING 1) \
             SELECT pg_notify($2, $3)::text AS sent, (SELECT count(*) FROM d) AS n",
            Binds::Key(key),
        );
        self.cache.evicting(key, write).await?;
        Ok(())
    }
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.db_list_user(user_id).await
    }
    async fn delete_user(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, StoreError> {
        let keep = keep.map(|k| k.0.to_vec()).unwrap_or_default();
        let n = self
            .revoke(
                Revoked::User(user_id),
                "WITH d AS (DELETE FROM latchkey_sessions WHERE user_id = $1 AND token_hash <> $2 RETURNING 1) \
                 SELECT pg_notify($3, $4)::text AS sent, (SELECT count(*) FROM d) AS n",
                Binds::UserKeep(user_id, keep),
            )
            .await?;
        self.cache.evict_user(user_id);
        Ok(n)
    }
    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        self.revoke(
            Revoked::User(user_id),
            "WITH u AS (UPDATE latchkey_sessions SET role = $2 WHERE user_id = $1 RETURNING 1) \
             SELECT pg_notify($3, $4)::text AS sent, (SELECT count(*) FROM u) AS n",
            Binds::UserRole(user_id, role),
        )
        .await?;
        self.cache.evict_user(user_id);
        Ok(())
    }
    // Expired sessions need no announcement: a cached copy looks expired
    // too (expiry only moves forward), so it is read again, and found gone.
    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        self.db_sweep(None, super::sql::SweepPace::Fixed, now).await
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

    /// Two instances on one schema: a session revoked on one is never
    /// served by the other once the revocation has answered, even with
    /// both revocation listeners killed half-way (they reconnect), and the
    /// cache does answer while the bus hears.
    #[tokio::test]
    async fn revocation_is_exact_across_instances() {
        let Some(url) = crate::store::suite::postgres_url().await else {
            return;
        };
        let a = super::PostgresStore::open(&url).unwrap();
        let b = super::PostgresStore::open(&url).unwrap();
        let channel = {
            a.migrate().await.unwrap();
            b.migrate().await.unwrap();
            a.transport.channel().await.unwrap().to_owned()
        };
        let (sa, sb) = (a.clone(), b.clone());
        crate::store::bus::tests::until("a", || sa.bus().serving()).await;
        crate::store::bus::tests::until("b", || sb.bus().serving()).await;
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        let kill = async {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1",
            )
            .bind(format!("LISTEN \"{channel}\""))
            .fetch_all(&admin)
            .await
            .unwrap();
            assert_eq!(killed.len(), 2, "both listeners found and killed");
        };
        let rounds = crate::store::bus::tests::rounds();
        let hits =
            crate::store::bus::tests::race(&a, &b, rounds, |k| b.cache.get(k).is_some(), kill)
                .await;
        assert!(
            hits > rounds / 4,
            "b's cache answered only {hits} of {rounds} reads"
        );
    }

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
