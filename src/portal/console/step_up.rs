//! The step-up page: an administrator whose second factor is older than
//! `admin.max_auth_age` (or was never proven in this session) proves it again — a TOTP or
//! recovery code, or, with JavaScript, a passkey — and goes back to the console page asked
//! for. An account with no second factor at all is told to set one up first.

use http::StatusCode;
use minijinja::Value;

use super::super::pages::second_factor::{self, Refused};
use super::super::pages::second_step_values;
use super::{Section, Standing, render};
use crate::accounts::{AccountError, SecondStep};
use crate::portal::{Feedback, Form, Page, Visit};

/// `GET /admin/step-up?return_to=…`: the form, or why there is none.
pub(super) async fn page(v: &mut Visit<'_>, standing: &Standing) -> Page {
    let return_to = target(v, v.query("return_to"));
    let (user, _) = standing.parts();
    match v.app.accounts.step_up_challenge(user).await {
        AccountError::SecondFactorRequired(step) => {
            render_form(v, StatusCode::OK, Feedback::default(), &return_to, *step)
        }
        AccountError::TwoFactorNotEnabled => no_second_factor(v),
        e => {
            let refusal = v.refusal(e);
            super::failure(v, &refusal)
        }
    }
}

/// `POST /admin/step-up`: the code (or the passkey's answer) proven, then on to
/// `return_to`; a wrong one counts against the lockout and comes back with the problem.
pub(super) async fn prove(v: &mut Visit<'_>, standing: &Standing, form: &Form) -> Page {
    let return_to = target(v, form.get("return_to"));
    let (user, session) = standing.parts();
    let second = second_factor::answer(form);
    let client = v.client();
    let proven = v
        .app
        .accounts
        .prove_second_factor(user, session, second, &client)
        .await;
    match second_factor::refused_step(v, proven, form) {
        Ok(()) => v.redirect(&return_to),
        Err(Refused::Again(status, feedback, step)) => {
            render_form(v, status, feedback, &return_to, *step)
        }
        Err(Refused::NoSecondFactor) => no_second_factor(v),
        Err(Refused::Other(e)) => {
            let refusal = v.refusal(e);
            super::failure(v, &refusal)
        }
    }
}

/// Where a step-up goes on to: `raw` when it is a page of this console, on this site,
/// without dot segments (`/auth/admin/../account`) and not the step-up page itself;
/// otherwise the console's first page. Nothing else is ever a step-up's destination.
fn target(v: &Visit<'_>, raw: Option<&str>) -> String {
    let console = v.path("/admin");
    let step_up = v.path("/admin/step-up");
    raw.and_then(|r| v.portal.safe_return_to(r))
        .filter(|r| r.starts_with('/'))
        .filter(|r| is_console_page(&console, &step_up, r))
        .unwrap_or(console)
}

/// Whether the same-site `target` (a path with an optional query) is a page under
/// `console` other than `step_up`, as a browser resolves it (URL Standard: `.` and `..`
/// segments, also as `%2e`, are resolved before the request).
fn is_console_page(console: &str, step_up: &str, target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let under = path == console
        || path
            .strip_prefix(console)
            .is_some_and(|rest| rest.starts_with('/'));
    let as_written = url::Url::parse("http://console.invalid/")
        .and_then(|base| base.join(target))
        .is_ok_and(|url| url.path() == path);
    under && as_written && path != step_up
}

/// The form: a passkey (with JavaScript) when the account has one, a code when it has TOTP.
fn render_form(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    return_to: &str,
    step: SecondStep,
) -> Page {
    let mut values = second_step_values(&step);
    values.push(("return_to", Value::from(return_to)));
    render(
        v,
        "admin_step_up.html",
        status,
        "admin_step_up_title",
        Section::None,
        feedback,
        values,
    )
}

/// The page for an administrator without any second factor: set one up on the account page.
fn no_second_factor(v: &mut Visit<'_>) -> Page {
    let account = v.path("/account");
    v.message(
        StatusCode::FORBIDDEN,
        "admin_no_second_factor_title",
        &["admin_no_second_factor_text"],
        Some((account, "admin_set_up_second_factor")),
    )
}

#[cfg(test)]
mod tests {
    use super::is_console_page;

    #[test]
    fn a_step_up_goes_on_only_to_a_console_page() {
        let (console, step_up) = ("/auth/admin", "/auth/admin/step-up");
        for ok in [
            "/auth/admin",
            "/auth/admin?q=ada",
            "/auth/admin/users/67e55044-10b1-426f-9247-bb680e5fe0c8",
            "/auth/admin/audit?kind=sign_in&before=12",
        ] {
            assert!(is_console_page(console, step_up, ok), "{ok}");
        }
        for refused in [
            "/auth/account",
            "/auth/administrator",
            "/auth/admin/../account",
            "/auth/admin/%2e%2e/account",
            "/auth/admin/./users",
            "/auth/admin/step-up",
            "/auth/admin/step-up?return_to=/auth/admin",
            "/app/auth/admin",
            "/auth/admin/\"x",
        ] {
            assert!(!is_console_page(console, step_up, refused), "{refused}");
        }
    }
}
