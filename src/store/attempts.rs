//! The lockout rule of an account, as a pure function of its four columns: failures
//! found wrong (`failed_login_attempts`), guesses claimed and not yet found right or
//! wrong (`login_attempts_in_flight`, until `in_flight_until`), and the lock
//! (`locked_until`). `sql.rs` reads the columns under the row's lock, applies one step
//! here and writes the result in the same transaction.
//!
//! The two counts never add up to more than the threshold, so at most that many guesses
//! are being checked or have been found wrong in a lock window, on every instance
//! together; and only guesses found wrong lock the account, so right passwords that
//! arrive together wait for each other's checks instead of locking each other out.

use chrono::{DateTime, Utc};

use super::{AttemptClaim, AttemptOutcome, FailedLogin};

/// The lockout columns of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Attempts {
    /// Guesses found wrong in the current series.
    pub failed: u32,
    /// Guesses claimed and not resolved yet.
    pub in_flight: u32,
    /// When the newest in-flight claim lapses; past it, every in-flight claim counts as
    /// wrong (its instance died or its client left before it was resolved).
    pub in_flight_until: Option<DateTime<Utc>>,
    /// The lock, when set.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The instants one step needs: now, when a lock set now ends, when a claim made now lapses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    pub now: DateTime<Utc>,
    pub lock_until: DateTime<Utc>,
    pub claim_until: DateTime<Utc>,
}

impl Attempts {
    /// Forgets an expired lock with its failures, then counts lapsed claims as wrong
    /// (which may lock the account).
    fn settle(&mut self, clock: &Clock, max: u32) {
        if self.locked_until.is_some_and(|until| until <= clock.now) {
            self.failed = 0;
            self.locked_until = None;
        }
        if self.in_flight > 0 && self.in_flight_until.is_none_or(|until| until <= clock.now) {
            self.failed = self.failed.saturating_add(self.in_flight);
            self.in_flight = 0;
            self.lock_if_due(clock, max);
        }
        if self.in_flight == 0 {
            self.in_flight_until = None;
        }
    }

    /// Locks the account when the failures reached `max` and no lock is in force;
    /// true when it did.
    fn lock_if_due(&mut self, clock: &Clock, max: u32) -> bool {
        let due = self.failed >= max.max(1) && self.locked_until.is_none();
        if due {
            self.locked_until = Some(clock.lock_until);
        }
        due
    }

    /// One claim: refused while locked, [`AttemptClaim::Busy`] while failures and
    /// in-flight guesses fill the threshold, else counted in flight.
    pub(super) fn claim(mut self, clock: &Clock, max: u32) -> (Self, AttemptClaim) {
        self.settle(clock, max);
        if let Some(until) = self.locked_until {
            return (self, AttemptClaim::Locked { until });
        }
        let max = max.max(1);
        if self.failed.saturating_add(self.in_flight) >= max {
            return (self, AttemptClaim::Busy);
        }
        self.in_flight += 1;
        self.in_flight_until = Some(clock.claim_until);
        let attempt = self.failed + self.in_flight;
        let last = attempt >= max;
        (self, AttemptClaim::Granted { attempt, last })
    }

    /// Resolves one in-flight claim (a lapsed one was already counted as wrong).
    pub(super) fn resolve(
        mut self,
        outcome: AttemptOutcome,
        clock: &Clock,
        max: u32,
    ) -> (Self, FailedLogin) {
        self.settle(clock, max);
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut newly_locked = false;
        match outcome {
            AttemptOutcome::Wrong => {
                self.failed = self.failed.saturating_add(1);
                newly_locked = self.lock_if_due(clock, max);
            }
            AttemptOutcome::Right => {
                self.failed = 0;
                self.locked_until = None;
            }
            AttemptOutcome::NotAGuess => {}
        }
        if self.in_flight == 0 {
            self.in_flight_until = None;
        }
        let answer = FailedLogin {
            attempts: self.failed,
            locked_until: self.locked_until,
            newly_locked,
        };
        (self, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const MAX: u32 = 3;

    fn clock(at: i64) -> Clock {
        let now = DateTime::from_timestamp(1_800_000_000 + at, 0).unwrap();
        Clock {
            now,
            lock_until: now + TimeDelta::minutes(15),
            claim_until: now + TimeDelta::seconds(30),
        }
    }

    fn fresh() -> Attempts {
        Attempts {
            failed: 0,
            in_flight: 0,
            in_flight_until: None,
            locked_until: None,
        }
    }

    #[test]
    fn claims_past_the_threshold_wait_rather_than_lock() {
        let c = clock(0);
        let mut a = fresh();
        for n in 1..=MAX {
            let (next, claim) = a.claim(&c, MAX);
            assert_eq!(
                claim,
                AttemptClaim::Granted {
                    attempt: n,
                    last: n == MAX
                }
            );
            a = next;
        }
        let (a, claim) = a.claim(&c, MAX);
        assert_eq!(claim, AttemptClaim::Busy);
        // Every in-flight guess was right: nothing locks, and room opens again.
        let mut a = a;
        for _ in 0..MAX {
            let (next, done) = a.resolve(AttemptOutcome::Right, &c, MAX);
            assert!(!done.newly_locked);
            a = next;
        }
        assert_eq!(a, fresh());
    }

    #[test]
    fn only_wrong_guesses_lock() {
        let c = clock(0);
        let mut a = fresh();
        for _ in 0..MAX {
            a = a.claim(&c, MAX).0;
        }
        let (a, done) = a.resolve(AttemptOutcome::Wrong, &c, MAX);
        assert!(!done.newly_locked);
        let (a, _) = a.resolve(AttemptOutcome::NotAGuess, &c, MAX);
        assert_eq!(
            a.claim(&c, MAX).1,
            AttemptClaim::Granted {
                attempt: 3,
                last: true
            }
        );
        let (a, done) = a.resolve(AttemptOutcome::Wrong, &c, MAX);
        assert_eq!((done.attempts, done.newly_locked), (2, false));
        let a = a.claim(&c, MAX).0.claim(&c, MAX).0;
        let (a, _) = a.resolve(AttemptOutcome::Wrong, &c, MAX);
        assert_eq!(a.failed, 3);
        assert!(a.locked_until.is_some(), "three wrong guesses lock");
        assert!(matches!(a.claim(&c, MAX).1, AttemptClaim::Locked { .. }));
        // The guess still in flight was right: it lifts the lock.
        let (a, _) = a.resolve(AttemptOutcome::Right, &c, MAX);
        assert_eq!(a, fresh());
    }

    #[test]
    fn failures_and_guesses_in_flight_never_exceed_the_threshold() {
        let c = clock(0);
        let mut a = fresh();
        let mut checked = 0;
        for _ in 0..20 {
            let (next, claim) = a.claim(&c, MAX);
            a = next;
            if matches!(claim, AttemptClaim::Granted { .. }) {
                checked += 1;
                a = a.resolve(AttemptOutcome::Wrong, &c, MAX).0;
            }
            assert!(a.failed + a.in_flight <= MAX);
        }
        assert_eq!(checked, MAX);
    }

    #[test]
    fn lapsed_claims_count_as_wrong_and_an_expired_lock_is_forgotten() {
        let mut a = fresh();
        for _ in 0..MAX {
            a = a.claim(&clock(0), MAX).0;
        }
        assert_eq!(a.claim(&clock(29), MAX).1, AttemptClaim::Busy);
        let (a, claim) = a.claim(&clock(31), MAX);
        assert!(matches!(claim, AttemptClaim::Locked { .. }), "{claim:?}");
        assert_eq!((a.failed, a.in_flight, a.in_flight_until), (MAX, 0, None));
        let after_lock = 31 + 15 * 60;
        let (a, claim) = a.claim(&clock(after_lock), MAX);
        assert_eq!(
            claim,
            AttemptClaim::Granted {
                attempt: 1,
                last: false
            }
        );
        assert_eq!(a.failed, 0);
        // A lapsed claim is one failure; a later claim is counted on its own.
        let (a, _) = a.claim(&clock(after_lock + 60), MAX);
        let (a, _) = a.resolve(AttemptOutcome::Wrong, &clock(after_lock + 61), MAX);
        assert_eq!((a.failed, a.in_flight), (2, 0));
    }
}
