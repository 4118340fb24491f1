-- The roles `role_mapping` granted through each linked identity (role names joined by commas,
-- as `invitations.roles`). A sign-in takes back only these, once the provider's groups no
-- longer give them: a role the account held otherwise is never recorded here, so an
-- operator's or an administrator's grant stays.
ALTER TABLE external_identities ADD COLUMN mapped_roles TEXT NOT NULL DEFAULT '';
