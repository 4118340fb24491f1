//! The invitation page: the mailed link opens it, it shows the invitation's address (not
//! editable) and takes the invitee's names and password, posting to itself; the account
//! core creates the account. Where passkeys are on, the invitee may choose a passkey
//! instead of a password (`/invitation/passkey`, then the browser's ceremony, then
//! `/invitation/passkey/finish`). Every refusal of the link itself (unknown, used, revoked,
//! expired) is one page that does not say which.

use http::StatusCode;
use minijinja::Value;
use serde_json::json;

use super::{Feedback, Form, Page, Visit, to_value};
use crate::accounts::fields::FieldErrors;
use crate::accounts::{AccountError, InvitationForm, InvitedNames};
use crate::api::endpoints::Limit;
use crate::store::StoreError;

/// `GET /invitation?token=…`: the form, or the page for a link that does not work.
pub(super) async fn page(v: &mut Visit<'_>) -> Page {
    let token = v.query("token").unwrap_or_default().to_owned();
    let app = v.app;
    match app.accounts.invitation(&token).await {
        Ok(invitation) => {
            let email = invitation.email.to_string();
            render(
                v,
                StatusCode::OK,
                Feedback::default(),
                token,
                email,
                &Form(vec![]),
            )
        }
        Err(e) => refused(v, e),
    }
}

/// `POST /invitation`: the account is created, or the form comes back with what to fix.
/// The per-IP limits are those of the accept-invitation endpoint (`Limit::Register`).
pub(super) async fn accept(v: &mut Visit<'_>, form: Form) -> Page {
    let token = form.text("token").trim().to_owned();
    if let Some(refused) = over_limit(v).await {
        return refused;
    }
    let app = v.app;
    let answer = InvitationForm {
        email: None,
        password: form.text("password"),
        first_name: form.text("first_name"),
        last_name: form.text("last_name"),
    };
    let accepted = match answer.parse_after(FieldErrors::default()) {
        Ok(account) => {
            let client = v.client();
            app.accounts
                .accept_invitation(&token, account, &client)
                .await
        }
        Err(invalid) => Err(invalid),
    };
    match accepted {
        Ok(_) => {
            let login = v.path("/login");
            v.message(
                StatusCode::OK,
                "invitation_accepted_title",
                &["invitation_accepted_text"],
                Some((login, "sign_in")),
            )
        }
        Err(e @ AccountError::Invalid(_)) => form_again(v, e, token, &form).await,
        Err(e) => refused(v, e),
    }
}

/// `POST /invitation/passkey`: the names are checked, then the page that asks the
/// browser for a passkey (the portal's script; without it the page says so).
pub(super) async fn begin_passkey(v: &mut Visit<'_>, form: Form) -> Page {
    let token = form.text("token").trim().to_owned();
    if let Some(refused) = over_limit(v).await {
        return refused;
    }
    let app = v.app;
    let names = InvitedNames {
        first_name: form.text("first_name"),
        last_name: form.text("last_name"),
    };
    let begun = match names.parse() {
        Ok(_) => app.accounts.begin_invitation_passkey(&token).await,
        Err(invalid) => Err(invalid),
    };
    let challenge = match begun {
        Ok(challenge) => challenge,
        Err(e) => return form_again(v, e, token, &form).await,
    };
    // The options go into an attribute as JSON text, HTML-escaped like every value.
    let options = serde_json::to_string(&challenge.options).unwrap_or_default();
    v.render(
        "invitation_passkey.html",
        StatusCode::OK,
        "invitation_title",
        Feedback::default(),
        vec![
            ("token", Value::from(token)),
            ("ceremony_id", Value::from(challenge.ceremony.as_str())),
            ("options", Value::from(options)),
            ("first_name", Value::from(form.text("first_name"))),
            ("last_name", Value::from(form.text("last_name"))),
        ],
    )
}

/// `POST /invitation/passkey/finish`: the account is created with the passkey the browser
/// made, or the invitation's form comes back saying what went wrong.
pub(super) async fn finish_passkey(v: &mut Visit<'_>, form: Form) -> Page {
    let token = form.text("token").trim().to_owned();
    if let Some(refused) = over_limit(v).await {
        return refused;
    }
    let app = v.app;
    let names = InvitedNames {
        first_name: form.text("first_name"),
        last_name: form.text("last_name"),
    };
    let accepted = match names.parse().and_then(|names| {
        let name = v.t("invitation_passkey_name");
        let input =
            crate::api::new_passkey(form.text("ceremony_id"), &name, form.text("credential"));
        input.map(|input| (names, input))
    }) {
        Ok((names, input)) => {
            let client = v.client();
            app.accounts
                .accept_invitation_with_passkey(&token, names, input, &client)
                .await
        }
        Err(e) => Err(e),
    };
    match accepted {
        Ok(_) => {
            let login = v.path("/login");
            v.message(
                StatusCode::OK,
                "invitation_accepted_title",
                &["invitation_accepted_passkey_text"],
                Some((login, "sign_in")),
            )
        }
        Err(e) => form_again(v, e, token, &form).await,
    }
}

/// The page for a client over the per-IP limits of the accept-invitation endpoint
/// (`Limit::Register`), which every invitation form counts against; `None` within them.
async fn over_limit(v: &mut Visit<'_>) -> Option<Page> {
    let limit = crate::api::limit_client(v.app, v.request.client_ip, Limit::Register)
        .await
        .map(drop);
    v.limited(limit).err().map(|refusal| v.failure(&refusal))
}

/// The invitation's form again after `error` (the names kept), or the page for a link
/// that does not work.
async fn form_again(v: &mut Visit<'_>, error: AccountError, token: String, form: &Form) -> Page {
    if matches!(error, AccountError::InvalidLink) {
        return refused(v, error);
    }
    let refusal = v.refusal(error);
    let feedback = v.feedback(&refusal, str::to_owned);
    match v.app.accounts.invitation(&token).await {
        Ok(invitation) => {
            let email = invitation.email.to_string();
            render(v, refusal.status, feedback, token, email, form)
        }
        Err(e) => refused(v, e),
    }
}

/// The page for a link that does not work (one for every reason), or for a failure.
fn refused(v: &mut Visit<'_>, error: AccountError) -> Page {
    if matches!(error, AccountError::InvalidLink) {
        let login = v.path("/login");
        return v.message(
            StatusCode::BAD_REQUEST,
            "invitation_invalid_title",
            &["invitation_invalid_text"],
            Some((login, "back_to_sign_in")),
        );
    }
    if matches!(error, AccountError::Store(StoreError::DuplicateEmail)) {
        // Someone signed up with the invited address first (an unproven sign-up, most
        // likely): the invitation stays, and an administrator can clear the way.
        let login = v.path("/login");
        return v.message(
            StatusCode::CONFLICT,
            "invitation_taken_title",
            &["invitation_taken_text"],
            Some((login, "back_to_sign_in")),
        );
    }
    let refusal = v.refusal(error);
    v.failure(&refusal)
}

/// The form for the invitation of `token`, for `email`, with the names as typed.
fn render(
    v: &mut Visit<'_>,
    status: StatusCode,
    feedback: Feedback,
    token: String,
    email: String,
    form: &Form,
) -> Page {
    v.render(
        "invitation.html",
        status,
        "invitation_title",
        feedback,
        vec![
            ("passkeys", Value::from(v.app.accounts.passkeys_enabled())),
            ("token", Value::from(token)),
            ("email", Value::from(email)),
            (
                "values",
                to_value(json!({
                    "first_name": form.text("first_name"),
                    "last_name": form.text("last_name"),
                })),
            ),
        ],
    )
}
