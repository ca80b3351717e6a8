CREATE TABLE IF NOT EXISTS latchkey_sessions (
    token_hash   BLOB PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    username     TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    user_agent   TEXT NOT NULL,
    ip           TEXT NOT NULL,
    csrf_secret  TEXT NOT NULL,
    user_version INTEGER NOT NULL DEFAULT 0,
    data         TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS latchkey_sessions_user ON latchkey_sessions (user_id);
CREATE INDEX IF NOT EXISTS latchkey_sessions_expires ON latchkey_sessions (expires_at);
CREATE TABLE IF NOT EXISTS latchkey_counters (
    key        TEXT PRIMARY KEY,
    count      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Every ended or changed session leaves a row here (by trigger, so the CLI
-- and other processes log theirs too). Each process keeps a cache of
-- sessions and evicts what this log names; see store/sqlite.rs.
CREATE TABLE IF NOT EXISTS latchkey_revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL,
    at         INTEGER NOT NULL
);
-- Added in 0.3: single-use, expiring records (reset and verification links,
-- re-authentication marks), keyed by a hash, never by a raw token.
CREATE TABLE IF NOT EXISTS latchkey_tickets (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS latchkey_sessions_deleted AFTER DELETE ON latchkey_sessions
WHEN old.expires_at > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
BEGIN
    INSERT INTO latchkey_revocations (token_hash, at)
    VALUES (old.token_hash, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
CREATE TRIGGER IF NOT EXISTS latchkey_sessions_data_changed AFTER UPDATE OF data ON latchkey_sessions
WHEN old.data IS NOT new.data
BEGIN
    INSERT INTO latchkey_revocations (token_hash, at)
    VALUES (old.token_hash, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
CREATE TRIGGER IF NOT EXISTS latchkey_sessions_role_changed AFTER UPDATE OF role ON latchkey_sessions
WHEN old.role <> new.role
BEGIN
    INSERT INTO latchkey_revocations (token_hash, at)
    VALUES (old.token_hash, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
