//! What administrators do, for the admin API and the admin console alike: who counts as an
//! administrator (the role `admin.role` **and** a second factor proven within
//! `admin.max_auth_age` in this session — OWASP's step-up), the step-up itself, and the
//! account, session, invitation and audit operations, each written to the audit trail with
//! the administrator as its actor.
//!
//! A change that a running gateway caches goes to the account change feed (through
//! `store::admin`, the functions the CLI runs), so it holds on every instance within a
//! second, and is applied to this instance's caches at once.

use std::time::Duration;

use chrono::Utc;

use super::federation::LinkedView;
use super::lockout;
use super::proof::{Failed, SecondFactor};
use super::{AccountError, Accounts, Client};
use crate::domain::{Email, NewPassword, UserId};
use crate::session::{Session, SessionId};
use crate::store::admin::{
    By, InitialPassword, create_vouched, delete_account, end_sessions, grant_role_to,
    mark_user_verified, reset_second_factors, revoke_invitations, revoke_role_from,
    set_user_active, unlock_user,
};
use crate::store::{
    Actor, AuditEvent, AuditFilter, AuditKind, AuditOutcome, Invitation, NewAuditEvent,
    StoredPasskey, User, UserSearch,
};
use crate::telemetry::SECURITY;

/// A signed-in account that holds the admin role and proved its second factor recently
/// enough, in the session it acts from; every admin operation takes one. Only
/// [`Accounts::administrator`] makes one (its fields are private), so holding one is the
/// proof.
#[derive(Clone, Debug)]
pub struct Administrator {
    user: User,
    session: SessionId,
}

impl Administrator {
    /// The administrator's account, as read when admitted.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// The session the request came with.
    pub fn session(&self) -> SessionId {
        self.session
    }

    fn by(&self, client: &Client<'_>) -> By {
        By {
            actor: Actor::Admin(self.user.id),
            ip: Some(client.ip),
        }
    }
}

/// One account as the console and `GET /api/admin/users/{id}` show it.
#[derive(Clone, Debug)]
pub struct AccountDetail {
    /// The account, with its roles.
    pub user: User,
    /// Its live sessions, oldest first.
    pub sessions: Vec<Session>,
    /// Its passkeys.
    pub passkeys: Vec<StoredPasskey>,
    /// Its identities at identity providers.
    pub identities: Vec<LinkedView>,
}

/// An administrator's change to an account, named after what it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountAction {
    /// The account can sign in again.
    Activate,
    /// The account can no longer sign in; its sessions end.
    Deactivate,
    /// The lockout and the failure count are cleared.
    Unlock,
    /// TOTP, recovery codes and passkeys go; the sessions end.
    ResetSecondFactors,
    /// The address counts as proven.
    MarkVerified,
    /// The role (a role name) is granted.
    GrantRole(String),
    /// The role is revoked.
    RevokeRole(String),
    /// Every session ends.
    EndSessions,
    /// The linked identity (`provider`, `subject`) is detached, even the account's last:
    /// the account keeps its password and the reset by mail.
    UnlinkIdentity {
        /// The provider's `id`.
        provider: String,
        /// The provider's subject.
        subject: String,
    },
}

impl AccountAction {
    /// Whether an administrator may do this to their own account here: not what would lock
    /// them out (deactivation, the end of their second factors, the loss of the admin role);
    /// the account page, or the CLI, does that.
    fn allowed_on_self(&self, admin_role: &str) -> bool {
        match self {
            Self::Deactivate | Self::ResetSecondFactors => false,
            Self::RevokeRole(role) => role != admin_role,
            _ => true,
        }
    }
}

/// What [`Accounts::act_on_account`] did: `false` when the account already was so.
pub type Changed = bool;

impl Accounts {
    /// The role that opens the admin API and console (`admin.role`).
    pub fn admin_role(&self) -> &str {
        &self.config.admin.role
    }

    /// How long a proven second factor opens the admin API and console
    /// (`admin.max_auth_age`).
    pub fn admin_max_auth_age(&self) -> Duration {
        self.config.admin.max_auth_age.get()
    }

    /// Whether `user` holds the admin role (whatever its session).
    pub fn is_admin(&self, user: &User) -> bool {
        user.is_active && user.roles.iter().any(|r| *r == self.config.admin.role)
    }

    /// The administrator behind `session` of `user`, read afresh from the stores.
    ///
    /// Errors: `SessionNotFound` when the session ended, `Deactivated`, `NotAdministrator`
    /// without the role, `StepUpRequired` when the session's second factor is older than
    /// `admin.max_auth_age` or was never proven; backend failures.
    pub async fn administrator(
        &self,
        user: UserId,
        session: SessionId,
    ) -> Result<Administrator, AccountError> {
        let live = self.sessions.get(&session).await?;
        let Some(live) = live.filter(|s| s.user_id == user) else {
            return Err(AccountError::SessionNotFound);
        };
        let user = self
            .store
            .find_by_id(user)
            .await?
            .ok_or(AccountError::SessionNotFound)?;
        if !user.is_active {
            return Err(AccountError::Deactivated);
        }
        if !self.is_admin(&user) {
            return Err(AccountError::NotAdministrator);
        }
        let window = chrono::Duration::from_std(self.admin_max_auth_age())
            .unwrap_or(chrono::Duration::minutes(15));
        let fresh = live
            .second_factor_at
            .is_some_and(|at| Utc::now() - at <= window);
        if !fresh {
            return Err(AccountError::StepUpRequired);
        }
        Ok(Administrator { user, session })
    }

    /// What a step-up of `user` asks for: `SecondFactorRequired` with the methods the
    /// account has and, with passkeys, a fresh challenge; `TwoFactorNotEnabled` when it has
    /// no second factor to prove.
    pub async fn step_up_challenge(&self, user: &User) -> AccountError {
        if !user.two_factor_enabled && self.usable_passkeys(user).await.is_ok_and(|k| k.is_empty())
        {
            return AccountError::TwoFactorNotEnabled;
        }
        self.second_step(user, None, false).await
    }

    /// Proves `user`'s second factor again in `session` (a step-up): a TOTP or recovery
    /// code, or a passkey's answer to [`Accounts::step_up_challenge`]. Counted as one guess
    /// against the lockout; on success the session's `second_factor_at` is now.
    ///
    /// Errors: `TwoFactorNotEnabled` (nothing to prove), `SecondFactorRequired` (none sent),
    /// `WrongSecondFactor`, `Locked`, `SessionNotFound`, backend failures.
    pub async fn prove_second_factor(
        &self,
        user: &User,
        session: SessionId,
        second: SecondFactor,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        self.second_factor_guess(user, &second, client).await?;
        if !self
            .sessions
            .prove_second_factor(&session, Utc::now())
            .await?
        {
            return Err(AccountError::SessionNotFound);
        }
        self.access.forget_sessions(&[session]);
        tracing::info!(target: SECURITY, event = "second_factor_proven", user_id = %user.id);
        let event = NewAuditEvent::new(
            AuditKind::StepUp,
            Actor::User(user.id),
            Some((user.id, &user.email)),
        );
        self.audit(event.from_ip(client.ip).detail("second factor"));
        Ok(())
    }

    /// One guess at `user`'s second factor (a TOTP or recovery code, or a passkey's answer
    /// to a challenge of [`Accounts::step_up_challenge`]), counted against the lockout.
    ///
    /// Errors: `TwoFactorNotEnabled` (nothing to prove), `SecondFactorRequired` (none sent),
    /// `WrongSecondFactor`, `Locked`, backend failures.
    pub(super) async fn second_factor_guess(
        &self,
        user: &User,
        second: &SecondFactor,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        let guess = lockout::claim(self, user, "", client, AuditKind::StepUp).await?;
        match self.second_factor(user, second, client).await {
            Ok((true, _)) => guess.succeeded(self).await?,
            Ok((false, _)) => {
                guess.released(self).await?;
                return Err(AccountError::TwoFactorNotEnabled);
            }
            Err(Failed::Required) => {
                guess.released(self).await?;
                return Err(self.second_step(user, None, false).await);
            }
            Err(Failed::Wrong | Failed::Replayed) => {
                guess.failed(self, client, "wrong_second_factor").await;
                return Err(self.second_step(user, None, true).await);
            }
            Err(Failed::Backend(e)) => return Err(guess.unchecked(self, e).await),
        }
        Ok(())
    }

    /// One page of accounts (address order), for an administrator.
    ///
    /// Errors: `Field("q")` for a search with a control character, backend failures.
    pub async fn find_accounts(
        &self,
        _admin: &Administrator,
        search: &UserSearch,
    ) -> Result<Vec<User>, AccountError> {
        if search.text.chars().any(char::is_control) {
            return Err(AccountError::field(
                "q",
                "must not contain control characters",
            ));
        }
        Ok(self.store.search_users(search).await?)
    }

    /// One account with its sessions, passkeys and linked identities.
    ///
    /// Errors: `AccountNotFound`, backend failures.
    pub async fn account_detail(
        &self,
        _admin: &Administrator,
        id: UserId,
    ) -> Result<AccountDetail, AccountError> {
        let user = self.account(id).await?;
        let sessions = self.sessions.list(id).await?;
        let passkeys = self.store.list_passkeys(id).await?;
        let identities = self.linked_identities(&user).await?;
        Ok(AccountDetail {
            user,
            sessions,
            passkeys,
            identities,
        })
    }

    async fn account(&self, id: UserId) -> Result<User, AccountError> {
        self.store
            .find_by_id(id)
            .await?
            .ok_or(AccountError::AccountNotFound)
    }

    /// Creates an account whose address counts as proven (the administrator vouches for
    /// it), with `roles`, whatever `[registration]` says. With no `password`, none works
    /// yet and the address is mailed a password-reset link to choose one.
    ///
    /// Errors: `Field("roles")` for a name that cannot be a role, `Store(DuplicateEmail)`,
    /// backend failures.
    pub async fn create_account(
        &self,
        admin: &Administrator,
        email: Email,
        roles: &[String],
        password: Option<NewPassword>,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        check_roles(roles)?;
        let password = password
            .map(|typed| self.admit_password("password", typed, &[email.as_str()]))
            .transpose()?;
        let initial = match &password {
            Some(p) => InitialPassword::Chosen(self.hasher.hash(p.expose()).await?),
            None => InitialPassword::Unusable(self.hasher.hash_of_unknown_secret().await?),
        };
        let user = create_vouched(&*self.store, &email, roles, initial, admin.by(client)).await?;
        tracing::info!(target: SECURITY, event = "account_created_by_admin", user_id = %user.id, by = %admin.user.id);
        if password.is_none() {
            self.request_password_reset(email, client);
        }
        Ok(user)
    }

    /// Deletes an account with everything hanging from it; its sessions end here at once
    /// and on every instance within a second. The audit trail keeps its history.
    ///
    /// Errors: `AccountNotFound`, `OwnAccount` for the administrator's own, backend failures.
    pub async fn delete_account(
        &self,
        admin: &Administrator,
        id: UserId,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        if id == admin.user.id {
            return Err(AccountError::OwnAccount);
        }
        let user = self.account(id).await?;
        if !delete_account(&*self.store, &user, admin.by(client)).await? {
            return Err(AccountError::AccountNotFound);
        }
        self.access.revoke_user(id, None).await?;
        tracing::info!(target: SECURITY, event = "account_deleted_by_admin", user_id = %id, by = %admin.user.id);
        Ok(())
    }

    /// Applies `action` to the account `id`, audited; changes that end sessions end them
    /// here at once (and on every instance through the change feed).
    ///
    /// Errors: `AccountNotFound`, `OwnAccount` (see [`AccountAction`]), `Field("role")`
    /// for a name that cannot be a role, backend failures.
    pub async fn act_on_account(
        &self,
        admin: &Administrator,
        id: UserId,
        action: AccountAction,
        client: &Client<'_>,
    ) -> Result<Changed, AccountError> {
        if id == admin.user.id && !action.allowed_on_self(self.admin_role()) {
            return Err(AccountError::OwnAccount);
        }
        if let AccountAction::GrantRole(role) | AccountAction::RevokeRole(role) = &action {
            check_roles(std::slice::from_ref(role))?;
        }
        let user = self.account(id).await?;
        let (store, by) = (&*self.store, admin.by(client));
        let now = Utc::now();
        let (changed, ends_sessions) = match &action {
            AccountAction::Activate => (set_user_active(store, &user, true, by).await?, false),
            AccountAction::Deactivate => (set_user_active(store, &user, false, by).await?, true),
            AccountAction::Unlock => {
                unlock_user(store, &user, by).await?;
                (user.is_locked(now) || user.failed_login_attempts > 0, false)
            }
            AccountAction::ResetSecondFactors => {
                let removed = reset_second_factors(store, &user, by).await?;
                let had = user.two_factor_enabled || user.two_factor_secret.is_some();
                (had || removed > 0, true)
            }
            AccountAction::MarkVerified => (mark_user_verified(store, &user, by).await?, false),
            AccountAction::GrantRole(role) => (grant_role_to(store, &user, role, by).await?, false),
            AccountAction::RevokeRole(role) => {
                (revoke_role_from(store, &user, role, by).await?, false)
            }
            AccountAction::EndSessions => {
                // Here first, to say how many ended; the feed ends them everywhere else.
                let ended = self.access.revoke_user(id, None).await?.len();
                end_sessions(store, &user, by, &format!("{ended} sessions ended here")).await?;
                (ended > 0, true)
            }
            AccountAction::UnlinkIdentity { provider, subject } => {
                let actor = Actor::Admin(admin.user.id);
                let removed = self.remove_identity(&user, provider, subject, actor, client);
                (removed.await?, false)
            }
        };
        if ends_sessions {
            self.access.revoke_user(id, None).await?;
        } else {
            self.access.forget_user(id);
        }
        tracing::info!(target: SECURITY, event = "account_changed_by_admin", action = ?action, user_id = %id, by = %admin.user.id, changed);
        Ok(changed)
    }

    /// Ends one session of any account — of `owner`'s only, when given — audited.
    ///
    /// Errors: `SessionNotFound` (gone, or not `owner`'s), backend failures.
    pub async fn end_any_session(
        &self,
        admin: &Administrator,
        session: SessionId,
        owner: Option<UserId>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        let live = self
            .sessions
            .get(&session)
            .await?
            .filter(|s| owner.is_none_or(|o| s.user_id == o))
            .ok_or(AccountError::SessionNotFound)?;
        if !self.access.revoke_session(&session).await? {
            return Err(AccountError::SessionNotFound);
        }
        let owner = self.store.find_by_id(live.user_id).await?;
        let mut event = NewAuditEvent::new(
            AuditKind::SessionEnd,
            Actor::Admin(admin.user.id),
            owner.as_ref().map(|u| (u.id, &u.email)),
        );
        event.subject = Some(live.user_id);
        self.audit(event.from_ip(client.ip).detail("by an administrator"));
        Ok(())
    }

    /// Invites `email` with `roles`, as `admin`; the mail goes in `client`'s language.
    ///
    /// Errors: those of [`Accounts::invite`].
    pub async fn invite_as(
        &self,
        admin: &Administrator,
        email: Email,
        roles: &[String],
        client: &Client<'_>,
    ) -> Result<Invitation, AccountError> {
        let (invitation, _token) = self
            .invite_by(email, roles, admin.by(client), client.language)
            .await?;
        Ok(invitation)
    }

    /// Revokes the pending invitations of `email`, as `admin`; answers how many.
    pub async fn revoke_invitations_as(
        &self,
        admin: &Administrator,
        email: &Email,
        client: &Client<'_>,
    ) -> Result<u64, AccountError> {
        let revoked = revoke_invitations(&*self.store, email, admin.by(client)).await?;
        tracing::info!(target: SECURITY, event = "invitation_revoked", revoked, by = %admin.user.id);
        Ok(revoked)
    }

    /// One page of the audit trail, newest first.
    pub async fn audit_trail(
        &self,
        _admin: &Administrator,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, AccountError> {
        Ok(self.store.audit_events(filter).await?)
    }

    /// Writes a refused admin request to the audit trail: who asked, for what, and why not.
    pub fn audit_admin_refusal(
        &self,
        user: Option<&User>,
        what: &str,
        why: &AccountError,
        client: &Client<'_>,
    ) {
        let actor = user.map_or(Actor::Anonymous, |u| Actor::User(u.id));
        let mut event = NewAuditEvent::new(
            AuditKind::AdminRefused,
            actor,
            user.map(|u| (u.id, &u.email)),
        );
        event.outcome = AuditOutcome::Refused;
        self.audit(
            event
                .from_ip(client.ip)
                .detail(format!("{what}: {}", why.catalogue_key())),
        );
    }
}

/// `Field("roles")` when a name cannot be a role.
fn check_roles(roles: &[String]) -> Result<(), AccountError> {
    if roles.iter().all(|r| crate::config::is_role_name(r)) {
        return Ok(());
    }
    Err(AccountError::Field {
        field: "roles",
        message: crate::config::ROLE_NAME_RULE.to_owned(),
    })
}
