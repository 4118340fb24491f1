//! Changes to one's own account: the name, the language of mails, and those that need the step-up (a new
//! password, deactivation).

use super::fields::NewNames;
use super::{AccountError, Accounts, Client, StepUp};
use crate::domain::{NewPassword, UserId};
use crate::mail::MailKind;
use crate::session::SessionId;
use crate::store::{AuditKind, AuditOutcome, User};
use crate::telemetry::SECURITY;

impl Accounts {
    /// Changes `user`'s first and last name (a `None` stays as it is); the account as
    /// stored afterwards.
    ///
    /// Errors: `AccountNotFound` (it was deleted meanwhile), backend failures.
    pub async fn update_profile(&self, user: &User, names: NewNames) -> Result<User, AccountError> {
        let updated = self
            .store
            .update_profile(user.id, names.first_name, names.last_name)
            .await?
            .ok_or(AccountError::AccountNotFound)?;
        self.audit_own(
            AuditKind::ProfileUpdate,
            &updated,
            None,
            AuditOutcome::Success,
            "",
        );
        Ok(updated)
    }

    /// Keeps `language` (a catalogue's code, as the page chose it) as the language of the
    /// mails to `user` from now on.
    ///
    /// Errors: backend failures.
    pub async fn set_language(&self, user: UserId, language: &str) -> Result<(), AccountError> {
        Ok(self.store.set_language(user, language).await?)
    }

    /// Replaces `user`'s password after the step-up (`proof`), ends their sessions other
    /// than `keep` (the one asking) and mails them; answers how many sessions ended.
    ///
    /// Errors: those of [`Accounts::step_up`], backend failures.
    pub async fn change_password(
        &self,
        user: &User,
        keep: &SessionId,
        proof: StepUp<'_>,
        new: NewPassword,
        client: &Client<'_>,
    ) -> Result<usize, AccountError> {
        let inputs = [user.email.as_str(), &user.first_name, &user.last_name];
        let new = self.admit_password("new_password", new, &inputs)?;
        if let Err(e) = self.step_up(user, proof, client).await {
            tracing::warn!(target: SECURITY, event = "password_change_refused", user_id = %user.id);
            return Err(e);
        }
        let hash = self.hasher.hash(new.expose()).await?;
        self.store.set_password_hash(user.id, &hash).await?;
        let ended = self.access.revoke_user(user.id, Some(keep)).await?.len();
        tracing::info!(target: SECURITY, event = "password_changed", user_id = %user.id, sessions_ended = ended);
        let detail = format!("{ended} other sessions ended");
        self.audit_own(
            AuditKind::PasswordChange,
            user,
            Some(client),
            AuditOutcome::Success,
            &detail,
        );
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::PasswordChanged,
        );
        Ok(ended)
    }

    /// Deactivates `user`'s account after the step-up (`proof`) and ends every session;
    /// answers how many ended.
    ///
    /// Errors: those of [`Accounts::step_up`], backend failures.
    pub async fn deactivate(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<usize, AccountError> {
        if let Err(e) = self.step_up(user, proof, client).await {
            tracing::warn!(target: SECURITY, event = "deactivation_refused", user_id = %user.id);
            return Err(e);
        }
        self.store.set_active(user.id, false).await?;
        let ended = self.access.revoke_user(user.id, None).await?.len();
        tracing::info!(target: SECURITY, event = "account_deactivated", user_id = %user.id, sessions_ended = ended);
        let detail = format!("{ended} sessions ended");
        self.audit_own(
            AuditKind::SelfDeactivate,
            user,
            Some(client),
            AuditOutcome::Success,
            &detail,
        );
        Ok(ended)
    }
}
