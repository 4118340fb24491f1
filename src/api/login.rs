//! Login, refresh and logout: where sessions begin, rotate and end.

use std::time::Duration;

use chrono::Utc;
use http::StatusCode;
use serde_json::{Value, json};

use super::account::user_summary;
use super::lockout::{self, invalid_credentials};
use super::{ApiRequest, Fields, Reply};
use crate::access::credentials::unauthorized;
use crate::app::App;
use crate::auth::Verified;
use crate::auth::jwt::AMR_PASSWORD;
use crate::auth::secrets::{
    format_refresh_token, next_refresh_secret, parse_refresh_token, random_token, sha256_hex,
};
use crate::domain::{Email, email};
use crate::mail::MailKind;
use crate::session::{NewSession, PasskeyUse, RotateOutcome, Session, SessionId};
use crate::store::User;
use crate::telemetry::SECURITY;

/// Concurrent refreshes of one token within this window get the same answer.
pub const REFRESH_GRACE: Duration = Duration::from_secs(5);
/// How long a device (IP + user agent) is remembered for login notifications.
const KNOWN_DEVICE_TTL: Duration = Duration::from_secs(180 * 86_400);

/// The amr claim values of a session.
pub fn amr_of(session: &Session) -> &'static [&'static str] {
    use crate::auth::jwt::{AMR_HARDWARE_KEY, AMR_MULTIPLE_FACTORS, AMR_OTP};
    match session.passkey {
        PasskeyUse::SecondFactor => &[AMR_PASSWORD, AMR_HARDWARE_KEY],
        PasskeyUse::Passwordless => &[AMR_HARDWARE_KEY, AMR_MULTIPLE_FACTORS],
        PasskeyUse::None if session.two_factor => &[AMR_PASSWORD, AMR_OTP],
        PasskeyUse::None => &[AMR_PASSWORD],
    }
}

/// The `Set-Cookie` value carrying an access token to browsers (or clearing it with `""`).
///
/// HttpOnly so scripts cannot read it, SameSite=Lax against cross-site requests, `Secure`
/// and `__Host-` prefixed when the gateway is served over HTTPS, and
/// `sessions.cookie_domain` as its `Domain` when set (then `__Secure-`): `access::cookies`.
pub fn session_cookie(app: &App, access_token: &str) -> String {
    let max_age = if access_token.is_empty() {
        0
    } else {
        app.config.tokens.access_ttl.get().as_secs()
    };
    let rules = app.access.cookies();
    rules.set_cookie(rules.access, access_token, Some(max_age), true)
}

/// The success answer carrying tokens, with the browser cookie set.
fn with_tokens(app: &App, message: &str, mut data: Value, tokens: Value) -> Reply {
    let cookie = session_cookie(app, tokens["access_token"].as_str().unwrap_or(""));
    data["tokens"] = tokens;
    Reply::ok(StatusCode::OK, message, Some(data)).with_header(http::header::SET_COOKIE, cookie)
}

/// Signs an access token for a session and builds `data.tokens`.
fn tokens_for(app: &App, session: &Session, refresh_token: &str) -> Result<Value, Reply> {
    let ttl = app.config.tokens.access_ttl.get();
    let (access, _) = app
        .keys
        .issue_access(
            &session.user_id.to_string(),
            &session.id.to_string(),
            amr_of(session),
            ttl,
        )
        .map_err(|e| Reply::internal("signing an access token", &e))?;
    let refresh_expires_in = (session.expires_at - Utc::now()).num_seconds().max(0);
    Ok(json!({
        "access_token": access,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "refresh_expires_in": refresh_expires_in,
    }))
}

/// `POST /api/auth/login`
pub async fn login(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let email = f.required("email");
    let password = f.required_raw("password");
    let remember_me = f.flag("remember_me");
    let two_factor_code = f.optional("two_factor_code");
    let (email, password) = f.finish_with(email.zip(password))?;

    // Unknown and malformed addresses are counted and answered as real ones are, after
    // the same bcrypt work, so neither status nor timing tells which accounts exist.
    let user = match Email::parse(&email) {
        Ok(email) => match app.store.find_by_email(&email).await {
            Ok(user) => user,
            Err(e) => return Err(e.into()),
        },
        Err(_) => None,
    };
    let Some(user) = user else {
        return Err(lockout::unknown_account(
            app,
            &email::canonical(email.trim()),
            &password,
            request,
        )
        .await);
    };
    // The guess is claimed before bcrypt runs: a burst cannot get more checks than the
    // lockout allows, and a right password meets a lock only one set by wrong ones.
    let guess = match lockout::claim(app, &user, &password, request).await {
        Ok(guess) => guess,
        Err(refusal) => {
            let label = if refusal.status == StatusCode::LOCKED {
                "locked"
            } else {
                "failure"
            };
            app.metrics.logins.with_label_values(&[label]).inc();
            return Err(refusal);
        }
    };
    let verified = match app.hasher.check(&password, &user.password_hash).await {
        Ok(verified) if verified.matches() => verified,
        Ok(_) => {
            app.metrics.logins.with_label_values(&["failure"]).inc();
            guess.failed(app, request, "wrong_password").await;
            return Err(invalid_credentials());
        }
        Err(e) => return Err(guess.unchecked(app, e.into()).await),
    };
    if !user.is_active {
        guess.released(app).await?;
        app.metrics.logins.with_label_values(&["deactivated"]).inc();
        tracing::warn!(target: SECURITY, event = "login_refused_deactivated", user_id = %user.id, client_ip = %request.client_ip);
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "account_deactivated",
            "This account has been deactivated",
        ));
    }
    let (two_factor, passkey) =
        match super::passkeys::check_second_factor(app, request, &user, two_factor_code.as_deref())
            .await
        {
            Ok(passed) => passed,
            Err(super::two_factor::LoginCodeError::Required) => {
                guess.released(app).await?;
                app.metrics
                    .logins
                    .with_label_values(&["two_factor_required"])
                    .inc();
                return Err(super::passkeys::two_factor_required(app, &user).await);
            }
            Err(super::two_factor::LoginCodeError::Wrong) => {
                app.metrics.logins.with_label_values(&["failure"]).inc();
                guess.failed(app, request, "wrong_two_factor_code").await;
                return Err(invalid_credentials());
            }
            Err(super::two_factor::LoginCodeError::Backend(response)) => {
                return Err(guess.unchecked(app, response).await);
            }
        };

    guess.succeeded(app).await?;
    renew_hash(app, &user, &password, verified).await;
    open_session(app, request, &user, two_factor, passkey, remember_me).await
}

/// After a right password: a hash made at another cost, or before passwords were
/// normalised (it matched only as typed), is replaced by a fresh hash of the normalised
/// form, so the next check is a [`Verified::Match`]. A failure is logged, not answered.
pub(super) async fn renew_hash(app: &App, user: &User, password: &str, verified: Verified) {
    if verified != Verified::MatchAsTyped && !app.hasher.needs_rehash(&user.password_hash) {
        return;
    }
    match app.hasher.hash(password).await {
        Ok(hash) => {
            if let Err(e) = app.store.set_password_hash(user.id, &hash).await {
                tracing::warn!(error = %e, user_id = %user.id, "could not store the re-hashed password");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not re-hash a password"),
    }
}

/// Starts a session for `user`, who has just proved who they are (a password, perhaps
/// with a second factor, or a passkey alone), and answers with its tokens.
pub(super) async fn open_session(
    app: &App,
    request: &ApiRequest,
    user: &User,
    two_factor: bool,
    passkey: PasskeyUse,
    remember_me: bool,
) -> Result<Reply, Reply> {
    app.store.record_successful_login(user.id).await?;
    // A new session never starts from a cached copy of the account that may predate an
    // operator's change.
    app.access.forget_user_record(user.id);

    let tokens_cfg = &app.config.tokens;
    let lifetime = if remember_me {
        tokens_cfg.remember_me_ttl.get()
    } else {
        tokens_cfg.refresh_ttl.get()
    };
    let session_id = SessionId::generate();
    let secret = random_token();
    let created = match app
        .sessions
        .create(NewSession {
            id: session_id,
            user_id: user.id,
            ip: request.client_ip.to_string(),
            user_agent: request.user_agent.clone(),
            two_factor,
            passkey,
            remember_me,
            refresh_hash: sha256_hex(&secret),
            idle_ttl: lifetime,
            // `sessions.max_lifetime` caps every session, refresh lifetime included.
            absolute_ttl: lifetime.min(app.config.sessions.max_lifetime.get()),
            max_per_user: app.config.sessions.max_per_user,
        })
        .await
    {
        Ok(created) => created,
        Err(e) => return Err(e.into()),
    };
    app.access.forget_sessions(&created.evicted);
    for evicted in &created.evicted {
        tracing::info!(target: SECURITY, event = "session_evicted", user_id = %user.id, session_id = %evicted);
    }
    let session = created.session;
    let refresh_token = format_refresh_token(&session.id.to_string(), &secret);
    let tokens = tokens_for(app, &session, &refresh_token)?;
    app.metrics.logins.with_label_values(&["success"]).inc();
    tracing::info!(
        target: SECURITY,
        event = "login_succeeded",
        user_id = %user.id,
        session_id = %session.id,
        two_factor,
        passkey = passkey.as_str(),
        client_ip = %request.client_ip,
    );
    notify_new_device(app, user, request).await;

    let mut summary = user_summary(user);
    summary["roles"] = json!(user.roles);
    Ok(with_tokens(
        app,
        "Login successful",
        json!({"user": summary}),
        tokens,
    ))
}

/// Mails the user when a login comes from a device/IP not seen before (after the first login).
async fn notify_new_device(app: &App, user: &User, request: &ApiRequest) {
    if !app.config.mail.login_notifications {
        return;
    }
    let device = sha256_hex(&format!("{}|{}", request.client_ip, request.user_agent));
    let key = format!("device:{}:{device}", user.id);
    match app.sessions.claim_once(&key, KNOWN_DEVICE_TTL).await {
        Ok(true) if user.last_login.is_some() => {
            app.mailer.send_in_background_in(
                super::mail_language(app, request, user),
                user.email.as_str(),
                &user.first_name,
                MailKind::LoginNotification {
                    ip: request.client_ip.to_string(),
                    user_agent: request.user_agent.clone(),
                    time: Utc::now(),
                },
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not check for a new device"),
    }
}

/// `POST /api/auth/refresh-token`
pub async fn refresh(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let mut f = Fields::from_request(request)?;
    let token = f.required("refresh_token");
    f.finish()?;
    let invalid = || unauthorized("invalid_token", "Invalid or expired refresh token");
    let Some((sid, secret)) = token.as_deref().and_then(parse_refresh_token) else {
        return Err(invalid());
    };
    let Ok(session_id) = sid.parse::<SessionId>() else {
        return Err(invalid());
    };
    let next = next_refresh_secret(app.keys.refresh_rotation_key(), &sid, &secret);
    let outcome = app
        .sessions
        .rotate_refresh(
            &session_id,
            &sha256_hex(&secret),
            &sha256_hex(&next),
            REFRESH_GRACE,
        )
        .await;
    let session = match outcome {
        Ok(RotateOutcome::Rotated(session)) | Ok(RotateOutcome::AlreadyRotated(session)) => session,
        Ok(RotateOutcome::Reused { user_id }) => {
            // The store ended the session when it saw the reuse; the caches follow.
            app.access.forget_sessions(&[session_id]);
            app.metrics.refresh_reuse.inc();
            tracing::warn!(
                target: SECURITY,
                event = "refresh_token_reuse",
                user_id = %user_id,
                session_id = %session_id,
                client_ip = %request.client_ip,
            );
            return Err(unauthorized(
                "refresh_token_reused",
                "Refresh token was already used; the session has ended",
            ));
        }
        Ok(RotateOutcome::NotFound) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    match app.store.find_by_id(session.user_id).await {
        Ok(Some(user)) if user.is_active => {}
        Ok(_) => {
            let _ = app.access.revoke_session(&session.id).await;
            return Err(invalid());
        }
        Err(e) => return Err(e.into()),
    }
    let refresh_token = format_refresh_token(&sid, &next);
    let tokens = tokens_for(app, &session, &refresh_token)?;
    Ok(with_tokens(app, "Token refreshed", json!({}), tokens))
}

/// `POST /api/auth/logout` — ends this session at once.
pub async fn logout(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    app.access.revoke_session(&caller.session.id).await?;
    tracing::info!(target: SECURITY, event = "logout", user_id = %caller.user.id, session_id = %caller.session.id);
    Ok(Reply::ok(StatusCode::OK, "Logged out successfully", None)
        .with_header(http::header::SET_COOKIE, session_cookie(app, "")))
}

/// `POST /api/auth/logout-all` — ends every session of the user.
pub async fn logout_all(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let ended = app
        .access
        .revoke_user(caller.session.user_id, None)
        .await?
        .len();
    tracing::info!(target: SECURITY, event = "logout_all", user_id = %caller.user.id, sessions_ended = ended);
    Ok(Reply::ok(
        StatusCode::OK,
        "Logged out from all devices",
        Some(json!({"sessions_ended": ended})),
    ))
}
