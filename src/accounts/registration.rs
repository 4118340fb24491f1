//! An account's life before its first sign-in and after a lost password: registration, the
//! mailed verification link, and the mailed reset link. Each link is a single-use token
//! whose hash alone is stored; the mail goes out only once the store has it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::fields::NewAccount;
use super::{AccountError, Accounts, Client};
use crate::auth::secrets::{is_token_shaped, random_token, sha256_hex};
use crate::config::Refusal;
use crate::domain::{Email, NewPassword, Password, UserId};
use crate::mail::{MailKind, Mailer};
use crate::store::{
    Actor, AuditKind, AuditOutcome, NewAuditEvent, NewToken, NewUser, StoreError, TokenKind, User,
    UserStore,
};
use crate::telemetry::SECURITY;

/// How long an email-verification link works.
pub const VERIFICATION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a password-reset link works.
pub const RESET_TTL: Duration = Duration::from_secs(3600);

impl Accounts {
    /// Whether anyone may register by themselves now: `[registration]` `closed` and
    /// `invite` refuse every address before any is read (a page then shows no form).
    ///
    /// Errors: `RegistrationRefused` (logged `registration_refused`, without an address).
    pub fn registration_open(&self, client: &Client<'_>) -> Result<(), AccountError> {
        match self.config.registration.refuses_everyone() {
            Some(refusal) => Err(self.registration_refused(refusal, client)),
            None => Ok(()),
        }
    }

    /// Creates an account (in `client.language`) and mails its verification link. The
    /// account and its token are one transaction: a storage failure leaves neither (and a
    /// retry with the same address works), and the mail goes out only once both are stored.
    ///
    /// An address already taken answers `Store(DuplicateEmail)`; when its account was never
    /// verified, the address's owner is mailed a reset link in the background (see
    /// `offer_pending_address`). `[registration]` is asked first: `RegistrationRefused`
    /// (closed, invitation only, or the address's domain not allowed) writes and mails
    /// nothing. Errors otherwise: hashing and backend failures.
    pub async fn register(
        &self,
        account: NewAccount,
        client: &Client<'_>,
    ) -> Result<User, AccountError> {
        self.registration_open(client)?;
        let admitted = self.config.registration.admits(&account.email);
        admitted.map_err(|refusal| self.registration_refused(refusal, client))?;
        let inputs = [
            account.email.as_str(),
            &account.first_name,
            &account.last_name,
        ];
        let password = self.admit_password("password", account.password, &inputs)?;
        let password_hash = self.hasher.hash(password.expose()).await?;
        let (token, stored) = new_token(TokenKind::EmailVerification, VERIFICATION_TTL);
        let new = NewUser {
            email: account.email.clone(),
            password_hash,
            first_name: account.first_name,
            last_name: account.last_name,
            language: client.language.to_owned(),
        };
        let user = match self.store.create_user_with_token(new, stored).await {
            Ok(user) => user,
            Err(StoreError::DuplicateEmail) => {
                self.offer_pending_address(&account.email, client);
                return Err(StoreError::DuplicateEmail.into());
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(target: SECURITY, event = "user_registered", user_id = %user.id, client_ip = %client.ip);
        self.audit_own(
            AuditKind::Registration,
            &user,
            Some(client),
            AuditOutcome::Success,
            "",
        );
        self.mail_verification(&user, token, account.return_to, client);
        Ok(user)
    }

    /// Proves an address with the token of its mailed link: the token, the verified flag
    /// and the change feed's entry are one transaction (a failure leaves the link usable).
    /// The account's id.
    ///
    /// Errors: `InvalidLink` (malformed, unknown, used or expired), backend failures.
    pub async fn verify_email(&self, token: &str) -> Result<UserId, AccountError> {
        if !is_token_shaped(token) {
            return Err(AccountError::InvalidLink);
        }
        let user_id = self
            .store
            .verify_address(&sha256_hex(token))
            .await?
            .ok_or(AccountError::InvalidLink)?;
        // Routes that require a verified address must let the user in at once, here and
        // on every other instance (which learn it from the change feed).
        self.access.forget_user(user_id);
        tracing::info!(target: SECURITY, event = "email_verified", user_id = %user_id);
        self.audit_by_id(AuditKind::EmailVerification, user_id, "");
        Ok(user_id)
    }

    /// Mails `user` a fresh verification link (the earlier ones stop working).
    ///
    /// Errors: `AlreadyVerified`, backend failures.
    pub async fn resend_verification(
        &self,
        user: &User,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        if user.is_verified {
            return Err(AccountError::AlreadyVerified);
        }
        let token = issue_token(
            &*self.store,
            user,
            TokenKind::EmailVerification,
            VERIFICATION_TTL,
        )
        .await?;
        self.mail_verification(user, token, None, client);
        Ok(())
    }

    /// Mails the verification link `token` to `user`, in the background.
    fn mail_verification(
        &self,
        user: &User,
        token: String,
        return_to: Option<String>,
        client: &Client<'_>,
    ) {
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::Verification {
                token,
                expires_in: VERIFICATION_TTL,
                return_to,
            },
        );
    }

    /// Mails a reset link to the account at `email`, if there is an active one. Nothing
    /// about the account happens before this returns: the lookup, the token and the mail
    /// all run afterwards on the backend runtime, so neither the caller's answer nor its
    /// timing tells whether the account exists. A failure is logged, like any mail failure.
    pub fn request_password_reset(&self, email: Email, client: &Client<'_>) {
        let (store, mailer) = (Arc::clone(&self.store), Arc::clone(&self.mailer));
        let client_ip = client.ip;
        // The page's language, for an account that has none of its own yet.
        let page_language = client.language.to_owned();
        self.backend.spawn(async move {
            let Some(user) = find_for_reset(&*store, &email, |user| user.is_active, "an account for a password reset")
                .await
            else {
                return;
            };
            tracing::info!(target: SECURITY, event = "password_reset_requested", user_id = %user.id, client_ip = %client_ip);
            let event = NewAuditEvent::new(AuditKind::PasswordResetRequest, Actor::Anonymous, Some((user.id, &user.email)));
            super::audit::record(&*store, &event.from_ip(client_ip)).await;
            let language = if user.language.is_empty() {
                &page_language
            } else {
                &user.language
            };
            mail_reset_link(&*store, &mailer, &user, language, &user.first_name).await;
        });
    }

    /// A registration for an address whose account was never verified: whoever registered
    /// it first need not own the mailbox (pre-registration hijacking), so its verification
    /// link must not be what the owner gets. The owner gets a password-reset link instead:
    /// using it ([`Accounts::reset_password`]) sets their password, proves the address, ends
    /// every session the first registrant holds and removes every other way in they could
    /// have planted (linked identities, passkeys, TOTP). Runs in the background; a verified
    /// account gets nothing.
    fn offer_pending_address(&self, email: &Email, client: &Client<'_>) {
        let (store, mailer) = (Arc::clone(&self.store), Arc::clone(&self.mailer));
        let email = email.clone();
        let page_language = client.language.to_owned();
        self.backend.spawn(async move {
            let pending = |user: &User| user.is_active && !user.is_verified;
            let Some(user) = find_for_reset(&*store, &email, pending, "a pending registration").await
            else {
                return;
            };
            tracing::info!(target: SECURITY, event = "pending_registration_claimed", user_id = %user.id);
            // The name is the first registrant's, not the owner's: the mail greets no one.
            mail_reset_link(&*store, &mailer, &user, &page_language, "").await;
        });
    }

    /// Sets a new password with the token of a mailed reset link and ends every session of
    /// the account; answers how many ended. One transaction sets the password, proves the
    /// address (the link came to the mailbox, and a pending registration made by someone
    /// else with this address is now the mailbox owner's, with their password) and clears
    /// the lockout, or none of it. When the address was unproven until this reset, the same
    /// transaction removes every other way in its first registrant could hold — linked
    /// identities (and the roles mapped through them), passkeys, the TOTP secret, recovery
    /// codes — and the audit trail's `password_reset` says what went (see
    /// [`UserStore::reset_password`]).
    ///
    /// Errors: `InvalidLink` (malformed, unknown, used or expired), hashing and backend
    /// failures.
    pub async fn reset_password(
        &self,
        token: &str,
        new: NewPassword,
        client: &Client<'_>,
    ) -> Result<usize, AccountError> {
        if !is_token_shaped(token) {
            return Err(AccountError::InvalidLink);
        }
        let new = self.admit_for_reset(token, new).await?;
        // The token is checked (and spent) before bcrypt runs, so requests without a valid
        // token cost no hashing: they cannot be used to slow everyone's logins down.
        // Should hashing then fail (503), the user asks for a new link.
        let user_id = self
            .store
            .consume_token(TokenKind::PasswordReset, &sha256_hex(token))
            .await?
            .ok_or(AccountError::InvalidLink)?;
        let password_hash = self.hasher.hash(new.expose()).await?;
        let reset = self.store.reset_password(user_id, &password_hash).await?;
        let ended = self.access.revoke_user(user_id, None).await?.len();
        if reset.proved_address {
            // Its second factor, passkeys and roles may have changed: every instance reads
            // the account afresh (the change feed tells the others).
            self.access.forget_user(user_id);
        }
        tracing::info!(target: SECURITY, event = "password_reset", user_id = %user_id, sessions_ended = ended, address_proven = reset.proved_address);
        let mut detail = format!("{ended} sessions ended");
        if let Some(removed) = reset.note() {
            tracing::warn!(target: SECURITY, event = "unproven_account_claimed", user_id = %user_id, identities = reset.identities, passkeys = reset.passkeys, totp = reset.totp, recovery_codes = reset.recovery_codes);
            detail = format!("{detail}; {removed}");
        }
        self.audit_by_id(AuditKind::PasswordReset, user_id, &detail);
        if let Ok(Some(user)) = self.store.find_by_id(user_id).await {
            self.mailer.send_in_background_in(
                self.mail_language(&user, client),
                user.email.as_str(),
                &user.first_name,
                MailKind::PasswordChanged,
            );
        }
        Ok(ended)
    }
}

impl Accounts {
    /// A reset's new password held to the policy with its account's address and names,
    /// before the link is spent (a refused password leaves the link usable).
    async fn admit_for_reset(
        &self,
        token: &str,
        new: NewPassword,
    ) -> Result<Password, AccountError> {
        let owner = self
            .store
            .token_owner(TokenKind::PasswordReset, &sha256_hex(token))
            .await?
            .ok_or(AccountError::InvalidLink)?;
        let user = self
            .store
            .find_by_id(owner)
            .await?
            .ok_or(AccountError::InvalidLink)?;
        let inputs = [user.email.as_str(), &user.first_name, &user.last_name];
        self.admit_password("password", new, &inputs)
    }
}

/// The account at `email` when `fits` it, for a reset link sent in the background; a
/// lookup failure is logged as one of `what`.
async fn find_for_reset(
    store: &dyn UserStore,
    email: &Email,
    fits: impl Fn(&User) -> bool,
    what: &str,
) -> Option<User> {
    match store.find_by_email(email).await {
        Ok(Some(user)) if fits(&user) => Some(user),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up {what}");
            None
        }
    }
}

/// Issues a reset token for `user` and mails its link in `language`, greeting
/// `first_name`; a failure is logged.
async fn mail_reset_link(
    store: &dyn UserStore,
    mailer: &Arc<Mailer>,
    user: &User,
    language: &str,
    first_name: &str,
) {
    match issue_token(store, user, TokenKind::PasswordReset, RESET_TTL).await {
        Ok(token) => mailer.send_in_background_in(
            language,
            user.email.as_str(),
            first_name,
            MailKind::PasswordReset {
                token,
                expires_in: RESET_TTL,
            },
        ),
        Err(e) => {
            tracing::warn!(error = %e, user_id = %user.id, "could not issue a password reset token")
        }
    }
}

/// `portcullis user send-reset`: a fresh reset link for `user` (an active account), mailed
/// now in `language` and audited as asked by the operator. Errors: the account is
/// deactivated (`Deactivated`), the token could not be stored, or the mail not sent (the
/// link is then unused: the operator can try again or use `user set-password`).
pub async fn mail_operator_reset(
    store: &dyn UserStore,
    mailer: &Mailer,
    user: &User,
    language: &str,
) -> Result<(), AccountError> {
    if !user.is_active {
        return Err(AccountError::Deactivated);
    }
    let token = issue_token(store, user, TokenKind::PasswordReset, RESET_TTL).await?;
    let event = NewAuditEvent::new(
        AuditKind::PasswordResetRequest,
        Actor::Operator,
        Some((user.id, &user.email)),
    );
    super::audit::record(store, &event).await;
    let mail = MailKind::PasswordReset {
        token,
        expires_in: RESET_TTL,
    };
    mailer
        .send_in(language, user.email.as_str(), &user.first_name, mail)
        .await
        .map_err(|e| AccountError::internal("mailing a reset link", &e))
}

/// Replaces `user`'s unused tokens of `kind` with a new one, in one transaction, and
/// returns its plaintext (to mail once the store has it).
async fn issue_token(
    store: &dyn UserStore,
    user: &User,
    kind: TokenKind,
    ttl: Duration,
) -> Result<String, StoreError> {
    let (token, stored) = new_token(kind, ttl);
    store.replace_token(user.id, stored).await?;
    Ok(token)
}

/// A fresh random token of `kind` valid for `ttl`: its plaintext and what the store keeps.
fn new_token(kind: TokenKind, ttl: Duration) -> (String, NewToken) {
    let token = random_token();
    let expires_at =
        Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    let stored = NewToken {
        kind,
        token_hash: sha256_hex(&token),
        expires_at,
    };
    (token, stored)
}

impl Accounts {
    /// A registration `[registration]` turns away: logged and audited (outcome `refused`,
    /// the reason as its detail) without the address.
    fn registration_refused(&self, refusal: Refusal, client: &Client<'_>) -> AccountError {
        tracing::info!(target: SECURITY, event = "registration_refused", reason = refusal.code(), client_ip = %client.ip);
        let mut event = NewAuditEvent::new(AuditKind::Registration, Actor::Anonymous, None)
            .outcome(AuditOutcome::Refused)
            .detail(refusal.code());
        event.client_ip = Some(client.ip);
        self.audit(event);
        AccountError::RegistrationRefused(refusal)
    }
}
