//! The passkey forms: passwordless sign-in, the passkey as the second sign-in step, and
//! adding, renaming and removing passkeys on the account page. The browser's part (calling
//! `navigator.credentials`) is `config/portal/passkeys.js`; each form it fills is checked
//! here like any other and answered by the account API in-process.

use http::{Method, StatusCode};
use minijinja::Value;
use serde_json::json;

use webauthn_rs::prelude::PublicKeyCredential;

use super::{Feedback, Form, Page, Visit, account_outcome, render_login, to_value};
use crate::accounts::{PasskeyAnswer, PasskeySignIn, SecondFactor, Tokens};
use crate::passkeys::CeremonyId;
use crate::reply::Reply;
use crate::store::User;

/// The `PublicKeyCredential` JSON a form carries in `field`, parsed; `Null` when it is not
/// JSON (the API then names the field).
fn credential(form: &Form, field: &str) -> serde_json::Value {
    serde_json::from_str(form.text(field)).unwrap_or(serde_json::Value::Null)
}

/// A `PublicKeyCredential` JSON a form carries in `field`, read for the account core.
fn signed_credential(form: &Form, field: &str) -> Option<PublicKeyCredential> {
    serde_json::from_str(form.text(field)).ok()
}

/// The passkey answer of the second sign-in step, when the form carries one (one that
/// cannot be read counts as a wrong factor).
pub(super) fn second_factor_answer(form: &Form) -> Option<SecondFactor> {
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
fn passkey_id(form: &Form) -> Option<String> {
    uuid::Uuid::parse_str(form.text("passkey_id").trim())
        .ok()
        .map(|id| id.to_string())
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
        feedback.errors.insert(
            "passkey_name".into(),
            vec![v.lang.message("is required").to_owned()],
        );
        return super::account_page(v, token, StatusCode::BAD_REQUEST, feedback).await;
    }
    let mut body = json!({"password": form.text("password")});
    if let Some(code) = form.get("two_factor_code") {
        body["two_factor_code"] = json!(code);
    }
    let r = v
        .api(
            Method::POST,
            "/api/auth/passkeys/register/options",
            Some(token),
            Some(body),
        )
        .await;
    if r.status != StatusCode::OK {
        return account_outcome(v, token, r, "", |f| match f {
            "password" => "passkey_password".into(),
            "two_factor_code" => "passkey_two_factor_code".into(),
            other => other.to_owned(),
        })
        .await;
    }
    let data = &r.body_json()["data"];
    let (ceremony_id, options) = (
        data["ceremony_id"].as_str().unwrap_or("").to_owned(),
        data["options"].clone(),
    );
    v.render(
        "passkey_add.html",
        StatusCode::OK,
        "passkey_add_title",
        Feedback::default(),
        vec![
            ("ceremony_id", Value::from(ceremony_id)),
            ("options", Value::from(options.to_string())),
            ("name", Value::from(name)),
        ],
    )
}

/// `POST /account/passkeys/register`: Stores the passkey the browser created.
async fn register(v: &mut Visit<'_>, token: &str, form: Form) -> Page {
    let body = json!({
        "ceremony_id": form.text("ceremony_id"),
        "name": form.text("name"),
        "credential": credential(&form, "credential"),
    });
    let r = v
        .api(
            Method::POST,
            "/api/auth/passkeys/register",
            Some(token),
            Some(body),
        )
        .await;
    let r = if r.status == StatusCode::CREATED {
        crate::reply::Reply::ok(StatusCode::OK, "", None)
    } else {
        r
    };
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
    let r = v
        .api(
            Method::PATCH,
            &format!("/api/auth/passkeys/{id}"),
            Some(token),
            Some(json!({"name": form.text("name")})),
        )
        .await;
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
    let mut body = json!({"password": form.text("password")});
    if let Some(code) = form.get("two_factor_code") {
        body["two_factor_code"] = json!(code);
    }
    let r = v
        .api(
            Method::DELETE,
            &format!("/api/auth/passkeys/{id}"),
            Some(token),
            Some(body),
        )
        .await;
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
