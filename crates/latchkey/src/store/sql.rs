//! The SQL shared by the SQLite and PostgreSQL stores. Both accept `$N`
//! placeholders, so one macro writes both impls and the queries cannot drift.

/// The sweep deletes in batches sized so each takes about
/// [`SWEEP_BURST`]: a batch runs on a database thread that shares the core
/// with requests, and a request that arrives mid-batch waits for it. With
/// fixed 500-row batches and 5 ms rests a 1M-row SQLite sweep pushed GET p99
/// to 7.8× (bench/scale.sh); 200-row batches resting 4× still gave 4.0×.
pub(super) const SWEEP_BURST: std::time::Duration = std::time::Duration::from_millis(1);
/// How a sweep paces its batches.
#[derive(Clone, Copy)]
// Each store builds only its own variants.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(super) enum SweepPace {
    /// SQLite at nice 19: batches of about [`SWEEP_BURST`], no rests. The
    /// scheduler gives the thread only what requests leave; a rest
    /// measured in wall time would stretch with every wait for the CPU
    /// (a 1M-row sweep under load crawled at ~100 rows/s that way).
    Lowered,
    /// SQLite whose thread could not be lowered: batches of about
    /// [`SWEEP_BURST`], each followed by a rest four times as long, so it
    /// takes at most a fifth of the core.
    Resting,
    /// PostgreSQL: 200 rows, then 10 ms. Its work runs in the database's
    /// processes, where a batch's wall time says little about the cost to
    /// requests, and the resting pacing crawled (1M rows in 1109 s, GET
    /// p99 3.21 → 8.62 ms). This one: 1M rows in 69 s, GET p99 0.96 →
    /// 4.66 ms; 500 rows per 5 ms took 21 s at 0.74 → 5.82 ms
    /// (bench/scale.sh, PostgreSQL unpinned on the server's machine).
    Fixed,
}

/// The columns a session is read from, named (not `*`): a prepared
/// statement keeps its shape when a migration adds a column under it.
macro_rules! session_columns {
    () => {
        "token_hash, id, user_id, username, role, created_at, last_seen_at, expires_at, \
         user_agent, ip, csrf_secret, user_version, data"
    };
}

macro_rules! sql_store_impl {
    ($store:ty, $row:ty, $conn:ty) => {
        fn record_from_row(row: &$row) -> Result<SessionRecord, sqlx::Error> {
            use sqlx::Row;
            let hash: Vec<u8> = row.try_get("token_hash")?;
            let token_hash = <[u8; 32]>::try_from(hash.as_slice())
                .map(crate::session::TokenHash)
                .map_err(|_| sqlx::Error::Decode("token_hash is not 32 bytes".into()))?;
            let text = |col: &str| row.try_get::<&str, _>(col);
            Ok(SessionRecord {
                id: crate::session::SessionId::parse(text("id")?)
                    .ok_or_else(|| sqlx::Error::Decode("id is not 32 hex digits".into()))?,
                token_hash: Some(token_hash),
                user_id: text("user_id")?.into(),
                username: text("username")?.into(),
                role: text("role")?.into(),
                created_at: row.try_get("created_at")?,
                last_seen_at: row.try_get("last_seen_at")?,
                expires_at: row.try_get("expires_at")?,
                user_agent: text("user_agent")?.into(),
                ip: text("ip")?.parse().ok(),
                csrf_secret: crate::session::CsrfSecret::from_form_token(text("csrf_secret")?)
                    .ok_or_else(|| sqlx::Error::Decode("csrf_secret is not a form token".into()))?,
                user_version: row.try_get::<i64, _>("user_version")?.max(0) as u64,
                data: row.try_get::<Option<&str>, _>("data")?.map(Into::into),
            })
        }

        /// The plain SQL operations; the `SessionStore` impl decides how
        /// they combine with caching.
        impl $store {
            /// Runs one database operation under the store's time bound,
            /// naming the store in any error.
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

            async fn db_create(&self, r: &SessionRecord) -> Result<(), StoreError> {
                self.run(async {
                    sqlx::query(
                        "INSERT INTO latchkey_sessions (token_hash, id, user_id, username, role, \
                         created_at, last_seen_at, expires_at, user_agent, ip, csrf_secret, user_version, data) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(r.key().0.to_vec())
                    .bind(r.id.to_string())
                    .bind(&*r.user_id)
                    .bind(&*r.username)
                    .bind(&*r.role)
                    .bind(r.created_at)
                    .bind(r.last_seen_at)
                    .bind(r.expires_at)
                    .bind(&*r.user_agent)
                    .bind(r.ip_text())
                    .bind(r.csrf_secret.form_token())
                    .bind(r.user_version.min(i64::MAX as u64) as i64)
                    .bind(r.data.as_deref())
                    .execute(&self.pool().await?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn db_load(&self, key: &TokenHash) -> Result<Option<std::sync::Arc<SessionRecord>>, StoreError> {
                self.run(async {
                    let row = sqlx::query(concat!("SELECT ", session_columns!(), " FROM latchkey_sessions WHERE token_hash = $1"))
                        .bind(key.0.to_vec())
                        .fetch_optional(&self.pool().await?)
                        .await?;
                    Ok(row.as_ref().map(record_from_row).transpose()?.map(std::sync::Arc::new))
                })
                .await
            }

            async fn db_touch(&self, key: &TokenHash, last_seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
                self.run(async {
                    sqlx::query(
                        "UPDATE latchkey_sessions SET last_seen_at = $2, expires_at = $3 WHERE token_hash = $1",
                    )
                    .bind(key.0.to_vec())
                    .bind(last_seen_at)
                    .bind(expires_at)
                    .execute(&self.pool().await?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn db_list_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
                self.run(async {
                    let rows = sqlx::query(
                        concat!("SELECT ", session_columns!(), " FROM latchkey_sessions WHERE user_id = $1 ORDER BY created_at"),
                    )
                    .bind(user_id)
                    .fetch_all(&self.pool().await?)
                    .await?;
                    rows.iter().map(record_from_row).collect()
                })
                .await
            }

            /// Deletes expired sessions in batches paced by `pace`, on
            /// `conn` when given (SQLite's low-priority one), else each
            /// statement on a pool connection, so none is held through the
            /// rests.
            async fn db_sweep(&self, mut conn: Option<&mut $conn>, pace: super::sql::SweepPace, now: i64) -> Result<u64, StoreError> {
                use super::sql::SweepPace;
                let mut total = 0;
                let mut batch: i64 = if matches!(pace, SweepPace::Fixed) { 200 } else { 100 };
                loop {
                    let started = std::time::Instant::now();
                    let n = self
                        .run(async {
                            let q = sqlx::query(
                                "DELETE FROM latchkey_sessions WHERE token_hash IN \
                                 (SELECT token_hash FROM latchkey_sessions WHERE expires_at < $1 LIMIT $2)",
                            )
                            .bind(now)
                            .bind(batch);
                            let done = match conn.as_deref_mut() {
                                Some(c) => q.execute(c).await?,
                                None => q.execute(&self.pool().await?).await?,
                            };
                            Ok(done.rows_affected())
                        })
                        .await?;
                    total += n;
                    if n < batch as u64 {
                        break;
                    }
                    let took = started.elapsed();
                    if !matches!(pace, SweepPace::Fixed) {
                        if took > 2 * super::sql::SWEEP_BURST {
                            batch = (batch / 2).max(10);
                        } else if took < super::sql::SWEEP_BURST / 2 {
                            batch = (batch * 2).min(2000);
                        }
                    }
                    let rest = match pace {
                        SweepPace::Lowered => std::time::Duration::ZERO,
                        SweepPace::Resting => (took * 4).max(std::time::Duration::from_millis(5)),
                        SweepPace::Fixed => std::time::Duration::from_millis(10),
                    };
                    if rest.is_zero() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(rest).await;
                    }
                }
                for table in ["latchkey_counters", "latchkey_tickets"] {
                    self.run(async {
                        let sql = format!("DELETE FROM {table} WHERE expires_at < $1");
                        let q = sqlx::query(&sql).bind(now);
                        match conn.as_deref_mut() {
                            Some(c) => q.execute(c).await?,
                            None => q.execute(&self.pool().await?).await?,
                        };
                        Ok(())
                    })
                    .await?;
                }
                Ok(total)
            }

            async fn db_ping(&self) -> Result<(), StoreError> {
                self.run(async {
                    sqlx::query("SELECT 1").execute(&self.pool().await?).await?;
                    Ok(())
                })
                .await
            }
        }

        #[async_trait::async_trait]
        impl CounterStore for $store {
            async fn hit(&self, key: &str, window: Duration, slide: bool) -> Result<(u64, i64), StoreError> {
                let now = now_ms();
                let until = now + crate::session::ms(window);
                self.run(async {
                    use sqlx::Row;
                    let row = sqlx::query(
                        "INSERT INTO latchkey_counters (key, count, expires_at) VALUES ($1, 1, $2) \
                         ON CONFLICT (key) DO UPDATE SET \
                         count = CASE WHEN latchkey_counters.expires_at <= $3 THEN 1 \
                                      ELSE latchkey_counters.count + 1 END, \
                         expires_at = CASE WHEN latchkey_counters.expires_at <= $3 OR $4 THEN $2 \
                                      ELSE latchkey_counters.expires_at END \
                         RETURNING count, expires_at",
                    )
                    .bind(key)
                    .bind(until)
                    .bind(now)
                    .bind(slide)
                    .fetch_one(&self.pool().await?)
                    .await?;
                    let count: i64 = row.try_get("count")?;
                    let expires_at: i64 = row.try_get("expires_at")?;
                    Ok((count.max(0) as u64, expires_at - now))
                })
                .await
            }

            async fn peek(&self, key: &str) -> Result<Option<(u64, i64)>, StoreError> {
                let now = now_ms();
                self.run(async {
                    use sqlx::Row;
                    let row = sqlx::query(
                        "SELECT count, expires_at FROM latchkey_counters WHERE key = $1 AND expires_at > $2",
                    )
                    .bind(key)
                    .bind(now)
                    .fetch_optional(&self.pool().await?)
                    .await?;
                    row.map(|r| {
                        let count: i64 = r.try_get("count")?;
                        let expires_at: i64 = r.try_get("expires_at")?;
                        Ok((count.max(0) as u64, expires_at - now))
                    })
                    .transpose()
                })
                .await
            }

            async fn reset(&self, key: &str) -> Result<(), StoreError> {
                self.run(async {
                    sqlx::query("DELETE FROM latchkey_counters WHERE key = $1")
                        .bind(key)
                        .execute(&self.pool().await?)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn release(&self, key: &str) -> Result<(), StoreError> {
                let now = now_ms();
                self.run(async {
                    sqlx::query(
                        "UPDATE latchkey_counters SET count = count - 1 \
                         WHERE key = $1 AND count > 0 AND expires_at > $2",
                    )
                    .bind(key)
                    .bind(now)
                    .execute(&self.pool().await?)
                    .await?;
                    Ok(())
                })
                .await
            }
        }
    };
}

/// The tickets table, the same on both engines.
macro_rules! sql_ticket_impl {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl super::TicketStore for $store {
            async fn put_ticket(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
                let expires_at = now_ms() + crate::session::ms(ttl);
                self.run(async {
                    sqlx::query(
                        "INSERT INTO latchkey_tickets (key, value, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    )
                    .bind(key)
                    .bind(value)
                    .bind(expires_at)
                    .execute(&self.pool().await?)
                    .await?;
                    Ok(())
                })
                .await
            }

            async fn get_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
                let now = now_ms();
                self.run(async {
                    sqlx::query_scalar("SELECT value FROM latchkey_tickets WHERE key = $1 AND expires_at > $2")
                        .bind(key)
                        .bind(now)
                        .fetch_optional(&self.pool().await?)
                        .await
                })
                .await
            }

            async fn take_ticket(&self, key: &str) -> Result<Option<String>, StoreError> {
                let now = now_ms();
                // One statement: racing takers serialise on the row, and
                // only the one whose DELETE removed it gets the value.
                let value: Option<(String, i64)> = self
                    .run(async {
                        sqlx::query_as("DELETE FROM latchkey_tickets WHERE key = $1 RETURNING value, expires_at")
                            .bind(key)
                            .fetch_optional(&self.pool().await?)
                            .await
                    })
                    .await?;
                Ok(value.filter(|(_, exp)| *exp > now).map(|(v, _)| v))
            }
        }
    };
}

pub(super) use {session_columns, sql_store_impl, sql_ticket_impl};
