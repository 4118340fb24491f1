//! Why a proxied request was not passed to its upstream, named once for both answers it can
//! get: the API client's JSON envelope (built where the refusal is decided, unchanged) and
//! a browser's page or redirect (built by the portal from the [`Refusal`]).
//!
//! Which of the two a request gets is [`is_navigation`]'s answer, the one rule of it.

use http::HeaderMap;

use super::gatekeeper::Denial;
use crate::config::Unmet;

/// Why a proxied request was refused, as a browser's answer is chosen by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No usable credentials (none, a bad token, an ended session, a deactivated account):
    /// 401 to API clients, the sign-in page to browsers.
    SignIn(Denial),
    /// A `two_factor` route, and a session that has not proven a second factor: 403
    /// `two_factor_required`, the portal's second-factor step to browsers.
    SecondFactor,
    /// The route's `max_auth_age`, and a session whose last proof of identity is older: 401
    /// `reauthentication_required`, the portal's reauthentication page to browsers.
    Reauthentication,
    /// The route takes only proven addresses: 403 `email_unverified`.
    EmailUnverified,
    /// One of the route's conditions is unmet: 403, or 405 with `Allow` for a method.
    Condition(Unmet),
    /// A `deny` route: 403 `forbidden`.
    Denied,
    /// Over the route's rate limit: 429 with `Retry-After`.
    RateLimited,
    /// A backend the decision needs cannot be asked: 503 with `Retry-After`.
    Unavailable,
    /// The upstream could not be reached: 502.
    UpstreamDown,
    /// The upstream did not answer in time: 504.
    UpstreamTimeout,
}

/// Whether a request is a browser's navigation, which gets pages and redirects rather than
/// the JSON envelope: `Sec-Fetch-Mode: navigate`, or — from a client that sends no
/// `Sec-Fetch-Mode` — an `Accept` whose most preferred type is `text/html` (browsers list
/// it first; an API client that accepts HTML only as a fallback ranks it lower). A script's
/// `fetch` (`Sec-Fetch-Mode: cors`, `no-cors`, `same-origin`) is never a navigation,
/// whatever it accepts; nor is a client that presents its own Bearer token (it is told why
/// the token failed: a sign-in page would bring it back with the same token).
pub fn is_navigation(headers: &HeaderMap) -> bool {
    if super::credentials::presents_bearer(headers) {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode.as_bytes().eq_ignore_ascii_case(b"navigate");
    }
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(prefers_html)
}

/// Whether `text/html` is among the most preferred media ranges of an `Accept` value
/// (RFC 9110 §12.5.1: the weight is `q`, 1 when absent; wildcards rank as they weigh).
fn prefers_html(accept: &str) -> bool {
    let ranges: Vec<(&str, f32)> = accept.split(',').filter_map(media_range).collect();
    let best = ranges.iter().map(|(_, q)| *q).fold(0.0_f32, f32::max);
    best > 0.0
        && ranges
            .iter()
            .any(|(range, q)| range.eq_ignore_ascii_case("text/html") && *q >= best)
}

/// One media range of an `Accept` list and its weight; `None` for an empty element.
fn media_range(element: &str) -> Option<(&str, f32)> {
    let mut parts = element.split(';');
    let range = parts.next()?.trim();
    if range.is_empty() {
        return None;
    }
    let q = parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
        .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
        .filter(|q| (0.0..=1.0).contains(q))
        .unwrap_or(0.0);
    Some((range, q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn navigations_are_told_from_api_calls() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        let navigations: &[&[(&str, &str)]] = &[
            &[("accept", chrome)],
            &[("accept", chrome), ("sec-fetch-mode", "navigate")],
            &[("sec-fetch-mode", "navigate")],
            &[("sec-fetch-mode", "Navigate"), ("accept", "*/*")],
            &[("accept", "text/html")],
            &[("accept", "application/json;q=0.5, text/html")],
            &[("accept", "TEXT/HTML;q=1.0")],
        ];
        for pairs in navigations {
            assert!(is_navigation(&headers(pairs)), "{pairs:?}");
        }
        let api: &[&[(&str, &str)]] = &[
            &[],
            &[("accept", "application/json")],
            &[("accept", "*/*")],
            &[("accept", "application/json, text/html;q=0.5")],
            &[("accept", "text/html;q=0")],
            &[("accept", "text/html;q=bogus")],
            &[("accept", chrome), ("sec-fetch-mode", "cors")],
            &[("accept", chrome), ("sec-fetch-mode", "no-cors")],
            &[("accept", "text/html"), ("sec-fetch-mode", "same-origin")],
            &[("accept", chrome), ("authorization", "Bearer abc")],
            &[
                ("sec-fetch-mode", "navigate"),
                ("authorization", "bearer x"),
            ],
        ];
        for pairs in api {
            assert!(!is_navigation(&headers(pairs)), "{pairs:?}");
        }
    }
}
