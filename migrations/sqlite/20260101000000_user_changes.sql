-- The account change feed: every running gateway polls it and drops what it caches about
-- an account that an operator (or another instance) changed. Works on every backend and
-- needs nothing but this database, which the CLI and every instance already share.

CREATE TABLE user_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT    NOT NULL,
    change     TEXT    NOT NULL CHECK (change IN ('updated', 'sessions_ended')),
    -- Seconds since the epoch by the database's clock, so every writer agrees on it.
    changed_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;

CREATE INDEX user_changes_changed_at_idx ON user_changes (changed_at);
