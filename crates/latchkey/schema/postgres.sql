CREATE TABLE IF NOT EXISTS latchkey_sessions (
    token_hash   BYTEA PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    username     TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    user_agent   TEXT NOT NULL,
    ip           TEXT NOT NULL,
    csrf_secret  TEXT NOT NULL,
    user_version BIGINT NOT NULL DEFAULT 0
);
-- Added in 0.2: tables made by 0.1 lack it.
ALTER TABLE latchkey_sessions ADD COLUMN IF NOT EXISTS user_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE latchkey_sessions ADD COLUMN IF NOT EXISTS data TEXT;
CREATE INDEX IF NOT EXISTS latchkey_sessions_user ON latchkey_sessions (user_id);
CREATE INDEX IF NOT EXISTS latchkey_sessions_expires ON latchkey_sessions (expires_at);
CREATE TABLE IF NOT EXISTS latchkey_counters (
    key        TEXT PRIMARY KEY,
    count      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- Added in 0.3: single-use, expiring records (reset and verification links,
-- re-authentication marks), keyed by a hash, never by a raw token.
CREATE TABLE IF NOT EXISTS latchkey_tickets (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
