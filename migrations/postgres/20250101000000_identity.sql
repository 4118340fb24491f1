-- Accounts, roles, single-use verification tokens and 2FA recovery codes.

CREATE TABLE users (
    id                    UUID        PRIMARY KEY,
    -- Stored lower-cased by the application; the unique index on lower(email)
    -- makes uniqueness case-insensitive whatever a writer does.
    email                 TEXT        NOT NULL,
    password_hash         TEXT        NOT NULL,
    first_name            TEXT        NOT NULL DEFAULT '',
    last_name             TEXT        NOT NULL DEFAULT '',
    is_verified           BOOLEAN     NOT NULL DEFAULT FALSE,
    is_active             BOOLEAN     NOT NULL DEFAULT TRUE,
    two_factor_enabled    BOOLEAN     NOT NULL DEFAULT FALSE,
    -- Ciphertext of the TOTP secret; never the secret itself.
    two_factor_secret     BYTEA,
    failed_login_attempts INTEGER     NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
    locked_until          TIMESTAMPTZ,
    last_login            TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_created_at_idx ON users (created_at);

CREATE TABLE user_roles (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE verification_tokens (
    id         UUID        PRIMARY KEY,
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT        NOT NULL CHECK (kind IN ('email_verification', 'password_reset')),
    -- SHA-256 hex of the token; the token itself is only ever in the mail.
    token_hash TEXT        NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL,
    used       BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX verification_tokens_user_kind_idx ON verification_tokens (user_id, kind);
CREATE INDEX verification_tokens_expires_at_idx ON verification_tokens (expires_at);

CREATE TABLE recovery_codes (
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT        NOT NULL,
    used       BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
