//! Passkeys (WebAuthn) in the account API: registering, listing, renaming and removing
//! them, the second factor of a password sign-in, and passwordless sign-in.
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

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use webauthn_rs::prelude::{Credential, PublicKeyCredential, RegisterPublicKeyCredential};

use super::account::check_display_text;
use super::input::body_object;
use super::login::signed_in;
use super::two_factor::verified_caller;
use super::{ApiRequest, Fields};
use crate::accounts::{AccountError, PasskeyAnswer, PasskeySignIn, credential_key};
use crate::app::App;
use crate::mail::MailKind;
use crate::passkeys::{Ceremony, CeremonyId};
use crate::reply::Reply;
use crate::store::{MAX_PASSKEY_NAME_CHARS, StoredPasskey};
use crate::telemetry::SECURITY;

/// The `{ceremony_id, options}` answer of an `…/options` call.
fn options_answer(message: &str, id: &CeremonyId, options: Value) -> Reply {
    Reply::ok(
        StatusCode::OK,
        message,
        Some(json!({"ceremony_id": id.as_str(), "options": options})),
    )
}

/// A passkey as the API shows it.
fn passkey_json(p: &StoredPasskey) -> Value {
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
fn parse_name(f: &mut Fields, name: Option<String>) -> Option<String> {
    let name = name?;
    check_display_text(f, "name", &name, MAX_PASSKEY_NAME_CHARS).then_some(name)
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
                f.reject("ceremony_id", "is not a ceremony id");
                None
            }
        });
    let credential = match body.get("credential") {
        None | Some(Value::Null) => {
            f.reject("credential", "is required");
            None
        }
        Some(value) => match serde_json::from_value::<T>(value.clone()) {
            Ok(c) => Some(c),
            Err(_) => {
                f.reject(
                    "credential",
                    "is not a WebAuthn PublicKeyCredential in its JSON form",
                );
                None
            }
        },
    };
    Some((id?, credential?))
}

const PASSKEY_NEEDS_VERIFIED_EMAIL: &str = "Verify your email address before adding a passkey";

/// `POST /api/auth/passkeys/register/options` — step-up (password, and a code when TOTP
/// is on), then the options for `navigator.credentials.create()`.
pub async fn register_options(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let rp = app.accounts.relying_party()?;
    let caller = verified_caller(app, request, PASSKEY_NEEDS_VERIFIED_EMAIL).await?;
    if let Err(e) = super::profile::step_up(app, request, &caller.user, "password", true).await {
        tracing::warn!(target: SECURITY, event = "passkey_registration_refused", reason = "step_up", user_id = %caller.user.id);
        app.passkeys.count("refused", "step_up");
        return Err(e);
    }
    let existing = app.store.list_passkeys(caller.user.id).await?;
    let exclude: Vec<Vec<u8>> = existing
        .iter()
        .filter_map(|p| URL_SAFE_NO_PAD.decode(&p.credential_id).ok())
        .collect();
    let display_name = format!("{} {}", caller.user.first_name, caller.user.last_name);
    let (options, state) = rp
        .start_passkey_registration(
            caller.user.id.as_uuid(),
            caller.user.email.as_str(),
            display_name.trim(),
            Some(exclude),
        )
        .map_err(|e| Reply::internal("starting a passkey registration", &e))?;
    let ceremony = Ceremony::Registration {
        user_id: caller.user.id,
        session_id: caller.session.id.to_string(),
        state,
    };
    let id = app.passkeys.begin(&*app.sessions, &ceremony).await?;
    let mut options = serde_json::to_value(&options).unwrap_or(Value::Null);
    // Discoverable ("resident") credentials, so the key can also sign in without a
    // password (WebAuthn §5.4.4 `residentKey`).
    options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("required");
    options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(true);
    Ok(options_answer(
        "Create the passkey with navigator.credentials.create(), then send it back",
        &id,
        options,
    ))
}

/// `POST /api/auth/passkeys/register` — `{ceremony_id, name, credential}`: stores the new
/// passkey (201) and mails the owner.
pub async fn register(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let rp = app.accounts.relying_party()?;
    let caller = verified_caller(app, request, PASSKEY_NEEDS_VERIFIED_EMAIL).await?;
    let mut f = Fields::from_request(request)?;
    let body = body_object(request);
    let name = f.required("name");
    let name = parse_name(&mut f, name);
    let answer = ceremony_answer::<RegisterPublicKeyCredential>(&mut f, &body);
    let (name, (id, credential)) = f.finish_with(name.zip(answer))?;
    let state = match app.passkeys.finish(&*app.sessions, &id).await? {
        Some(Ceremony::Registration {
            user_id,
            session_id,
            state,
        }) if user_id == caller.user.id && session_id == caller.session.id.to_string() => state,
        _ => return Err(AccountError::CeremonyInvalid.into()),
    };
    let passkey = rp
        .finish_passkey_registration(&credential, &state)
        .map_err(|e| {
            tracing::warn!(target: SECURITY, event = "passkey_registration_refused", reason = %e, user_id = %caller.user.id);
            app.passkeys.count("refused", "registration_invalid");
            Reply::error(
                StatusCode::BAD_REQUEST,
                "passkey_invalid",
                "The authenticator's answer could not be verified",
            )
        })?;
    let record =
        serde_json::to_string(&passkey).map_err(|e| Reply::internal("writing a passkey", &e))?;
    let cred = Credential::from(passkey);
    let stored = StoredPasskey {
        id: Uuid::new_v4(),
        user_id: caller.user.id,
        credential_id: credential_key(&cred.cred_id),
        name,
        credential: record,
        sign_count: cred.counter,
        backup_eligible: cred.backup_eligible,
        backup_state: cred.backup_state,
        created_at: crate::store::now(),
        last_used_at: None,
    };
    if !app.store.add_passkey(&stored).await? {
        return Err(Reply::error(
            StatusCode::CONFLICT,
            "passkey_already_registered",
            "This passkey is already registered",
        ));
    }
    app.passkeys.count("registered", "ok");
    tracing::info!(target: SECURITY, event = "passkey_registered", user_id = %caller.user.id, passkey_id = %stored.id, backup_eligible = stored.backup_eligible);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, &caller.user),
        caller.user.email.as_str(),
        &caller.user.first_name,
        MailKind::PasskeyAdded {
            name: stored.name.clone(),
        },
    );
    Ok(Reply::ok(
        StatusCode::CREATED,
        "Passkey added",
        Some(json!({"passkey": passkey_json(&stored)})),
    ))
}

/// `GET /api/auth/passkeys` — the caller's passkeys, oldest first.
pub async fn list(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let keys = app.store.list_passkeys(caller.user.id).await?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Passkeys retrieved",
        Some(json!({
            "passkeys": keys.iter().map(passkey_json).collect::<Vec<_>>(),
            "enabled": app.passkeys.relying_party().is_some(),
        })),
    ))
}

fn passkey_not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "passkey_not_found",
        "No such passkey",
    )
}

/// `PATCH /api/auth/passkeys/{id}` — `{name}`.
pub async fn rename(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let mut f = Fields::from_request(request)?;
    let name = f.required("name");
    let name = parse_name(&mut f, name);
    let name = f.finish_with(name)?;
    let id = Uuid::parse_str(id).map_err(|_| passkey_not_found())?;
    if !app.store.rename_passkey(caller.user.id, id, &name).await? {
        return Err(passkey_not_found());
    }
    let keys = app.store.list_passkeys(caller.user.id).await?;
    let key = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(passkey_not_found)?;
    Ok(Reply::ok(
        StatusCode::OK,
        "Passkey renamed",
        Some(json!({"passkey": passkey_json(key)})),
    ))
}

/// `DELETE /api/auth/passkeys/{id}` — `{password, two_factor_code?}` (the step-up).
pub async fn remove(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    if let Err(e) = super::profile::step_up(app, request, &caller.user, "password", true).await {
        tracing::warn!(target: SECURITY, event = "passkey_removal_refused", user_id = %caller.user.id);
        app.passkeys.count("refused", "step_up");
        return Err(e);
    }
    let id = Uuid::parse_str(id).map_err(|_| passkey_not_found())?;
    let keys = app.store.list_passkeys(caller.user.id).await?;
    let key = keys
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(passkey_not_found)?;
    if !app.store.remove_passkey(caller.user.id, id).await? {
        return Err(passkey_not_found());
    }
    app.passkeys.count("removed", "ok");
    tracing::info!(target: SECURITY, event = "passkey_removed", user_id = %caller.user.id, passkey_id = %id);
    app.mailer.send_in_background_in(
        super::mail_language(app, request, &caller.user),
        caller.user.email.as_str(),
        &caller.user.first_name,
        MailKind::PasskeyRemoved { name: key.name },
    );
    Ok(Reply::ok(StatusCode::OK, "Passkey removed", None))
}

/// `POST /api/auth/passkeys/login/options` — the options for a passwordless sign-in
/// (`navigator.credentials.get()`, with `mediation: "conditional"` for autofill).
pub async fn login_options(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    app.accounts.relying_party()?;
    Fields::from_request(request)?.finish()?;
    let challenge = app.accounts.passwordless_challenge().await?;
    Ok(options_answer(
        "Sign in with navigator.credentials.get(), then send the answer back",
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
        };
        let mut f = Fields::from_request(&request).unwrap();
        assert_eq!(
            parse_name(&mut f, Some("Laptop".into())).as_deref(),
            Some("Laptop")
        );
        assert!(parse_name(&mut f, Some("x".repeat(65))).is_none());
        assert!(parse_name(&mut f, Some("a\u{7}b".into())).is_none());
        assert_eq!(
            parse_name(&mut f, Some("Ключ é 🔑".into())).as_deref(),
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
