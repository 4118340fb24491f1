-- Accounts, roles, single-use verification tokens and 2FA recovery codes.
--
-- Timestamps are UTC text in one fixed-width form (2025-01-01T00:00:00.000000Z),
-- always written by the application, so comparing them as text compares them in time.
-- STRICT tables refuse values of the wrong type instead of silently storing them.

CREATE TABLE users (
    id                    TEXT    NOT NULL PRIMARY KEY,
    -- Always lower-cased by the application; the CHECK keeps every writer honest,
    -- so the unique index below is a case-insensitive uniqueness rule.
    email                 TEXT    NOT NULL CHECK (email = lower(email)),
    password_hash         TEXT    NOT NULL,
    first_name            TEXT    NOT NULL DEFAULT '',
    last_name             TEXT    NOT NULL DEFAULT '',
    is_verified           INTEGER NOT NULL DEFAULT 0 CHECK (is_verified IN (0, 1)),
    is_active             INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    two_factor_enabled    INTEGER NOT NULL DEFAULT 0 CHECK (two_factor_enabled IN (0, 1)),
    -- Ciphertext of the TOTP secret; never the secret itself.
    two_factor_secret     BLOB,
    failed_login_attempts INTEGER NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
    locked_until          TEXT,
    last_login            TEXT,
    created_at            TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL
) STRICT;

CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_created_at_idx ON users (created_at);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
) STRICT, WITHOUT ROWID;

CREATE TABLE verification_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL CHECK (kind IN ('email_verification', 'password_reset')),
    -- SHA-256 hex of the token; the token itself is only ever in the mail.
    token_hash TEXT    NOT NULL UNIQUE,
    expires_at TEXT    NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1)),
    created_at TEXT    NOT NULL
) STRICT;

CREATE INDEX verification_tokens_user_kind_idx ON verification_tokens (user_id, kind);
CREATE INDEX verification_tokens_expires_at_idx ON verification_tokens (expires_at);

CREATE TABLE recovery_codes (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT    NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1)),
    created_at TEXT    NOT NULL,
    PRIMARY KEY (user_id, code_hash)
) STRICT, WITHOUT ROWID;
