//! The passkey forms: passwordless sign-in, the passkey as the second sign-in step, and
//! adding, renaming and removing passkeys on the account page. The browser's part (calling
//! `navigator.credentials`) is `config/portal/passkeys.js`; each form it fills is checked
//! here like any other and answered by the account core, after the API's per-IP limits.

use http::StatusCode;
use minijinja::Value;
use serde_json::json;

use webauthn_rs::prelude::PublicKeyCredential;

use super::{Feedback, Form, Page, Visit, account_outcome, render_login, to_value};
use crate::accounts::{
    PasskeyAnswer, PasskeyName, PasskeySignIn, SecondFactor, StepUp, Tokens, verified_for_passkeys,
};
use crate::domain::PasskeyId;
use crate::passkeys::CeremonyId;
use crate::reply::Reply;
use crate::store::User;

/// A `PublicKeyCredential` JSON a form carries in `field`, read for the account core.
fn signed_credential(form: &Form, field: &str) -> Option<PublicKeyCredential> {
    serde_json::from_str(form.text(field)).ok()
}

/// The passkey answer of the second sign-in step, when the form carries one (one that
/// cannot be read counts as a wrong factor).
pub(in crate::portal) fn second_factor_answer(form: &Form) -> Option<SecondFactor> {
    form.get("passkey_credential").filter(|c| !c.is_empty())?;
    let ceremony = form.text("passkey_ceremony").parse::<CeremonyId>().ok();
    let credential = signed_credential(form, "passkey_credential");
    let answer = ceremony.zip(credential).map(|(ceremony, credential)| {
        Box::new(PasskeyAnswer {
            ceremony,
            credential,
        })
    });
    Some(SecondFactor::Passkey(answer))
}

/// `POST /login/passkey`: a passwordless sign-in the script began with the API's options.
pub(super) async fn sign_in(v: &mut Visit<'_>, form: Form) -> Page {
    let return_to = form
        .get("return_to")
        .and_then(|r| v.portal.safe_return_to(r));
    let result = match v.limit_sign_in().await {
        Err(refusal) => Err(refusal),
        Ok(()) => passwordless(v, &form).await,
    };
    let response = match result {
        Ok(tokens) => return super::signed_in(v, &tokens, return_to),
        Err(response) => response,
    };
    let feedback = Feedback {
        form_error: Some(v.t(super::super::error_key(&response))),
        ..Feedback::default()
    };
    let status = if response.status.is_server_error() {
        response.status
    } else {
        StatusCode::BAD_REQUEST
    };
    render_login(v, status, feedback, return_to, "", false)
}

/// The account core's passwordless sign-in with the form's answer; the refusal as the API
/// answers it.
async fn passwordless(v: &mut Visit<'_>, form: &Form) -> Result<Tokens, Reply> {
    let ceremony = form.text("ceremony_id").parse::<CeremonyId>().ok();
    let credential = signed_credential(form, "credential");
    let Some((ceremony, credential)) = ceremony.zip(credential) else {
        return Err(Reply::validation(&[]));
    };
    let input = PasskeySignIn {
        answer: PasskeyAnswer {
            ceremony,
            credential,
        },
        remember_me: false,
    };
    let signed = v
        .app
        .accounts
        .sign_in_with_passkey(input, &v.client())
        .await;
    signed.map(|s| s.tokens).map_err(|e| v.refusal(e))
}

/// The account's passkeys for the account page, dates shortened (none when passkeys are
/// off or the list cannot be read).
pub(super) async fn for_account(v: &mut Visit<'_>, user: &User) -> Value {
    if !v.portal.passkeys_enabled {
        return to_value(json!([]));
    }
    let keys = v
        .app
        .accounts
        .usable_passkeys(user)
        .await
        .unwrap_or_default();
    let list: Vec<serde_json::Value> = keys
        .iter()
        .map(|p| {
            json!({
                "id": p.id.to_string(),
                "name": p.name,
                "created_at": super::short_time(p.created_at),
                "last_used_at": p.last_used_at.map(super::short_time).unwrap_or_default(),
            })
        })
        .collect();
    to_value(list)
}

/// A passkey id from a form: a UUID, or nothing.
fn passkey_id(form: &Form) -> Option<PasskeyId> {
    form.text("passkey_id").trim().parse().ok()
}

/// The step-up a passkey form carries: the password and, when the account has TOTP on,
/// a code.
fn proof(form: &Form) -> StepUp<'_> {
    StepUp {
        password: form.text("password"),
        password_field: "password",
        code: form.get("two_factor_code"),
    }
}

/// The forms under `/account/passkeys/`, one function each.
pub(super) async fn account_action(
    v: &mut Visit<'_>,
    action: &str,
    token: &str,
    form: Form,
) -> Page {
    match action {
        "/account/passkeys/add" => add(v, token, form).await,
        "/account/passkeys/register" => register(v, token, form).await,
        "/account/passkeys/rename" => rename(v, token, form).await,
        "/account/passkeys/remove" => remove(v, token, form).await,
        _ => v.not_found(),
    }
}

/// `POST /account/passkeys/add`: The step-up, then the page that creates the passkey in the browser.
async fn add(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let name = form.text("name").trim().to_owned();
    if name.is_empty() {
        let mut feedback = Feedback::default();
        feedback
            .errors
            .insert("passkey_name".into(), vec![v.field_required("name")]);
        return super::account_page(v, token, StatusCode::BAD_REQUEST, feedback).await;
    }
    let app = v.app;
    let begun = match v.caller(token).await {
        Ok(caller) => {
            let (client, session) = (v.client(), &caller.session.id);
            let accounts = &app.accounts;
            let begun = match PasskeyName::parse(&name) {
                Ok(parsed) => {
                    accounts
                        .passkey_name_is_free(&caller.user, None, &parsed)
                        .await
                }
                Err(invalid) => Err(invalid),
            };
            let begun = match begun {
                Ok(()) => {
                    let proof = proof(&form);
                    let begun =
                        accounts.begin_passkey_registration(&caller.user, session, proof, &client);
                    begun.await
                }
                Err(e) => Err(e),
            };
            begun.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let challenge = match begun {
        Ok(challenge) => challenge,
        Err(r) => {
            return account_outcome(v, token, r, "", |f| match f {
                "name" => "passkey_name".into(),
                "password" => "passkey_password".into(),
                "two_factor_code" => "passkey_two_factor_code".into(),
                other => other.to_owned(),
            })
            .await;
        }
    };
    // The options go into an attribute as JSON text, HTML-escaped like every value.
    let options = serde_json::to_string(&challenge.options).unwrap_or_default();
    v.render(
        "passkey_add.html",
        StatusCode::OK,
        "passkey_add_title",
        Feedback::default(),
        vec![
            ("ceremony_id", Value::from(challenge.ceremony.as_str())),
            ("options", Value::from(options)),
            ("name", Value::from(name)),
        ],
    )
}

/// `POST /account/passkeys/register`: Stores the passkey the browser created.
async fn register(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let app = v.app;
    let added = match v.caller(token).await {
        Ok(caller) => {
            // The checks come in the API's order: passkeys on, a proven address, the form.
            let input = app
                .accounts
                .relying_party()
                .and_then(|_| verified_for_passkeys(&caller.user))
                .and_then(|()| {
                    let (ceremony, name) = (form.text("ceremony_id"), form.text("name"));
                    crate::api::new_passkey(ceremony, name, form.text("credential"))
                });
            let added = match input {
                Ok(input) => {
                    let (client, session) = (v.client(), &caller.session.id);
                    app.accounts
                        .add_passkey(&caller.user, session, input, &client)
                        .await
                }
                Err(e) => Err(e),
            };
            added.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = added.map_or_else(|refusal| refusal, |_| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "passkey_added", |f| match f {
        "name" => "passkey_name".into(),
        other => other.to_owned(),
    })
    .await
}

/// `POST /account/passkeys/rename`: Renames one of the account's passkeys.
async fn rename(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let Some(id) = passkey_id(&form) else {
        return unknown_passkey(v, token).await;
    };
    let app = v.app;
    let renamed = match v.caller(token).await {
        Ok(caller) => {
            let renamed = match PasskeyName::parse(form.text("name")) {
                Ok(name) => app.accounts.rename_passkey(&caller.user, id, &name).await,
                Err(invalid) => Err(invalid),
            };
            renamed.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = renamed.map_or_else(|refusal| refusal, |_| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "passkey_renamed", |f| match f {
        "name" => format!("rename_{id}"),
        other => other.to_owned(),
    })
    .await
}

/// `POST /account/passkeys/remove`: Removes one of the account's passkeys (the step-up first).
async fn remove(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let Some(id) = passkey_id(&form) else {
        return unknown_passkey(v, token).await;
    };
    let app = v.app;
    let removed = match v.caller(token).await {
        Ok(caller) => {
            let client = v.client();
            let removed = app
                .accounts
                .remove_passkey(&caller.user, Some(id), proof(&form), &client)
                .await;
            removed.map_err(|e| v.refusal(e))
        }
        Err(refusal) => Err(refusal),
    };
    let r = removed.map_or_else(|refusal| refusal, |()| Reply::empty(StatusCode::OK));
    account_outcome(v, token, r, "passkey_removed", |f| match f {
        "password" => format!("remove_password_{id}"),
        "two_factor_code" => format!("remove_code_{id}"),
        other => other.to_owned(),
    })
    .await
}

async fn unknown_passkey(v: &mut Visit<'_>, token: &str) -> Page {
    let feedback = Feedback {
        form_error: Some(v.t("error_generic")),
        ..Feedback::default()
    };
    super::account_page(v, token, StatusCode::BAD_REQUEST, feedback).await
}
