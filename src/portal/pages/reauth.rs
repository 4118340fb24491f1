//! The reauthentication page: a signed-in browser whose sign-in is older than a route's
//! `max_auth_age` proves who it is again — the password (with a code when TOTP is on) or,
//! with JavaScript, a passkey — and goes back to the page it asked for, in the same
//! session (a new access cookie carries the new `auth_time`).

use http::StatusCode;
use minijinja::Value;

use super::super::{Feedback, Form, Page, Visit};
use super::passkeys::second_factor_answer;
use super::second_step_values;
use crate::accounts::{AccountError, PasskeyChallenge, Reproof, SecondFactor, SecondStep};
use crate::api::endpoints::Limit;
use crate::store::User;

/// `GET /reauthenticate?return_to=…`: the form (the sign-in page first when not signed in).
pub(super) async fn page(v: &mut Visit<'_>) -> Page {
    let return_to = v.return_to_query();
    let Some(token) = v.signed_in().await else {
        let login = v.path_with_return("/login", return_to.as_deref());
        return v.redirect(&login);
    };
    let app = v.app;
    let caller = match v.caller(&token).await {
        Ok(caller) => caller,
        Err(refusal) => return v.failure(&refusal),
    };
    match app.accounts.reauthentication_challenge(&caller.user).await {
        Ok(passkey) => {
            let form = form_of(&caller.user, passkey);
            render(v, StatusCode::OK, Feedback::default(), return_to, &form)
        }
        Err(e) => {
            let refusal = v.refusal(e);
            v.failure(&refusal)
        }
    }
}

/// `POST /reauthenticate`: the proof checked (one guess against the lockout, the per-IP
/// limits of a sign-in), then on to `return_to` with the new access cookie.
pub(super) async fn prove(v: &mut Visit<'_>, form: Form) -> Page {
    let return_to = form
        .get("return_to")
        .and_then(|r| v.portal.safe_return_to(r));
    let Some(token) = v.signed_in().await else {
        let login = v.path_with_return("/login", return_to.as_deref());
        return v.redirect(&login);
    };
    let app = v.app;
    let caller = match v.caller_within(&token, Limit::Login).await {
        Ok(caller) => caller,
        Err(refusal) => return v.failure(&refusal),
    };
    let passkey = second_factor_answer(&form);
    let proof = match passkey {
        Some(SecondFactor::Passkey(answer)) => Reproof::Passkey(answer),
        _ => Reproof::Password {
            password: form.text("password"),
            code: form.get("two_factor_code"),
        },
    };
    let client = v.client();
    let (user, session) = (&caller.user, caller.session.id);
    match app
        .accounts
        .reauthenticate(user, session, proof, &client)
        .await
    {
        Ok(proven) => {
            let cookie = crate::api::session_cookie(app, &proven.access_token);
            v.cookies.push(cookie);
            let target = return_to.unwrap_or_else(|| v.path("/account"));
            v.redirect(&target)
        }
        Err(e) => refused(v, user, e, return_to).await,
    }
}

/// The form again after a refused proof, with what was wrong; a page of its own for a
/// refusal the form cannot mend (locked, ended session, a backend down).
async fn refused(
    v: &mut Visit<'_>,
    user: &User,
    error: AccountError,
    return_to: Option<String>,
) -> Page {
    let (status, feedback, step) = match error {
        AccountError::SecondFactorRequired(step) | AccountError::WrongSecondFactor(step) => {
            let feedback = Feedback {
                form_error: Some(v.t("passkey_failed")),
                ..Feedback::default()
            };
            (StatusCode::UNAUTHORIZED, feedback, Some(*step))
        }
        e @ (AccountError::Field { .. } | AccountError::Invalid(_)) => {
            let refusal = v.refusal(e);
            (refusal.status, v.feedback(&refusal, str::to_owned), None)
        }
        e => {
            let refusal = v.refusal(e);
            return v.failure(&refusal);
        }
    };
    let form = match step {
        Some(step) => ReproofForm::of(user, step),
        None => match v.app.accounts.reauthentication_challenge(user).await {
            Ok(passkey) => form_of(user, passkey),
            Err(e) => {
                let refusal = v.refusal(e);
                return v.failure(&refusal);
            }
        },
    };
    render(v, status, feedback, return_to, &form)
}

/// What the page offers an account.
struct ReproofForm {
    /// The passkey challenge and whether TOTP is on, as the second-factor forms show them.
    step: SecondStep,
    /// The password form: always, unless a passkey is the account's only second factor.
    password: bool,
}

impl ReproofForm {
    fn of(user: &User, step: SecondStep) -> Self {
        let password = user.two_factor_enabled || step.passkey.is_none();
        Self { step, password }
    }
}

/// The form for `user`, with a fresh passkey challenge when they have passkeys.
fn form_of(user: &User, passkey: Option<PasskeyChallenge>) -> ReproofForm {
    let mut methods = Vec::new();
    if user.two_factor_enabled {
        methods.push("totp");
    }
    let step = SecondStep {
        methods,
        passkey,
        pending: None,
    };
    ReproofForm::of(user, step)
}

fn render(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    return_to: Option<String>,
    form: &ReproofForm,
) -> Page {
    let mut values = second_step_values(&form.step);
    // A sign-in through a provider is a proof too (a fresh session): the way back for an
    // account that has no password.
    values.push((
        "providers",
        super::federation::buttons(v, return_to.as_deref()),
    ));
    values.push(("return_to", Value::from(return_to.unwrap_or_default())));
    values.push(("password_form", Value::from(form.password)));
    v.render(
        "reauthenticate.html",
        status,
        "reauthenticate_title",
        feedback,
        values,
    )
}
