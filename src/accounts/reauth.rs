//! Reauthentication: the user of a live session proves who they are again (the password,
//! with the second factor the account has, or a passkey), for routes whose `max_auth_age`
//! asks for a recent sign-in. The session stays the same; its `auth_time` moves to now and
//! a new access token carries it.

use chrono::Utc;

use super::passkey::PasskeyAnswer;
use super::{AccountError, Accounts, Client, PasskeyChallenge, SecondFactor, StepUp};
use crate::access::gatekeeper::Principal;
use crate::session::SessionId;
use crate::store::{Actor, AuditKind, NewAuditEvent, User};
use crate::telemetry::SECURITY;

/// What a reauthentication is proven with.
pub enum Reproof<'a> {
    /// The account's password and, when TOTP is on, a current TOTP or recovery code.
    Password {
        /// The password, as typed.
        password: &'a str,
        /// The code, as typed; `None` (or blank) when none was sent.
        code: Option<&'a str>,
    },
    /// A passkey's answer to the challenge of [`Accounts::reauthentication_challenge`];
    /// `None` when what was sent could not be read as one (a wrong factor).
    Passkey(Option<Box<PasskeyAnswer>>),
}

/// A session proven again: the new access token (the refresh token is unchanged) and who
/// it stands for.
pub struct Reauthenticated {
    /// Who the new access token stands for, with the new `auth_time`.
    pub principal: Principal,
    /// The new access token.
    pub access_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

impl Accounts {
    /// The passkey challenge a reauthentication of `user` may answer, when they have
    /// passkeys (and passkeys are on).
    pub async fn reauthentication_challenge(
        &self,
        user: &User,
    ) -> Result<Option<PasskeyChallenge>, AccountError> {
        self.second_factor_challenge(user).await
    }

    /// Proves `user` again in their live `session`: the password with the second factor
    /// the account has (through [`Accounts::step_up_with_code`]: one guess against the
    /// lockout), or a passkey (one guess too). An account whose only second factor is a
    /// passkey proves itself with the passkey. On success the session's `auth_time` is
    /// now (and its second factor's time, when one took part) and a new access token
    /// carries it; a refresh never does this.
    ///
    /// Errors: `SessionNotFound` (ended, or not `user`'s), `Invalid` / `Field` (a blank or
    /// wrong password or code), `SecondFactorRequired` (a passkey is this account's second
    /// factor), `WrongSecondFactor`, `Locked`, `Busy`, backend failures.
    pub async fn reauthenticate(
        &self,
        user: &User,
        session: SessionId,
        proof: Reproof<'_>,
        client: &Client<'_>,
    ) -> Result<Reauthenticated, AccountError> {
        let live = self.sessions.get(&session).await?;
        if live.is_none_or(|s| s.user_id != user.id) {
            return Err(AccountError::SessionNotFound);
        }
        let second_factor = self.check_reproof(user, proof, client).await?;
        let now = Utc::now();
        let recorded = if second_factor {
            self.sessions.prove_second_factor(&session, now).await?
        } else {
            self.sessions.prove_identity(&session, now).await?
        };
        let live = self.sessions.get(&session).await?;
        let Some(live) = live.filter(|s| recorded && s.user_id == user.id) else {
            return Err(AccountError::SessionNotFound);
        };
        self.access.forget_sessions(&[session]);
        let (access_token, claims) = self.access_token_for(&live)?;
        let principal = self
            .access
            .admit(&access_token, claims, user, live.two_factor)
            .ok_or_else(|| AccountError::internal("admitting a fresh token", &"unusable claims"))?;
        tracing::info!(target: SECURITY, event = "reauthenticated", user_id = %user.id, session_id = %session, second_factor);
        let event = NewAuditEvent::new(
            AuditKind::StepUp,
            Actor::User(user.id),
            Some((user.id, &user.email)),
        );
        self.audit(event.from_ip(client.ip).detail("reauthentication"));
        Ok(Reauthenticated {
            principal,
            access_token,
            expires_in: self.config.tokens.access_ttl.get().as_secs(),
        })
    }

    /// Checks a reauthentication's proof; answers whether a second factor took part.
    async fn check_reproof(
        &self,
        user: &User,
        proof: Reproof<'_>,
        client: &Client<'_>,
    ) -> Result<bool, AccountError> {
        match proof {
            Reproof::Password { password, code } => {
                if !user.two_factor_enabled && !self.usable_passkeys(user).await?.is_empty() {
                    // A password sign-in of this account needs its passkey: so does this.
                    return Err(self.second_step(user, None, false).await);
                }
                let step_up = StepUp {
                    password,
                    password_field: "password",
                    code,
                };
                self.step_up_with_code(user, step_up, client).await?;
                Ok(user.two_factor_enabled)
            }
            Reproof::Passkey(answer) => {
                let second = SecondFactor::Passkey(answer);
                self.second_factor_guess(user, &second, client).await?;
                Ok(true)
            }
        }
    }
}
