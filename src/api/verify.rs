//! `/api/auth/verify`: forward-auth for nginx `auth_request`, Traefik ForwardAuth and
//! Caddy `forward_auth`. 200 with the identity headers, or 400/401/403/405/503.
//!
//! From a trusted proxy that describes the original request (`X-Forwarded-Method`, `-Host`,
//! `-Uri`), the gateway finds its route ([`Original`]) and that route's policy and
//! conditions decide, held to the original method; the query then only adds to them.
//!
//! Query parameters narrow the check: `two_factor=true` requires a second factor,
//! `verified=true` a proven email address, `roles=a,b` any of the roles and
//! `max_auth_age=10m` a sign-in (or reauthentication) at most that long ago. Without
//! `verified=true` an unproven address passes, and `X-User-Email-Verified: false` says so.
//!
//! It fails closed: the query is parsed into a [`Narrowing`] before anything else, and a
//! key or value it does not know is a 400 naming the key, never ignored (a misspelt
//! `two_factor=True` must not let a password-only session through). The call's own method
//! is decided like `GET`, `OPTIONS` included (it is no CORS preflight here).
//!
//! It never renews: a browser whose access cookie has expired gets a 401, the proxy sends
//! it to the portal's sign-in page, and that page renews from the refresh cookie (rotation
//! and reuse detection) and sends it back. A renewal here would rotate the refresh token in
//! a `Set-Cookie` the proxy does not pass on, and the next request would present the
//! rotated-out token: reuse, and the session ends (docs/forward-auth.md).

use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode};

use super::{ApiRequest, FieldError, Reply};
use crate::access::gatekeeper::Principal;
use crate::access::policy::{self, Renewal, Requirement, Verdict, authorize};
use crate::app::App;
use crate::config::{Policy, RouteGuard, Rules};
use crate::domain::HumanDuration;

/// The query keys forward-auth knows (docs/forward-auth.md), each at most once.
const KEYS: [&str; 4] = ["two_factor", "verified", "roles", "max_auth_age"];

/// The most characters of an unknown key a 400 repeats back.
const MAX_ECHOED_CHARS: usize = 32;

/// What a forward-auth query asks of the caller beyond a live session, parsed at the edge.
///
/// The query is `application/x-www-form-urlencoded` (keys and values percent-decoded, then
/// compared exactly and case-sensitively): `two_factor` and `verified` take `true` or
/// `false`; `roles` takes a comma-separated list of role names (spaces around a name are
/// ignored, an empty name is refused); `max_auth_age` a duration of at least a second
/// (`10m`), stricter than the route's when both are given. Each key at most once; nothing
/// else.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// The login must have passed a second factor.
    pub two_factor: bool,
    /// The account's email address must be verified.
    pub verified: bool,
    /// Any of these roles; empty for none.
    pub roles: Vec<String>,
    /// How recently (whole seconds, rounded up) the user must have proved who they are.
    pub max_auth_age: Option<u64>,
}

impl Narrowing {
    /// Parses a query string (without the `?`). The error names the offending key (an
    /// unknown one cut to [`MAX_ECHOED_CHARS`] characters).
    pub fn parse(query: &str) -> Result<Self, FieldError> {
        let mut narrowing = Self::default();
        let mut seen = [false; KEYS.len()];
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let Some(index) = KEYS.iter().position(|known| *known == key) else {
                return Err(FieldError::new(
                    echoed(&key),
                    "Forward-auth takes only the query parameters two_factor, verified, roles \
                     and max_auth_age.",
                ));
            };
            let name = KEYS[index];
            if std::mem::replace(&mut seen[index], true) {
                return Err(FieldError::named(name, "is given more than once"));
            }
            match name {
                "two_factor" => narrowing.two_factor = flag(name, &value)?,
                "verified" => narrowing.verified = flag(name, &value)?,
                "roles" => narrowing.roles = roles(&value)?,
                _ => narrowing.max_auth_age = Some(max_auth_age(&value)?),
            }
        }
        Ok(narrowing)
    }
}

/// `true` or `false`, exactly.
fn flag(name: &str, value: &str) -> Result<bool, FieldError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FieldError::named(name, "must be true or false")),
    }
}

/// A duration of at least one second, in whole seconds (rounded up).
fn max_auth_age(value: &str) -> Result<u64, FieldError> {
    let rule = "must be a duration of at least 1s, such as 10m";
    match value.parse::<HumanDuration>() {
        Ok(age) if age.get() >= std::time::Duration::from_secs(1) => Ok(age.as_secs_ceil()),
        _ => Err(FieldError::named("max_auth_age", rule)),
    }
}

/// A comma-separated list of non-empty role names.
fn roles(value: &str) -> Result<Vec<String>, FieldError> {
    value
        .split(',')
        .map(str::trim)
        .map(|role| {
            (!role.is_empty())
                .then(|| role.to_owned())
                .ok_or_else(|| FieldError::named("roles", "must not hold an empty role name"))
        })
        .collect()
}

/// An unknown key as a 400 may repeat it: at most [`MAX_ECHOED_CHARS`] characters.
fn echoed(key: &str) -> String {
    let mut chars = key.chars();
    let mut out: String = chars.by_ref().take(MAX_ECHOED_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The browser side of a forward-auth decision: no redirects (the proxy decides what a
/// browser sees) and no renewal (the portal renews; see the module docs).
struct ProxiedBrowser;

impl policy::Browser for ProxiedBrowser {
    async fn renew(&self) -> Renewal {
        Renewal::NoCookie
    }
}

/// The request a trusted proxy's forward-auth call is about (`X-Forwarded-Method`, `-Host`,
/// `-Uri`), canonicalised and looked up in the route table by the gateway.
#[derive(Clone, Debug)]
pub struct Original {
    /// The original request's method.
    pub method: Method,
    /// The policy of the route it falls under; `None` when no route matches (then the query
    /// alone decides).
    pub guard: Option<Arc<RouteGuard>>,
}

/// No condition: forward-auth for a request no route matches, or that no proxy described.
static NO_RULES: Rules = Rules::NONE;

/// What the route (when the proxy described the original request) and the query ask,
/// together: each query key can only add to the route's demands.
fn requirement<'a>(request: &'a ApiRequest, narrowing: &'a Narrowing) -> Requirement<'a> {
    let original = request.original.as_ref();
    let method = original.map_or(&request.method, |o| &o.method);
    let mut need = match original.and_then(|o| o.guard.as_deref()) {
        Some(guard) => Requirement::of(guard, method, request.client_ip),
        None => Requirement {
            route: "",
            policy: Policy::Authenticated,
            rules: &NO_RULES,
            roles: &[],
            verified_email: false,
            method,
            client: request.client_ip,
            max_auth_age: None,
        },
    };
    if narrowing.two_factor && need.policy != Policy::Deny {
        need.policy = Policy::TwoFactor;
    }
    let asks_who = narrowing.verified || !narrowing.roles.is_empty();
    if need.policy == Policy::Public && (asks_who || narrowing.max_auth_age.is_some()) {
        need.policy = Policy::Authenticated;
    }
    need.verified_email |= narrowing.verified;
    need.roles = &narrowing.roles;
    need.max_auth_age = match (need.max_auth_age, narrowing.max_auth_age) {
        (Some(route), Some(query)) => Some(route.min(query)),
        (route, query) => route.or(query),
    };
    need
}

/// Answers a forward-auth request, whatever its method.
pub async fn forward_auth(app: &App, request: &ApiRequest) -> Reply {
    let narrowing = match Narrowing::parse(request.query.as_deref().unwrap_or("")) {
        Ok(narrowing) => narrowing,
        Err(error) => {
            app.metrics
                .auth_decisions
                .with_label_values(&["forward_auth", "denied", "bad_query"])
                .inc();
            return Reply::validation(&[error]);
        }
    };
    let need = requirement(request, &narrowing);
    let verdict = authorize(&app.access, need, &request.headers, None, &ProxiedBrowser).await;
    let principal = match verdict {
        Verdict::Allow(Some(principal)) | Verdict::Renewed { principal, .. } => principal,
        Verdict::Allow(None) => return Reply::ok(StatusCode::OK, "The request is allowed.", None),
        Verdict::Refuse {
            response, reason, ..
        } => {
            app.metrics
                .auth_decisions
                .with_label_values(&["forward_auth", "denied", reason])
                .inc();
            return response;
        }
    };
    app.metrics
        .auth_decisions
        .with_label_values(&["forward_auth", "allowed", "allowed"])
        .inc();
    identity_reply(app, &principal)
}

/// The 200 with the identity headers (names from `[identity_headers]`).
fn identity_reply(app: &App, principal: &Principal) -> Reply {
    let mut response = Reply::ok(StatusCode::OK, "The request is authenticated.", None);
    for header in app.access.identity_headers_of(principal) {
        response = response.with_header(header.name.clone(), header_text(&header.value));
    }
    response
}

/// A header value built from text, as text again.
fn header_text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(query: &str) -> Narrowing {
        Narrowing::parse(query).unwrap_or_else(|e| panic!("{query:?}: {e:?}"))
    }

    #[test]
    fn documented_queries_parse() {
        assert_eq!(parsed(""), Narrowing::default());
        assert!(parsed("two_factor=true").two_factor);
        assert!(!parsed("two_factor=false").two_factor);
        assert!(parsed("verified=true").verified);
        assert!(!parsed("verified=false").verified);
        assert_eq!(parsed("roles=admin,ops").roles, ["admin", "ops"]);
        assert_eq!(parsed("roles=admin%2C%20ops").roles, ["admin", "ops"]);
        assert_eq!(parsed("roles=admin").roles, ["admin"]);
        let all = parsed("verified=true&roles=admin&two_factor=true");
        assert!(all.two_factor && all.verified);
        // Keys and values are percent-decoded, then compared.
        assert!(parsed("%74wo_factor=true").two_factor);
        assert!(parsed("two_factor=%74rue").two_factor);
        assert!(
            parsed("&two_factor=true&").two_factor,
            "empty pairs are no pairs"
        );
        assert_eq!(parsed("max_auth_age=10m").max_auth_age, Some(600));
        assert_eq!(parsed("max_auth_age=1s").max_auth_age, Some(1));
        assert_eq!(parsed("max_auth_age=1500ms").max_auth_age, Some(2));
    }

    #[test]
    fn anything_else_is_refused_naming_the_key() {
        let cases: &[(&str, &str)] = &[
            ("two_factor=True", "two_factor"),
            ("two_factor=TRUE", "two_factor"),
            ("two_factor=yes", "two_factor"),
            ("two_factor=on", "two_factor"),
            ("two_factor=1", "two_factor"),
            ("two_factor=0", "two_factor"),
            ("two_factor=2", "two_factor"),
            ("two_factor=", "two_factor"),
            ("two_factor", "two_factor"),
            ("two_factor=true%20", "two_factor"),
            ("two_factor=true;roles=admin", "two_factor"),
            ("verified=yes", "verified"),
            ("verified=1", "verified"),
            ("verified=False", "verified"),
            ("two-factor=true", "two-factor"),
            ("twofactor=true", "twofactor"),
            ("Two_factor=true", "Two_factor"),
            ("two_factor%20=true", "two_factor "),
            ("%54wo_factor=true", "Two_factor"),
            ("role=admin", "role"),
            ("roles[]=admin", "roles[]"),
            ("roles%5B%5D=admin", "roles[]"),
            ("roles[0]=admin", "roles[0]"),
            ("=true", ""),
            ("two_factor=true&two_factor=true", "two_factor"),
            ("two_factor=true&%74wo_factor=false", "two_factor"),
            ("roles=admin&roles=ops", "roles"),
            ("verified=true&verified=true", "verified"),
            ("roles=", "roles"),
            ("roles", "roles"),
            ("roles=admin,,ops", "roles"),
            ("roles=,admin", "roles"),
            ("roles=admin,", "roles"),
            ("roles=%20", "roles"),
            ("max_auth_age=", "max_auth_age"),
            ("max_auth_age=0s", "max_auth_age"),
            ("max_auth_age=999ms", "max_auth_age"),
            ("max_auth_age=ten", "max_auth_age"),
            ("max_auth_age=-5m", "max_auth_age"),
            ("max_auth_age=10m&max_auth_age=5m", "max_auth_age"),
            ("max_age=10m", "max_age"),
        ];
        for (query, key) in cases {
            let error = Narrowing::parse(query).expect_err(query);
            assert_eq!(error.field, *key, "{query}");
            let problem = crate::reply::sentence_problem(&error.message);
            assert_eq!(problem, None, "{query}: {:?}", error.message);
        }
    }

    #[test]
    fn unknown_keys_are_echoed_cut_short() {
        let long = "k".repeat(10_000);
        let error = Narrowing::parse(&format!("{long}=true")).expect_err("unknown");
        assert_eq!(error.field.chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(error.field.ends_with('…'));
        let error = Narrowing::parse(&format!("roles={long}&{long}=1")).expect_err("unknown");
        assert!(error.field.len() < 40);
    }
}
