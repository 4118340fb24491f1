//! A route's `max_auth_age`: whether the session's last proof of identity (the token's
//! `auth_time`) is recent enough, and what a caller whose proof is too old is told — API
//! clients a 401 `reauthentication_required` (RFC 9470's challenge with its `max_age`),
//! browsers a redirect to the portal's reauthentication page, coming back afterwards.
//!
//! The check is a comparison of two numbers already held (the principal's `auth_time` and
//! the clock): nothing is allocated unless the request is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;

use super::{Requirement, Verdict};
use crate::access::gatekeeper::Principal;
use crate::access::refusal::Refusal;
use crate::reply::Reply;
use crate::telemetry::SECURITY;

/// The refusal's `code` in the envelope and the `reason` of its metric.
pub const REASON: &str = "reauthentication_required";

/// Whether a proof of identity at `auth_time` is within `max_age` seconds of `now` (Unix
/// seconds): a proof exactly `max_age` old still is, one a second older is not.
pub fn is_fresh(auth_time: i64, max_age: u64, now: i64) -> bool {
    now.saturating_sub(auth_time) <= i64::try_from(max_age).unwrap_or(i64::MAX)
}

/// The clock, in Unix seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `None` when `need` asks no recent proof or `principal`'s is recent enough; otherwise
/// the refusal (logged to the security log): the API's 401, and
/// [`Refusal::Reauthentication`], from which a browser's redirect to the portal's
/// reauthentication page is made.
pub(super) fn check(need: &Requirement<'_>, principal: &Principal) -> Option<Verdict> {
    let max_age = need.max_auth_age?;
    if is_fresh(principal.auth_time(), max_age, unix_now()) {
        return None;
    }
    tracing::info!(
        target: SECURITY,
        event = "reauthentication_required",
        route = need.route,
        max_auth_age = max_age,
        client = %need.client,
        user_id = principal.user_id_text(),
    );
    Some(Verdict::Refuse {
        response: refusal(max_age),
        refusal: Refusal::Reauthentication,
        reason: REASON,
    })
}

/// The 401 an API client gets: the envelope, and RFC 9470's `WWW-Authenticate` challenge
/// naming the largest age (in seconds) a proof may have.
pub fn refusal(max_age: u64) -> Reply {
    let message = "This resource requires a recent sign-in. Prove who you are again.";
    Reply::error(StatusCode::UNAUTHORIZED, REASON, message).with_header(
        http::header::WWW_AUTHENTICATE,
        format!(
            "Bearer error=\"insufficient_user_authentication\", \
             error_description=\"A more recent authentication is required\", \
             max_age=\"{max_age}\""
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::is_fresh;

    #[test]
    fn the_window_includes_its_edge() {
        let now = 1_700_000_000;
        // (seconds since the proof, window, fresh)
        for (age, window, fresh) in [
            (0, 2, true),
            (1, 2, true),
            (2, 2, true),
            (3, 2, false),
            (599, 600, true),
            (600, 600, true),
            (601, 600, false),
            (-30, 1, true),
            (i64::MAX, 1, false),
        ] {
            let auth_time = now - age.min(now);
            let expected = if age > now { false } else { fresh };
            assert_eq!(
                is_fresh(auth_time, window, now),
                expected,
                "{age}s old, window {window}s"
            );
        }
        assert!(!is_fresh(i64::MIN, 1_000, 0));
        assert!(is_fresh(0, u64::MAX, i64::MAX));
    }
}
