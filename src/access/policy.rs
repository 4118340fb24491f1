//! Route policies: who may pass, and what they are told when they may not.
//!
//! Plain functions over `http` types so that the proxy and the forward-auth endpoint share
//! one decision.

use std::net::IpAddr;

use http::{HeaderMap, StatusCode};

use crate::api::ApiResponse;
use crate::app::App;
use crate::auth::gatekeeper::{Denial, Principal};
use crate::config::Policy;

/// The outcome of applying a policy to a request.
pub enum Verdict {
    /// Forward, as this principal (`None` on public routes).
    Allow(Option<Principal>),
    /// Forward as this principal, whose browser's access cookie had expired and was renewed
    /// from its refresh cookie: `cookies` go back with the answer.
    Renewed {
        principal: Principal,
        cookies: Vec<String>,
    },
    /// Answer locally; `reason` is the metric label.
    Refuse {
        response: ApiResponse,
        reason: &'static str,
    },
}

/// The access token of a request: `Authorization: Bearer …`, else the session cookie.
pub fn credentials<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<&'a str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Applies `policy`, `roles` (any-of) and, with `require_verified_email`, the proven-address
/// rule to a request. `path_and_query` is where a browser returns after logging in; `None`
/// never redirects (forward-auth answers 401 instead).
///
/// A browser (no `Authorization` header) whose access cookie is missing, expired or whose
/// session token is stale is renewed from its refresh cookie, through the API's refresh
/// (rotation and reuse detection), and goes on.
pub async fn authorize(
    app: &App,
    policy: Policy,
    roles: &[String],
    require_verified_email: bool,
    headers: &HeaderMap,
    path_and_query: Option<&str>,
    client_ip: IpAddr,
) -> Verdict {
    match policy {
        Policy::Public => return Verdict::Allow(None),
        Policy::Deny => {
            return Verdict::Refuse {
                response: ApiResponse::error(StatusCode::FORBIDDEN, "forbidden", "Access denied"),
                reason: "denied_route",
            };
        }
        Policy::Authenticated | Policy::TwoFactor => {}
    }
    let checked = match credentials(headers, app.cookie_name()) {
        Some(token) => {
            app.gatekeeper
                .check(token, &app.keys, &*app.sessions, &*app.store)
                .await
        }
        None => Err(Denial::NoCredentials),
    };
    let (principal, cookies) = match checked {
        Ok(principal) => (principal, Vec::new()),
        Err(denial) => match renew(app, headers, denial, client_ip).await {
            Ok(renewed) => renewed,
            Err((denial, cookies)) => {
                return with_cookies(
                    unauthenticated(app, denial, headers, path_and_query),
                    cookies,
                );
            }
        },
    };
    // Before anything else about the user: an unproven address must not reach an upstream
    // that keys accounts by email.
    if require_verified_email && !principal.email_verified() {
        // Browsers go to the account page, which says so and sends a fresh link.
        let response = match app.portal.account_page().filter(|_| wants_html(headers)) {
            Some(page) => ApiResponse::raw(StatusCode::FOUND, serde_json::Value::Null)
                .with_header(http::header::LOCATION, page),
            None => ApiResponse::error(
                StatusCode::FORBIDDEN,
                "email_unverified",
                "Verify your email address to use this resource",
            ),
        };
        let refusal = Verdict::Refuse {
            response,
            reason: "email_unverified",
        };
        return with_cookies(refusal, cookies);
    }
    if policy == Policy::TwoFactor && !principal.two_factor() {
        let refusal = Verdict::Refuse {
            response: ApiResponse::error(
                StatusCode::FORBIDDEN,
                "two_factor_required",
                "This resource requires a login with two-factor authentication",
            ),
            reason: "two_factor_required",
        };
        return with_cookies(refusal, cookies);
    }
    if !roles.is_empty() && !roles.iter().any(|r| principal.roles().contains(r)) {
        let refusal = Verdict::Refuse {
            response: ApiResponse::error(
                StatusCode::FORBIDDEN,
                "forbidden_role",
                "Your account lacks the role this resource requires",
            ),
            reason: "forbidden_role",
        };
        return with_cookies(refusal, cookies);
    }
    if cookies.is_empty() {
        Verdict::Allow(Some(principal))
    } else {
        Verdict::Renewed { principal, cookies }
    }
}

/// Renews a browser whose access was refused for `denial`, from its refresh cookie. Bearer
/// callers, deactivated accounts and a backend that is down are not renewed. The error is
/// the denial to answer and any cookies that clear a refused refresh token.
async fn renew(
    app: &App,
    headers: &HeaderMap,
    denial: Denial,
    client_ip: IpAddr,
) -> Result<(Principal, Vec<String>), (Denial, Vec<String>)> {
    let renewable = matches!(
        denial,
        Denial::NoCredentials | Denial::BadToken | Denial::SessionEnded
    ) && !headers.contains_key(http::header::AUTHORIZATION);
    if !renewable {
        return Err((denial, Vec::new()));
    }
    match crate::api::browser::renew(app, headers, client_ip).await {
        crate::api::browser::Renewal::Renewed {
            access_token,
            cookies,
        } => match app
            .gatekeeper
            .check(&access_token, &app.keys, &*app.sessions, &*app.store)
            .await
        {
            Ok(principal) => Ok((principal, cookies)),
            Err(denial) => Err((denial, cookies)),
        },
        crate::api::browser::Renewal::Refused { cookies } => Err((denial, cookies)),
        crate::api::browser::Renewal::NoCookie => Err((denial, Vec::new())),
        crate::api::browser::Renewal::Unavailable(_) => Err((Denial::BackendDown, Vec::new())),
    }
}

/// Adds `Set-Cookie` values to a refusal.
fn with_cookies(verdict: Verdict, cookies: Vec<String>) -> Verdict {
    match verdict {
        Verdict::Refuse {
            mut response,
            reason,
        } => {
            for cookie in cookies {
                response = response.with_header(http::header::SET_COOKIE, cookie);
            }
            Verdict::Refuse { response, reason }
        }
        other => other,
    }
}

/// 401 for API clients, a redirect to the login page for browsers (when one is configured),
/// 503 when a backend could not be asked.
fn unauthenticated(
    app: &App,
    denial: Denial,
    headers: &HeaderMap,
    path_and_query: Option<&str>,
) -> Verdict {
    if denial == Denial::BackendDown {
        return Verdict::Refuse {
            response: crate::api::unavailable("session store"),
            reason: denial.reason(),
        };
    }
    let login_url = app.login_url().unwrap_or_default();
    if let Some(path_and_query) =
        path_and_query.filter(|_| !login_url.is_empty() && wants_html(headers))
    {
        let separator = if login_url.contains('?') { '&' } else { '?' };
        let location = format!(
            "{login_url}{separator}return_to={}",
            url::form_urlencoded::byte_serialize(same_site_target(path_and_query).as_bytes())
                .collect::<String>()
        );
        return Verdict::Refuse {
            response: ApiResponse::raw(StatusCode::FOUND, serde_json::Value::Null)
                .with_header(http::header::LOCATION, location),
            reason: denial.reason(),
        };
    }
    let (code, message) = match denial {
        Denial::NoCredentials => ("authentication_required", "Authentication required"),
        Denial::BadToken => ("invalid_token", "Invalid or expired token"),
        _ => ("session_ended", "Session has ended; log in again"),
    };
    let challenge = if denial == Denial::NoCredentials {
        "Bearer".to_string()
    } else {
        format!("Bearer error=\"invalid_token\", error_description=\"{message}\"")
    };
    Verdict::Refuse {
        response: ApiResponse::error(StatusCode::UNAUTHORIZED, code, message)
            .with_header(http::header::WWW_AUTHENTICATE, challenge),
        reason: denial.reason(),
    }
}

/// Browsers navigating ask for HTML first; API clients do not.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The return target is always a path on this site: never `//host` or a scheme, so the
/// login page cannot be turned into an open redirect.
fn same_site_target(path_and_query: &str) -> &str {
    let safe = path_and_query.starts_with('/')
        && !path_and_query.starts_with("//")
        && !path_and_query.starts_with("/\\")
        && !path_and_query.chars().any(char::is_control);
    if safe { path_and_query } else { "/" }
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
        assert_eq!(credentials(&h, "portcullis"), Some("tok"));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(credentials(&h, "portcullis"), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(
            credentials(&h, "portcullis"),
            None,
            "a non-bearer Authorization is not credentials"
        );
    }

    #[test]
    fn return_targets_stay_on_site() {
        assert_eq!(same_site_target("/app?x=1"), "/app?x=1");
        assert_eq!(same_site_target("//evil.example/x"), "/");
        assert_eq!(same_site_target("/\\evil.example"), "/");
        assert_eq!(same_site_target("https://evil.example"), "/");
    }
}
