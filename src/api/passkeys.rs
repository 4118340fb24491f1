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
use chrono::Utc;
use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, Credential, Passkey, PublicKeyCredential, RegisterPublicKeyCredential,
    WebauthnError,
};

use super::account::check_display_text;
use super::lockout;
use super::two_factor::{LoginCodeError, check_login_code, verified_caller};
use super::{ApiRequest, Fields};
use crate::app::App;
use crate::domain::UserId;
use crate::mail::MailKind;
use crate::passkeys::{Ceremony, CeremonyId};
use crate::reply::Reply;
use crate::session::PasskeyUse;
use crate::store::{MAX_PASSKEY_NAME_CHARS, PasskeyUse as RecordedUse, StoredPasskey, User};
use crate::telemetry::SECURITY;

/// 404 `passkeys_disabled`: the public URL cannot be a WebAuthn relying party.
fn disabled() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "passkeys_disabled",
        "Passkeys are not available on this server",
    )
}

/// 400 `ceremony_invalid`: no such ceremony (expired, already finished, or never begun).
fn ceremony_invalid() -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        "ceremony_invalid",
        "The passkey ceremony has expired or was already used; start again",
    )
}

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

/// The JSON object body of a request (empty object for an empty body).
fn body_object(request: &ApiRequest) -> serde_json::Map<String, Value> {
    serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default()
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

/// base64url (unpadded) of a credential id, as stored.
fn credential_key(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

const PASSKEY_NEEDS_VERIFIED_EMAIL: &str = "Verify your email address before adding a passkey";

/// `POST /api/auth/passkeys/register/options` — step-up (password, and a code when TOTP
/// is on), then the options for `navigator.credentials.create()`.
pub async fn register_options(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let rp = app.passkeys.relying_party().ok_or_else(disabled)?;
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
        user_id: caller.user.id.as_uuid(),
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
    let rp = app.passkeys.relying_party().ok_or_else(disabled)?;
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
        }) if user_id == caller.user.id.as_uuid()
            && session_id == caller.session.id.to_string() =>
        {
            state
        }
        _ => return Err(ceremony_invalid()),
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

/// Whether the user can use a passkey now: passkeys on and at least one registered.
async fn has_usable_passkeys(app: &App, user: &User) -> Result<Vec<StoredPasskey>, Reply> {
    if app.passkeys.relying_party().is_none() {
        return Ok(Vec::new());
    }
    app.store.list_passkeys(user.id).await.map_err(Into::into)
}

/// The second factor of a password sign-in: a `passkey` answer `{ceremony_id,
/// credential}` in the body, or the TOTP / recovery code. A user with a passkey needs a
/// second factor even without TOTP. Returns whether one was passed and whether it was a
/// passkey.
pub(super) async fn check_second_factor(
    app: &App,
    request: &ApiRequest,
    user: &User,
    code: Option<&str>,
) -> Result<(bool, PasskeyUse), LoginCodeError> {
    let body = body_object(request);
    if let Some(answer) = body.get("passkey").filter(|v| !v.is_null()) {
        return second_factor_passkey(app, request, user, answer)
            .await
            .map(|()| (true, PasskeyUse::SecondFactor));
    }
    let passed = check_login_code(app, user, code).await?;
    if !passed
        && !has_usable_passkeys(app, user)
            .await
            .map_err(LoginCodeError::Backend)?
            .is_empty()
    {
        return Err(LoginCodeError::Required);
    }
    Ok((passed, PasskeyUse::None))
}

/// 401 `two_factor_required`, with `data.methods` (`totp`, `passkey`) and, when the user
/// has passkeys, `data.passkey` `{ceremony_id, options}` for `navigator.credentials.get()`.
pub(super) async fn two_factor_required(app: &App, user: &User) -> Reply {
    let mut response = Reply::error(
        StatusCode::UNAUTHORIZED,
        "two_factor_required",
        "A second factor is required: a two-factor code or a passkey",
    );
    let mut methods = Vec::new();
    if user.two_factor_enabled {
        methods.push("totp");
    }
    let keys = match has_usable_passkeys(app, user).await {
        Ok(keys) => keys,
        Err(refusal) => return refusal,
    };
    let mut data = json!({});
    if let Some(rp) = app.passkeys.relying_party()
        && !keys.is_empty()
    {
        let passkeys: Vec<Passkey> = keys
            .iter()
            .filter_map(|k| serde_json::from_str(&k.credential).ok())
            .collect();
        match rp.start_passkey_authentication(&passkeys) {
            Ok((options, state)) => {
                let ceremony = Ceremony::SecondFactor {
                    user_id: user.id.as_uuid(),
                    state,
                };
                match app.passkeys.begin(&*app.sessions, &ceremony).await {
                    Ok(id) => {
                        methods.push("passkey");
                        data["passkey"] = json!({
                            "ceremony_id": id.as_str(),
                            "options": serde_json::to_value(&options).unwrap_or(Value::Null),
                        });
                    }
                    Err(e) => return e.into(),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, user_id = %user.id, "could not start a passkey sign-in")
            }
        }
    }
    data["methods"] = json!(methods);
    if let crate::reply::Body::Json(body) = &mut response.body {
        body["data"] = data;
    }
    response
}

/// Checks a passkey answer as the second factor of `user`'s sign-in.
async fn second_factor_passkey(
    app: &App,
    request: &ApiRequest,
    user: &User,
    answer: &Value,
) -> Result<(), LoginCodeError> {
    let Some(rp) = app.passkeys.relying_party() else {
        return Err(LoginCodeError::Wrong);
    };
    let empty = serde_json::Map::new();
    let answer = answer.as_object().unwrap_or(&empty);
    let id = answer
        .get("ceremony_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<CeremonyId>().ok());
    let credential = answer
        .get("credential")
        .and_then(|c| serde_json::from_value::<PublicKeyCredential>(c.clone()).ok());
    let (Some(id), Some(credential)) = (id, credential) else {
        refused(app, request, Some(user.id), "answer_malformed");
        return Err(LoginCodeError::Wrong);
    };
    let state = match app.passkeys.finish(&*app.sessions, &id).await {
        Ok(Some(Ceremony::SecondFactor { user_id, state })) if user_id == user.id.as_uuid() => {
            state
        }
        Ok(_) => {
            refused(app, request, Some(user.id), "ceremony_invalid");
            return Err(LoginCodeError::Wrong);
        }
        Err(e) => return Err(LoginCodeError::Backend(e.into())),
    };
    let result = match rp.finish_passkey_authentication(&credential, &state) {
        Ok(r) => r,
        Err(e) => {
            refused_by_library(app, request, user.id, &e);
            return Err(LoginCodeError::Wrong);
        }
    };
    let stored = match app
        .store
        .find_passkey(&credential_key(result.cred_id()))
        .await
    {
        Ok(Some(stored)) if stored.user_id == user.id => stored,
        Ok(_) => {
            refused(app, request, Some(user.id), "unknown_credential");
            return Err(LoginCodeError::Wrong);
        }
        Err(e) => return Err(LoginCodeError::Backend(e.into())),
    };
    accept_use(app, request, &stored, &result)
        .await
        .map_err(|refusal| match refusal {
            Some(response) => LoginCodeError::Backend(response),
            None => LoginCodeError::Wrong,
        })
}

/// Logs and counts a refused passkey use.
fn refused(app: &App, request: &ApiRequest, user: Option<UserId>, reason: &'static str) {
    app.passkeys.count("refused", reason);
    match user {
        Some(user_id) => {
            tracing::warn!(target: SECURITY, event = "passkey_refused", reason, user_id = %user_id, client_ip = %request.client_ip);
        }
        None => {
            tracing::warn!(target: SECURITY, event = "passkey_refused", reason, client_ip = %request.client_ip);
        }
    }
}

/// Logs a use the library refused; a counter that did not move forward is a possible
/// clone and gets its own event.
fn refused_by_library(app: &App, request: &ApiRequest, user: UserId, error: &WebauthnError) {
    match error {
        WebauthnError::CredentialPossibleCompromise => {
            refused(app, request, Some(user), "counter_regression");
            tracing::warn!(target: SECURITY, event = "passkey_clone_suspected", user_id = %user, client_ip = %request.client_ip);
        }
        WebauthnError::CredentialBackupEligibilityInconsistent => {
            refused(app, request, Some(user), "backup_eligibility_changed");
        }
        _ => refused(app, request, Some(user), "assertion_invalid"),
    }
}

/// Checks the counter of an accepted assertion against the stored one (read now, not
/// when the ceremony began) and records the use over it. `Err(None)` refuses the use;
/// `Err(Some(_))` is a backend failure to answer with.
async fn accept_use(
    app: &App,
    request: &ApiRequest,
    stored: &StoredPasskey,
    result: &AuthenticationResult,
) -> Result<(), Option<Reply>> {
    let counter = result.counter();
    // WebAuthn §6.1.1: with either counter non-zero, the new one must be greater.
    if (counter > 0 || stored.sign_count > 0) && counter <= stored.sign_count {
        refused(app, request, Some(stored.user_id), "counter_regression");
        tracing::warn!(
            target: SECURITY,
            event = "passkey_clone_suspected",
            user_id = %stored.user_id,
            passkey_id = %stored.id,
            stored_count = stored.sign_count,
            presented_count = counter,
            client_ip = %request.client_ip,
        );
        return Err(None);
    }
    if stored.backup_eligible && !result.backup_eligible() {
        // The BE flag of a credential never changes (WebAuthn §6.1.3).
        refused(
            app,
            request,
            Some(stored.user_id),
            "backup_eligibility_changed",
        );
        return Err(None);
    }
    let mut passkey: Passkey = serde_json::from_str(&stored.credential)
        .map_err(|e| Some(Reply::internal("reading a stored passkey", &e)))?;
    passkey.update_credential(result);
    let record = serde_json::to_string(&passkey)
        .map_err(|e| Some(Reply::internal("writing a passkey", &e)))?;
    let recorded = app
        .store
        .record_passkey_use(&RecordedUse {
            id: stored.id,
            previous_sign_count: stored.sign_count,
            sign_count: counter.max(stored.sign_count),
            backup_state: result.backup_state(),
            credential: record,
        })
        .await
        .map_err(|e| Some(e.into()))?;
    if !recorded {
        // Another use of the same count got there first: one of them is a clone.
        refused(app, request, Some(stored.user_id), "counter_regression");
        tracing::warn!(target: SECURITY, event = "passkey_clone_suspected", user_id = %stored.user_id, passkey_id = %stored.id, client_ip = %request.client_ip);
        return Err(None);
    }
    app.passkeys.count("used", "ok");
    tracing::info!(target: SECURITY, event = "passkey_used", user_id = %stored.user_id, passkey_id = %stored.id, client_ip = %request.client_ip);
    Ok(())
}

/// `POST /api/auth/passkeys/login/options` — the options for a passwordless sign-in
/// (`navigator.credentials.get()`, with `mediation: "conditional"` for autofill).
pub async fn login_options(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let rp = app.passkeys.relying_party().ok_or_else(disabled)?;
    Fields::from_request(request)?.finish()?;
    let (options, state) = rp
        .start_discoverable_authentication()
        .map_err(|e| Reply::internal("starting a passkey sign-in", &e))?;
    let id = app
        .passkeys
        .begin(&*app.sessions, &Ceremony::Passwordless { state })
        .await?;
    Ok(options_answer(
        "Sign in with navigator.credentials.get(), then send the answer back",
        &id,
        serde_json::to_value(&options).unwrap_or(Value::Null),
    ))
}

/// `POST /api/auth/passkeys/login` — `{ceremony_id, credential, remember_me?}`: a
/// passwordless sign-in; answers like `POST /api/auth/login`.
pub async fn login(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let rp = app.passkeys.relying_party().ok_or_else(disabled)?;
    let mut f = Fields::from_request(request)?;
    let body = body_object(request);
    let remember_me = f.flag("remember_me");
    let answer = ceremony_answer::<PublicKeyCredential>(&mut f, &body);
    let (id, credential) = f.finish_with(answer)?;
    let Some(Ceremony::Passwordless { state }) = app.passkeys.finish(&*app.sessions, &id).await?
    else {
        refused(app, request, None, "ceremony_invalid");
        return Err(ceremony_invalid());
    };
    let Ok((user_id, _)) = rp.identify_discoverable_authentication(&credential) else {
        refused(app, request, None, "no_user_handle");
        return Err(passkey_refused());
    };
    let user_id = UserId::from_uuid(user_id);
    let stored = app
        .store
        .find_passkey(&credential_key(credential.get_credential_id()))
        .await?
        .filter(|stored| stored.user_id == user_id);
    let user = match stored {
        Some(_) => app.store.find_by_id(user_id).await?,
        None => None,
    };
    let (Some(stored), Some(user)) = (stored, user) else {
        refused(app, request, None, "unknown_credential");
        return Err(passkey_refused());
    };
    if user.is_locked(Utc::now()) {
        app.metrics.logins.with_label_values(&["locked"]).inc();
        tracing::warn!(target: SECURITY, event = "login_refused_locked", user_id = %user.id, client_ip = %request.client_ip);
        return Err(lockout::locked());
    }
    let passkey: Passkey = serde_json::from_str(&stored.credential)
        .map_err(|e| Reply::internal("reading a stored passkey", &e))?;
    let result = match rp.finish_discoverable_authentication_v2(&credential, state, &passkey) {
        Ok(result) if result.user_verified() => result,
        Ok(_) => {
            refused(app, request, Some(user.id), "user_not_verified");
            return Err(count_failure(app, request, &user, "passkey_refused").await);
        }
        Err(e) => {
            refused_by_library(app, request, user.id, &e);
            return Err(count_failure(app, request, &user, "passkey_refused").await);
        }
    };
    match accept_use(app, request, &stored, &result).await {
        Ok(()) => {}
        Err(Some(response)) => return Err(response),
        Err(None) => return Err(count_failure(app, request, &user, "passkey_refused").await),
    }
    if !user.is_active {
        app.metrics.logins.with_label_values(&["deactivated"]).inc();
        tracing::warn!(target: SECURITY, event = "login_refused_deactivated", user_id = %user.id, client_ip = %request.client_ip);
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "account_deactivated",
            "This account has been deactivated",
        ));
    }
    super::login::open_session(
        app,
        request,
        &user,
        true,
        PasskeyUse::Passwordless,
        remember_me,
    )
    .await
}

/// 401 `passkey_refused`: the passkey did not sign the challenge as expected.
fn passkey_refused() -> Reply {
    Reply::error(
        StatusCode::UNAUTHORIZED,
        "passkey_refused",
        "The passkey could not be verified",
    )
}

/// Counts a refused passwordless sign-in against the account's lockout, like a wrong code.
async fn count_failure(
    app: &App,
    request: &ApiRequest,
    user: &User,
    reason: &'static str,
) -> Reply {
    app.metrics.logins.with_label_values(&["failure"]).inc();
    match lockout::claim(app, user, "", request).await {
        Ok(guess) => {
            guess.failed(app, request, reason).await;
            passkey_refused()
        }
        Err(refusal) => refusal,
    }
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
