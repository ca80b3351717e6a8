//! SQLite store: the default; one file, survives restarts, shared by every
//! process that opens the same file (WAL mode).
//!
//! The hot path does not query SQLite. Each process keeps a cache of the
//! sessions it has seen, and SQLite triggers log every session that ends or
//! changes role to `latchkey_revocations` — whoever makes the change: this
//! process, another `serve`, or the `latchkey user` CLI. Before answering
//! from the cache, a request checks (at most once a millisecond) whether
//! anyone committed since the last look — `PRAGMA data_version` on a
//! connection of the cache's own — and, if so, reads the new log rows once
//! and evicts what they name. Revocation therefore takes effect on the next
//! request (give or take that millisecond), in every process.
//!
//! Why not the files' (length, mtime, inode), which this used to compare:
//! after a WAL restart only the mtime changes, and kernels before 6.13 stamp
//! it with a coarse clock, so two commits in one tick looked identical and
//! another process's revocation could stay unseen.

#[cfg(test)]
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};

use super::sql::{session_columns, sql_store_impl, sql_ticket_impl};
use super::{CounterStore, SessionStore, StoreError};
use crate::session::{now_ms, SessionRecord, TokenHash};

const SCHEMA: &str = include_str!("../../schema/sqlite.sql");

/// How stale the "has anyone committed?" answer may be.
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
    label: String,
    cache: Arc<SessionCache>,
}

struct SessionCache {
    entries: super::cache::SessionCache,
    #[cfg(test)]
    db: PathBuf,
    #[cfg(test)]
    wal: PathBuf,
    started: Instant,
    /// Micros since `started` at which the last completed check began.
    checked_at: AtomicU64,
    /// The log reader, one check at a time; latecomers find the work done.
    /// A connection of its own: requests wait on that read, so it must not
    /// queue behind writes (a login storm holding the main pool pushed GET
    /// p99 to 11x in bench/run.sh), and `data_version` is per connection.
    reader: tokio::sync::Mutex<Option<LogReader>>,
    /// The sweep's own low-priority connection (see `low_priority_connection`).
    /// With the pace its priority allows (it rests if it could not be lowered).
    sweeper: tokio::sync::Mutex<Option<(SqliteConnection, super::sql::SweepPace)>>,
    /// How to (re)open the reader.
    options: SqliteConnectOptions,
    /// Highest revocation log row applied to `entries`.
    last_seq: Mutex<i64>,
    /// Tests park `touch` here between its read and its write-back.
    #[cfg(test)]
    touch_pause: Mutex<Option<TouchPause>>,
}

#[cfg(test)]
type TouchPause = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

/// Columns added since 0.1 (`user_version`) and 0.2 (`data`); SQLite has
/// no `ADD COLUMN IF NOT EXISTS`, so look first. The schema's trigger on
/// `data` may predate the column: SQLite resolves it only when it fires.
async fn add_new_columns(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    for (column, decl) in [
        ("user_version", "INTEGER NOT NULL DEFAULT 0"),
        ("data", "TEXT"),
    ] {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pragma_table_info('latchkey_sessions') WHERE name = $1",
        )
        .bind(column)
        .fetch_one(pool)
        .await?;
        if n == 0 {
            sqlx::query(&format!(
                "ALTER TABLE latchkey_sessions ADD COLUMN {column} {decl}"
            ))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

struct LogReader {
    conn: SqliteConnection,
    /// `PRAGMA data_version` when the log was last read on `conn`: it
    /// changes on every commit by any other connection, this process's
    /// pool and other processes alike. `None` until the first read on a
    /// (re)opened connection, whose values say nothing about the old one's.
    seen: Option<i64>,
}

impl SessionCache {
    fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn last_seq(&self) -> std::sync::MutexGuard<'_, i64> {
        self.last_seq.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `sqlite://PATH` and its
    /// tables, with a pool of its own (WAL mode, up to 8 connections).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the URL does not parse, the file
    /// cannot be opened or created, or the tables cannot be made.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // A fresh file opened by several connections at once (the pool's
        // first ones, the log reader) can answer "database is locked" while
        // one of them switches it to WAL: a start-up race, not an outage.
        let mut tries = 0;
        loop {
            match Self::open_once(url).await {
                Err(StoreError::Unavailable { reason, .. })
                    if tries < 10 && reason.contains("database is locked") =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * tries)).await;
                }
                done => return done,
            }
        }
    }

    async fn open_once(url: &str) -> Result<Self, StoreError> {
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
        Self::with_pool(pool, options, label).await
    }

    /// A store on the app's own pool: the sessions live in the app's
    /// database, next to its tables. Creates latchkey's tables if missing
    /// (as [`migrate`](Self::migrate) does), and opens one more connection
    /// from the pool's options, outside the pool: the per-process session
    /// cache's log reader, which must not queue behind the app's queries.
    ///
    /// Give the pool a busy timeout if other connections or processes
    /// write to the same file (sqlx's default is 5 s); WAL mode
    /// (`journal_mode(Wal)`) lets readers and the writer run at once.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::SqlitePool::connect("sqlite://app.db?mode=rwc").await?;
    /// let store = latchkey::store::SqliteStore::from_pool(pool).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the tables cannot be made or the
    /// reader connection cannot be opened.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::clone(&pool.connect_options());
        let label = format!("sqlite {}", options.get_filename().display());
        Self::with_pool(pool, options, label).await
    }

    /// Creates latchkey's tables, triggers and indexes if missing and
    /// upgrades those an older version made. Idempotent; [`open`](Self::open)
    /// and [`from_pool`](Self::from_pool) already run it, so call it only to
    /// bring a database up to date on your own schedule.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when a statement fails (the database is
    /// read-only, locked past the busy timeout, or unreachable).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let run = async {
            sqlx::raw_sql(SCHEMA).execute(&self.pool).await?;
            add_new_columns(&self.pool).await
        };
        run.await.map_err(|e| StoreError::Unavailable {
            store: self.label.clone(),
            reason: e.to_string(),
        })
    }

    /// The store around `pool`: its tables made, the cache's log reader
    /// opened from `options` and positioned at the end of the log.
    async fn with_pool(
        pool: SqlitePool,
        options: SqliteConnectOptions,
        label: String,
    ) -> Result<Self, StoreError> {
        #[cfg(test)]
        let (db, wal) = {
            let db = options.get_filename().to_path_buf();
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            (db, PathBuf::from(wal))
        };
        let cache = Arc::new(SessionCache {
            entries: super::cache::SessionCache::new(),
            #[cfg(test)]
            db,
            #[cfg(test)]
            wal,
            started: Instant::now(),
            checked_at: AtomicU64::new(0),
            reader: tokio::sync::Mutex::new(None),
            sweeper: tokio::sync::Mutex::new(None),
            options,
            last_seq: Mutex::new(0),
            #[cfg(test)]
            touch_pause: Mutex::new(None),
        });
        let store = Self { pool, label, cache };
        store.migrate().await?;
        let mut reader = store.cache.reader.lock().await;
        let r = store.reader(&mut reader).await?;
        let last_seq = store.max_seq(&mut r.conn).await;
        let last_seq = store.keep_reader(&mut reader, last_seq)?;
        // Nothing is cached yet: the log so far needs no reading.
        *store.cache.last_seq() = last_seq;
        drop(reader);
        Ok(store)
    }

    async fn pool(&self) -> Result<SqlitePool, sqlx::Error> {
        Ok(self.pool.clone())
    }

    /// A connection whose SQLite thread runs at the lowest priority (nice
    /// 19), for the sweep: its deletes then give way to requests on a busy
    /// core. sqlx runs each connection on a thread it starts while
    /// connecting, and a new thread inherits its creator's priority, so
    /// the connecting is done from a thread lowered for the purpose.
    /// Also says how the sweep must pace itself on it: resting, if the
    /// lowering failed.
    async fn low_priority_connection(
        &self,
    ) -> Result<(SqliteConnection, super::sql::SweepPace), StoreError> {
        let fail = |e: String| StoreError::Unavailable {
            store: self.label.clone(),
            reason: e,
        };
        let options = self.cache.options.clone();
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("latchkey-sweep-connect".into())
            .spawn(move || {
                let lowered = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                );
                if let Err(e) = &lowered {
                    tracing::debug!(error = ?e, "could not lower the sweep's priority; it paces itself instead");
                }
                let pace = match lowered {
                    Ok(()) => super::sql::SweepPace::Lowered,
                    Err(_) => super::sql::SweepPace::Resting,
                };
                let _ = tx.send(runtime.block_on(options.connect()).map(|c| (c, pace)));
            })
            .map_err(|e| fail(e.to_string()))?;
        let connected = rx.await.map_err(|e| fail(e.to_string()))?;
        connected.map_err(|e| fail(e.to_string()))
    }

    /// The open log reader, (re)connecting if the last one failed.
    async fn reader<'a>(
        &self,
        slot: &'a mut Option<LogReader>,
    ) -> Result<&'a mut LogReader, StoreError> {
        if slot.is_none() {
            let conn = self.run(self.cache.options.connect()).await?;
            *slot = Some(LogReader { conn, seen: None });
        }
        Ok(slot.as_mut().expect("just opened"))
    }

    /// Passes `result` on; on an error drops the reader (a timed-out query
    /// may leave it mid-statement), so the next check opens a fresh one.
    fn keep_reader<T>(
        &self,
        slot: &mut Option<LogReader>,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if result.is_err() {
            *slot = None;
        }
        result
    }

    /// The highest revocation sequence number ever handed out.
    async fn max_seq(&self, conn: &mut SqliteConnection) -> Result<i64, StoreError> {
        self.run(async {
            let row = sqlx::query(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'latchkey_revocations'), 0) AS seq",
            )
            .fetch_one(&mut *conn)
            .await?;
            row.try_get::<i64, _>("seq")
        })
        .await
    }

    /// Makes the cache reflect every revocation committed before this call
    /// (give or take [`RECHECK_EVERY`]).
    async fn freshen(&self) -> Result<(), StoreError> {
        self.sync(false).await
    }

    /// [`Self::freshen`] without the [`RECHECK_EVERY`] slack: after this
    /// process's own change, so its next request sees it for sure.
    async fn force_freshen(&self) -> Result<(), StoreError> {
        self.sync(true).await
    }

    async fn sync(&self, force: bool) -> Result<(), StoreError> {
        let c = &self.cache;
        let arrived = c.micros();
        let recent = |checked: u64| {
            if force {
                // Only a check that began after this call covers it.
                checked > arrived
            } else {
                arrived.saturating_sub(checked) < RECHECK_EVERY.as_micros() as u64
            }
        };
        // The hot path: one atomic load.
        if recent(c.checked_at.load(Ordering::Acquire)) {
            return Ok(());
        }
        let mut slot = c.reader.lock().await;
        if recent(c.checked_at.load(Ordering::Acquire)) {
            return Ok(());
        }
        let began = c.micros();
        let result = self.read_log(&mut slot).await;
        self.keep_reader(&mut slot, result)?;
        c.checked_at.fetch_max(began, Ordering::AcqRel);
        Ok(())
    }

    /// One check, under the reader lock: if anyone committed since the last
    /// one, applies the new revocation log rows.
    async fn read_log(&self, slot: &mut Option<LogReader>) -> Result<(), StoreError> {
        let c = &self.cache;
        let reader = self.reader(slot).await?;
        // Read before the log, so a commit landing in between is seen
        // again next time rather than missed.
        let version: i64 = self
            .run(async {
                sqlx::query_scalar("PRAGMA data_version")
                    .fetch_one(&mut reader.conn)
                    .await
            })
            .await?;
        if reader.seen == Some(version) {
            return Ok(());
        }
        let last_seq = *c.last_seq();
        let rows = self
            .run(async {
                sqlx::query("SELECT seq, token_hash FROM latchkey_revocations WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(last_seq)
                    .bind(MAX_SYNC_ROWS + 1)
                    .fetch_all(&mut reader.conn)
                    .await
            })
            .await?;
        let max_seq = self.max_seq(&mut reader.conn).await?;
        let first = rows.first().and_then(|r| r.try_get::<i64, _>("seq").ok());
        let gap = match first {
            Some(seq) => seq != last_seq + 1,
            None => max_seq > last_seq,
        };
        let new_last = if gap || rows.len() as i64 > MAX_SYNC_ROWS {
            // Fell behind the pruned log or too much changed: start afresh.
            c.entries.clear();
            max_seq
        } else {
            let mut last = last_seq;
            for row in &rows {
                let hash: Vec<u8> = row.try_get("token_hash").unwrap_or_default();
                if let Ok(h) = <[u8; 32]>::try_from(hash.as_slice()) {
                    c.entries.evict(&TokenHash(h));
                }
                last = row.try_get("seq").unwrap_or(last);
            }
            last
        };
        *c.last_seq() = new_last;
        reader.seen = Some(version);
        Ok(())
    }
}

sql_store_impl!(SqliteStore, SqliteRow, SqliteConnection);
sql_ticket_impl!(SqliteStore);

/// Revocations: plain statements, since the triggers log them for every
/// process (PostgreSQL's announce themselves in the statement instead).
impl SqliteStore {
    async fn db_update(&self, r: &SessionRecord) -> Result<bool, StoreError> {
        self.run(async {
            let done = sqlx::query("UPDATE latchkey_sessions SET data = $2 WHERE token_hash = $1")
                .bind(r.key().0.to_vec())
                .bind(r.data.as_deref())
                .execute(&self.pool().await?)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn db_delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("DELETE FROM latchkey_sessions WHERE token_hash = $1")
                .bind(key.0.to_vec())
                .execute(&self.pool().await?)
                .await?;
            Ok(())
        })
        .await
    }

    async fn db_delete_user(
        &self,
        user_id: &str,
        keep: Option<&TokenHash>,
    ) -> Result<u64, StoreError> {
        let keep = keep.map(|k| k.0.to_vec()).unwrap_or_default();
        self.run(async {
            let done = sqlx::query(
                "DELETE FROM latchkey_sessions WHERE user_id = $1 AND token_hash <> $2",
            )
            .bind(user_id)
            .bind(keep)
            .execute(&self.pool().await?)
            .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn db_set_role(&self, user_id: &str, role: &str) -> Result<(), StoreError> {
        self.run(async {
            sqlx::query("UPDATE latchkey_sessions SET role = $2 WHERE user_id = $1")
                .bind(user_id)
                .bind(role)
                .execute(&self.pool().await?)
                .await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.db_create(record).await?;
        self.cache
            .entries
            .insert_new(record.key(), Arc::new(record.clone()));
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
        let generation = self.cache.entries.generation();
        let found = self.db_load(key).await?;
        match &found {
            Some(r) => self
                .cache
                .entries
                .insert_unless_evicted(*key, r.clone(), generation),
            None => self.cache.entries.evict(key),
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
        // Read before the entry: an eviction between the two must stop the
        // write-back, or a revoked session would be cached again.
        let generation = self.cache.entries.generation();
        if let Some(hit) = self.cache.entries.get(key) {
            let mut r = SessionRecord::clone(&hit);
            r.last_seen_at = last_seen_at;
            r.expires_at = expires_at;
            #[cfg(test)]
            {
                let pause = self.cache.touch_pause.lock().unwrap().take();
                if let Some((parked, resume)) = pause {
                    let _ = parked.send(());
                    let _ = resume.await;
                }
            }
            self.cache
                .entries
                .insert_unless_evicted(*key, Arc::new(r), generation);
        }
        Ok(())
    }

    async fn update(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        // Evicted like a revocation (the trigger logs it for other
        // processes): the next load reads the new data from the database.
        let key = record.key();
        self.cache
            .entries
            .evicting(&key, self.db_update(record))
            .await
    }

    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        self.cache.entries.evicting(key, self.db_delete(key)).await
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
        let mut slot = self.cache.sweeper.lock().await;
        if slot.is_none() {
            *slot = Some(self.low_priority_connection().await?);
        }
        let (conn, pace) = slot.as_mut().expect("just opened");
        let swept = self.db_sweep(Some(conn), *pace, now).await;
        if swept.is_err() {
            *slot = None; // a timed-out statement may leave it mid-way
        }
        let n = swept?;
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

/// Connection options every latchkey SQLite pool uses: WAL so readers never
/// wait on the writer, and a busy timeout so two processes can share a file.
pub(super) fn connect_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
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

    /// A pool as an app makes it: sqlx's defaults (no WAL, no minimum).
    async fn app_pool(url: &str) -> sqlx::SqlitePool {
        let options = url
            .parse::<super::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        sqlx::SqlitePool::connect_with(options).await.unwrap()
    }

    /// The same suite on a pool the app made.
    mod from_pool {
        crate::store::suite::store_suite!(async {
            let url = super::fresh().await.1;
            Some(
                crate::store::SqliteStore::from_pool(super::app_pool(&url).await)
                    .await
                    .unwrap(),
            )
        });
    }

    /// A store on the app's pool shares the file with a server's own
    /// store: each sees the other's revocations, and `migrate` again is
    /// harmless.
    #[tokio::test]
    async fn a_store_on_the_apps_pool_sees_revocations_by_another() {
        let (a, url) = fresh().await;
        let b = super::SqliteStore::from_pool(app_pool(&url).await)
            .await
            .unwrap();
        b.migrate().await.unwrap();
        let (t1, r1) = record("hana");
        let (t2, r2) = record("ivan");
        a.create(&r1).await.unwrap();
        b.create(&r2).await.unwrap();
        assert!(b.load(&t1.hash()).await.unwrap().is_some());
        assert!(a.load(&t2.hash()).await.unwrap().is_some());
        a.delete_user("hana", None).await.unwrap();
        b.delete(&t2.hash()).await.unwrap();
        tokio::time::sleep(super::RECHECK_EVERY * 3).await;
        assert!(b.load(&t1.hash()).await.unwrap().is_none(), "b saw a's");
        assert!(a.load(&t2.hash()).await.unwrap().is_none(), "a saw b's");
    }

    /// The sweep's deletes run on a SQLite thread at nice 19 (Linux: each
    /// thread's nice value is field 19 of /proc/self/task/TID/stat).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_sweep_runs_at_the_lowest_priority() {
        let (s, _) = fresh().await;
        let (_, mut rec) = record("old");
        rec.expires_at = 1;
        s.create(&rec).await.unwrap();
        assert_eq!(s.sweep(super::now_ms()).await.unwrap(), 1);
        let nice_of_sqlite_threads = || -> Vec<i64> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| {
                    let dir = t.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                    if !comm.starts_with("sqlx-sqlite") {
                        return None;
                    }
                    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                    // Fields after the ")" that ends the name; nice is the 19th field.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(16)?.parse().ok()
                })
                .collect()
        };
        let nice = nice_of_sqlite_threads();
        assert!(nice.contains(&19), "a SQLite thread at nice 19: {nice:?}");
        assert!(nice.contains(&0), "the others at normal priority: {nice:?}");
    }

    /// Session data set by another process reaches this one's cache too
    /// (the data trigger logs the change like a revocation); a 0.1-era
    /// table without the column is upgraded by `migrate`.
    #[tokio::test]
    async fn data_set_by_another_process_is_seen_and_old_tables_upgrade() {
        let (a, url) = fresh().await;
        let b = super::SqliteStore::open(&url).await.unwrap();
        let (tok, mut rec) = record("kai");
        a.create(&rec).await.unwrap();
        assert_eq!(a.load(&tok.hash()).await.unwrap().unwrap().data, None);
        rec.data = Some("[1]".into());
        assert!(b.update(&rec).await.unwrap());
        tokio::time::sleep(super::RECHECK_EVERY * 3).await;
        let seen = a.load(&tok.hash()).await.unwrap().unwrap();
        assert_eq!(seen.data.as_deref(), Some("[1]"), "a's cache saw b's data");

        // A database from before the column, opened by this version (a
        // store of its own: pools cache statements of the old shape).
        drop((a, b));
        let pool = app_pool(&url).await;
        sqlx::raw_sql(
            "DROP TRIGGER latchkey_sessions_data_changed; \
             ALTER TABLE latchkey_sessions DROP COLUMN data",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let c = super::SqliteStore::open(&url).await.unwrap();
        assert_eq!(c.load(&tok.hash()).await.unwrap().unwrap().data, None);
        rec.data = Some("[2]".into());
        assert!(c.update(&rec).await.unwrap());
        assert_eq!(
            c.load(&tok.hash()).await.unwrap().unwrap().data.as_deref(),
            Some("[2]")
        );
    }

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
            a.load(&t2.hash()).await.unwrap().unwrap().role.as_ref(),
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

    /// Sets `path`'s modification time back to `to` (if both exist).
    fn set_mtime(path: &std::path::Path, to: Option<std::time::SystemTime>) {
        if let (Some(t), Ok(f)) = (to, std::fs::File::options().write(true).open(path)) {
            f.set_modified(t).unwrap();
        }
    }

    fn mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
        std::fs::metadata(path).ok()?.modified().ok()
    }

    /// A revocation by another process is seen by the very next load after
    /// the recheck interval, however the files look. Kernels before 6.13
    /// stamp files with a coarse clock, so two commits in one tick leave
    /// the same mtime; here each round puts the old mtimes back to make
    /// that the rule, and after a WAL restart (the WAL is rewritten from
    /// its start, not grown) length and inode stay the same too.
    #[tokio::test]
    async fn every_revocation_by_another_process_is_seen_on_the_next_load() {
        let (a, url) = fresh().await;
        let b = super::SqliteStore::open(&url).await.unwrap();
        let db = a.cache.db.clone();
        let wal = a.cache.wal.clone();
        // Grow the WAL, then have the next writer restart it from the top.
        for _ in 0..200 {
            b.create(&record("filler").1).await.unwrap();
        }
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(&b.pool)
            .await
            .unwrap();
        for round in 0..300 {
            let (t, r) = record("erin");
            b.create(&r).await.unwrap();
            tokio::time::sleep(super::RECHECK_EVERY * 2).await;
            assert!(a.load(&t.hash()).await.unwrap().is_some(), "round {round}");
            assert!(
                a.load(&t.hash()).await.unwrap().is_some(),
                "round {round}: cached"
            );
            let (wal_t, db_t) = (mtime(&wal), mtime(&db));
            b.delete(&t.hash()).await.unwrap();
            set_mtime(&wal, wal_t);
            set_mtime(&db, db_t);
            tokio::time::sleep(super::RECHECK_EVERY * 2).await;
            assert!(
                a.load(&t.hash()).await.unwrap().is_none(),
                "round {round}: a still serves a session b deleted"
            );
        }
    }

    /// A touch that read the cached record before a revocation was applied
    /// must not write it back after: the session would be served again,
    /// with no log row left to evict it.
    #[tokio::test]
    async fn a_touch_racing_a_revocation_does_not_cache_the_session_again() {
        let (a, url) = fresh().await;
        let b = super::SqliteStore::open(&url).await.unwrap();
        let (t, r) = record("frank");
        a.create(&r).await.unwrap();
        assert!(a.load(&t.hash()).await.unwrap().is_some());

        let (parked_tx, parked) = tokio::sync::oneshot::channel();
        let (resume, resume_rx) = tokio::sync::oneshot::channel();
        *a.cache.touch_pause.lock().unwrap() = Some((parked_tx, resume_rx));
        let toucher = {
            let a = a.clone();
            let key = t.hash();
            tokio::spawn(async move { a.touch(&key, r.last_seen_at + 1, r.expires_at + 1).await })
        };
        // The touch holds the cached record; now another process logs the
        // session out and this one applies the revocation.
        parked.await.unwrap();
        b.delete(&t.hash()).await.unwrap();
        tokio::time::sleep(super::RECHECK_EVERY * 2).await;
        assert!(
            a.load(&t.hash()).await.unwrap().is_none(),
            "revocation seen"
        );
        resume.send(()).unwrap();
        toucher.await.unwrap().unwrap();
        assert!(
            a.cache.entries.get(&t.hash()).is_none(),
            "the touch put the revoked session back in the cache"
        );
        assert!(a.load(&t.hash()).await.unwrap().is_none());
    }

    /// The same race left to the scheduler: touches and a logout from
    /// another process at once, many times over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn touches_and_deletes_at_once_never_resurrect_a_session() {
        let (a, url) = fresh().await;
        let b = super::SqliteStore::open(&url).await.unwrap();
        for round in 0..100 {
            let (t, r) = record("gina");
            a.create(&r).await.unwrap();
            let key = t.hash();
            let touches = (0..4).map(|i| {
                let a = a.clone();
                tokio::spawn(async move {
                    a.load(&key).await.unwrap();
                    a.touch(&key, r.last_seen_at + i, r.expires_at + i).await
                })
            });
            let touches: Vec<_> = touches.collect();
            b.delete(&key).await.unwrap();
            for h in touches {
                h.await.unwrap().unwrap();
            }
            tokio::time::sleep(super::RECHECK_EVERY * 2).await;
            assert!(a.load(&key).await.unwrap().is_none(), "round {round}");
        }
    }
}
