//! Where a request's access token comes from, who the account API's caller is, and the 401
//! both ways in answer when that fails.
//!
//! One parser for `Authorization: Bearer` (RFC 6750 §2.1) and for cookies. The proxy takes
//! the Bearer header, else the session cookie. The account API takes the Bearer header
//! **only**: a browser attaches cookies to cross-site requests by itself, so an API that
//! honoured the cookie could be driven by another site's form (CSRF). The portal's forms,
//! which do act on the cookie, carry their own CSRF token (`portal/csrf.rs`).

use chrono::Utc;
use http::{HeaderMap, StatusCode};

use super::Access;
use super::gatekeeper::{Denial, TOUCH_INTERVAL_SECS};
use crate::auth::jwt::AccessClaims;
use crate::domain::UserId;
use crate::reply::Reply;
use crate::session::{Session, SessionId};
use crate::store::User;

/// An authenticated caller of the account API, read fresh from the stores.
pub struct Caller {
    pub user: User,
    pub session: Session,
    pub claims: AccessClaims,
}

/// The token of `Authorization: Bearer <token>`, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The first non-empty value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The access token of a proxied request: `Authorization: Bearer …`, else the session
/// cookie `cookie_name`. A request with an `Authorization` header of another scheme has no
/// token (the cookie is not consulted).
pub fn proxied_token<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<&'a str> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return bearer(headers);
    }
    cookie(headers, cookie_name)
}

/// 401 with `WWW-Authenticate` (RFC 6750 §3), so clients know to log in (again).
pub fn unauthorized(code: &str, message: &str) -> Reply {
    Reply::error(StatusCode::UNAUTHORIZED, code, message).with_header(
        http::header::WWW_AUTHENTICATE,
        format!("Bearer error=\"invalid_token\", error_description=\"{message}\""),
    )
}

/// The 401 for a request refused for `denial` (no credentials, a bad token, an ended
/// session): the same codes from the proxy, forward-auth and the account API.
pub fn unauthenticated(denial: Denial) -> Reply {
    match denial {
        Denial::NoCredentials => Reply::error(
            StatusCode::UNAUTHORIZED,
            "authentication_required",
            "Authentication required",
        )
        .with_header(http::header::WWW_AUTHENTICATE, "Bearer"),
        Denial::BadToken => unauthorized("invalid_token", "Invalid or expired token"),
        _ => unauthorized("session_ended", "Session has ended; log in again"),
    }
}

impl Access {
    /// The account API's check: a Bearer access token (never the cookie, see the module
    /// docs) whose session is live and whose account is active, read fresh from the stores
    /// (not the proxy's caches), sliding the session's expiry.
    pub async fn authenticate_api(&self, headers: &HeaderMap) -> Result<Caller, Reply> {
        let token = bearer(headers).ok_or_else(|| unauthenticated(Denial::NoCredentials))?;
        let claims = self.keys.verify_access(token).map_err(|e| {
            tracing::debug!(reason = e.reason(), "access token refused");
            unauthenticated(Denial::BadToken)
        })?;
        let session_ended = || unauthenticated(Denial::SessionEnded);
        let session_id: SessionId = claims.sid.parse().map_err(|_| session_ended())?;
        let session = self
            .sessions
            .get(&session_id)
            .await?
            .ok_or_else(session_ended)?;
        if session.user_id.to_string() != claims.sub {
            return Err(session_ended());
        }
        let user = self
            .users
            .find_by_id(UserId::from(session.user_id))
            .await?
            .ok_or_else(session_ended)?;
        if !user.is_active {
            return Err(Reply::error(
                StatusCode::FORBIDDEN,
                "account_deactivated",
                "This account has been deactivated",
            ));
        }
        let now = Utc::now();
        if (now - session.last_seen_at).num_seconds() >= TOUCH_INTERVAL_SECS {
            self.sessions.touch(&session.id, now).await?;
        }
        Ok(Caller {
            user,
            session,
            claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_wins_over_cookie_and_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; portcullis=tok; b=2"),
        );
        assert_eq!(proxied_token(&h, "portcullis"), Some("tok"));
        assert_eq!(bearer(&h), None, "the account API never reads the cookie");
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(proxied_token(&h, "portcullis"), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(
            proxied_token(&h, "portcullis"),
            None,
            "a non-bearer Authorization is not credentials"
        );
    }
}
