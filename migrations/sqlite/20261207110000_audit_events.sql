-- The audit trail: who did what to which account, when, from where, and how it ended.
-- The subject is not a foreign key: the trail outlives `user delete`, so the subject's
-- address at the time is kept beside its id. `detail` is a short note (a role, a factor);
-- nothing here ever holds a password, a token, a code or a query string.

CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Seconds since the epoch by the database's clock, so every writer agrees on it.
    occurred_at     REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    kind            TEXT    NOT NULL,
    actor_kind      TEXT    NOT NULL CHECK (actor_kind IN ('user', 'operator', 'admin', 'anonymous')),
    actor_user_id   TEXT,
    subject_user_id TEXT,
    subject_email   TEXT,
    client_ip       TEXT,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('success', 'failure', 'refused')),
    detail          TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_subject_idx ON audit_events (subject_user_id, id);
CREATE INDEX audit_events_subject_email_idx ON audit_events (subject_email, id);
