//! The factor tables in SQLite or PostgreSQL: one macro writes both impls
//! (both engines take `$N` placeholders), so the statements cannot drift.

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{FactorStore, FactorSummary, PasskeyRecord, TotpRecord};
use crate::session::now_ms;
use crate::user::BackendError;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS latchkey_totp (
        user_id        TEXT PRIMARY KEY,
        secret         TEXT,
        pending_secret TEXT,
        last_step      BIGINT,
        updated_at     BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS latchkey_recovery_codes (
        user_id   TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        PRIMARY KEY (user_id, code_hash)
    )",
    "CREATE TABLE IF NOT EXISTS latchkey_passkeys (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL,
        name         TEXT NOT NULL,
        data         TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        last_used_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS latchkey_passkeys_user ON latchkey_passkeys (user_id)",
];

type PasskeyRow = (String, String, String, String, i64, Option<i64>);

fn passkey_of((id, user_id, name, data, created_at, last_used_at): PasskeyRow) -> PasskeyRecord {
    PasskeyRecord {
        id,
        user_id,
        name,
        data,
        created_at,
        last_used_at,
    }
}

const TOTP_TABLES: [&str; 2] = ["latchkey_totp", "latchkey_recovery_codes"];
const ALL_TABLES: [&str; 3] = [
    "latchkey_totp",
    "latchkey_recovery_codes",
    "latchkey_passkeys",
];

macro_rules! factor_store {
    ($(#[$doc:meta])* $name:ident, $pool:ty, $db:ty, $lock:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            pool: $pool,
            ready: std::sync::Arc<OnceCell<()>>,
        }

        impl $name {
            /// Factors in the database behind `pool` (the app's own); the
            /// tables are created at first use.
            pub fn new(pool: $pool) -> Self {
                Self {
                    pool,
                    ready: Default::default(),
                }
            }

            async fn pool(&self) -> Result<&$pool, BackendError> {
                self.ready
                    .get_or_try_init(|| async {
                        let mut tx = self.pool.begin().await?;
                        if let Some(lock) = $lock {
                            // Instances starting together take turns.
                            sqlx::query(lock).execute(&mut *tx).await?;
                        }
                        for sql in SCHEMA {
                            sqlx::query(sql).execute(&mut *tx).await?;
                        }
                        tx.commit().await
                    })
                    .await
                    .map_err(|e: sqlx::Error| Box::new(e) as BackendError)?;
                Ok(&self.pool)
            }

            async fn delete_all(&self, user_id: &str, tables: &[&str]) -> Result<(), BackendError> {
                let mut tx = self.pool().await?.begin().await?;
                for table in tables {
                    let sql = format!("DELETE FROM {table} WHERE user_id = $1");
                    sqlx::query(&sql).bind(user_id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn changed<'q>(&self, q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>) -> Result<bool, BackendError> {
                Ok(q.execute(self.pool().await?).await?.rows_affected() > 0)
            }
        }

        #[async_trait]
        impl FactorStore for $name {
            async fn totp(&self, user_id: &str) -> Result<Option<TotpRecord>, BackendError> {
                let row: Option<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT secret, pending_secret, last_step FROM latchkey_totp WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_optional(self.pool().await?)
                .await?;
                Ok(row.map(|(secret, pending_secret, last_step)| TotpRecord {
                    secret,
                    pending_secret,
                    last_step,
                }))
            }

            async fn offer_totp(&self, user_id: &str, sealed: &str) -> Result<(), BackendError> {
                sqlx::query(
                    "INSERT INTO latchkey_totp (user_id, pending_secret, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) DO UPDATE SET pending_secret = excluded.pending_secret, \
                     updated_at = excluded.updated_at",
                )
                .bind(user_id)
                .bind(sealed)
                .bind(now_ms())
                .execute(self.pool().await?)
                .await?;
                Ok(())
            }

            async fn confirm_totp(&self, user_id: &str, sealed: &str, step: i64) -> Result<bool, BackendError> {
                self.changed(
                    sqlx::query(
                        "UPDATE latchkey_totp SET secret = pending_secret, pending_secret = NULL, \
                         last_step = $3, updated_at = $4 WHERE user_id = $1 AND pending_secret = $2",
                    )
                    .bind(user_id)
                    .bind(sealed)
                    .bind(step)
                    .bind(now_ms()),
                )
                .await
            }

            async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, BackendError> {
                // One statement: of two requests with one code, one moves the step.
                self.changed(
                    sqlx::query(
                        "UPDATE latchkey_totp SET last_step = $2 WHERE user_id = $1 \
                         AND secret IS NOT NULL AND (last_step IS NULL OR last_step < $2)",
                    )
                    .bind(user_id)
                    .bind(step),
                )
                .await
            }

            async fn replace_recovery_codes(&self, user_id: &str, hashes: &[String]) -> Result<(), BackendError> {
                let mut tx = self.pool().await?.begin().await?;
                sqlx::query("DELETE FROM latchkey_recovery_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                for h in hashes {
                    sqlx::query("INSERT INTO latchkey_recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                        .bind(user_id)
                        .bind(h)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn use_recovery_code(&self, user_id: &str, hash: &str) -> Result<bool, BackendError> {
                self.changed(
                    sqlx::query("DELETE FROM latchkey_recovery_codes WHERE user_id = $1 AND code_hash = $2")
                        .bind(user_id)
                        .bind(hash),
                )
                .await
            }

            async fn remove_totp(&self, user_id: &str) -> Result<(), BackendError> {
                self.delete_all(user_id, &TOTP_TABLES).await
            }

            async fn remove_factors(&self, user_id: &str) -> Result<(), BackendError> {
                self.delete_all(user_id, &ALL_TABLES).await
            }

            async fn add_passkey(&self, p: &PasskeyRecord) -> Result<bool, BackendError> {
                self.changed(
                    sqlx::query(
                        "INSERT INTO latchkey_passkeys (id, user_id, name, data, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&p.id)
                    .bind(&p.user_id)
                    .bind(&p.name)
                    .bind(&p.data)
                    .bind(p.created_at),
                )
                .await
            }

            async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>, BackendError> {
                let rows: Vec<PasskeyRow> = sqlx::query_as(
                    "SELECT id, user_id, name, data, created_at, last_used_at FROM latchkey_passkeys \
                     WHERE user_id = $1 ORDER BY created_at, id",
                )
                .bind(user_id)
                .fetch_all(self.pool().await?)
                .await?;
                Ok(rows.into_iter().map(passkey_of).collect())
            }

            async fn passkey(&self, id: &str) -> Result<Option<PasskeyRecord>, BackendError> {
                let row: Option<PasskeyRow> = sqlx::query_as(
                    "SELECT id, user_id, name, data, created_at, last_used_at FROM latchkey_passkeys WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.pool().await?)
                .await?;
                Ok(row.map(passkey_of))
            }

            async fn update_passkey(&self, id: &str, data: &str, used_at: i64) -> Result<(), BackendError> {
                self.changed(
                    sqlx::query("UPDATE latchkey_passkeys SET data = $2, last_used_at = $3 WHERE id = $1")
                        .bind(id)
                        .bind(data)
                        .bind(used_at),
                )
                .await
                .map(drop)
            }

            async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> Result<bool, BackendError> {
                self.changed(
                    sqlx::query("UPDATE latchkey_passkeys SET name = $3 WHERE user_id = $1 AND id = $2")
                        .bind(user_id)
                        .bind(id)
                        .bind(name),
                )
                .await
            }

            async fn delete_passkey(&self, user_id: &str, id: &str) -> Result<bool, BackendError> {
                self.changed(
                    sqlx::query("DELETE FROM latchkey_passkeys WHERE user_id = $1 AND id = $2")
                        .bind(user_id)
                        .bind(id),
                )
                .await
            }

            async fn summary(&self, user_id: &str) -> Result<FactorSummary, BackendError> {
                let (totp, codes, passkeys): (i64, i64, i64) = sqlx::query_as(
                    "SELECT \
                     (SELECT COUNT(*) FROM latchkey_totp WHERE user_id = $1 AND secret IS NOT NULL), \
                     (SELECT COUNT(*) FROM latchkey_recovery_codes WHERE user_id = $1), \
                     (SELECT COUNT(*) FROM latchkey_passkeys WHERE user_id = $1)",
                )
                .bind(user_id)
                .fetch_one(self.pool().await?)
                .await?;
                Ok(FactorSummary {
                    totp: totp > 0,
                    recovery_codes_left: codes.max(0) as u64,
                    passkeys: passkeys.max(0) as u64,
                })
            }
        }
    };
}

#[cfg(feature = "sqlite")]
factor_store!(
    /// Second factors in a SQLite database (the app's pool).
    SqliteFactors,
    sqlx::SqlitePool,
    sqlx::Sqlite,
    None::<&str>
);

#[cfg(feature = "postgres")]
factor_store!(
    /// Second factors in a PostgreSQL database (the app's pool).
    PostgresFactors,
    sqlx::PgPool,
    sqlx::Postgres,
    Some("SELECT pg_advisory_xact_lock(7261837203)")
);

#[cfg(test)]
mod tests {
    use super::*;

    /// What every factor store must do, whatever the engine.
    async fn behaves(f: &dyn FactorStore) {
        let u = "user-1";
        assert_eq!(f.totp(u).await.unwrap(), None);
        assert_eq!(f.summary(u).await.unwrap(), FactorSummary::default());
        f.offer_totp(u, "sealed-a").await.unwrap();
        f.offer_totp(u, "sealed-b").await.unwrap();
        assert!(
            !f.summary(u).await.unwrap().totp,
            "an offer is not a factor"
        );
        assert!(
            !f.confirm_totp(u, "sealed-a", 10).await.unwrap(),
            "only the latest offer"
        );
        assert!(
            !f.use_totp_step(u, 11).await.unwrap(),
            "nothing confirmed yet"
        );
        assert!(f.confirm_totp(u, "sealed-b", 10).await.unwrap());
        assert!(
            !f.confirm_totp(u, "sealed-b", 10).await.unwrap(),
            "confirmed once"
        );
        let r = f.totp(u).await.unwrap().unwrap();
        assert_eq!(
            (r.secret.as_deref(), r.pending_secret, r.last_step),
            (Some("sealed-b"), None, Some(10))
        );
        assert!(
            !f.use_totp_step(u, 10).await.unwrap(),
            "the confirming step is used"
        );
        assert!(!f.use_totp_step(u, 9).await.unwrap(), "older steps too");
        // Racing uses of one step: exactly one wins.
        let wins = futures_like_join(f, u, 11).await;
        assert_eq!(wins, 1);
        f.replace_recovery_codes(u, &["h1".into(), "h2".into()])
            .await
            .unwrap();
        f.replace_recovery_codes(u, &["h3".into(), "h4".into()])
            .await
            .unwrap();
        assert!(
            !f.use_recovery_code(u, "h1").await.unwrap(),
            "old codes die"
        );
        assert!(f.use_recovery_code(u, "h3").await.unwrap());
        assert!(!f.use_recovery_code(u, "h3").await.unwrap(), "once");
        assert_eq!(
            f.summary(u).await.unwrap(),
            FactorSummary {
                totp: true,
                recovery_codes_left: 1,
                passkeys: 0
            }
        );
        assert!(
            !f.use_recovery_code("user-2", "h4").await.unwrap(),
            "per user"
        );
        let pk = PasskeyRecord {
            id: "cred-1".into(),
            user_id: u.into(),
            name: "Laptop".into(),
            data: "{}".into(),
            created_at: 5,
            last_used_at: None,
        };
        assert!(f.add_passkey(&pk).await.unwrap());
        assert!(!f.add_passkey(&pk).await.unwrap(), "a credential id once");
        assert_eq!(f.passkey("cred-1").await.unwrap().as_ref(), Some(&pk));
        assert!(
            !f.rename_passkey("user-2", "cred-1", "Mine").await.unwrap(),
            "not theirs"
        );
        assert!(f.rename_passkey(u, "cred-1", "Phone").await.unwrap());
        f.update_passkey("cred-1", "{\"n\":1}", 9).await.unwrap();
        let got = &f.passkeys(u).await.unwrap()[0];
        assert_eq!(
            (got.name.as_str(), got.data.as_str(), got.last_used_at),
            ("Phone", "{\"n\":1}", Some(9))
        );
        assert_eq!(f.summary(u).await.unwrap().passkeys, 1);
        f.remove_totp(u).await.unwrap();
        assert_eq!(
            f.summary(u).await.unwrap(),
            FactorSummary {
                totp: false,
                recovery_codes_left: 0,
                passkeys: 1
            },
            "removing TOTP keeps passkeys"
        );
        assert!(!f.delete_passkey("user-2", "cred-1").await.unwrap());
        assert!(f.delete_passkey(u, "cred-1").await.unwrap());
        f.add_passkey(&pk).await.unwrap();
        f.remove_factors(u).await.unwrap();
        assert_eq!(f.summary(u).await.unwrap(), FactorSummary::default());
        assert_eq!(f.totp(u).await.unwrap(), None);
    }

    async fn futures_like_join(f: &dyn FactorStore, u: &str, step: i64) -> usize {
        let (a, b, c) = tokio::join!(
            f.use_totp_step(u, step),
            f.use_totp_step(u, step),
            f.use_totp_step(u, step)
        );
        [a.unwrap(), b.unwrap(), c.unwrap()]
            .iter()
            .filter(|w| **w)
            .count()
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_factors() {
        let path = std::env::temp_dir().join(format!(
            "latchkey-factors-{}.db",
            hex::encode(crate::session::random_bytes::<6>())
        ));
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        behaves(&SqliteFactors::new(pool)).await;
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn postgres_factors() {
        let Some(url) = crate::store::suite::postgres_url().await else {
            return;
        };
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        behaves(&PostgresFactors::new(pool)).await;
    }
}
