//! Forms that only the portal's own pages can submit.
//!
//! Two independent checks on every POST:
//! - a signed double-submit token (OWASP CSRF cheat sheet): a random value in an HttpOnly
//!   cookie, and in each form its HMAC under a key only the gateway holds. A page on another
//!   site can neither read the cookie nor compute the HMAC for a cookie it planted;
//! - the browser's own account of where the form came from: `Sec-Fetch-Site` must be
//!   `same-origin` (or `none`, typed by the user) and `Origin`, when sent, must be this site.
//!
//! The cookie is renewed at sign-in and sign-out (`Visit::rotate_csrf`), so a token learnt,
//! or a cookie planted, before either is refused after.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;

use crate::auth::secrets::{constant_time_eq, random_token};

/// The form field that carries the token.
pub const FIELD: &str = "csrf_token";

/// Signs and checks form tokens.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    /// A key for one gateway (every instance sharing the signing key derives the same one).
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A fresh cookie value.
    pub fn new_cookie_value(&self) -> String {
        random_token()
    }

    /// The form token that goes with a cookie value.
    pub fn token_for(&self, cookie_value: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"portcullis/portal-csrf/v1\0");
        mac.update(cookie_value.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is the one for `cookie_value`.
    pub fn verify(&self, cookie_value: Option<&str>, token: Option<&str>) -> bool {
        match (cookie_value, token) {
            (Some(cookie), Some(token)) if !cookie.is_empty() && !token.is_empty() => {
                constant_time_eq(self.token_for(cookie).as_bytes(), token.as_bytes())
            }
            _ => false,
        }
    }
}

/// Whether the browser says the request comes from one of this site's pages.
///
/// `own_origins` are the portal's own origins (`https://auth.example.com`): `public_url`'s
/// and the allowed return hosts', compared as RFC 6454 serialises them; never one built from
/// the request's `Host`, which the client writes. Browsers that send neither header (old
/// ones, and non-browser clients) are left to the token alone.
pub fn same_origin(headers: &HeaderMap, own_origins: &[String]) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site != b"same-origin" && site != b"none" {
            return false;
        }
    }
    match headers.get(http::header::ORIGIN) {
        None => true,
        Some(origin) => {
            let Ok(origin) = origin.to_str() else {
                return false;
            };
            own_origins
                .iter()
                .any(|own| own.eq_ignore_ascii_case(origin.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_token_fits_only_its_cookie_and_key() {
        let key = CsrfKey::new([7; 32]);
        let cookie = key.new_cookie_value();
        let token = key.token_for(&cookie);
        assert!(key.verify(Some(&cookie), Some(&token)));
        assert!(!key.verify(Some(&cookie), None));
        assert!(!key.verify(None, Some(&token)));
        assert!(!key.verify(Some(&cookie), Some("")));
        assert!(!key.verify(Some(""), Some(&key.token_for(""))));
        let other_cookie = key.new_cookie_value();
        assert!(!key.verify(Some(&other_cookie), Some(&token)));
        // A planted cookie with a self-made "token" (plain double submit) does not pass.
        assert!(!key.verify(Some(&cookie), Some(&cookie)));
        let other_key = CsrfKey::new([8; 32]);
        assert!(!other_key.verify(Some(&cookie), Some(&token)));
    }

    #[test]
    fn fetch_metadata_and_origin_must_name_this_site() {
        let own = vec!["http://127.0.0.1:8080".to_string()];
        let check = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_static(value));
            }
            same_origin(&h, &own)
        };
        assert!(check(&[]));
        assert!(check(&[("sec-fetch-site", "same-origin")]));
        assert!(check(&[("sec-fetch-site", "none")]));
        assert!(check(&[("origin", "http://127.0.0.1:8080")]));
        assert!(check(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8080")
        ]));
        assert!(!check(&[("sec-fetch-site", "cross-site")]));
        assert!(!check(&[("sec-fetch-site", "same-site")]));
        assert!(!check(&[("origin", "https://evil.example")]));
        assert!(!check(&[("origin", "null")]));
        assert!(!check(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8081")
        ]));
    }
}
