//! The one gate every guess at a password or a second factor passes: login, and the
//! current-password and code checks of change-password, deactivate and the 2FA changes.
//!
//! A guess is counted **before** it is checked, in one atomic store statement
//! ([`UserStore::claim_login_attempt`](crate::store::UserStore::claim_login_attempt)), so
//! concurrent requests on any number of instances get at most
//! `lockout.max_failed_attempts` checks per lock window. Unknown addresses are counted by
//! the same rule in the same store (keyed by a hash of the canonical address) and answered
//! the same way, and every refusal costs one bcrypt verification, so neither the status
//! nor the time of an answer tells whether an account exists or is locked.

use http::StatusCode;

use super::{ApiRequest, Reply};
use crate::app::App;
use crate::auth::secrets::sha256_hex;
use crate::store::{AttemptClaim, User};
use crate::telemetry::SECURITY;

/// 423: too many failed attempts.
pub fn locked() -> Reply {
    Reply::error(
        StatusCode::LOCKED,
        "account_locked",
        "Account is temporarily locked after too many failed attempts; try again later",
    )
}

/// A claimed guess at a known account's secret; say how it ended with one of its methods.
#[must_use = "a claimed guess stays counted as a failure unless it is resolved"]
pub struct Guess<'a> {
    user: &'a User,
    attempt: u32,
    last: bool,
}

/// Claims one guess at `user`'s secrets. A locked account gets the 423 only after a
/// bcrypt verification of `password`, so it answers as slowly as a wrong password does.
pub async fn claim<'a>(
    app: &App,
    user: &'a User,
    password: &str,
    request: &ApiRequest,
) -> Result<Guess<'a>, Reply> {
    let lockout = &app.config.lockout;
    match app
        .store
        .claim_login_attempt(user.id, lockout.max_failed_attempts, lockout.duration.get())
        .await
    {
        Ok(AttemptClaim::Granted { attempt, last }) => Ok(Guess {
            user,
            attempt,
            last,
        }),
        Ok(AttemptClaim::Locked { until }) => {
            app.hasher.verify_dummy(password).await;
            tracing::warn!(
                target: SECURITY,
                event = "guess_refused_locked",
                user_id = %user.id,
                until = %until,
                client_ip = %request.client_ip,
            );
            Err(locked())
        }
        Err(e) => Err(e.into()),
    }
}

impl Guess<'_> {
    /// The guess was wrong: it stays counted. Logs it, and the lockout when it was the last.
    pub fn failed(self, app: &App, request: &ApiRequest, reason: &'static str) {
        tracing::warn!(
            target: SECURITY,
            event = "login_failed",
            reason,
            user_id = %self.user.id,
            attempts = self.attempt,
            client_ip = %request.client_ip,
        );
        if self.last {
            app.metrics.lockouts.inc();
            tracing::warn!(
                target: SECURITY,
                event = "account_locked",
                user_id = %self.user.id,
                client_ip = %request.client_ip,
            );
        }
    }

    /// The caller proved who they are: the failure count and any lock are cleared.
    pub async fn succeeded(self, app: &App) -> Result<(), Reply> {
        app.store.unlock(self.user.id).await.map_err(Into::into)
    }

    /// The guess was right as far as it went, but the second factor was not sent: it is
    /// not counted, and a lock it set is lifted.
    pub async fn released(self, app: &App) -> Result<(), Reply> {
        app.store
            .release_login_attempt(self.user.id, app.config.lockout.max_failed_attempts)
            .await
            .map_err(Into::into)
    }
}

/// A login for an address with no account: counted like a real one (in the store, under a
/// hash of the canonical address, by the same rule) and answered like a real one, 401 and
/// then 423, each after one bcrypt verification.
pub async fn unknown_account(
    app: &App,
    canonical_email: &str,
    password: &str,
    request: &ApiRequest,
) -> Reply {
    let lockout = &app.config.lockout;
    let claim = app
        .store
        .claim_unknown_login_attempt(
            &sha256_hex(canonical_email),
            lockout.max_failed_attempts,
            lockout.duration.get(),
        )
        .await;
    app.hasher.verify_dummy(password).await;
    match claim {
        Ok(AttemptClaim::Granted { attempt, last }) => {
            app.metrics.logins.with_label_values(&["failure"]).inc();
            tracing::warn!(target: SECURITY, event = "login_failed", reason = "unknown_email", attempts = attempt, client_ip = %request.client_ip);
            if last {
                app.metrics.lockouts.inc();
                tracing::warn!(target: SECURITY, event = "account_locked", reason = "unknown_email", client_ip = %request.client_ip);
            }
            invalid_credentials()
        }
        Ok(AttemptClaim::Locked { .. }) => {
            app.metrics.logins.with_label_values(&["locked"]).inc();
            tracing::warn!(target: SECURITY, event = "login_refused_locked", reason = "unknown_email", client_ip = %request.client_ip);
            locked()
        }
        Err(e) => e.into(),
    }
}

/// 401: the one answer for an unknown address, a wrong password and a wrong code.
pub fn invalid_credentials() -> Reply {
    Reply::error(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "Invalid email or password",
    )
}
