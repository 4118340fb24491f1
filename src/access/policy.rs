//! Route policies: who may pass, and what they are told when they may not.
//!
//! One decision for the proxy and the forward-auth endpoint. A refusal carries the API
//! client's answer and its [`Refusal`], from which the proxy builds a browser's page or
//! redirect (the portal's `refusals`). What only the caller knows — how a browser's access
//! cookie is renewed — comes in through [`Browser`].

pub mod freshness;

use std::net::IpAddr;

use http::{HeaderMap, Method, StatusCode};

use super::Access;
use super::credentials::{presents_bearer, unauthenticated as unauthorized_reply};
use super::gatekeeper::{Denial, Principal};
use super::refusal::Refusal;
use crate::config::{Account, Policy, RouteGuard, Rules, Unmet};
use crate::reply::Reply;
use crate::telemetry::SECURITY;

/// The outcome of applying a policy to a request.
pub enum Verdict {
    /// Forward, as this principal (`None` on public routes).
    Allow(Option<Principal>),
    /// Forward as this principal, whose browser's access cookie had expired and was renewed
    /// from its refresh cookie: `cookies` go back with the answer.
    Renewed {
        /// Who the renewed access token stands for.
        principal: Principal,
        /// `Set-Cookie` values (new access and rotated refresh cookie) to add to the answer.
        cookies: Vec<String>,
    },
    /// Answer locally; `reason` is the metric label.
    Refuse {
        /// The API client's answer (401, 403, 405, 503), with any `Set-Cookie` values the
        /// decision made (a renewal's, or clearing a refused refresh token).
        response: Reply,
        /// Why: what a browser's answer is made from.
        refusal: Refusal,
        /// The `reason` label of the refusal metric.
        reason: &'static str,
    },
}

/// What renewing a browser's access cookie from its refresh cookie gave.
pub enum Renewal {
    /// The browser holds no refresh cookie.
    NoCookie,
    /// Who the new access token stands for (built from what was just signed, not
    /// verified again), and the cookies that carry it and the rotated refresh token.
    Renewed {
        /// Who the new access token stands for.
        principal: Principal,
        /// The new access token (what the portal calls the core on behalf of).
        access_token: String,
        /// `Set-Cookie` values carrying the new access token and rotated refresh token.
        cookies: Vec<String>,
    },
    /// The refresh token was refused (expired, revoked, reused): the cookies that clear it.
    Refused {
        /// `Set-Cookie` values that expire the access and refresh cookies.
        cookies: Vec<String>,
    },
    /// A backend is down: the 503 to answer.
    Unavailable(Reply),
}

/// What a route (and a forward-auth query) asks of the caller.
pub struct Requirement<'a> {
    /// The route's name, for the security log (`""` when no route applies).
    pub route: &'a str,
    /// Who may pass: public, authenticated, two-factor or nobody.
    pub policy: Policy,
    /// The route's conditions ([`Rules::NONE`] for none).
    pub rules: &'a Rules,
    /// Any of these roles besides the route's (forward-auth's `roles=`); empty for none.
    pub roles: &'a [String],
    /// The user must have proven their email address.
    pub verified_email: bool,
    /// The method of the request decided on (forward-auth: the original request's).
    pub method: &'a Method,
    /// The client's address, after `server.trusted_proxies`.
    pub client: IpAddr,
    /// How recently (seconds) the user must have proved who they are; `None` for any age.
    pub max_auth_age: Option<u64>,
}

impl<'a> Requirement<'a> {
    /// What a route asks of a request with this method from this client.
    pub fn of(guard: &'a RouteGuard, method: &'a Method, client: IpAddr) -> Self {
        Self {
            route: &guard.name,
            policy: guard.policy,
            rules: &guard.rules,
            roles: &[],
            verified_email: guard.verified_email,
            method,
            client,
            max_auth_age: guard.max_auth_age.map(|age| age.as_secs_ceil()),
        }
    }
}

/// The refusal of a request that failed one of its route's conditions: 405 with `Allow`
/// for a method, else 403 with the condition's code; written to the security log (at INFO:
/// a refusal is the rule working, not a warning for operators, and is never throttled).
fn unmet(need: &Requirement<'_>, unmet: Unmet, user: Option<&Principal>) -> Verdict {
    tracing::info!(
        target: SECURITY,
        event = "route_condition_unmet",
        route = need.route,
        reason = unmet.code(),
        method = need.method.as_str(),
        client = %need.client,
        user_id = user.map(Principal::user_id_text),
    );
    let response = match unmet {
        Unmet::Method => Reply::method_not_allowed(&need.rules.allow),
        Unmet::Network => Reply::error(
            StatusCode::FORBIDDEN,
            unmet.code(),
            "This resource is not available from your network.",
        ),
        Unmet::User | Unmet::EmailDomain => Reply::error(
            StatusCode::FORBIDDEN,
            unmet.code(),
            "Your account may not use this resource.",
        ),
        Unmet::Role => Reply::error(
            StatusCode::FORBIDDEN,
            unmet.code(),
            "Your account lacks the role this resource requires.",
        ),
    };
    Verdict::Refuse {
        response,
        refusal: Refusal::Condition(unmet),
        reason: unmet.code(),
    }
}

/// The browser side of a decision, which the caller supplies.
pub trait Browser {
    /// Renews the access cookie from the refresh cookie.
    fn renew(&self) -> impl std::future::Future<Output = Renewal> + Send;
}

/// Applies `need` to a request. `path_and_query` is the request's target (the path
/// planted copies of the gateway's cookies are cleared on); `None` for forward-auth.
///
/// A browser (no `Authorization` header) whose access cookie is missing, expired or whose
/// session token is stale is renewed from its refresh cookie, through `browser`, and goes on.
pub async fn authorize(
    access: &Access,
    need: Requirement<'_>,
    headers: &HeaderMap,
    path_and_query: Option<&str>,
    browser: &impl Browser,
) -> Verdict {
    if let Err(refused) = need.rules.check_request(need.method, &need.client) {
        return unmet(&need, refused, None);
    }
    match need.policy {
        Policy::Public => return Verdict::Allow(None),
        Policy::Deny => {
            return Verdict::Refuse {
                response: Reply::error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Access to this resource is denied.",
                ),
                refusal: Refusal::Denied,
                reason: "denied_route",
            };
        }
        Policy::Authenticated | Policy::TwoFactor => {}
    }
    if let Some(cookies) = access.clear_ambiguous_cookies(headers, path_and_query) {
        return with_cookies(unauthenticated(Denial::NoCredentials), cookies);
    }
    let (principal, cookies) = match access.authenticate(headers).await {
        Ok(principal) => (principal, Vec::new()),
        Err(denial) => match renew(headers, denial, browser).await {
            Ok(renewed) => renewed,
            Err((denial, cookies)) => {
                return with_cookies(unauthenticated(denial), cookies);
            }
        },
    };
    // Before anything else about the user: an unproven address must not reach an upstream
    // that keys accounts by email.
    if need.verified_email && !principal.email_verified() {
        let refusal = Verdict::Refuse {
            response: Reply::error(
                StatusCode::FORBIDDEN,
                "email_unverified",
                "Verify your email address to use this resource.",
            ),
            refusal: Refusal::EmailUnverified,
            reason: "email_unverified",
        };
        return with_cookies(refusal, cookies);
    }
    if need.policy == Policy::TwoFactor && !principal.two_factor() {
        let refusal = Verdict::Refuse {
            response: Reply::error(
                StatusCode::FORBIDDEN,
                "two_factor_required",
                "This resource requires a sign-in with two-factor authentication.",
            ),
            refusal: Refusal::SecondFactor,
            reason: "two_factor_required",
        };
        return with_cookies(refusal, cookies);
    }
    let account = Account {
        id: principal.user_id(),
        email: principal.email(),
        roles: principal.roles(),
    };
    let extra_roles =
        if !need.roles.is_empty() && !need.roles.iter().any(|r| account.roles.contains(r)) {
            Err(Unmet::Role)
        } else {
            Ok(())
        };
    if let Err(refused) = need.rules.check_account(&account).and(extra_roles) {
        return with_cookies(unmet(&need, refused, Some(&principal)), cookies);
    }
    if let Some(stale) = freshness::check(&need, &principal) {
        return with_cookies(stale, cookies);
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
    headers: &HeaderMap,
    denial: Denial,
    browser: &impl Browser,
) -> Result<(Principal, Vec<String>), (Denial, Vec<String>)> {
    let renewable = matches!(
        denial,
        Denial::NoCredentials | Denial::BadToken | Denial::SessionEnded
    ) && !presents_bearer(headers);
    if !renewable {
        return Err((denial, Vec::new()));
    }
    match browser.renew().await {
        Renewal::Renewed {
            principal, cookies, ..
        } => Ok((principal, cookies)),
        Renewal::Refused { cookies } => Err((denial, cookies)),
        Renewal::NoCookie => Err((denial, Vec::new())),
        Renewal::Unavailable(_) => Err((Denial::BackendDown, Vec::new())),
    }
}

/// Adds `Set-Cookie` values to a refusal.
fn with_cookies(verdict: Verdict, cookies: Vec<String>) -> Verdict {
    match verdict {
        Verdict::Refuse {
            mut response,
            refusal,
            reason,
        } => {
            for cookie in cookies {
                response = response.with_header(http::header::SET_COOKIE, cookie);
            }
            Verdict::Refuse {
                response,
                refusal,
                reason,
            }
        }
        other => other,
    }
}

/// 401 for a request without usable credentials; 503 when a backend could not be asked.
/// (A browser's sign-in redirect is made from the [`Refusal`] by the caller.)
fn unauthenticated(denial: Denial) -> Verdict {
    if denial == Denial::BackendDown {
        return Verdict::Refuse {
            response: Reply::unavailable("session database"),
            refusal: Refusal::Unavailable,
            reason: denial.reason(),
        };
    }
    Verdict::Refuse {
        response: unauthorized_reply(denial),
        refusal: Refusal::SignIn(denial),
        reason: denial.reason(),
    }
}

/// The return target is always a path on this site: never `//host` or a scheme, so the
/// login page cannot be turned into an open redirect.
pub fn same_site_target(path_and_query: &str) -> &str {
    let safe = path_and_query.starts_with('/')
        && !path_and_query.starts_with("//")
        && !path_and_query.starts_with("/\\")
        && !path_and_query.chars().any(char::is_control);
    if safe { path_and_query } else { "/" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_targets_stay_on_site() {
        assert_eq!(same_site_target("/app?x=1"), "/app?x=1");
        assert_eq!(same_site_target("//evil.example/x"), "/");
        assert_eq!(same_site_target("/\\evil.example"), "/");
        assert_eq!(same_site_target("https://evil.example"), "/");
    }
}
