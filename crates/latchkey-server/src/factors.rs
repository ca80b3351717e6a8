//! Second factors live in the users database, in the library's factor
//! tables (`latchkey_totp`, `latchkey_recovery_codes`), through a typed pool
//! of their own beside the users table's `Any` pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use latchkey::mfa::{FactorStore, PostgresFactors, SqliteFactors};

/// The factor store on the database `url` names (connecting lazily: a
/// database that is down fails requests with 503 until it answers).
pub fn open(url: &str) -> Result<Arc<dyn FactorStore>, String> {
    let acquire = Duration::from_millis(1200);
    if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire)
            .connect_lazy(url)
            .map_err(|e| format!("bad database URL: {e}"))?;
        return Ok(Arc::new(PostgresFactors::new(pool)));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| format!("bad database URL: {e}"))?
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_millis(1000));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(acquire)
        .connect_lazy_with(options);
    Ok(Arc::new(SqliteFactors::new(pool)))
}
