//! `GET /api/auth/verify`: forward-auth for nginx `auth_request`, Traefik ForwardAuth and
//! Caddy `forward_auth`. 200 with the identity headers, or 401/403.
//!
//! Query parameters narrow the check: `two_factor=true` requires a second factor,
//! `verified=true` a proven email address and `roles=a,b` any of the roles. Without
//! `verified=true` an unproven address passes, and `X-User-Email-Verified: false` says so.

use http::{HeaderName, HeaderValue, StatusCode};

use super::browser::Browser;
use super::{ApiRequest, Reply};
use crate::access::policy::{Requirement, Verdict, authorize};
use crate::app::App;
use crate::config::Policy;

/// Answers a forward-auth subrequest.
pub async fn forward_auth(app: &App, request: &ApiRequest) -> Reply {
    let mut policy = Policy::Authenticated;
    let mut roles = Vec::new();
    let mut require_verified_email = false;
    for (key, value) in
        url::form_urlencoded::parse(request.query.as_deref().unwrap_or("").as_bytes())
    {
        match key.as_ref() {
            "two_factor" if value == "true" || value == "1" => policy = Policy::TwoFactor,
            "verified" if value == "true" || value == "1" => require_verified_email = true,
            "roles" => roles.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    let mut renewed_cookies = Vec::new();
    let browser = Browser {
        app,
        headers: &request.headers,
        client_ip: request.client_ip,
    };
    let need = Requirement {
        policy,
        roles: &roles,
        verified_email: require_verified_email,
    };
    let verdict = authorize(&app.access, need, &request.headers, None, &browser).await;
    let principal = match verdict {
        Verdict::Allow(Some(principal)) => principal,
        Verdict::Renewed { principal, cookies } => {
            renewed_cookies = cookies;
            principal
        }
        Verdict::Allow(None) => return Reply::ok(StatusCode::OK, "Allowed", None),
        Verdict::Refuse { response, reason } => {
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
    let names = &app.access.identity_headers;
    let mut response = Reply::ok(StatusCode::OK, "Authenticated", None)
        .with_header(names.user_id.clone(), principal.user_id_text())
        .with_header(names.email.clone(), principal.email())
        .with_header(names.roles.clone(), principal.roles().join(","))
        .with_header(names.session_id.clone(), principal.session_id_text())
        .with_header(
            names.email_verified.clone(),
            if principal.email_verified() {
                "true"
            } else {
                "false"
            },
        );
    if let Some(name) = &names.assertion
        && let Some(assertion) = app.access.assertion(&principal)
    {
        response = response.with_header(HeaderName::clone(name), header_text(&assertion));
    }
    // A proxy may pass these on to the browser (nginx: auth_request_set + add_header).
    for cookie in renewed_cookies {
        response = response.with_header(http::header::SET_COOKIE, cookie);
    }
    response
}

/// A header value built from text, as text again.
fn header_text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}
