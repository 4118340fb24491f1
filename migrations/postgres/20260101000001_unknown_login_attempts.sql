-- Failed logins for addresses with no account, counted exactly like an account's
-- (users.failed_login_attempts / locked_until), so that the answers to a run of guesses do
-- not tell whether the account exists. Keyed by the SHA-256 hex of the canonical address,
-- so the table holds no address. Rows idle for a day are purged.

CREATE TABLE unknown_login_attempts (
    email_hash            TEXT        PRIMARY KEY,
    failed_login_attempts INTEGER     NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
    locked_until          TIMESTAMPTZ,
    updated_at            TIMESTAMPTZ NOT NULL
);

CREATE INDEX unknown_login_attempts_updated_at_idx ON unknown_login_attempts (updated_at);
