//! Identity headers: the ones upstreams trust, so no client may send them.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::{IdentityHeadersConfig, normalize_header_name};

/// The configured identity header names, pre-normalized for the hot path.
#[derive(Clone, Debug)]
pub struct IdentityHeaderNames {
    /// `identity_headers.user_id`.
    pub user_id: HeaderName,
    /// `identity_headers.email`.
    pub email: HeaderName,
    /// `identity_headers.roles`.
    pub roles: HeaderName,
    /// `identity_headers.session_id`.
    pub session_id: HeaderName,
    /// `identity_headers.email_verified`.
    pub email_verified: HeaderName,
    /// `identity_headers.assertion`; `None` when the signed assertion is off.
    pub assertion: Option<HeaderName>,
    /// The same names as Pingora takes them; cloning one shares its bytes.
    pub wire: WireNames,
    /// Lower-case, `-`-separated forms of every name above.
    normalized: Vec<String>,
}

impl IdentityHeaderNames {
    /// Builds from the config's names (parsed at load).
    pub fn new(config: &IdentityHeadersConfig) -> Self {
        let normalized = config
            .names()
            .map(|n| normalize_header_name(n.as_str()))
            .collect();
        let user_id = config.user_id.clone();
        let email = config.email.clone();
        let roles = config.roles.clone();
        let session_id = config.session_id.clone();
        let email_verified = config.email_verified.clone();
        let assertion = config.assertion.clone();
        // The wire form is the parsed (lower-case) name, so both always agree.
        let wire = |name: &HeaderName| Bytes::copy_from_slice(name.as_str().as_bytes());
        Self {
            wire: WireNames {
                user_id: wire(&user_id),
                email: wire(&email),
                roles: wire(&roles),
                session_id: wire(&session_id),
                email_verified: wire(&email_verified),
                assertion: assertion.as_ref().map(wire),
            },
            user_id,
            email,
            roles,
            session_id,
            email_verified,
            assertion,
            normalized,
        }
    }

    /// Whether a header a client sent is a copy (in any spelling) of an identity header.
    pub fn is_identity_header(&self, name: &str) -> bool {
        self.normalized
            .iter()
            .any(|n| n.len() == name.len() && eq_normalized(n, name))
    }

    /// The names of every identity header present in `headers`, in any case or with `_`.
    pub fn spoofed<'a>(&self, headers: impl Iterator<Item = &'a HeaderName>) -> Vec<HeaderName> {
        let mut found: Vec<HeaderName> = Vec::new();
        for name in headers {
            if self.is_identity_header(name.as_str()) && !found.contains(name) {
                found.push(name.clone());
            }
        }
        found
    }
}

/// One identity header as both ways out send it (the proxy to an upstream, forward-auth to
/// the proxy in front): its configured name, the same name as shared bytes (what Pingora
/// takes without copying), and its value for one principal (shared bytes, built once per
/// token and account).
#[derive(Debug)]
pub struct IdentityHeader<'a> {
    /// The name as `[identity_headers]` configures it (parsed, lower case).
    pub name: &'a HeaderName,
    /// The same name as shared bytes.
    pub wire: &'a Bytes,
    /// The value: an id, an address, roles joined with commas, `true`/`false`, or the
    /// signed assertion.
    pub value: HeaderValue,
}

/// Identity header names as shared bytes, for inserting into a Pingora request header without
/// copying the name each time.
#[derive(Clone, Debug)]
pub struct WireNames {
    /// `identity_headers.user_id`.
    pub user_id: Bytes,
    /// `identity_headers.email`.
    pub email: Bytes,
    /// `identity_headers.roles`.
    pub roles: Bytes,
    /// `identity_headers.session_id`.
    pub session_id: Bytes,
    /// `identity_headers.email_verified`.
    pub email_verified: Bytes,
    /// `identity_headers.assertion`; `None` when the signed assertion is off.
    pub assertion: Option<Bytes>,
}

/// Whether `candidate` starts with what `normalized` (from
/// [`normalize_header_name`](crate::config::normalize_header_name)) says, in any letter
/// case and with `_` for `-`; the caller compares lengths where it wants equality.
pub(crate) fn eq_normalized(normalized: &str, candidate: &str) -> bool {
    normalized.bytes().zip(candidate.bytes()).all(|(n, c)| {
        let c = if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        };
        n == c
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_every_spelling() {
        let names = IdentityHeaderNames::new(&IdentityHeadersConfig::default());
        for spoof in [
            "x-user-id",
            "X-USER-ID",
            "x_user_id",
            "X_User-Email",
            "x-user-email-verified",
            "X_USER_EMAIL_VERIFIED",
            "x-identity-assertion",
        ] {
            assert!(names.is_identity_header(spoof), "{spoof}");
        }
        for fine in ["x-user", "x-user-idx", "authorization", "x-request-id"] {
            assert!(!names.is_identity_header(fine), "{fine}");
        }
    }

    #[test]
    fn disabled_assertion_is_not_stripped_by_name() {
        let config = IdentityHeadersConfig {
            assertion: None,
            ..IdentityHeadersConfig::default()
        };
        let names = IdentityHeaderNames::new(&config);
        assert!(names.assertion.is_none());
        assert!(!names.is_identity_header("x-identity-assertion"));
    }
}
