//! The durable mail queue: table `latchkey_mail` in the users database.
//! A row is one mail, its body sealed ([`Seal`]); it is claimed by one
//! sender at a time for a lease, and deleted once the SMTP server took it.

use latchkey::mail::Mail;
use lettre::message::Mailbox;
use sqlx::{AnyPool, Row};
use tokio::sync::OnceCell;

use super::render::Body;
use super::seal::Seal;
use crate::users::Users;

/// How long one enqueue may wait for the database: a request enqueues,
/// and must not hang on a database that stopped answering.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Same advisory lock as the users table's schema: instances starting at
/// once take turns creating tables (PostgreSQL's `CREATE TABLE IF NOT
/// EXISTS` can still fail on a unique violation when two race).
const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(7261837202)";

fn schema(postgres: bool) -> [String; 2] {
    let blob = if postgres { "BYTEA" } else { "BLOB" };
    [
        format!(
            "CREATE TABLE IF NOT EXISTS latchkey_mail (
    id              TEXT PRIMARY KEY,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body_sealed     {blob} NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    last_error      TEXT
)"
        ),
        "CREATE INDEX IF NOT EXISTS latchkey_mail_due ON latchkey_mail (next_attempt_at)".into(),
    ]
}

/// Takes the oldest due row that no live lease holds, in one statement.
/// PostgreSQL: `SKIP LOCKED` lets two instances claim different rows at
/// once, and a row another transaction just claimed is re-checked (its
/// lease now runs) rather than claimed twice. SQLite: one writer at a
/// time, so the statement is atomic as it stands.
fn claim_sql(postgres: bool) -> String {
    format!(
        "UPDATE latchkey_mail SET claimed_until = $1, attempts = attempts + 1 \
         WHERE id = (SELECT id FROM latchkey_mail \
             WHERE next_attempt_at <= $2 AND claimed_until <= $2 \
             ORDER BY next_attempt_at, created_at LIMIT 1{}) \
         RETURNING id, recipient, subject, body_sealed, attempts, created_at",
        if postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        }
    )
}

/// A row one sender now holds for its lease.
pub struct Claimed {
    pub id: String,
    pub recipient: String,
    pub subject: String,
    /// `None` when it does not open (sealed under another secret, altered).
    pub body: Option<Body>,
    /// Including this one.
    pub attempts: i64,
    pub created_at: i64,
}

pub struct Queue {
    pool: AnyPool,
    postgres: bool,
    label: String,
    seal: Seal,
    claim_sql: String,
    ready: OnceCell<()>,
}

impl Queue {
    pub fn new(users: &Users, secret: &[u8]) -> Queue {
        let (pool, postgres) = users.shared_pool();
        Queue {
            pool: pool.clone(),
            postgres,
            label: users.label().to_owned(),
            seal: Seal::from_secret(secret),
            claim_sql: claim_sql(postgres),
            ready: OnceCell::new(),
        }
    }

    /// The pool, once the table exists. Made on first use rather than at
    /// start-up: a database down at start-up delays mail, not the server.
    async fn table(&self) -> Result<&AnyPool, sqlx::Error> {
        self.ready
            .get_or_try_init(|| {
                crate::users::retry_if_locked(self.postgres, || self.create_table())
            })
            .await?;
        Ok(&self.pool)
    }

    async fn create_table(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            sqlx::query(SCHEMA_LOCK).execute(&mut *tx).await?;
        }
        for sql in schema(self.postgres) {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Queues `mail`, due now: renders and seals its bodies, one INSERT.
    pub async fn push(&self, mail: &Mail, now: i64) -> Result<(), String> {
        mail.to
            .parse::<Mailbox>()
            .map_err(|e| format!("cannot mail {:?}: {e}", mail.to))?;
        let body = Body::of(mail).map_err(|e| format!("cannot render the mail: {e}"))?;
        let id = hex::encode(rand::random::<[u8; 16]>());
        let plain = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let sealed = self
            .seal
            .seal(&id, &mail.to, &plain)
            .ok_or("cannot seal the mail")?;
        let insert = async {
            let pool = self.table().await?;
            sqlx::query(
                "INSERT INTO latchkey_mail \
                 (id, recipient, subject, body_sealed, attempts, next_attempt_at, claimed_until, created_at) \
                 VALUES ($1, $2, $3, $4, 0, $5, 0, $5)",
            )
            .bind(&id)
            .bind(&mail.to)
            .bind(mail.subject())
            .bind(sealed)
            .bind(now)
            .execute(pool)
            .await
        };
        match tokio::time::timeout(PUSH_TIMEOUT, insert).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("mail queue in {} unavailable: {e}", self.label)),
            Err(_) => Err(format!(
                "mail queue in {} unavailable: no answer within {} ms",
                self.label,
                PUSH_TIMEOUT.as_millis()
            )),
        }
    }

    /// Claims the next due mail until `now + lease_ms`, if there is one.
    pub async fn claim(&self, now: i64, lease_ms: i64) -> Result<Option<Claimed>, sqlx::Error> {
        let pool = self.table().await?;
        let Some(row) = sqlx::query(&self.claim_sql)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(pool)
            .await?
        else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let recipient: String = row.try_get("recipient")?;
        let sealed: Vec<u8> = row.try_get("body_sealed")?;
        let body = self
            .seal
            .open(&id, &recipient, &sealed)
            .and_then(|plain| serde_json::from_slice(&plain).ok());
        Ok(Some(Claimed {
            subject: row.try_get("subject")?,
            attempts: row.try_get("attempts")?,
            created_at: row.try_get("created_at")?,
            id,
            recipient,
            body,
        }))
    }

    /// Deletes a row: sent, or given up.
    pub async fn remove(&self, id: &str) -> Result<(), sqlx::Error> {
        let pool = self.table().await?;
        sqlx::query("DELETE FROM latchkey_mail WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Releases a claimed row for another attempt at `at`.
    pub async fn retry_at(&self, id: &str, at: i64, error: &str) -> Result<(), sqlx::Error> {
        let pool = self.table().await?;
        let error: String = error.chars().take(500).collect();
        sqlx::query(
            "UPDATE latchkey_mail SET next_attempt_at = $2, claimed_until = 0, last_error = $3 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .bind(error)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Mails queued, due or not.
    pub async fn depth(&self) -> Result<i64, sqlx::Error> {
        let pool = self.table().await?;
        sqlx::query("SELECT COUNT(*) AS n FROM latchkey_mail")
            .fetch_one(pool)
            .await?
            .try_get("n")
    }
}
