//! Invitations: an operator (or, later, an administrator) lets one address in, with roles,
//! whatever `[registration]` says, even `closed` (the inviter vouches for the invitee, as
//! `portcullis user create` does). The mailed link is a single-use token whose hash alone
//! is stored; using it creates the account with the address proven and the roles granted,
//! in one transaction that also spends the invitation.

use std::time::Duration;

use chrono::Utc;

use super::fields::InvitedAccount;
use super::passkey::{NewPasskey, RegistrationChallenge, require_resident_key, stored_passkey};
use super::{AccountError, Accounts, Client};
use crate::auth::secrets::{is_token_shaped, random_token, sha256_hex};
use crate::config::is_role_name;
use crate::domain::{Email, UserId};
use crate::mail::MailKind;
use crate::passkeys::Ceremony;
use crate::store::admin::{By, revoke_invitations};
use crate::store::{
    Actor, AuditKind, AuditOutcome, Invitation, InvitationState, NewAuditEvent, NewInvitation,
    NewUser, StoreError, User, UserStore,
};
use crate::telemetry::SECURITY;

/// Stores an invitation for `email` with `roles`, valid for `ttl`, replacing the address's
/// earlier pending ones; the invitation and its token's text (to mail or show once). For
/// the core and for the CLI, which has no mailer of the instance's.
///
/// Errors: `Field("roles")` for a name that cannot be a role, `Store(DuplicateEmail)` when
/// the address has an account already, backend failures.
pub async fn issue_invitation(
    store: &dyn UserStore,
    ttl: Duration,
    email: Email,
    roles: &[String],
    by: By,
) -> Result<(Invitation, String), AccountError> {
    let inviter = by.actor.user_id();
    if let Some(bad) = roles.iter().find(|r| !is_role_name(r)) {
        tracing::debug!(role = %bad, "an invitation named an invalid role");
        return Err(AccountError::Field {
            field: "roles",
            message: crate::config::ROLE_NAME_RULE.to_owned(),
        });
    }
    if store.find_by_email(&email).await?.is_some() {
        return Err(StoreError::DuplicateEmail.into());
    }
    let token = random_token();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
    let invitation = store
        .create_invitation(NewInvitation {
            email,
            token_hash: sha256_hex(&token),
            roles: roles.to_vec(),
            created_by: inviter,
            expires_at,
        })
        .await?;
    tracing::info!(target: SECURITY, event = "invitation_created", invitation_id = %invitation.id, roles = %invitation.roles.join(","), by = ?inviter.map(|u| u.to_string()));
    let mut event = NewAuditEvent::new(AuditKind::InvitationCreate, by.actor, None)
        .detail(format!("roles: {}", invitation.roles.join(",")));
    event.subject_email = Some(invitation.email.clone());
    event.client_ip = by.ip;
    super::audit::record(store, &event).await;
    Ok((invitation, token))
}

impl Accounts {
    /// How long an invitation works (`registration.invitation_ttl`).
    pub fn invitation_ttl(&self) -> Duration {
        self.config.registration.invitation_ttl.get()
    }

    /// Invites `email` (see [`issue_invitation`]) and mails the link in `language`, in the
    /// background; the invitation and the token's text.
    pub async fn invite(
        &self,
        email: Email,
        roles: &[String],
        by: Option<UserId>,
        language: &str,
    ) -> Result<(Invitation, String), AccountError> {
        let by = By {
            actor: by.map_or(Actor::Operator, Actor::Admin),
            ip: None,
        };
        self.invite_by(email, roles, by, language).await
    }

    /// [`Accounts::invite`] by `by` (its actor and client address go to the audit trail).
    pub(super) async fn invite_by(
        &self,
        email: Email,
        roles: &[String],
        by: By,
        language: &str,
    ) -> Result<(Invitation, String), AccountError> {
        let ttl = self.invitation_ttl();
        let (invitation, token) = issue_invitation(&*self.store, ttl, email, roles, by).await?;
        self.mailer.send_in_background_in(
            language,
            invitation.email.as_str(),
            "",
            MailKind::Invitation {
                token: token.clone(),
                expires_in: ttl,
            },
        );
        Ok((invitation, token))
    }

    /// The invitation a link's `token` stands for, while it can be used (for the page that
    /// shows its address).
    ///
    /// Errors: `InvalidLink` (malformed, unknown, used, revoked or expired: one answer),
    /// backend failures.
    pub async fn invitation(&self, token: &str) -> Result<Invitation, AccountError> {
        if !is_token_shaped(token) {
            return Err(AccountError::InvalidLink);
        }
        let invitation = self
            .store
            .find_invitation(&sha256_hex(token))
            .await?
            .ok_or(AccountError::InvalidLink)?;
        // An administrator's invitation holds only while they are one: deactivated, without
        // the role or deleted (then it was revoked with the account), it lets no one in.
        if let Some(inviter) = invitation.created_by {
            let inviter = self.store.find_by_id(inviter).await?;
            if !inviter.is_some_and(|u| self.is_admin(&u)) {
                tracing::warn!(target: SECURITY, event = "invitation_refused", reason = "inviter_not_admin", invitation_id = %invitation.id);
                return Err(AccountError::InvalidLink);
            }
        }
        Ok(invitation)
    }

    /// Creates the invitee's account with the invitation of `token`: the invitation's
    /// address (proven) and roles, the password and names given. The invitation is spent in
    /// the same transaction, so of two uses at once exactly one creates the account.
    ///
    /// Errors: `InvalidLink` (malformed, unknown, used, revoked or expired), `Field("email")`
    /// when `account.email` names another address, `Store(DuplicateEmail)` when the address
    /// has an account already (the invitation stays usable), hashing and backend failures.
    pub async fn accept_invitation(
        &self,
        token: &str,
        account: InvitedAccount,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        let invitation = self.invitation(token).await?;
        if account
            .email
            .as_ref()
            .is_some_and(|e| *e != invitation.email)
        {
            return Err(AccountError::Field {
                field: "email",
                message: "Email must be the address the invitation was sent to.".to_owned(),
            });
        }
        let inputs = [
            invitation.email.as_str(),
            &account.first_name,
            &account.last_name,
        ];
        let password = self.admit_password("password", account.password, &inputs)?;
        let password_hash = self.hasher.hash(password.expose()).await?;
        let new = NewUser {
            email: invitation.email,
            password_hash,
            first_name: account.first_name,
            last_name: account.last_name,
            language: client.language.to_owned(),
        };
        let user = self
            .store
            .accept_invitation(&sha256_hex(token), new)
            .await?
            .ok_or(AccountError::InvalidLink)?;
        tracing::info!(target: SECURITY, event = "invitation_accepted", user_id = %user.id, invitation_id = %invitation.id, client_ip = %client.ip);
        let roles = format!("roles: {}", user.roles.join(","));
        self.audit_own(
            AuditKind::InvitationAccept,
            &user,
            Some(client),
            AuditOutcome::Success,
            &roles,
        );
        Ok(user)
    }

    /// Begins the invitee's first passkey, for an account that does not exist yet: the
    /// options for `navigator.credentials.create()` (a discoverable credential, user handle
    /// the id the account will have), the ceremony bound to the invitation of `token`.
    ///
    /// Errors: `PasskeysDisabled`, `InvalidLink` (malformed, unknown, used, revoked or
    /// expired), backend failures.
    pub async fn begin_invitation_passkey(
        &self,
        token: &str,
    ) -> Result<RegistrationChallenge, AccountError> {
        let rp = self.relying_party()?;
        let invitation = self.invitation(token).await?;
        if invitation.state(Utc::now()) != InvitationState::Pending {
            return Err(AccountError::InvalidLink);
        }
        let user_id = UserId::random();
        let email = invitation.email.as_str();
        let (mut options, state) = rp
            .start_passkey_registration(user_id.as_uuid(), email, email, None)
            .map_err(|e| AccountError::internal("starting a passkey registration", &e))?;
        require_resident_key(&mut options);
        let ceremony = Ceremony::Invitation {
            token_hash: sha256_hex(token),
            user_id,
            state,
        };
        let ceremony = self.passkeys.begin(&*self.sessions, &ceremony).await?;
        Ok(RegistrationChallenge { ceremony, options })
    }

    /// Creates the invitee's account with the invitation of `token` and the passkey begun
    /// by [`Accounts::begin_invitation_passkey`] for it, instead of a password (none works
    /// until one is set through a reset): address proven, roles granted, the passkey
    /// stored, the invitation spent — one transaction.
    ///
    /// Errors: `PasskeysDisabled`, `CeremonyInvalid` (expired, used, or another
    /// invitation's), `PasskeyInvalid`, `InvalidLink`, `Store(DuplicateEmail)`,
    /// `Store(DuplicatePasskey)`, backend failures.
    pub async fn accept_invitation_with_passkey(
        &self,
        token: &str,
        names: (String, String),
        input: NewPasskey,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        let rp = self.relying_party()?;
        let token_hash = sha256_hex(token);
        let (user_id, state) = match self
            .passkeys
            .finish(&*self.sessions, &input.ceremony)
            .await?
        {
            Some(Ceremony::Invitation {
                token_hash: begun,
                user_id,
                state,
            }) if begun == token_hash => (user_id, state),
            _ => return Err(AccountError::CeremonyInvalid),
        };
        let invitation = self.invitation(token).await?;
        let passkey = rp
            .finish_passkey_registration(&input.credential, &state)
            .map_err(|e| {
                tracing::warn!(target: SECURITY, event = "passkey_registration_refused", reason = %e, invitation_id = %invitation.id);
                AccountError::PasskeyInvalid
            })?;
        let stored = stored_passkey(user_id, passkey, input.name)?;
        let new = NewUser {
            email: invitation.email,
            password_hash: self.hasher.hash_of_unknown_secret().await?,
            first_name: names.0,
            last_name: names.1,
            language: client.language.to_owned(),
        };
        let user = self
            .store
            .accept_invitation_with_passkey(&token_hash, new, &stored)
            .await?
            .ok_or(AccountError::InvalidLink)?;
        tracing::info!(target: SECURITY, event = "invitation_accepted", user_id = %user.id, invitation_id = %invitation.id, passkey_id = %stored.id, client_ip = %client.ip);
        let roles = format!("roles: {}; with a passkey", user.roles.join(","));
        self.audit_own(
            AuditKind::InvitationAccept,
            &user,
            Some(client),
            AuditOutcome::Success,
            &roles,
        );
        Ok(user)
    }

    /// Revokes the pending invitations of `email`; how many there were.
    pub async fn revoke_invitation(&self, email: &Email) -> Result<u64, AccountError> {
        let revoked = revoke_invitations(&*self.store, email, By::OPERATOR).await?;
        tracing::info!(target: SECURITY, event = "invitation_revoked", revoked);
        Ok(revoked)
    }

    /// Every invitation, newest first.
    pub async fn list_invitations(&self) -> Result<Vec<Invitation>, AccountError> {
        Ok(self.store.list_invitations().await?)
    }
}
