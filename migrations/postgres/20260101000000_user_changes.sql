-- The account change feed: every running gateway polls it and drops what it caches about
-- an account that an operator (or another instance) changed. Works on every backend and
-- needs nothing but this database, which the CLI and every instance already share.

CREATE TABLE user_changes (
    id         BIGSERIAL   PRIMARY KEY,
    user_id    UUID        NOT NULL,
    change     TEXT        NOT NULL CHECK (change IN ('updated', 'sessions_ended')),
    -- The database's clock, so every writer agrees on it.
    changed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX user_changes_changed_at_idx ON user_changes (changed_at);
