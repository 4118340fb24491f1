//! The pending second step of a password sign-in, held on the server: after a right
//! password, a page that must ask for the second factor gets a random id, and the record
//! under it (whose account, whether to remember the sign-in) waits in the session backend
//! for [`PENDING_TTL`]. The password never goes back to the browser. Each id is taken once
//! (`SessionStore::take_stash`, atomic across instances); a wrong factor gets a fresh one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::proof::Failed;
use super::{AccountError, Accounts, Client, SecondFactor, SignedIn, lockout};
use crate::domain::UserId;
use crate::session::SessionError;
use crate::store::{AuditKind, User};

/// How long a pending second step waits, from the right password.
pub const PENDING_TTL: Duration = Duration::from_secs(5 * 60);

/// The random id of a pending second step: 256 bits, 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingId(String);

impl PendingId {
    fn generate() -> Self {
        Self(hex::encode(rand::random::<[u8; 32]>()))
    }

    /// The id as a page carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn key(&self) -> String {
        format!("pending-sign-in:{}", self.0)
    }
}

impl fmt::Debug for PendingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingId(…)")
    }
}

impl FromStr for PendingId {
    type Err = AccountError;

    /// `PendingExpired` for anything but the canonical form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(AccountError::PendingExpired)
        }
    }
}

/// What waits under a [`PendingId`].
#[derive(Serialize, Deserialize)]
struct Pending {
    user_id: Uuid,
    remember_me: bool,
}

impl Accounts {
    /// Holds the second step of `user`'s sign-in, whose password was right.
    pub(super) async fn hold_pending(
        &self,
        user: &User,
        remember_me: bool,
    ) -> Result<PendingId, AccountError> {
        let id = PendingId::generate();
        let record = Pending {
            user_id: user.id.as_uuid(),
            remember_me,
        };
        let value = serde_json::to_string(&record)
            .map_err(|e| AccountError::internal("writing a pending sign-in", &e))?;
        self.sessions.stash(&id.key(), &value, PENDING_TTL).await?;
        Ok(id)
    }

    /// Finishes a sign-in held by [`Accounts::sign_in`] (`SignIn::hold_pending`) with its
    /// second factor. The factor counts against the lockout like the password did.
    ///
    /// Errors: `PendingExpired` (unknown, used or older than [`PENDING_TTL`]),
    /// `WrongSecondFactor` (with a fresh step to try again), `SecondFactorRequired` (none
    /// sent; a fresh step), `Locked`, `Busy`, `Deactivated`, backend failures.
    pub async fn finish_sign_in(
        &self,
        pending: &PendingId,
        second: SecondFactor,
        client: &Client<'_>,
    ) -> Result<SignedIn, AccountError> {
        let result = self.check_pending(pending, &second, client).await;
        let (user, two_factor, passkey, remember_me) = self.counted(result)?;
        self.open_session(&user, two_factor, passkey, remember_me, client)
            .await
            .map(|tokens| SignedIn { user, tokens })
    }

    /// The checks of [`Accounts::finish_sign_in`].
    async fn check_pending(
        &self,
        pending: &PendingId,
        second: &SecondFactor,
        client: &Client<'_>,
    ) -> Result<(User, bool, crate::session::PasskeyUse, bool), AccountError> {
        let Some(value) = self.sessions.take_stash(&pending.key()).await? else {
            return Err(AccountError::PendingExpired);
        };
        let record: Pending = serde_json::from_str(&value).map_err(|e| {
            AccountError::Session(SessionError::Corrupt(format!("a pending sign-in: {e}")))
        })?;
        let remember_me = record.remember_me;
        let Some(user) = self
            .store
            .find_by_id(UserId::from_uuid(record.user_id))
            .await?
        else {
            return Err(AccountError::PendingExpired);
        };
        let guess = lockout::claim(self, &user, "", client, AuditKind::SignIn).await?;
        if !user.is_active {
            guess.released(self).await?;
            return Err(AccountError::Deactivated);
        }
        let (two_factor, passkey) = match self.second_factor(&user, second, client).await {
            Ok(passed) => passed,
            Err(Failed::Required) => {
                guess.released(self).await?;
                return Err(self.second_step(&user, Some(remember_me), false).await);
            }
            Err(Failed::Wrong) => {
                guess.failed(self, client, "wrong_two_factor_code").await;
                return Err(self.second_step(&user, Some(remember_me), true).await);
            }
            Err(Failed::Replayed) => {
                guess.failed(self, client, "replayed_two_factor_code").await;
                return Err(
                    match self.second_step(&user, Some(remember_me), true).await {
                        AccountError::WrongSecondFactor(step) => {
                            AccountError::CodeReplayed(Some(step))
                        }
                        other => other,
                    },
                );
            }
            Err(Failed::Backend(e)) => return Err(guess.unchecked(self, e).await),
        };
        guess.succeeded(self).await?;
        Ok((user, two_factor, passkey, remember_me))
    }
}
