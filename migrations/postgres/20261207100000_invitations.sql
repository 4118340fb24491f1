-- Invitations: single-use, expiring links that let one address create an account (with
-- roles) whatever `[registration]` says. Only the SHA-256 hex of the mailed token is kept.
-- `roles` is a comma-separated list of role names (a role name holds no comma).
CREATE TABLE invitations (
    id         UUID        PRIMARY KEY,
    -- Lower-cased by the application, like users.email.
    email      TEXT        NOT NULL,
    token_hash TEXT        NOT NULL UNIQUE,
    roles      TEXT        NOT NULL DEFAULT '',
    -- Who invited; NULL for the operator's CLI, or once that account is deleted.
    created_by UUID        REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

CREATE INDEX invitations_email_idx ON invitations (email);
CREATE INDEX invitations_created_at_idx ON invitations (created_at);
