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
use crate::auth::secrets::contains_refresh_token;
use crate::reply::Reply;
use crate::session::{Session, SessionId};
use crate::store::User;

/// An authenticated caller of the account API, read fresh from the stores.
pub struct Caller {
    /// The account, as stored now (active, not merely when the token was issued).
    pub user: User,
    /// The live session the token's `sid` names; it belongs to `user`.
    pub session: Session,
    /// The verified claims of the access token (`sub`, `sid`, `amr`, `iat`, `exp`).
    pub claims: AccessClaims,
}

/// The token of `Authorization: Bearer <token>`, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    // Two `Authorization` fields are no credentials: which one counts would be a guess
    // (RFC 9110 §5.3 does not allow the field to be repeated).
    let mut fields = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = fields.next()?.to_str().ok()?;
    if fields.next().is_some() {
        return None;
    }
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The gateway's cookie names as they are written without a prefix: the access cookie,
/// the refresh cookie and the portal's CSRF cookie (see [`super::cookies::CookieRules`] for
/// the names the gateway sets).
pub const GATEWAY_COOKIES: [&str; 3] = ["portcullis", "portcullis_refresh", "portcullis_csrf"];

/// The cookie-name prefixes browsers give a meaning to (RFC 6265bis §4.1.3), lower case.
const PREFIXES: [&str; 2] = ["__host-", "__secure-"];

/// `name` without a `__Host-` or `__Secure-` prefix (in any letter case).
pub fn unprefixed(name: &str) -> &str {
    PREFIXES
        .iter()
        .find_map(|prefix| {
            name.get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .and_then(|_| name.get(prefix.len()..))
        })
        .unwrap_or(name)
}

/// Whether two cookie names are one name to the gateway: equal in any letter case once a
/// `__Host-` / `__Secure-` prefix is taken off (`portcullis`, `PORTCULLIS` and
/// `__Host-portcullis` are one name).
pub fn same_cookie_name(a: &str, b: &str) -> bool {
    unprefixed(a).eq_ignore_ascii_case(unprefixed(b))
}

/// Which of [`GATEWAY_COOKIES`] `name` is, in any spelling.
fn gateway_cookie(name: &str) -> Option<usize> {
    GATEWAY_COOKIES
        .iter()
        .position(|g| same_cookie_name(g, name))
}

/// Every `name=value` pair of the request's `Cookie` headers (RFC 6265bis §5.8.2), trimmed.
/// A pair that is not text is skipped.
pub(super) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(name, value)| (name.trim(), value.trim()))
}

/// Whether the request carries one of the gateway's cookie names more than once (twins in
/// another letter case or prefix included). A browser sends every cookie whose domain and
/// path match, so a second copy is one that another host under a shared parent domain, or a
/// longer path, planted beside the gateway's (cookie tossing): the gateway cannot tell which
/// is its own, and such a request carries no credentials at all.
pub fn cookies_ambiguous(headers: &HeaderMap) -> bool {
    let mut seen = [false; GATEWAY_COOKIES.len()];
    for (name, _) in cookie_pairs(headers) {
        if let Some(i) = gateway_cookie(name) {
            if seen[i] {
                return true;
            }
            seen[i] = true;
        }
    }
    false
}

/// The value of cookie `name` (exactly so spelled) when the request carries it once: `None`
/// when it is absent, empty, sent twice (twins in another letter case or prefix count), or —
/// for one of the gateway's own cookies — when any gateway cookie is sent twice
/// ([`cookies_ambiguous`]). The one cookie parser of the gateway.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    if gateway_cookie(name).is_some() && cookies_ambiguous(headers) {
        return None;
    }
    let mut found = None;
    for (n, value) in cookie_pairs(headers) {
        if same_cookie_name(n, name) {
            if found.is_some() {
                return None;
            }
            found = Some((n, value));
        }
    }
    found
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// Whether the request presents a token of its own: an `Authorization` header with the
/// `Bearer` scheme (RFC 6750 §2.1; the scheme is case-insensitive, RFC 9110 §11.1), valid or
/// not. Another scheme (`Basic`, `Negotiate`, …) is a credential for the application, not
/// for the gateway.
pub fn presents_bearer(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|value| {
            let scheme = value.as_bytes().trim_ascii_start();
            let scheme = scheme.split(|b| *b == b' ').next().unwrap_or_default();
            scheme.eq_ignore_ascii_case(b"bearer")
        })
}

/// The access token of a proxied request: `Authorization: Bearer …` (the only one of its
/// header), else the session cookie `cookie_name`. A request that presents a Bearer token
/// is judged by it alone, valid or not (the cookie is not consulted); an `Authorization` of
/// another scheme leaves the cookie in charge. A request with an ambiguous gateway cookie
/// ([`cookies_ambiguous`]) has no token, Bearer or not.
pub fn proxied_token<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<&'a str> {
    if cookies_ambiguous(headers) {
        return None;
    }
    if presents_bearer(headers) {
        let single = headers.get_all(http::header::AUTHORIZATION).iter().count() == 1;
        return bearer(headers).filter(|_| single);
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
            "Authentication is required.",
        )
        .with_header(http::header::WWW_AUTHENTICATE, "Bearer"),
        Denial::BadToken => unauthorized(
            "invalid_token",
            "The access token is invalid or has expired.",
        ),
        _ => unauthorized("session_ended", "The session has ended. Sign in again."),
    }
}

/// Where one of the gateway's own credentials may travel on to an upstream, which says how
/// a value is read for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// One `name=value` pair of a `Cookie` header: read as written and percent-decoded (the
    /// value an application sees after its framework decodes it).
    CookiePair,
    /// An `Authorization` value: read as written and inside base64 words (HTTP Basic
    /// credentials, RFC 7617), in any scheme, quoting or list.
    Authorization,
}

impl Access {
    /// Whether `text` carries one of the gateway's own credentials: an access token of this
    /// key ring (a JWT it signed or still verifies) or a refresh token, read as `carrier`
    /// says. The one answer to "is this ours?" on the way out; on the way in, [`bearer`],
    /// [`cookie`] and [`GATEWAY_COOKIES`] say where ours are looked for.
    pub fn carries_own_credential(&self, text: &str, carrier: Carrier) -> bool {
        match carrier {
            Carrier::CookiePair => {
                let decoded = percent_decoded(text);
                self.keys.appears_in(&decoded) || contains_refresh_token(&decoded)
            }
            Carrier::Authorization => {
                self.keys.appears_in_or_encoded(text) || contains_refresh_token(text)
            }
        }
    }
}

/// `text` with its percent-escapes decoded (invalid UTF-8 replaced), borrowed when it has
/// none: the cookie value an application sees after its framework decodes it.
pub fn percent_decoded(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('%') {
        return std::borrow::Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

impl Access {
    /// The account API's check: a Bearer access token (never the cookie, see the module
    /// docs) whose session is live and whose account is active, read fresh from the stores
    /// (not the proxy's caches), sliding the session's expiry.
    pub async fn authenticate_api(&self, headers: &HeaderMap) -> Result<Caller, Reply> {
        // A gateway cookie twice cancels every credential, here as on the other ways in.
        let token = bearer(headers)
            .filter(|_| !cookies_ambiguous(headers))
            .ok_or_else(|| unauthenticated(Denial::NoCredentials))?;
        self.authenticate_token(token).await
    }

    /// [`Access::authenticate_api`]'s check of an access token however it came (the
    /// portal's pages hold the browser's cookie): uncached, sliding the session's expiry.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, Reply> {
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
            .find_by_id(session.user_id)
            .await?
            .ok_or_else(session_ended)?;
        if !user.is_active {
            return Err(Reply::error(
                StatusCode::FORBIDDEN,
                "account_deactivated",
                "This account has been deactivated.",
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
            Some("tok"),
            "a non-bearer Authorization is the application's: the cookie decides"
        );
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR"),
        );
        assert_eq!(
            proxied_token(&h, "portcullis"),
            None,
            "a Bearer without a token is judged alone: no credentials"
        );
    }
}
