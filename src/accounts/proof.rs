//! Proofs beyond the password: the second factor of a sign-in (a TOTP code, a recovery
//! code or a passkey) and the step-up every security change needs.

use std::time::{SystemTime, UNIX_EPOCH};

use super::passkey::PasskeyAnswer;
use super::{AccountError, Accounts, Client, SecondStep, lockout};
use crate::auth::totp::{
    REPLAY_TTL, hash_recovery_code, looks_like_recovery_code, replay_key, verify_code,
};
use crate::reply::FieldError;
use crate::session::PasskeyUse;
use crate::store::{AuditKind, User};
use crate::telemetry::SECURITY;

/// The second factor sent with a password sign-in.
pub enum SecondFactor {
    /// A TOTP or recovery code (`None` or blank when none was sent).
    Code(Option<String>),
    /// A passkey's answer to the challenge of a `SecondFactorRequired`; `None` when what
    /// was sent could not be read as one (counted as a wrong factor).
    Passkey(Option<Box<PasskeyAnswer>>),
}

/// A step-up: the password and, when the change needs it and 2FA is on, a current code.
pub struct StepUp<'a> {
    /// The account's current password, as typed.
    pub password: &'a str,
    /// The field the password came in, named by a 400 when it is wrong.
    pub password_field: &'static str,
    /// A TOTP or recovery code (in `two_factor_code`); `None` when none is needed.
    pub code: Option<&'a str>,
}

/// Why a second factor did not pass.
pub(super) enum Failed {
    /// One is needed and none was sent: not a failed attempt.
    Required,
    /// One was sent and is wrong, used or stale: counts as a failed attempt.
    Wrong,
    /// A right TOTP code whose step was used already (a replay): counts as a failed
    /// attempt, as before, but the user is told to wait for the next code. Only a right
    /// code can be found replayed, so saying so tells nothing about a guess.
    Replayed,
    /// A backend could not be asked, or the stored secret cannot be opened.
    Backend(AccountError),
}

impl From<AccountError> for Failed {
    fn from(e: AccountError) -> Self {
        Self::Backend(e)
    }
}

/// What a user is told of a right TOTP code already used in its step.
pub(super) const CODE_REPLAYED: &str = "This code was just used; wait for the next one.";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Accounts {
    /// The second factor of a password sign-in. A user with a passkey needs one even
    /// without TOTP. Returns whether one was passed and whether it was a passkey.
    pub(super) async fn second_factor(
        &self,
        user: &User,
        second: &SecondFactor,
        client: &Client<'_>,
    ) -> Result<(bool, PasskeyUse), Failed> {
        let code = match second {
            SecondFactor::Passkey(answer) => {
                return self
                    .second_factor_passkey(user, answer.as_deref(), client)
                    .await
                    .map(|()| (true, PasskeyUse::SecondFactor));
            }
            SecondFactor::Code(code) => code.as_deref(),
        };
        let passed = self.check_code(user, code).await?;
        if !passed && !self.usable_passkeys(user).await?.is_empty() {
            return Err(Failed::Required);
        }
        Ok((passed, PasskeyUse::None))
    }

    /// The second step `user` is asked for: the methods they have and, when they have
    /// passkeys, a fresh challenge; held as a pending sign-in when `hold` gives its
    /// remember-me. `SecondFactorRequired`, or `WrongSecondFactor` after a `wrong` one.
    pub(super) async fn second_step(
        &self,
        user: &User,
        hold: Option<bool>,
        wrong: bool,
    ) -> AccountError {
        let mut methods = Vec::new();
        if user.two_factor_enabled {
            methods.push("totp");
        }
        let passkey = match self.second_factor_challenge(user).await {
            Ok(challenge) => challenge,
            Err(e) => return e,
        };
        if passkey.is_some() {
            methods.push("passkey");
        }
        let pending = match hold {
            Some(remember_me) => match self.hold_pending(user, remember_me).await {
                Ok(id) => Some(id),
                Err(e) => return e,
            },
            None => None,
        };
        let step = Box::new(SecondStep {
            methods,
            passkey,
            pending,
        });
        if wrong {
            AccountError::WrongSecondFactor(step)
        } else {
            AccountError::SecondFactorRequired(step)
        }
    }

    /// Checks a TOTP or recovery code; `Ok(true)` when one was passed, `Ok(false)` when the
    /// account has none. A TOTP code works once (across instances); a recovery code once, ever.
    async fn check_code(&self, user: &User, code: Option<&str>) -> Result<bool, Failed> {
        if !user.two_factor_enabled {
            return Ok(false);
        }
        let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(Failed::Required);
        };
        let Some(sealed) = user.two_factor_secret.as_deref() else {
            let cause = "2FA is enabled but no secret is stored";
            return Err(AccountError::internal("two-factor secret", &cause).into());
        };
        let secret = self
            .two_factor
            .secret_box()
            .open_secret(user.id, sealed)
            .map_err(|e| AccountError::internal("opening a TOTP secret", &e))?;
        if let Some(step) = verify_code(secret.as_bytes(), code, now_unix()) {
            let key = replay_key(user.id, step);
            if self
                .sessions
                .claim_once(&key, REPLAY_TTL)
                .await
                .map_err(AccountError::from)?
            {
                return Ok(true);
            }
            tracing::warn!(target: SECURITY, event = "totp_replay_refused", user_id = %user.id);
            return Err(Failed::Replayed);
        }
        if looks_like_recovery_code(code) {
            let hash = hash_recovery_code(user.id, code);
            let used = self.store.consume_recovery_code(user.id, &hash).await;
            if used.map_err(AccountError::from)? {
                tracing::warn!(target: SECURITY, event = "recovery_code_used", user_id = %user.id);
                return Ok(true);
            }
        }
        Err(Failed::Wrong)
    }

    /// Proves that the caller is the account's owner right now, before a security change:
    /// the password and, when `proof.code` is given, a current TOTP or recovery code.
    /// Counted as one guess against the lockout (a stolen access token cannot be used to
    /// try passwords), so `Locked` once the account is locked, and `Field` naming the wrong
    /// field. An empty password is `Field` "… is required.", and no guess.
    pub async fn step_up(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        if proof.password.is_empty() {
            return Err(AccountError::field(proof.password_field, "is required"));
        }
        let guess = lockout::claim(self, user, proof.password, client, AuditKind::StepUp).await?;
        let verified = match self.hasher.check(proof.password, &user.password_hash).await {
            Ok(verified) if verified.matches() => verified,
            Ok(_) => {
                guess.failed(self, client, "wrong_current_password").await;
                return Err(AccountError::field(proof.password_field, "is incorrect"));
            }
            Err(e) => return Err(guess.unchecked(self, e.into()).await),
        };
        if let Some(code) = proof.code {
            let field = "two_factor_code";
            match self.check_code(user, Some(code)).await {
                Ok(_) => {}
                Err(Failed::Required) => {
                    guess.released(self).await?;
                    return Err(AccountError::field(field, "is required"));
                }
                Err(Failed::Wrong) => {
                    guess.failed(self, client, "wrong_two_factor_code").await;
                    let wrong = "is not a current code or an unused recovery code";
                    return Err(AccountError::field(field, wrong));
                }
                Err(Failed::Replayed) => {
                    guess.failed(self, client, "replayed_two_factor_code").await;
                    let message = CODE_REPLAYED.to_owned();
                    return Err(AccountError::Field { field, message });
                }
                Err(Failed::Backend(e)) => return Err(guess.unchecked(self, e).await),
            }
        }
        guess.succeeded(self).await?;
        self.renew_hash(user, proof.password, verified).await;
        Ok(())
    }

    /// The step-up of a change that needs the second factor too: the password and, when
    /// `user` has TOTP on, a current or recovery code. `Invalid` names each one missing
    /// (blank), before any guess is counted; then [`Accounts::step_up`].
    pub(super) async fn step_up_with_code(
        &self,
        user: &User,
        proof: StepUp<'_>,
        client: &Client<'_>,
    ) -> Result<(), AccountError> {
        let code = proof.code.map(str::trim).filter(|c| !c.is_empty());
        let mut missing = Vec::new();
        if proof.password.is_empty() {
            missing.push(FieldError::required(proof.password_field));
        }
        if user.two_factor_enabled && code.is_none() {
            missing.push(FieldError::required("two_factor_code"));
        }
        if !missing.is_empty() {
            return Err(AccountError::Invalid(missing));
        }
        let code = code.filter(|_| user.two_factor_enabled);
        self.step_up(user, StepUp { code, ..proof }, client).await
    }
}
