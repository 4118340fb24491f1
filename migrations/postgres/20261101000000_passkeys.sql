-- WebAuthn credentials (passkeys): several per user, each with its own name.
-- `credential` is the relying-party library's record of the key (public key, counter,
-- flags) as JSON; `sign_count` and the backup flags are kept beside it so that a use can
-- be recorded only over the count it was checked against (a cloned key is refused).
CREATE TABLE passkeys (
    id              UUID        PRIMARY KEY,
    user_id         UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- base64url (no padding) of the credential id the authenticator chose.
    credential_id   TEXT        NOT NULL UNIQUE,
    name            TEXT        NOT NULL,
    credential      TEXT        NOT NULL,
    sign_count      BIGINT      NOT NULL DEFAULT 0 CHECK (sign_count >= 0),
    backup_eligible BOOLEAN     NOT NULL DEFAULT FALSE,
    backup_state    BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL,
    last_used_at    TIMESTAMPTZ
);

CREATE INDEX passkeys_user_id_idx ON passkeys (user_id);
