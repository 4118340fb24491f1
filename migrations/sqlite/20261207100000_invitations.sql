-- Invitations: single-use, expiring links that let one address create an account (with
-- roles) whatever `[registration]` says. Only the SHA-256 hex of the mailed token is kept.
-- `roles` is a comma-separated list of role names (a role name holds no comma).
CREATE TABLE invitations (
    id         TEXT NOT NULL PRIMARY KEY,
    -- Lower-cased by the application, like users.email.
    email      TEXT NOT NULL CHECK (email = lower(email)),
    token_hash TEXT NOT NULL UNIQUE,
    roles      TEXT NOT NULL DEFAULT '',
    -- Who invited; NULL for the operator's CLI, or once that account is deleted.
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT
) STRICT;

CREATE INDEX invitations_email_idx ON invitations (email);
CREATE INDEX invitations_created_at_idx ON invitations (created_at);
