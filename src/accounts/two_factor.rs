//! Managing one's TOTP second factor: a fresh secret to scan, turning it on (recovery
//! codes, shown once) and off, new recovery codes, and how many are left.
//!
//! Changing a second factor is a security change: it needs a verified address, and the
//! step-up. Turning TOTP on takes the password; with TOTP already on, replacing it (a new
//! secret, then turning that on), turning it off or making new recovery codes takes the
//! password and a current code or recovery code, counted against the lockout, so an access
//! token alone cannot lock the owner out behind a factor the thief holds. Turning TOTP on
//! ends the account's other sessions, which never passed it.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{AccountError, Accounts, Client, StepUp};
use crate::auth::totp::{
    Provisioning, REPLAY_TTL, TotpError, TotpSecret, generate_recovery_codes, hash_recovery_code,
    replay_key, verify_code,
};
use crate::mail::MailKind;
use crate::session::SessionId;
use crate::store::{AuditKind, AuditOutcome, User};
use crate::telemetry::SECURITY;

/// Why an account must have proven its address first, as the refusal says it.
const TWO_FACTOR_NEEDS_VERIFIED_EMAIL: &str =
    "Verify your email address before setting up two-factor authentication.";

/// The second factor to turn on: the secret from [`Accounts::setup_two_factor`] and the
/// code the authenticator app shows for it now (proof the app holds it).
pub struct TotpEnable {
    /// The secret the app was given.
    pub secret: TotpSecret,
    /// The app's current 6-digit code, as typed (checked in `token`).
    pub code: String,
}

/// A change of second factor takes a verified address; `EmailNotVerified` otherwise.
pub fn verified_for_two_factor(user: &User) -> Result<(), AccountError> {
    if user.is_verified {
        Ok(())
    } else {
        Err(AccountError::EmailNotVerified(
            TWO_FACTOR_NEEDS_VERIFIED_EMAIL,
        ))
    }
}

/// Ten fresh recovery codes for `user`, shown once, and their stored forms.
fn new_recovery_codes(user: &User) -> (Vec<String>, Vec<String>) {
    let codes = generate_recovery_codes();
    let hashes = codes
        .iter()
        .map(|c| hash_recovery_code(user.id, c))
        .collect();
    (codes, hashes)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Accounts {
    /// With TOTP already on, a new second factor needs the step-up with a code; with no
    /// password sent at all, `TwoFactorAlreadyEnabled` (which says what to send).
    async fn replacement_allowed(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        if proof.password.trim().is_empty() {
            return Err(AccountError::TwoFactorAlreadyEnabled);
        }
        self.step_up_with_code(user, proof, client)
            .await
            .inspect_err(|_| {
                tracing::warn!(target: SECURITY, event = "two_factor_replace_refused", user_id = %user.id);
            })
    }

    /// A fresh secret for `user`'s authenticator app; nothing is stored yet. With TOTP
    /// already on, only after the step-up with a code (`proof`; unused otherwise).
    ///
    /// Errors: `EmailNotVerified`, `TwoFactorAlreadyEnabled` (TOTP on and no password
    /// sent), `Invalid`, those of [`Accounts::step_up`], `InvalidAccountName` (an address an
    /// authenticator cannot label).
    pub async fn setup_two_factor(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<Provisioning, AccountError> {
        verified_for_two_factor(user)?;
        if user.two_factor_enabled {
            self.replacement_allowed(user, proof, client).await?;
        }
        self.totp_provisioning(user, &TotpSecret::generate())
    }

    /// What `user`'s authenticator app needs for `secret`: its text, otpauth URL and QR
    /// code (the setup page shown again after a wrong code).
    ///
    /// Errors: `InvalidAccountName`, `Internal`.
    pub fn totp_provisioning(
        &self,
        user: &User,
        secret: &TotpSecret,
    ) -> Result<Provisioning, AccountError> {
        let issuer = self.two_factor.issuer();
        crate::auth::totp::provisioning(issuer, user.email.as_str(), secret).map_err(|e| match e {
            TotpError::InvalidAccountName => AccountError::InvalidAccountName,
            e => AccountError::internal("two-factor setup", &e),
        })
    }

    /// Turns TOTP on for `user` with `input`, after the step-up (`proof`: the password;
    /// with TOTP already on, a code too), ends their sessions other than `keep` (the one
    /// asking) and mails them. Answers the recovery codes, shown once. The code that turned
    /// TOTP on cannot be replayed at sign-in.
    ///
    /// Errors: `EmailNotVerified`, `TwoFactorAlreadyEnabled` (TOTP on and no password
    /// sent), `Invalid`, those of [`Accounts::step_up`], `Field` (`token` not the current
    /// code), backend failures.
    pub async fn enable_two_factor(
        &self,
        user: &User,
        keep: &SessionId,
        input: &TotpEnable,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<Vec<String>, AccountError> {
        verified_for_two_factor(user)?;
        if user.two_factor_enabled {
            self.replacement_allowed(user, proof, client).await?;
        } else {
            // A second factor is a security change like a password: turning it on takes
            // the password, so a stolen access token cannot lock the owner out behind a
            // factor the thief holds.
            let proof = StepUp {
                code: None,
                ..proof
            };
            self.step_up(user, proof, client).await?;
        }
        let Some(step) = verify_code(input.secret.as_bytes(), &input.code, now_unix()) else {
            let wrong = "is not the code your app shows now for this secret";
            return Err(AccountError::field("token", wrong));
        };
        self.sessions
            .claim_once(&replay_key(user.id, step), REPLAY_TTL)
            .await?;
        let sealed = self
            .two_factor
            .secret_box()
            .seal_secret(user.id, &input.secret)
            .map_err(|e| AccountError::internal("sealing a TOTP secret", &e))?;
        let (codes, hashes) = new_recovery_codes(user);
        self.store.set_two_factor(user.id, Some(sealed)).await?;
        self.store.replace_recovery_codes(user.id, &hashes).await?;
        // Sessions that never passed the new second factor must not outlive its arrival:
        // one of them could otherwise turn it off again.
        let ended = self.access.revoke_user(user.id, Some(keep)).await?.len();
        tracing::info!(target: SECURITY, event = "two_factor_enabled", user_id = %user.id, replaced = user.two_factor_enabled, sessions_ended = ended);
        let detail = if user.two_factor_enabled {
            "replaced"
        } else {
            ""
        };
        self.audit_own(
            AuditKind::TwoFactorEnable,
            user,
            Some(client),
            AuditOutcome::Success,
            detail,
        );
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::TwoFactorEnabled,
        );
        Ok(codes)
    }

    /// Marks `session`, which has just turned TOTP on with a current code from the
    /// second-factor step's setup, as two-factor (its `second_factor_at` and `auth_time`
    /// now), as a step-up would: the `two_factor` route it was sent away from lets it in.
    /// TOTP is on whatever this answers: a store that cannot record it leaves the session
    /// to prove the factor on the step, and is logged.
    pub async fn proven_by_enabling(&self, session: &SessionId) {
        match self
            .sessions
            .prove_second_factor(session, chrono::Utc::now())
            .await
        {
            Ok(_) => self.access.forget_sessions(std::slice::from_ref(session)),
            Err(e) => {
                tracing::warn!(target: SECURITY, event = "second_factor_not_recorded", session_id = %session, error = %e);
            }
        }
    }

    /// Turns TOTP off for `user` after the step-up (`proof`, with a code while TOTP is
    /// on) and forgets the secret and recovery codes; mails them.
    ///
    /// Errors: `EmailNotVerified`, `Invalid`, those of [`Accounts::step_up`],
    /// `TwoFactorNotEnabled`, backend failures.
    pub async fn disable_two_factor(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        verified_for_two_factor(user)?;
        if let Err(e) = self.step_up_with_code(user, proof, client).await {
            tracing::warn!(target: SECURITY, event = "two_factor_disable_refused", user_id = %user.id);
            return Err(e);
        }
        if !user.two_factor_enabled {
            return Err(AccountError::TwoFactorNotEnabled);
        }
        self.store.set_two_factor(user.id, None).await?;
        tracing::info!(target: SECURITY, event = "two_factor_disabled", user_id = %user.id);
        self.audit_own(
            AuditKind::TwoFactorDisable,
            user,
            Some(client),
            AuditOutcome::Success,
            "",
        );
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::TwoFactorDisabled,
        );
        Ok(())
    }

    /// Replaces all of `user`'s recovery codes, used or not, with ten new ones after the
    /// step-up (`proof`: the password and a current TOTP code or an unused recovery code,
    /// one guess against the lockout), and mails the owner a notice (never the codes).
    /// Answers the new codes, shown once. The sessions stay: the second factor itself has
    /// not changed.
    ///
    /// Errors: `EmailNotVerified`, `TwoFactorNotEnabled` (before any guess: there are no
    /// codes to replace), `Invalid` (a field left blank), those of [`Accounts::step_up`],
    /// backend failures.
    pub async fn regenerate_recovery_codes(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<Vec<String>, AccountError> {
        verified_for_two_factor(user)?;
        if !user.two_factor_enabled {
            return Err(AccountError::TwoFactorNotEnabled);
        }
        if let Err(e) = self.step_up_with_code(user, proof, client).await {
            tracing::warn!(target: SECURITY, event = "recovery_codes_regenerate_refused", user_id = %user.id);
            return Err(e);
        }
        let (codes, hashes) = new_recovery_codes(user);
        self.store.replace_recovery_codes(user.id, &hashes).await?;
        tracing::info!(target: SECURITY, event = "recovery_codes_regenerated", user_id = %user.id, codes = codes.len());
        let detail = format!("{} new codes", codes.len());
        self.audit_own(
            AuditKind::RecoveryCodesRegenerate,
            user,
            Some(client),
            AuditOutcome::Success,
            &detail,
        );
        self.mailer.send_in_background_in(
            self.mail_language(user, client),
            user.email.as_str(),
            &user.first_name,
            MailKind::RecoveryCodesRegenerated,
        );
        Ok(codes)
    }

    /// How many of `user`'s recovery codes are still unused; 0 without TOTP, without
    /// asking the store.
    ///
    /// Errors: backend failures.
    pub async fn recovery_codes_remaining(&self, user: &User) -> Result<u64, AccountError> {
        if !user.two_factor_enabled {
            return Ok(0);
        }
        Ok(self.store.count_unused_recovery_codes(user.id).await?)
    }
}
