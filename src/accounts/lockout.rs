//! The one gate every guess at a password or a second factor passes: login, and the
//! current-password and code checks of change-password, deactivate and the 2FA changes.
//!
//! A guess is claimed **before** it is checked, atomically in the store
//! ([`UserStore::claim_login_attempt`](crate::store::UserStore::claim_login_attempt)), and
//! resolved once it is known to be right or wrong. Failures plus guesses in flight never
//! exceed `lockout.max_failed_attempts`, so concurrent requests on any number of instances
//! get at most that many checks per lock window; only wrong guesses lock, so a claim that
//! finds the threshold filled by guesses still in flight waits for them (a right one makes
//! room, wrong ones lock) instead of answering 423. Unknown addresses are claimed, waited
//! for and counted by the same rule in the same store (keyed by a hash of the canonical
//! address) and answered the same way, and every refusal costs one bcrypt verification,
//! so neither the status nor the time of an answer tells whether an account exists or is
//! locked.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{AccountError, Accounts, Client};
use crate::auth::secrets::sha256_hex;
use crate::domain::Email;
use crate::store::{
    Actor, AttemptClaim, AttemptOutcome, AuditKind, AuditOutcome, FailedLogin, IN_FLIGHT_GUESS_TTL,
    NewAuditEvent, StoreError, User,
};
use crate::telemetry::SECURITY;

/// A claimed guess at a known account's secret; say how it ended with one of its methods
/// (one left unresolved counts as wrong once [`IN_FLIGHT_GUESS_TTL`] has passed).
#[must_use = "a claimed guess counts as wrong unless it is resolved"]
pub struct Guess<'a> {
    user: &'a User,
    /// What the guess is for, as the audit trail names it ([`AuditKind::SignIn`] or
    /// [`AuditKind::StepUp`]).
    purpose: AuditKind,
}

/// The first pause before asking again for a claim the store answered `Busy`; it doubles
/// up to [`MOST_BUSY_PAUSE`].
const FIRST_BUSY_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two claims of a waiting guess.
const MOST_BUSY_PAUSE: Duration = Duration::from_millis(200);
/// How long a guess waits for room before answering 503: past [`IN_FLIGHT_GUESS_TTL`],
/// claims in flight have lapsed into failures, so only a stream of newer guesses that
/// keeps taking the room first can last that long.
const MOST_BUSY_WAIT: Duration = IN_FLIGHT_GUESS_TTL.saturating_add(Duration::from_secs(5));

/// Claims one guess with `claim`, asking again while the store answers `Busy` (guesses
/// in flight fill the threshold), backing off from [`FIRST_BUSY_PAUSE`] to
/// [`MOST_BUSY_PAUSE`]; `Busy` only after [`MOST_BUSY_WAIT`].
async fn claim_waiting<F, Fut>(mut claim: F) -> Result<AttemptClaim, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<AttemptClaim, StoreError>>,
{
    let give_up = Instant::now() + MOST_BUSY_WAIT;
    let mut pause = FIRST_BUSY_PAUSE;
    loop {
        match claim().await? {
            AttemptClaim::Busy if Instant::now() < give_up => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MOST_BUSY_PAUSE);
            }
            settled => return Ok(settled),
        }
    }
}

/// Claims one guess at `user`'s secrets, waiting while the guesses in flight fill the
/// threshold. A locked account gets the 423 only after a bcrypt verification of
/// `password`, so it answers as slowly as a wrong password does. `purpose` names the
/// guess in the audit trail.
pub(super) async fn claim<'a>(
    app: &Accounts,
    user: &'a User,
    password: &str,
    client: &Client<'_>,
    purpose: AuditKind,
) -> Result<Guess<'a>, AccountError> {
    let lockout = &app.config.lockout;
    let (max, lock_for) = (lockout.max_failed_attempts, lockout.duration.get());
    match claim_waiting(|| app.store.claim_login_attempt(user.id, max, lock_for)).await {
        Ok(AttemptClaim::Granted { .. }) => Ok(Guess { user, purpose }),
        Ok(AttemptClaim::Busy) => Err(AccountError::Busy),
        Ok(AttemptClaim::Locked { until }) => {
            app.hasher.verify_dummy(password).await;
            tracing::warn!(
                target: SECURITY,
                event = "guess_refused_locked",
                user_id = %user.id,
                until = %until,
                client_ip = %client.ip,
            );
            let event = guess_event(purpose, user, client).outcome(AuditOutcome::Refused);
            app.audit(event.detail("locked"));
            Err(AccountError::Locked)
        }
        Err(e) => Err(e.into()),
    }
}

impl Guess<'_> {
    async fn resolve(
        &self,
        app: &Accounts,
        outcome: AttemptOutcome,
    ) -> Result<FailedLogin, AccountError> {
        let lockout = &app.config.lockout;
        app.store
            .resolve_login_attempt(
                self.user.id,
                outcome,
                lockout.max_failed_attempts,
                lockout.duration.get(),
            )
            .await
            .map_err(Into::into)
    }

    /// The guess was wrong: one more failure. Logs it, and the lockout when it set one.
    /// Should the store fail here, the claim lapses into a failure all the same.
    pub(super) async fn failed(self, app: &Accounts, client: &Client<'_>, reason: &'static str) {
        let counted = self.resolve(app, AttemptOutcome::Wrong).await.ok();
        tracing::warn!(
            target: SECURITY,
            event = "login_failed",
            reason,
            user_id = %self.user.id,
            attempts = counted.map(|c| c.attempts),
            client_ip = %client.ip,
        );
        let event = guess_event(self.purpose, self.user, client).outcome(AuditOutcome::Failure);
        app.audit(event.detail(reason));
        if counted.is_some_and(|c| c.newly_locked) {
            app.lockouts.inc();
            tracing::warn!(
                target: SECURITY,
                event = "account_locked",
                user_id = %self.user.id,
                client_ip = %client.ip,
            );
            let event = guess_event(AuditKind::Lockout, self.user, client);
            app.audit(event.outcome(AuditOutcome::Failure).detail(reason));
        }
    }

    /// The caller proved who they are: the failure count and any lock are cleared.
    pub(super) async fn succeeded(self, app: &Accounts) -> Result<(), AccountError> {
        self.resolve(app, AttemptOutcome::Right).await.map(drop)
    }

    /// The guess could not be checked (`refusal`, a backend failing, is the answer): it is
    /// given back, so it holds no room while the backend recovers. Answers `refusal`.
    pub(super) async fn unchecked(self, app: &Accounts, refusal: AccountError) -> AccountError {
        if let Err(e) = self.resolve(app, AttemptOutcome::NotAGuess).await {
            tracing::warn!(
                error = e.catalogue_key(),
                "could not give back an unchecked guess"
            );
        }
        refusal
    }

    /// The guess was right as far as it went, but the second factor was not sent (or the
    /// account cannot sign in anyway): it is given back, not counted.
    pub(super) async fn released(self, app: &Accounts) -> Result<(), AccountError> {
        self.resolve(app, AttemptOutcome::NotAGuess).await.map(drop)
    }
}

/// An audit event about a guess at `user`'s secrets: a sign-in's guesser is not known
/// yet; a step-up's is the signed-in owner.
fn guess_event(purpose: AuditKind, user: &User, client: &Client<'_>) -> NewAuditEvent {
    let actor = match purpose {
        AuditKind::StepUp => Actor::User(user.id),
        _ => Actor::Anonymous,
    };
    NewAuditEvent::new(purpose, actor, Some((user.id, &user.email))).from_ip(client.ip)
}

/// An audit event about a sign-in for an address with no account: no subject, and the
/// address only when it is one.
fn unknown_event(kind: AuditKind, canonical_email: &str, client: &Client<'_>) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(kind, Actor::Anonymous, None).from_ip(client.ip);
    event.subject_email = Email::parse(canonical_email).ok();
    event
}

/// A login for an address with no account: claimed, waited for and resolved like a real
/// one (in the store, under a hash of the canonical address, by the same rule) and
/// answered like a real one, 401 and then 423, each after one bcrypt verification.
pub(super) async fn unknown_account(
    app: &Accounts,
    canonical_email: &str,
    password: &str,
    client: &Client<'_>,
) -> AccountError {
    let lockout = &app.config.lockout;
    let (max, lock_for) = (lockout.max_failed_attempts, lockout.duration.get());
    let key = sha256_hex(canonical_email);
    let claim = claim_waiting(|| app.store.claim_unknown_login_attempt(&key, max, lock_for)).await;
    app.hasher.verify_dummy(password).await;
    match claim {
        Ok(AttemptClaim::Granted { .. }) => {
            let counted = app
                .store
                .resolve_unknown_login_attempt(&key, max, lock_for)
                .await;
            let attempts = counted.as_ref().ok().map(|c| c.attempts);
            tracing::warn!(target: SECURITY, event = "login_failed", reason = "unknown_email", attempts, client_ip = %client.ip);
            let event = unknown_event(AuditKind::SignIn, canonical_email, client);
            app.audit(event.outcome(AuditOutcome::Failure).detail("unknown_email"));
            if counted.is_ok_and(|c| c.newly_locked) {
                app.lockouts.inc();
                tracing::warn!(target: SECURITY, event = "account_locked", reason = "unknown_email", client_ip = %client.ip);
                let event = unknown_event(AuditKind::Lockout, canonical_email, client);
                app.audit(event.outcome(AuditOutcome::Failure).detail("unknown_email"));
            }
            AccountError::InvalidCredentials
        }
        Ok(AttemptClaim::Busy) => AccountError::Busy,
        Ok(AttemptClaim::Locked { .. }) => {
            tracing::warn!(target: SECURITY, event = "login_refused_locked", reason = "unknown_email", client_ip = %client.ip);
            let event = unknown_event(AuditKind::SignIn, canonical_email, client);
            app.audit(event.outcome(AuditOutcome::Refused).detail("locked"));
            AccountError::Locked
        }
        Err(e) => e.into(),
    }
}
