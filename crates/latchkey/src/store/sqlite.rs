//! SQLite store: the default; one file, survives restarts, shared by every
//! process that opens the same file (WAL mode).
//!
//! The hot path does not query SQLite. Each process keeps a cache of the
//! sessions it has seen, and SQLite triggers log every session that ends or
//! changes role to `latchkey_revocations` — whoever makes the change: this
//! process, another `serve`, or the `latchkey user` CLI. Before answering
//! from the cache, a request checks (at most once a millisecond) whether the
//! database's WAL file changed since the last look — one `stat`, no query —
//! and, if it did, reads the new log rows once and evicts what they name.
//! Revocation therefore takes effect on the next request, in every process.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use quick_cache::sync::Cache;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;

use super::{sql::sql_store_impl, CounterStore, SessionStore, StoreError};
use crate::session::{now_ms, SessionRecord, TokenHash};

const SCHEMA: &str = include_str!("../../schema/sqlite.sql");

/// Sessions cached per process (about 0.5 KiB each at most).
const CACHE_CAPACITY: usize = 100_000;
/// How stale the "has the file changed?" answer may be.
const RECHECK_EVERY: Duration = Duration::from_millis(1);
/// More new revocations than this at once: drop the whole cache instead.
const MAX_SYNC_ROWS: i64 = 10_000;
/// Revocation log rows older than this are pruned by the sweep; a process
/// that falls further behind drops its whole cache.
const LOG_RETENTION_MS: i64 = 3_600_000;

/// Sessions and counters in a SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// A connection of its own for reading the revocation log: requests
    /// wait on that read, so it must not queue behind writes (a login storm
    /// holding the main pool pushed GET p99 to 11× in bench/run.sh).
    log_reader: SqlitePool,
    label: String,
    cache: Arc<SessionCache>,
}

/// What a file looked like: length, modification time, inode.
type FileStamp = Option<(u64, SystemTime, u64)>;
/// The WAL file and the database file: every commit changes the WAL, and a
/// checkpoint (as when the last connection of another process closes and
/// removes the WAL) changes the database file.
type Stamp = (FileStamp, FileStamp);

struct SessionCache {
    entries: Cache<TokenHash, Arc<SessionRecord>>,
    wal: PathBuf,
    db: PathBuf,
    started: Instant,
    /// Micros since `started` of the last stamp check.
    checked_at: AtomicU64,
    /// Bumped by every eviction. A load that read the database while it
    /// moved may hold a row from before a revocation: it is not cached.
    generation: AtomicU64,
    sync: tokio::sync::Mutex<()>,
    state: Mutex<SyncState>,
}

struct SyncState {
    stamp: Stamp,
    last_seq: i64,
}

/// Tables made by 0.1 lack `user_version`; SQLite has no
/// `ADD COLUMN IF NOT EXISTS`, so look first.
async fn add_user_version(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM pragma_table_info('latchkey_sessions') WHERE name = 'user_version'",
    )
    .fetch_one(pool)
    .await?;
    if n == 0 {
        sqlx::query(
            "ALTER TABLE latchkey_sessions ADD COLUMN user_version INTEGER NOT NULL DEFAULT 0",
        )
        .execute(pool)
        .await?;
    }
    Ok(())
}

fn file_stamp(path: &std::path::Path) -> FileStamp {
    // A metadata syscall on a local file: microseconds, never a real block.
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.len(), m.modified().ok()?, ino))
}

impl SessionCache {
    fn stamp(&self) -> Stamp {
        (file_stamp(&self.wal), file_stamp(&self.db))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
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
        let options = connect_options(url).map_err(fail)?;
        let db = options.get_filename().to_path_buf();
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // One connection always open keeps the WAL file in place.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(super::OPERATION_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(fail)?;
        let log_reader = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(super::OPERATION_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(fail)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(fail)?;
        add_user_version(&pool).await.map_err(fail)?;
        let cache = Arc::new(SessionCache {
            entries: Cache::new(CACHE_CAPACITY),
            wal: PathBuf::from(wal),
            db,
            started: Instant::now(),
            checked_at: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            sync: tokio::sync::Mutex::new(()),
            state: Mutex::new(SyncState {
                stamp: (None, None),
                last_seq: 0,
            }),
        });
        let store = Self {
            pool,
            log_reader,
            label,
            cache,
        };
        let last_seq = store.max_seq().await?;
        let mut st = store.cache.state();
        st.last_seq = last_seq;
        st.stamp = store.cache.stamp();
        drop(st);
        Ok(store)
    }

    async fn pool(&self) -> Result<SqlitePool, sqlx::Error> {
        Ok(self.pool.clone())
    }

    /// The highest revocation sequence number ever handed out.
    async fn max_seq(&self) -> Result<i64, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'latchkey_revocations'), 0) AS seq",
            )
            .fetch_one(&self.log_reader)
            .await?;
            row.try_get::<i64, _>("seq")
        })
        .await
    }

    /// Makes the cache reflect every revocation committed before this call
    /// (give or take [`RECHECK_EVERY`]).
    async fn freshen(&self) -> Result<(), StoreError> {
        let c = &self.cache;
        let now = c.micros();
        if now.saturating_sub(c.checked_at.load(Ordering::Relaxed))
            < RECHECK_EVERY.as_micros() as u64
        {
            return Ok(());
        }
        if c.stamp() == c.state().stamp {
            c.checked_at.store(now, Ordering::Relaxed);
            return Ok(());
        }
        // One sync at a time; latecomers find the work done.
        let _guard = c.sync.lock().await;
        let stamp = c.stamp();
        let last_seq = {
            let st = c.state();
            if stamp == st.stamp {
                return Ok(());
            }
            st.last_seq
        };
        let rows = self
            .run(async {
                sqlx::query("SELECT seq, token_hash FROM latchkey_revocations WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(last_seq)
                    .bind(MAX_SYNC_ROWS + 1)
                    .fetch_all(&self.log_reader)
                    .await
            })
            .await?;
        let max_seq = self.max_seq().await?;
        let first = rows.first().and_then(|r| r.try_get::<i64, _>("seq").ok());
        let gap = match first {
            Some(seq) => seq != last_seq + 1,
            None => max_seq > last_seq,
        };
        if gap || !rows.is_empty() {
            c.generation.fetch_add(1, Ordering::SeqCst);
        }
        let new_last = if gap || rows.len() as i64 > MAX_SYNC_ROWS {
            // Fell behind the pruned log or too much changed: start afresh.
            c.entries.clear();
            max_seq
        } else {
            let mut last = last_seq;
            for row in &rows {
                let hash: Vec<u8> = row.try_get("token_hash").unwrap_or_default();
                if let Ok(h) = <[u8; 32]>::try_from(hash.as_slice()) {
                    c.entries.remove(&TokenHash(h));
                }
                last = row.try_get("seq").unwrap_or(last);
            }
            last
        };
        let mut st = c.state();
        st.stamp = stamp;
        st.last_seq = new_last;
        c.checked_at.store(c.micros(), Ordering::Relaxed);
        Ok(())
    }
}

sql_store_impl!(SqliteStore, SqliteRow);

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.db_create(record).await?;
        self.cache
            .entries
            .insert(record.key(), Arc::new(record.clone()));
        Ok(())
    }

    async fn load(&self, key: &TokenHash) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        self.freshen().await?;
        if let Some(hit) = self.cache.entries.get(key) {
            // A record that looks expired may have been kept alive by another
            // process; only the database can say.
            if hit.expires_at > now_ms() {
                return Ok(Some(hit));
            }
        }
        let generation = self.cache.generation.load(Ordering::SeqCst);
        let found = self.db_load(key).await?;
        match &found {
            Some(r) if self.cache.generation.load(Ordering::SeqCst) == generation => {
                self.cache.entries.insert(*key, r.clone())
            }
            _ => self.cache.entries.remove(key).map_or((), drop),
        }
        Ok(found)
    }

    async fn touch(
        &self,
        key: &TokenHash,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.db_touch(key, last_seen_at, expires_at).await?;
        if let Some(hit) = self.cache.entries.get(key) {
            let mut r = SessionRecord::clone(&hit);
            r.last_seen_at = last_seen_at;
            r.expires_at = expires_at;
            self.cache.entries.insert(*key, Arc::new(r));
        }
        Ok(())
    }

    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        self.cache.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.entries.remove(key);
        self.db_delete(key).await?;
        self.cache.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.entries.remove(key);
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
        let n = self.db_delete_user(user_id, keep).await?;
        // The triggers logged each one; read the log now so this process's
        // next request needs no file check to see it.
        self.force_freshen().await?;
        Ok(n)
    }

    async fn set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        self.db_set_role(user_id, role).await?;
        self.force_freshen().await
    }

    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        let n = self.db_sweep(now).await?;
        self.run(async {
            sqlx::query("DELETE FROM latchkey_revocations WHERE at < $1")
                .bind(now - LOG_RETENTION_MS)
                .execute(&self.pool)
                .await
        })
        .await?;
        Ok(n)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db_ping().await
    }
}

impl SqliteStore {
    async fn force_freshen(&self) -> Result<(), StoreError> {
        self.cache.checked_at.store(0, Ordering::Relaxed);
        self.cache.state().stamp = (Some((u64::MAX, SystemTime::UNIX_EPOCH, 0)), None);
        self.freshen().await
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

#[cfg(test)]
mod tests {
    async fn fresh() -> (super::SqliteStore, String) {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-test-{}",
            crate::session::SessionToken::generate().as_str()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("s.db").display());
        (super::SqliteStore::open(&url).await.unwrap(), url)
    }

    crate::store::suite::store_suite!(async { Some(fresh().await.0) });

    /// Two stores on one file stand for two processes (a server and the CLI):
    /// each has its own cache, and revocations cross over on the next load.
    #[tokio::test]
    async fn revocations_by_another_process_reach_the_cache() {
        let (a, url) = fresh().await;
        let b = super::SqliteStore::open(&url).await.unwrap();
        let (t1, r1) = record("carol");
        let (t2, r2) = record("carol");
        let (t3, r3) = record("dave");
        for r in [&r1, &r2, &r3] {
            a.create(r).await.unwrap();
        }
        for t in [&t1, &t2, &t3] {
            assert!(a.load(&t.hash()).await.unwrap().is_some(), "cached in a");
        }
        let settle = || tokio::time::sleep(Duration::from_millis(3));

        b.delete(&t1.hash()).await.unwrap();
        settle().await;
        assert!(a.load(&t1.hash()).await.unwrap().is_none(), "logout seen");

        b.set_role("carol", "admin").await.unwrap();
        settle().await;
        assert_eq!(
            a.load(&t2.hash()).await.unwrap().unwrap().role,
            "admin",
            "role seen"
        );

        b.delete_user("carol", None).await.unwrap();
        settle().await;
        assert!(
            a.load(&t2.hash()).await.unwrap().is_none(),
            "end-sessions seen"
        );
        assert!(
            a.load(&t3.hash()).await.unwrap().is_some(),
            "others untouched"
        );

        // Sweeping expired sessions and pruning the log keeps caches correct.
        a.sweep(crate::session::now_ms() + 10 * 3_600_000)
            .await
            .unwrap();
        settle().await;
        assert!(b.load(&t3.hash()).await.unwrap().is_none());
    }
}
