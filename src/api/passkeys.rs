//! Passkeys (WebAuthn) in the account API: registering, listing, renaming and removing
//! them, the second factor of a password sign-in, and passwordless sign-in — each over
//! the account core (`accounts/passkey.rs`, where the rules below are enforced); these
//! handlers read the JSON and write the WebAuthn shapes back.
//!
//! Ceremonies come in two calls: `…/options` answers `{ceremony_id, options}`, where
//! `options` is what `navigator.credentials.create()` / `.get()` take (the WebAuthn JSON
//! shapes: `{"publicKey": …}`); the second call sends back `ceremony_id` and the
//! browser's `PublicKeyCredential` as JSON (`credential`, base64url fields, as
//! `PublicKeyCredential.toJSON()` gives). A ceremony can be finished once, within
//! [`CEREMONY_TTL`](crate::passkeys::CEREMONY_TTL), on any instance.
//!
//! Rules:
//! - Adding a passkey needs a verified email and the step-up (password, and a current code
//!   when TOTP is on), as every security change does; so does removing one. Renaming does not.
//! - A user with a passkey has two-step sign-in: after the password, a passkey (or a TOTP
//!   or recovery code when TOTP is on) is required. The session's `amr` is `pwd`, `hwk`.
//! - Passwordless sign-in needs a discoverable passkey and user verification on the
//!   authenticator (PIN or biometrics); only then it counts as two factors (`amr` `hwk`,
//!   `mfa`) and passes `two_factor` routes.
//! - Signature counters are checked: a use whose counter does not move past the stored
//!   one (WebAuthn §6.1.1; a cloned authenticator) is refused and security-logged.
//! - A failed assertion for a known account counts against its lockout like a wrong code.

use http::StatusCode;
use serde_json::{Value, json};
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::input::body_object;
use super::login::signed_in;
use super::two_factor::Proof;
use super::{ApiRequest, Fields};
use crate::access::credentials::Caller;
use crate::accounts::{
    AccountError, NewPasskey, PasskeyAnswer, PasskeyName, PasskeySignIn, verified_for_passkeys,
};
use crate::app::App;
use crate::domain::PasskeyId;
use crate::passkeys::CeremonyId;
use crate::reply::Reply;
use crate::store::StoredPasskey;

/// The `{ceremony_id, options}` answer of an `…/options` call.
fn options_answer(message: &str, id: &CeremonyId, options: Value) -> Reply {
    Reply::ok(
        StatusCode::OK,
        message,
        Some(json!({"ceremony_id": id.as_str(), "options": options})),
    )
}

/// A passkey as the API shows it.
pub(super) fn passkey_json(p: &StoredPasskey) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "created_at": p.created_at,
        "last_used_at": p.last_used_at,
        "backup_eligible": p.backup_eligible,
        "backed_up": p.backup_state,
    })
}

/// Reads a passkey name: trimmed, 1 to 64 characters, no control characters and no
/// invisible or direction-changing format characters (which would let a name pose as
/// another on the account page, Unicode TR #36 §2.2).
/// The rule is the core's ([`PasskeyName::parse`]); its field errors join the body's.
fn parse_name(f: &mut Fields, name: Option<String>) -> Option<PasskeyName> {
    match PasskeyName::parse(&name?) {
        Ok(name) => Some(name),
        Err(AccountError::Invalid(errors)) => {
            for error in errors {
                f.reject(&error.field, error.message);
            }
            None
        }
        Err(_) => {
            f.reject_that("name", "cannot name a passkey");
            None
        }
    }
}

/// `ceremony_id` and `credential` of a ceremony's second call, parsed; field errors
/// otherwise.
fn ceremony_answer<T: serde::de::DeserializeOwned>(
    f: &mut Fields,
    body: &serde_json::Map<String, Value>,
) -> Option<(CeremonyId, T)> {
    let id = f
        .required("ceremony_id")
        .and_then(|id| match id.parse::<CeremonyId>() {
            Ok(id) => Some(id),
            Err(_) => {
                let wrong = "must be the id a ceremony was started with";
                f.reject_that("ceremony_id", wrong);
                None
            }
        });
    let credential = match body.get("credential") {
        None | Some(Value::Null) => {
            f.reject_that("credential", "is required");
            None
        }
        Some(value) => match serde_json::from_value::<T>(value.clone()) {
            Ok(c) => Some(c),
            Err(_) => {
                let wrong = "must be a WebAuthn PublicKeyCredential in its JSON form";
                f.reject_that("credential", wrong);
                None
            }
        },
    };
    Some((id?, credential?))
}

/// A signed-in caller whose address is proven, or the refusal (401, 403 `email_not_verified`).
async fn verified_caller(app: &App, request: &ApiRequest) -> Result<Caller, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    verified_for_passkeys(&caller.user)?;
    Ok(caller)
}

/// A new passkey's fields: `name`, `ceremony_id` and `credential`.
fn read_new_passkey(f: &mut Fields, body: &serde_json::Map<String, Value>) -> Option<NewPasskey> {
    let name = f.required("name");
    let name = parse_name(f, name);
    let answer = ceremony_answer::<RegisterPublicKeyCredential>(f, body);
    name.zip(answer)
        .map(|(name, (ceremony, credential))| NewPasskey {
            ceremony,
            credential,
            name,
        })
}

/// A new passkey as a form sends it (the credential as JSON text), read as the API reads
/// its body; `Invalid` naming each field at fault. The portal's form reads it here.
pub(crate) fn new_passkey(
    ceremony_id: &str,
    name: &str,
    credential: &str,
) -> Result<NewPasskey, AccountError> {
    let credential = serde_json::from_str(credential).unwrap_or(Value::Null);
    let body = json_object(&[
        ("ceremony_id", Value::from(ceremony_id)),
        ("name", Value::from(name)),
        ("credential", credential),
    ]);
    let mut f = Fields::of_object(body.clone());
    let input = read_new_passkey(&mut f, &body);
    f.into_values(input).map_err(AccountError::Invalid)
}

/// An object of `fields`.
fn json_object(fields: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect()
}

/// `POST /api/auth/passkeys/register/options` — step-up (password, and a code when TOTP
/// is on), then the options for `navigator.credentials.create()`.
pub async fn register_options(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    app.accounts.relying_party()?;
    let caller = verified_caller(app, request).await?;
    let proof = Proof::read(request, &caller.user)?;
    let client = super::client(app, request);
    let (user, session) = (&caller.user, &caller.session.id);
    let challenge = app
        .accounts
        .begin_passkey_registration(user, session, proof.step_up(), &client)
        .await?;
    Ok(options_answer(
        "Create the passkey with navigator.credentials.create(), then send it back.",
        &challenge.ceremony,
        serde_json::to_value(&challenge.options).unwrap_or(Value::Null),
    ))
}

/// `POST /api/auth/passkeys/register` — `{ceremony_id, name, credential}`: stores the new
/// passkey (201) and mails the owner.
pub async fn register(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    app.accounts.relying_party()?;
    let caller = verified_caller(app, request).await?;
    let mut f = Fields::from_request(request)?;
    let input = read_new_passkey(&mut f, &body_object(request));
    let input = f.finish_with(input)?;
    let client = super::client(app, request);
    let stored = app
        .accounts
        .add_passkey(&caller.user, &caller.session.id, input, &client)
        .await?;
    Ok(Reply::ok(
        StatusCode::CREATED,
        "The passkey was added.",
        Some(json!({"passkey": passkey_json(&stored)})),
    ))
}

/// `GET /api/auth/passkeys` — the caller's passkeys, oldest first.
pub async fn list(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let keys = app.accounts.passkeys_of(&caller.user).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The passkeys were retrieved.",
        Some(json!({
            "passkeys": keys.iter().map(passkey_json).collect::<Vec<_>>(),
            "enabled": app.accounts.passkeys_enabled(),
        })),
    ))
}

/// `PATCH /api/auth/passkeys/{id}` — `{name}`.
pub async fn rename(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let name = f.required("name");
    let name = parse_name(&mut f, name);
    let name = f.finish_with(name)?;
    let id = id
        .parse::<PasskeyId>()
        .map_err(|_| AccountError::PasskeyNotFound)?;
    let key = app.accounts.rename_passkey(&caller.user, id, &name).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The passkey was renamed.",
        Some(json!({"passkey": passkey_json(&key)})),
    ))
}

/// `DELETE /api/auth/passkeys/{id}` — `{password, two_factor_code?}` (the step-up).
pub async fn remove(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let proof = Proof::read(request, &caller.user)?;
    // An id that is no passkey id is answered like an unknown one, after the step-up.
    let id = id.parse::<PasskeyId>().ok();
    let client = super::client(app, request);
    app.accounts
        .remove_passkey(&caller.user, id, proof.step_up(), &client)
        .await?;
    Ok(Reply::ok(StatusCode::OK, "The passkey was removed.", None))
}

/// `POST /api/auth/passkeys/login/options` — the options for a passwordless sign-in
/// (`navigator.credentials.get()`, with `mediation: "conditional"` for autofill).
pub async fn login_options(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    app.accounts.relying_party()?;
    Fields::from_request(request)?.finish()?;
    let challenge = app.accounts.passwordless_challenge().await?;
    Ok(options_answer(
        "Sign in with navigator.credentials.get(), then send the answer back.",
        &challenge.ceremony,
        serde_json::to_value(&challenge.options).unwrap_or(Value::Null),
    ))
}

/// `POST /api/auth/passkeys/login` — `{ceremony_id, credential, remember_me?}`: a
/// passwordless sign-in; answers like `POST /api/auth/login`.
pub async fn login(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    app.accounts.relying_party()?;
    let mut f = Fields::from_request(request)?;
    let body = body_object(request);
    let remember_me = f.flag("remember_me");
    let answer = ceremony_answer::<PublicKeyCredential>(&mut f, &body);
    let (ceremony, credential) = f.finish_with(answer)?;
    let input = PasskeySignIn {
        answer: PasskeyAnswer {
            ceremony,
            credential,
        },
        remember_me,
    };
    let signed = app
        .accounts
        .sign_in_with_passkey(input, &super::client(app, request))
        .await?;
    Ok(signed_in(app, signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        let request = ApiRequest {
            method: http::Method::POST,
            path: "/".into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            client_ip: "127.0.0.1".parse().unwrap(),
            user_agent: String::new(),
            original: None,
        };
        let mut f = Fields::from_request(&request).unwrap();
        assert_eq!(
            parse_name(&mut f, Some("Laptop".into()))
                .as_ref()
                .map(PasskeyName::as_str),
            Some("Laptop")
        );
        assert!(parse_name(&mut f, Some("x".repeat(65))).is_none());
        assert!(parse_name(&mut f, Some("a\u{7}b".into())).is_none());
        assert_eq!(
            parse_name(&mut f, Some("Ключ é 🔑".into()))
                .as_ref()
                .map(PasskeyName::as_str),
            Some("Ключ é 🔑")
        );
        let errors = f.finish().unwrap_err();
        assert_eq!(errors.body_json()["errors"].as_array().unwrap().len(), 2);
        // Names that would pose as others: direction overrides, isolates, zero-width marks.
        for name in [
            "\u{202E}evil",
            "a\u{200B}b",
            "\u{2066}x\u{2069}",
            "\u{FEFF}k",
            "soft\u{AD}y",
        ] {
            let mut f = Fields::from_request(&request).unwrap();
            assert!(parse_name(&mut f, Some(name.into())).is_none(), "{name:?}");
        }
    }
}
