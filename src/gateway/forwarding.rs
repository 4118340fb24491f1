//! What of a client's request headers may reach an upstream.
//!
//! Three kinds of header are the gateway's to decide, not the client's:
//! - headers only a trusted hop may set (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
//!   `X-Original-URL`, …): an upstream believes them about the client address, scheme, host
//!   or path, so from a client outside `server.trusted_proxies` they are removed, in every
//!   spelling (any case, `_` for `-`), before the gateway sets its own;
//! - the gateway's own credentials: its session cookies and any `Authorization` carrying
//!   one of its tokens stay at the gateway, so an upstream (even a public one) never holds a
//!   token it could replay against the account API;
//! - identity headers (see `access::identity`).

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::access::credentials::{GATEWAY_COOKIES, same_cookie_name};
use crate::access::identity::eq_normalized;
use crate::config::normalize_header_name as normalize;

/// The configured headers only a trusted proxy may send (`server.proxy_headers`).
#[derive(Clone, Debug)]
pub struct ProxyHeaders {
    /// Normalised (lower case, `-`) exact names.
    exact: Vec<String>,
    /// Normalised prefixes (entries that ended in `*`).
    prefixes: Vec<String>,
}

impl ProxyHeaders {
    /// Builds the matcher from config entries (validated at load).
    pub fn new(names: &[String]) -> Self {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for name in names {
            match name.strip_suffix('*') {
                Some(prefix) => prefixes.push(normalize(prefix)),
                None => exact.push(normalize(name)),
            }
        }
        Self { exact, prefixes }
    }

    /// Whether `name` (as it arrived: any case, `_` or `-`) is one of them.
    pub fn matches(&self, name: &str) -> bool {
        self.exact
            .iter()
            .any(|n| n.len() == name.len() && eq_normalized(n, name))
            || self
                .prefixes
                .iter()
                .any(|p| name.len() >= p.len() && eq_normalized(p, name))
    }
}

/// Whether a cookie pair (`name=value`, as the client wrote it) must stay at the gateway:
/// its name is one of the gateway's ([`GATEWAY_COOKIES`]: access, refresh, CSRF) in any
/// spelling (letter case, `__Host-` / `__Secure-`), or it carries a Portcullis token anywhere.
fn is_credential_pair(pair: &str, carries_token: &impl Fn(&str) -> bool) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name).trim();
    GATEWAY_COOKIES
        .iter()
        .any(|credential| same_cookie_name(credential, name))
        || carries_token(pair)
}

/// The `Cookie` header to forward once the gateway's credentials are taken out: `None` when
/// there is nothing to change, `Some(None)` when no cookie is left, and `Some(Some(value))`
/// for the remaining cookies joined with `"; "` (RFC 6265 §5.4). `carries_token` says whether
/// a text holds a Portcullis token (so `a=1, portcullis=…` or a token under another name go
/// too). Several `Cookie` lines become one.
pub fn cookies_without_credentials(
    headers: &HeaderMap,
    carries_token: impl Fn(&str) -> bool,
) -> Option<Option<HeaderValue>> {
    let values = headers.get_all(COOKIE);
    let mut found = false;
    for value in &values {
        // A value that is not text cannot be read as we would read it, but an upstream
        // might still: drop it with ours.
        let Ok(text) = value.to_str() else {
            found = true;
            continue;
        };
        found |= text
            .split(';')
            .any(|pair| is_credential_pair(pair, &carries_token));
    }
    if !found {
        return None;
    }
    let kept: Vec<&str> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_credential_pair(pair, &carries_token))
        .collect();
    if kept.is_empty() {
        return Some(None);
    }
    Some(HeaderValue::from_str(&kept.join("; ")).ok())
}

/// Whether the request's `Authorization` must be removed before forwarding: always, unless
/// the route forwards the client's own, and then still when it carries a token of ours in
/// any scheme, quoting or list (`carries_token`).
pub fn must_remove_authorization(
    headers: &HeaderMap,
    forward_clients_own: bool,
    carries_token: impl Fn(&str) -> bool,
) -> bool {
    let mut values = headers.get_all(AUTHORIZATION).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    if !forward_clients_own {
        return true;
    }
    values.any(|value| value.to_str().map_or(true, &carries_token))
}

/// Names in `headers` that `remove` selects, each once (allocates only when one is found).
pub fn names_matching(headers: &HeaderMap, remove: impl Fn(&str) -> bool) -> Vec<HeaderName> {
    let mut found: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if remove(name.as_str()) && !found.contains(name) {
            found.push(name.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PROXY_HEADERS;

    fn defaults() -> ProxyHeaders {
        let names: Vec<String> = DEFAULT_PROXY_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        ProxyHeaders::new(&names)
    }

    #[test]
    fn proxy_headers_match_in_every_spelling() {
        let p = defaults();
        for name in [
            "forwarded",
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded-prefix",
            "x-forwarded-port",
            "X_Forwarded_Host",
            "x-real-ip",
            "x_real_ip",
            "x-forwarded",
            "forwarded-for",
            "x-host",
            "true-client-ip",
        ] {
            assert!(p.matches(name), "{name}");
        }
        for name in [
            "x-forward",
            "x-request-id",
            "forwarded-x",
            "cookie",
            "x-real",
        ] {
            assert!(!p.matches(name), "{name}");
        }
    }

    #[test]
    fn credential_cookies_are_taken_out() {
        let mut h = HeaderMap::new();
        let token = |t: &str| t.contains("TOKEN");
        assert_eq!(cookies_without_credentials(&h, token), None);
        h.insert(COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(cookies_without_credentials(&h, token), None);
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; portcullis=tok;b=2; __Host-portcullis=t2"),
        );
        assert_eq!(
            cookies_without_credentials(&h, token),
            Some(Some(HeaderValue::from_static("a=1; b=2")))
        );
        h.insert(COOKIE, HeaderValue::from_static("portcullis=tok"));
        assert_eq!(cookies_without_credentials(&h, token), Some(None));
        h.append(COOKIE, HeaderValue::from_static("x=y"));
        assert_eq!(
            cookies_without_credentials(&h, token),
            Some(Some(HeaderValue::from_static("x=y")))
        );
        h.remove(COOKIE);
        h.insert(
            COOKIE,
            HeaderValue::from_static(
                "PORTCULLIS=a; __secure-Portcullis=b; portcullis;=TOKEN; a=1, portcullis=TOKEN; k=v",
            ),
        );
        assert_eq!(
            cookies_without_credentials(&h, token),
            Some(Some(HeaderValue::from_static("k=v")))
        );
    }

    #[test]
    fn authorization_is_removed_unless_the_route_keeps_a_foreign_one() {
        let own = |t: &str| t.contains("ours");
        let mut h = HeaderMap::new();
        assert!(!must_remove_authorization(&h, false, own));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(must_remove_authorization(&h, false, own));
        assert!(!must_remove_authorization(&h, true, own));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer ours"));
        assert!(must_remove_authorization(&h, true, own));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer theirs"));
        assert!(!must_remove_authorization(&h, true, own));
        for wrapped in [
            "Bearer\tours",
            "Token ours",
            "Bearer x, Bearer ours",
            "Bearer \"ours\"",
        ] {
            h.insert(AUTHORIZATION, HeaderValue::from_static(wrapped));
            assert!(must_remove_authorization(&h, true, own), "{wrapped}");
        }
    }
}
