//! Runs every store call on the runtime that opened the store, through [`Backend`] (see
//! `backend.rs` for why).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    AttemptClaim, AttemptOutcome, AuditEvent, AuditFilter, FailedLogin, Invitation, LinkedIdentity,
    MappedRoles, NewAuditEvent, NewInvitation, NewLinkedIdentity, NewToken, NewUser, PasskeyUse,
    PasswordReset, StoreError, StoredPasskey, TokenKind, User, UserChange, UserChangeEvent,
    UserSearch, UserStore,
};
use crate::backend::{Backend, BackendError};
use crate::domain::{Email, PasskeyId, UserId};

/// A [`UserStore`] whose calls all run on one tokio runtime.
pub(super) struct OnRuntime {
    inner: Arc<dyn UserStore>,
    backend: Backend,
}

impl OnRuntime {
    /// Binds `inner` to the current runtime (the one [`super::connect`] runs on).
    pub(super) fn new(inner: Arc<dyn UserStore>) -> Result<Self, StoreError> {
        let backend = Backend::current().ok_or_else(|| {
            StoreError::Other("the store must be opened inside a tokio runtime".into())
        })?;
        Ok(Self { inner, backend })
    }

    async fn run<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<dyn UserStore>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        match self.backend.run(call(Arc::clone(&self.inner))).await {
            Ok(result) => result,
            Err(BackendError::Panicked) => Err(StoreError::Other("a storage task panicked".into())),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}

#[async_trait]
impl UserStore for OnRuntime {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.run(|s| async move { s.create_user(new).await }).await
    }

    async fn create_user_with_token(
        &self,
        new: NewUser,
        token: NewToken,
    ) -> Result<User, StoreError> {
        self.run(|s| async move { s.create_user_with_token(new, token).await })
            .await
    }

    async fn create_vouched_user(
        &self,
        new: NewUser,
        roles: &[String],
    ) -> Result<User, StoreError> {
        let roles = roles.to_vec();
        self.run(|s| async move { s.create_vouched_user(new, &roles).await })
            .await
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        self.run(|s| async move { s.delete_user(id).await }).await
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let email = email.clone();
        self.run(|s| async move { s.find_by_email(&email).await })
            .await
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.run(|s| async move { s.find_by_id(id).await }).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run(|s| async move { s.list_users().await }).await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.run(|s| async move { s.count_users().await }).await
    }

    async fn search_users(&self, search: &UserSearch) -> Result<Vec<User>, StoreError> {
        let search = search.clone();
        self.run(|s| async move { s.search_users(&search).await })
            .await
    }

    async fn update_profile(
        &self,
        id: UserId,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<Option<User>, StoreError> {
        self.run(|s| async move { s.update_profile(id, first_name, last_name).await })
            .await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> Result<(), StoreError> {
        let password_hash = password_hash.to_owned();
        self.run(|s| async move { s.set_password_hash(id, &password_hash).await })
            .await
    }

    async fn set_language(&self, id: UserId, language: &str) -> Result<(), StoreError> {
        let language = language.to_owned();
        self.run(|s| async move { s.set_language(id, &language).await })
            .await
    }

    async fn reset_password(
        &self,
        id: UserId,
        password_hash: &str,
    ) -> Result<PasswordReset, StoreError> {
        let password_hash = password_hash.to_owned();
        self.run(|s| async move { s.reset_password(id, &password_hash).await })
            .await
    }

    async fn mark_verified(&self, id: UserId) -> Result<(), StoreError> {
        self.run(|s| async move { s.mark_verified(id).await }).await
    }

    async fn set_active(&self, id: UserId, active: bool) -> Result<(), StoreError> {
        self.run(|s| async move { s.set_active(id, active).await })
            .await
    }

    async fn record_failed_login(
        &self,
        id: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError> {
        self.run(|s| async move { s.record_failed_login(id, max_attempts, lock_for).await })
            .await
    }

    async fn claim_login_attempt(
        &self,
        id: UserId,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError> {
        self.run(|s| async move { s.claim_login_attempt(id, max_attempts, lock_for).await })
            .await
    }

    async fn resolve_login_attempt(
        &self,
        id: UserId,
        outcome: AttemptOutcome,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError> {
        self.run(|s| async move {
            s.resolve_login_attempt(id, outcome, max_attempts, lock_for)
                .await
        })
        .await
    }

    async fn claim_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<AttemptClaim, StoreError> {
        let email_hash = email_hash.to_owned();
        self.run(|s| async move {
            s.claim_unknown_login_attempt(&email_hash, max_attempts, lock_for)
                .await
        })
        .await
    }

    async fn resolve_unknown_login_attempt(
        &self,
        email_hash: &str,
        max_attempts: u32,
        lock_for: Duration,
    ) -> Result<FailedLogin, StoreError> {
        let email_hash = email_hash.to_owned();
        self.run(|s| async move {
            s.resolve_unknown_login_attempt(&email_hash, max_attempts, lock_for)
                .await
        })
        .await
    }

    async fn purge_unknown_login_attempts(&self) -> Result<u64, StoreError> {
        self.run(|s| async move { s.purge_unknown_login_attempts().await })
            .await
    }

    async fn record_successful_login(&self, id: UserId) -> Result<(), StoreError> {
        self.run(|s| async move { s.record_successful_login(id).await })
            .await
    }

    async fn unlock(&self, id: UserId) -> Result<(), StoreError> {
        self.run(|s| async move { s.unlock(id).await }).await
    }

    async fn grant_role(&self, id: UserId, role: &str) -> Result<bool, StoreError> {
        let role = role.to_owned();
        self.run(|s| async move { s.grant_role(id, &role).await })
            .await
    }

    async fn revoke_role(&self, id: UserId, role: &str) -> Result<bool, StoreError> {
        let role = role.to_owned();
        self.run(|s| async move { s.revoke_role(id, &role).await })
            .await
    }

    async fn set_two_factor(&self, id: UserId, secret: Option<Vec<u8>>) -> Result<(), StoreError> {
        self.run(|s| async move { s.set_two_factor(id, secret).await })
            .await
    }

    async fn replace_recovery_codes(
        &self,
        id: UserId,
        hashes: &[String],
    ) -> Result<(), StoreError> {
        let hashes = hashes.to_vec();
        self.run(|s| async move { s.replace_recovery_codes(id, &hashes).await })
            .await
    }

    async fn consume_recovery_code(&self, id: UserId, code_hash: &str) -> Result<bool, StoreError> {
        let code_hash = code_hash.to_owned();
        self.run(|s| async move { s.consume_recovery_code(id, &code_hash).await })
            .await
    }

    async fn count_unused_recovery_codes(&self, id: UserId) -> Result<u64, StoreError> {
        self.run(|s| async move { s.count_unused_recovery_codes(id).await })
            .await
    }

    async fn create_token(
        &self,
        id: UserId,
        kind: TokenKind,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|s| async move { s.create_token(id, kind, &token_hash, expires_at).await })
            .await
    }

    async fn replace_token(&self, id: UserId, token: NewToken) -> Result<(), StoreError> {
        self.run(|s| async move { s.replace_token(id, token).await })
            .await
    }

    async fn verify_address(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|s| async move { s.verify_address(&token_hash).await })
            .await
    }

    async fn consume_token(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|s| async move { s.consume_token(kind, &token_hash).await })
            .await
    }

    async fn token_owner(
        &self,
        kind: TokenKind,
        token_hash: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|s| async move { s.token_owner(kind, &token_hash).await })
            .await
    }

    async fn invalidate_tokens(&self, id: UserId, kind: TokenKind) -> Result<u64, StoreError> {
        self.run(|s| async move { s.invalidate_tokens(id, kind).await })
            .await
    }

    async fn purge_expired_tokens(&self) -> Result<u64, StoreError> {
        self.run(|s| async move { s.purge_expired_tokens().await })
            .await
    }

    async fn purge_invitations(&self) -> Result<u64, StoreError> {
        self.run(|s| async move { s.purge_invitations().await })
            .await
    }

    async fn record_user_change(&self, id: UserId, change: UserChange) -> Result<(), StoreError> {
        self.run(|s| async move { s.record_user_change(id, change).await })
            .await
    }

    async fn recent_user_changes(&self) -> Result<Vec<UserChangeEvent>, StoreError> {
        self.run(|s| async move { s.recent_user_changes().await })
            .await
    }

    async fn purge_user_changes(&self) -> Result<u64, StoreError> {
        self.run(|s| async move { s.purge_user_changes().await })
            .await
    }

    async fn create_invitation(&self, new: NewInvitation) -> Result<Invitation, StoreError> {
        self.run(|s| async move { s.create_invitation(new).await })
            .await
    }

    async fn list_invitations(&self) -> Result<Vec<Invitation>, StoreError> {
        self.run(|s| async move { s.list_invitations().await })
            .await
    }

    async fn find_invitation(&self, token_hash: &str) -> Result<Option<Invitation>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|s| async move { s.find_invitation(&token_hash).await })
            .await
    }

    async fn revoke_invitations(&self, email: &Email) -> Result<u64, StoreError> {
        let email = email.clone();
        self.run(|s| async move { s.revoke_invitations(&email).await })
            .await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        new: NewUser,
    ) -> Result<Option<User>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(|s| async move { s.accept_invitation(&token_hash, new).await })
            .await
    }

    async fn accept_invitation_with_passkey(
        &self,
        token_hash: &str,
        new: NewUser,
        passkey: &StoredPasskey,
    ) -> Result<Option<User>, StoreError> {
        let token_hash = token_hash.to_owned();
        let passkey = passkey.clone();
        self.run(|s| async move {
            s.accept_invitation_with_passkey(&token_hash, new, &passkey)
                .await
        })
        .await
    }

    async fn find_linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let (provider, subject) = (provider.to_owned(), subject.to_owned());
        self.run(|s| async move { s.find_linked_user(&provider, &subject).await })
            .await
    }

    async fn link_identity(&self, identity: &NewLinkedIdentity) -> Result<bool, StoreError> {
        let identity = identity.clone();
        self.run(|s| async move { s.link_identity(&identity).await })
            .await
    }

    async fn create_linked_user(
        &self,
        new: NewUser,
        verified: bool,
        identity: &NewLinkedIdentity,
    ) -> Result<User, StoreError> {
        let identity = identity.clone();
        self.run(|s| async move { s.create_linked_user(new, verified, &identity).await })
            .await
    }

    async fn apply_role_mapping(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
        given: &[String],
    ) -> Result<MappedRoles, StoreError> {
        let (provider, subject, given) = (provider.to_owned(), subject.to_owned(), given.to_vec());
        self.run(|s| async move {
            s.apply_role_mapping(user, &provider, &subject, &given)
                .await
        })
        .await
    }

    async fn linked_identities(&self, user: UserId) -> Result<Vec<LinkedIdentity>, StoreError> {
        self.run(|s| async move { s.linked_identities(user).await })
            .await
    }

    async fn touch_linked_identity(
        &self,
        provider: &str,
        subject: &str,
        email: &str,
    ) -> Result<(), StoreError> {
        let (provider, subject, email) =
            (provider.to_owned(), subject.to_owned(), email.to_owned());
        self.run(|s| async move { s.touch_linked_identity(&provider, &subject, &email).await })
            .await
    }

    async fn unlink_identity(
        &self,
        user: UserId,
        provider: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        let (provider, subject) = (provider.to_owned(), subject.to_owned());
        self.run(|s| async move { s.unlink_identity(user, &provider, &subject).await })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|s| async move { s.ping().await }).await
    }

    async fn record_audit_event(&self, event: &NewAuditEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.run(|s| async move { s.record_audit_event(&event).await })
            .await
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let filter = filter.clone();
        self.run(|s| async move { s.audit_events(&filter).await })
            .await
    }

    async fn purge_audit_events(&self, retention: Duration) -> Result<u64, StoreError> {
        self.run(|s| async move { s.purge_audit_events(retention).await })
            .await
    }

    async fn add_passkey(&self, passkey: &StoredPasskey) -> Result<bool, StoreError> {
        let passkey = passkey.clone();
        self.run(|s| async move { s.add_passkey(&passkey).await })
            .await
    }

    async fn list_passkeys(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError> {
        self.run(|s| async move { s.list_passkeys(user).await })
            .await
    }

    async fn find_passkey(&self, credential_id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        let credential_id = credential_id.to_owned();
        self.run(|s| async move { s.find_passkey(&credential_id).await })
            .await
    }

    async fn rename_passkey(
        &self,
        user: UserId,
        id: PasskeyId,
        name: &str,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(|s| async move { s.rename_passkey(user, id, &name).await })
            .await
    }

    async fn remove_passkey(&self, user: UserId, id: PasskeyId) -> Result<bool, StoreError> {
        self.run(|s| async move { s.remove_passkey(user, id).await })
            .await
    }

    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        let used = used.clone();
        self.run(|s| async move { s.record_passkey_use(&used).await })
            .await
    }
}
