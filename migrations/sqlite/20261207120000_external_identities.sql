-- Identities at `[[identity_providers]]` linked to local accounts. An external identity is
-- (provider, subject): the provider's config `id` and its stable `sub` (GitHub: the numeric
-- user id), never an address. `email` is what the provider last asserted, for display only.
CREATE TABLE external_identities (
    provider     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email        TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    PRIMARY KEY (provider, subject)
) STRICT, WITHOUT ROWID;

CREATE INDEX external_identities_user_id_idx ON external_identities (user_id);
