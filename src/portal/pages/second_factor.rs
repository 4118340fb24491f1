//! The second-factor step of a signed-in session: where the gateway sends a browser that
//! reached a `two_factor` route without one. A TOTP code, a recovery code or (with
//! JavaScript) a passkey proves it — the account core's step-up,
//! [`crate::accounts::Accounts::prove_second_factor`], the admin console's too, which marks
//! the session as two-factor — and the browser goes back to the page it asked for. An
//! account without any second factor is offered the setup, which comes back here.

use http::StatusCode;
use minijinja::Value;

use super::passkeys::second_factor_answer;
use super::second_step_values;
use crate::access::credentials::Caller;
use crate::accounts::{AccountError, SecondFactor, SecondStep};
use crate::portal::refusals::SECOND_FACTOR_PATH;
use crate::portal::{Feedback, Form, Page, Visit};

/// This step's path below the portal's prefix.
pub(in crate::portal) const STEP: &str = SECOND_FACTOR_PATH;

/// `GET /second-factor?return_to=…`: the form, the setup offer, or straight on when this
/// session has proven a second factor already.
pub(in crate::portal) async fn page(v: &mut Visit<'_>) -> Page {
    let return_to = target(v, v.query("return_to"));
    let caller = match signed_in(v, &return_to).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    if caller.session.two_factor {
        return v.redirect(&return_to);
    }
    match v.app.accounts.step_up_challenge(&caller.user).await {
        AccountError::SecondFactorRequired(step) => {
            render_form(v, StatusCode::OK, Feedback::default(), &return_to, *step)
        }
        AccountError::TwoFactorNotEnabled => offer_setup(v, &return_to),
        e => {
            let refusal = v.refusal(e);
            v.failure(&refusal)
        }
    }
}

/// `POST /second-factor`: the code (or the passkey's answer) proven in this session, then
/// on to `return_to`; a wrong one counts against the lockout and comes back with the
/// problem.
pub(in crate::portal) async fn prove(v: &mut Visit<'_>, form: &Form) -> Page {
    let return_to = target(v, form.get("return_to"));
    let caller = match signed_in(v, &return_to).await {
        Ok(caller) => caller,
        Err(page) => return page,
    };
    let second = answer(form);
    let client = v.client();
    let proven = v
        .app
        .accounts
        .prove_second_factor(&caller.user, caller.session.id, second, &client)
        .await;
    match refused_step(v, proven, form) {
        Ok(()) => v.redirect(&return_to),
        Err(Refused::Again(status, feedback, step)) => {
            render_form(v, status, feedback, &return_to, *step)
        }
        Err(Refused::NoSecondFactor) => offer_setup(v, &return_to),
        Err(Refused::Other(e)) => {
            let refusal = v.refusal(e);
            v.failure(&refusal)
        }
    }
}

/// The second factor a step-up form sends: a passkey's answer, else the code typed.
pub(in crate::portal) fn answer(form: &Form) -> SecondFactor {
    second_factor_answer(form)
        .unwrap_or_else(|| SecondFactor::Code(Some(form.text("two_factor_code").to_owned())))
}

/// Why a step-up form did not prove a second factor, as its page shows it.
pub(in crate::portal) enum Refused {
    /// The form again, with this status and problem, and the step's fresh challenge.
    Again(StatusCode, Feedback, Box<SecondStep>),
    /// The account has no second factor to prove.
    NoSecondFactor,
    /// Anything else, shown as the API would answer it.
    Other(AccountError),
}

/// Reads the core's answer to a step-up form (the console's and this page's): nothing
/// sent (400, "… is required."), a wrong code or passkey (401), no second factor at all.
pub(in crate::portal) fn refused_step(
    v: &Visit<'_>,
    proven: Result<(), AccountError>,
    form: &Form,
) -> Result<(), Refused> {
    let mut feedback = Feedback::default();
    match proven {
        Ok(()) => Ok(()),
        Err(AccountError::SecondFactorRequired(step)) => {
            let required = v.field_required("two_factor_code");
            feedback
                .errors
                .insert("two_factor_code".into(), vec![required]);
            Err(Refused::Again(StatusCode::BAD_REQUEST, feedback, step))
        }
        Err(AccountError::WrongSecondFactor(step)) => {
            if form.get("passkey_credential").is_some() {
                feedback.form_error = Some(v.t("passkey_failed"));
            } else {
                feedback
                    .errors
                    .insert("two_factor_code".into(), vec![v.t("error_wrong_code")]);
            }
            Err(Refused::Again(StatusCode::UNAUTHORIZED, feedback, step))
        }
        Err(AccountError::TwoFactorNotEnabled) => Err(Refused::NoSecondFactor),
        Err(e) => Err(Refused::Other(e)),
    }
}

/// The signed-in account and session asking; a browser that is not signed in goes to the
/// sign-in page, to come back to `return_to` (which sends it here again if it must).
async fn signed_in(v: &mut Visit<'_>, return_to: &str) -> Result<Caller, Page> {
    let Some(token) = v.signed_in().await else {
        let login = v.path_with_return("/login", Some(return_to));
        return Err(v.redirect(&login));
    };
    match v.caller(&token).await {
        Ok(caller) => Ok(caller),
        Err(refusal) if refusal.status == StatusCode::UNAUTHORIZED => {
            v.end_sign_in();
            let login = v.path_with_return("/login", Some(return_to));
            Err(v.redirect(&login))
        }
        Err(refusal) => Err(v.failure(&refusal)),
    }
}

/// Where the step goes on to: `raw` when it is a path on this site (RFC 3986 relative
/// reference, no scheme or authority) that is not this step itself as a browser resolves it
/// (dot segments included); otherwise the account page.
pub(in crate::portal) fn target(v: &Visit<'_>, raw: Option<&str>) -> String {
    let step = v.path(SECOND_FACTOR_PATH);
    raw.and_then(|r| v.portal.safe_return_to(r))
        .filter(|r| r.starts_with('/'))
        .filter(|r| !resolves_to(r, &step))
        .unwrap_or_else(|| v.path("/account"))
}

/// Whether the same-site `target` is the page at `path`, as a browser resolves it (URL
/// Standard: `.` and `..` segments, also as `%2e`); a target that cannot be resolved is
/// treated as if it were.
fn resolves_to(target: &str, path: &str) -> bool {
    url::Url::parse("http://site.invalid/")
        .and_then(|base| base.join(target))
        .map_or(true, |url| url.path().trim_end_matches('/') == path)
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
    v.render(
        "second_factor.html",
        status,
        "second_factor_title",
        feedback,
        values,
    )
}

/// The page for an account with no second factor: set one up (the setup comes back to
/// this step, then to `return_to`). 403: the page asked for stays refused until then.
fn offer_setup(v: &mut Visit<'_>, return_to: &str) -> Page {
    v.render(
        "second_factor.html",
        StatusCode::FORBIDDEN,
        "second_factor_setup_title",
        Feedback::default(),
        vec![
            ("setup", Value::from(true)),
            ("return_to", Value::from(return_to)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::resolves_to;

    #[test]
    fn the_step_never_returns_to_itself() {
        let step = "/auth/second-factor";
        for itself in [
            "/auth/second-factor",
            "/auth/second-factor/",
            "/auth/second-factor?return_to=/app",
            "/auth/x/../second-factor",
            "/auth/%2e%2e/auth/second-factor",
            "/auth/./second-factor",
        ] {
            assert!(resolves_to(itself, step), "{itself}");
        }
        for other in [
            "/app",
            "/auth/account",
            "/auth/second-factor-x",
            "/app?x=/auth/second-factor",
        ] {
            assert!(!resolves_to(other, step), "{other}");
        }
    }
}
