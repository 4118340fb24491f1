//! The admin API under `/api/admin/*`: accounts, their sessions, invitations and the audit
//! trail, for an administrator — an account with the role `admin.role` whose session proved
//! its second factor within `admin.max_auth_age` (`Accounts::administrator`, the rule the
//! admin console keeps too). The handlers read the request into the core's types and answer
//! the envelope; every rule and every audit event is the core's (`accounts/admin.rs`).
//!
//! - Only a Bearer access token, as the rest of the signed-in API (`authenticate_api`).
//! - Every endpoint but the step-up asks for the administrator first: 401 without a live
//!   session, 403 `forbidden` without the role, 403 `step_up_required` when the second factor
//!   is stale or was never proven in this session; each 403 is written to the audit trail
//!   (`admin_refused`). Then the query: a key the endpoint does not take is a 400 naming it.
//! - `POST /api/admin/step-up` needs the role but no fresh factor: it is how one gets fresh.
//! - An `{id}` that is no account's (or no session's) id is answered like an unknown one:
//!   404 `user_not_found` (`session_not_found`).

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Value, json};

use super::endpoints::{self, Resolved};
use super::input::{Fields, Query};
use super::login::second_factor;
use super::passkeys::passkey_json;
use super::{ApiRequest, FieldError, Reply};
use crate::accounts::AccountError;
use crate::accounts::admin::{AccountAction, Administrator};
use crate::accounts::federation::LinkedView;
use crate::app::App;
use crate::config::{ProviderId, ROLE_NAME_RULE, is_role_name};
use crate::domain::{Email, UserId};
use crate::session::{Session, SessionId};
use crate::store::{
    AuditEvent, AuditFilter, AuditKind, Invitation, MAX_AUDIT_PAGE, MAX_USER_PAGE, User, UserSearch,
};

/// Accounts on a page of `GET /api/admin/users` when `limit` is not given.
const DEFAULT_USER_PAGE: u32 = 50;
/// Events on a page of `GET /api/admin/audit` when `limit` is not given.
const DEFAULT_AUDIT_PAGE: u32 = 100;
/// The longest `q` text, in characters (an address is at most 254).
const MAX_SEARCH_CHARS: usize = 254;

/// The query keys of `GET /api/admin/users`.
const USER_QUERY: &[&str] = &["q", "page", "limit"];
/// The query keys of `GET /api/admin/audit`.
const AUDIT_QUERY: &[&str] = &["user", "email", "kind", "since", "until", "before", "limit"];

/// The endpoint a request reached, as the audit trail names it (`POST
/// /api/admin/users/{id}/activate`): the template, never the concrete path or the query.
fn endpoint_name(request: &ApiRequest) -> String {
    match endpoints::resolve(&request.method, &request.path) {
        Resolved::Found { endpoint, .. } => format!("{} {}", request.method, endpoint.path),
        _ => format!("{} /api/admin", request.method),
    }
}

/// The administrator behind `request`, and its query read with the `known` keys; the
/// refusal otherwise (401, 403 `forbidden` or `step_up_required` — those two audited —,
/// 400 for the query).
async fn administrator(
    app: &App,
    request: &ApiRequest,
    known: &[&'static str],
) -> Result<(Administrator, Query), Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let admin = app
        .accounts
        .administrator(caller.user.id, caller.session.id)
        .await;
    let admin = match admin {
        Ok(admin) => admin,
        Err(refusal) => {
            if matches!(
                refusal,
                AccountError::NotAdministrator | AccountError::StepUpRequired
            ) {
                let client = super::client(app, request);
                let what = endpoint_name(request);
                app.accounts
                    .audit_admin_refusal(Some(&caller.user), &what, &refusal, &client);
            }
            return Err(refusal.into());
        }
    };
    Ok((admin, Query::parse(request, known)?))
}

/// The core's refusal as the admin API answers it: an unknown account is 404
/// `user_not_found` (not the router's `not_found`, so a client can tell them apart).
fn refused(e: AccountError) -> Reply {
    match e {
        AccountError::AccountNotFound => user_not_found(),
        other => other.into(),
    }
}

fn user_not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "user_not_found",
        "No account has this id.",
    )
}

/// The account id of a path's `{id}`: 404 `user_not_found` for anything but a UUID.
fn user_id(id: &str) -> Result<UserId, Reply> {
    id.parse::<UserId>().map_err(|_| user_not_found())
}

/// An account as the admin API shows it: everything but its password hash, TOTP secret and
/// language.
fn user_json(user: &User, now: DateTime<Utc>) -> Value {
    json!({
        "id": user.id.to_string(),
        "email": user.email.as_str(),
        "first_name": user.first_name,
        "last_name": user.last_name,
        "roles": user.roles,
        "is_verified": user.is_verified,
        "is_active": user.is_active,
        "two_factor_enabled": user.two_factor_enabled,
        "is_locked": user.is_locked(now),
        "locked_until": user.locked_until,
        "failed_login_attempts": user.failed_login_attempts,
        "last_login": user.last_login,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    })
}

/// A session as the admin API shows it; `current` when it is the administrator's own.
fn session_json(session: &Session, admin: &Administrator) -> Value {
    json!({
        "id": session.id.to_string(),
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
        "expires_at": session.expires_at,
        "absolute_expires_at": session.absolute_expires_at,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "two_factor": session.two_factor,
        "second_factor_at": session.second_factor_at,
        "provider": session.provider,
        "remember_me": session.remember_me,
        "current": session.id == admin.session(),
    })
}

/// An invitation as the admin API shows it (never its token, which is not kept).
fn invitation_json(invitation: &Invitation, now: DateTime<Utc>) -> Value {
    json!({
        "id": invitation.id.to_string(),
        "email": invitation.email.as_str(),
        "roles": invitation.roles,
        "created_by": invitation.created_by.map(|id| id.to_string()),
        "created_at": invitation.created_at,
        "expires_at": invitation.expires_at,
        "used_at": invitation.used_at,
        "revoked_at": invitation.revoked_at,
        "state": invitation.state(now).as_str(),
    })
}

/// An audit event as the admin API shows it.
fn event_json(event: &AuditEvent) -> Value {
    json!({
        "id": event.id,
        "at": event.at,
        "kind": event.kind,
        "outcome": event.outcome.as_str(),
        "actor": {
            "kind": event.actor.kind(),
            "id": event.actor.user_id().map(|id| id.to_string()),
        },
        "subject": event.subject.map(|id| id.to_string()),
        "subject_email": event.subject_email,
        "client_ip": event.client_ip,
        "detail": event.detail,
    })
}

/// `POST /api/admin/step-up` — `{"code"}` (a TOTP or recovery code) or `{"passkey":
/// {ceremony_id, credential}}`; nothing (or `{}`) asks for the challenge: 401
/// `two_factor_required` with `data.methods` and, with passkeys, `data.passkey`. Needs the
/// admin role, not a fresh factor. Each wrong answer counts against the lockout.
pub async fn step_up(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let caller = app.access.authenticate_api(&request.headers).await?;
    let client = super::client(app, request);
    if !app.accounts.is_admin(&caller.user) {
        let refusal = AccountError::NotAdministrator;
        let what = endpoint_name(request);
        app.accounts
            .audit_admin_refusal(Some(&caller.user), &what, &refusal, &client);
        return Err(refusal.into());
    }
    Query::parse(request, &[])?;
    let mut f = Fields::from_request(request)?;
    let code = f.optional("code").filter(|c| !c.is_empty());
    f.finish()?;
    let sent_passkey = super::input::body_object(request)
        .get("passkey")
        .is_some_and(|v| !v.is_null());
    if code.is_none() && !sent_passkey {
        return Err(app.accounts.step_up_challenge(&caller.user).await.into());
    }
    let second = second_factor(request, code);
    app.accounts
        .prove_second_factor(&caller.user, caller.session.id, second, &client)
        .await
        .map_err(wrong_second_factor)?;
    // The instant as the session store recorded it, read back with the session.
    let proven = app.access.authenticate_api(&request.headers).await?;
    let at = proven
        .session
        .second_factor_at
        .ok_or_else(|| Reply::internal("reading a proven second factor", &"none recorded"))?;
    let window = chrono::Duration::from_std(app.accounts.admin_max_auth_age())
        .unwrap_or(chrono::Duration::minutes(15));
    Ok(Reply::ok(
        StatusCode::OK,
        "Second factor proven. The admin API is open to this session until valid_until.",
        Some(json!({"second_factor_at": at, "valid_until": at + window})),
    ))
}

/// A step-up's refusal; a wrong answer is the sign-in's 401 `invalid_credentials`, told as
/// what it is here (there is no address or password in a step-up).
fn wrong_second_factor(e: AccountError) -> Reply {
    match e {
        AccountError::WrongSecondFactor(_) => Reply::error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "The code is wrong or already used, or the passkey's answer could not be verified.",
        ),
        other => other.into(),
    }
}

/// A page size from `limit`: 1 to `max`, `default` when not given.
fn page_limit(query: &Query, default: u32, max: u32, errors: &mut Vec<FieldError>) -> u32 {
    let Some(text) = query.get("limit") else {
        return default;
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            errors.push(FieldError::named(
                "limit",
                &format!("must be a whole number from 1 to {max}"),
            ));
            default
        }
    }
}

/// The highest page number `GET /api/admin/users` takes.
const MAX_USER_PAGE_NUMBER: u32 = 100_000;

/// `q`, `page` and `limit` of `GET /api/admin/users` (the page number and the search with
/// one more account asked for than shown, to know whether a next page exists), or the 400
/// naming each bad one.
fn user_search(query: &Query) -> Result<(u32, UserSearch), Reply> {
    let mut errors = Vec::new();
    let text = query.get("q").unwrap_or("").to_owned();
    if text.chars().count() > MAX_SEARCH_CHARS {
        let message = format!("must be at most {MAX_SEARCH_CHARS} characters");
        errors.push(FieldError::named("q", &message));
    }
    let page = match query.get("page").map(str::parse::<u32>) {
        None => 1,
        Some(Ok(n)) if (1..=MAX_USER_PAGE_NUMBER).contains(&n) => n,
        Some(_) => {
            let message = format!("must be a whole number from 1 to {MAX_USER_PAGE_NUMBER}");
            errors.push(FieldError::named("page", &message));
            1
        }
    };
    let limit = page_limit(query, DEFAULT_USER_PAGE, MAX_USER_PAGE - 1, &mut errors);
    if !errors.is_empty() {
        return Err(Reply::validation(&errors));
    }
    let offset = (page - 1).saturating_mul(limit);
    Ok((
        page,
        UserSearch {
            text,
            offset,
            limit: limit + 1,
        },
    ))
}

/// `GET /api/admin/users?q=&page=&limit=` — one page of accounts in address order, with
/// `next_page` when there is one, else `null`.
pub async fn list_users(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let (admin, query) = administrator(app, request, USER_QUERY).await?;
    let (page, search) = user_search(&query)?;
    let mut users = app
        .accounts
        .find_accounts(&admin, &search)
        .await
        .map_err(refused)?;
    let shown = search.limit as usize - 1;
    let next_page = (users.len() > shown).then_some(page + 1);
    users.truncate(shown);
    let now = Utc::now();
    let listed: Vec<Value> = users.iter().map(|u| user_json(u, now)).collect();
    Ok(Reply::ok(
        StatusCode::OK,
        "The accounts were retrieved.",
        Some(json!({"users": listed, "page": page, "next_page": next_page})),
    ))
}

/// `POST /api/admin/users` — `{email, roles?, password?}`: an account whose address counts
/// as proven (201). Without a password none works yet, and the address is mailed a
/// password-reset link to choose one.
pub async fn create_user(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let mut f = Fields::from_request(request)?;
    let email = f.text("email");
    let roles = f.string_list("roles").unwrap_or_default();
    let password = f.optional_raw("password");
    check_role_names(&mut f, "roles", &roles);
    let mut found = f.found();
    let email = found.email("email", &email);
    let password = match password {
        Some(p) => found.new_password("password", &p).map(Some),
        None => Some(None),
    };
    let (email, password) = found.finish_with(email.zip(password))?;
    let client = super::client(app, request);
    let mailed = password.is_none();
    let user = app
        .accounts
        .create_account(&admin, email, &roles, password, &client)
        .await
        .map_err(refused)?;
    let message = if mailed {
        "The account was created, and a link to choose a password was mailed."
    } else {
        "The account was created."
    };
    Ok(Reply::ok(
        StatusCode::CREATED,
        message,
        Some(json!({"user": user_json(&user, Utc::now())})),
    ))
}

/// Names `field` when one of `roles` cannot be a role name.
fn check_role_names(f: &mut Fields, field: &str, roles: &[String]) {
    if roles.iter().any(|r| !is_role_name(r)) {
        f.reject(field, ROLE_NAME_RULE);
    }
}

/// An account's sessions as the admin API shows them (`current` marks `admin`'s own).
fn sessions_json(sessions: &[Session], admin: &Administrator) -> Vec<Value> {
    sessions.iter().map(|s| session_json(s, admin)).collect()
}

/// A linked identity as the admin API shows it.
fn identity_json(identity: &LinkedView) -> Value {
    json!({
        "provider": identity.provider,
        "name": identity.name,
        "subject": identity.subject,
        "email": identity.email,
        "linked_at": identity.linked_at,
    })
}

/// `GET /api/admin/users/{id}` — the account with its live sessions, passkeys and linked
/// identities.
pub async fn get_user(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let detail = app
        .accounts
        .account_detail(&admin, user_id(id)?)
        .await
        .map_err(refused)?;
    let sessions = sessions_json(&detail.sessions, &admin);
    let passkeys: Vec<Value> = detail.passkeys.iter().map(passkey_json).collect();
    let identities: Vec<Value> = detail.identities.iter().map(identity_json).collect();
    Ok(Reply::ok(
        StatusCode::OK,
        "The account was retrieved.",
        Some(json!({
            "user": user_json(&detail.user, Utc::now()),
            "sessions": sessions,
            "passkeys": passkeys,
            "identities": identities,
        })),
    ))
}

/// `DELETE /api/admin/users/{id}` — the account goes with everything hanging from it; its
/// sessions end at once. 409 `own_account` for the administrator's own.
pub async fn delete_user(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let client = super::client(app, request);
    app.accounts
        .delete_account(&admin, user_id(id)?, &client)
        .await
        .map_err(refused)?;
    Ok(Reply::ok(StatusCode::OK, "The account was deleted.", None))
}

/// `POST /api/admin/users/{id}/{activate, deactivate, unlock, reset-2fa, verify-email,
/// revoke-sessions}` — `{changed}`: `false` when the account already was so. 409
/// `own_account` for what would lock the administrator out of their own account.
pub async fn act(
    app: &App,
    request: &ApiRequest,
    id: &str,
    action: AccountAction,
) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    changed(app, request, &admin, id, action).await
}

/// `POST /api/admin/users/{id}/grant-role` and `/revoke-role` — `{role}`; `{changed}`.
pub async fn change_role(
    app: &App,
    request: &ApiRequest,
    id: &str,
    grant: bool,
) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let mut f = Fields::from_request(request)?;
    let role = f.required("role");
    if let Some(role) = &role {
        check_role_names(&mut f, "role", std::slice::from_ref(role));
    }
    let role = f.finish_with(role)?;
    let action = if grant {
        AccountAction::GrantRole(role)
    } else {
        AccountAction::RevokeRole(role)
    };
    changed(app, request, &admin, id, action).await
}

/// The longest `subject` taken, in characters (OpenID Connect's `sub` is at most 255).
const MAX_SUBJECT_CHARS: usize = 255;

/// `POST /api/admin/users/{id}/unlink-identity` — `{provider, subject}`; `{changed}`
/// (`false` when the account has no such identity). The account's last identity goes too:
/// it keeps its password and the reset by mail.
pub async fn unlink_identity(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let mut f = Fields::from_request(request)?;
    let provider = f.required("provider");
    let subject = f.required_raw("subject");
    let provider = match provider.map(ProviderId::try_from) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            let rule = "must be a provider id: 1 to 32 of a-z, 0-9 and '-'";
            f.reject_that("provider", rule);
            None
        }
        None => None,
    };
    let bad_subject =
        |s: &String| s.chars().count() > MAX_SUBJECT_CHARS || s.chars().any(char::is_control);
    if subject.as_ref().is_some_and(bad_subject) {
        let rule =
            format!("must be at most {MAX_SUBJECT_CHARS} characters, none a control character");
        f.reject_that("subject", &rule);
    }
    let (provider, subject) = f.finish_with(provider.zip(subject))?;
    let action = AccountAction::UnlinkIdentity {
        provider: provider.to_string(),
        subject,
    };
    changed(app, request, &admin, id, action).await
}

/// Applies `action` to the account `id`, answering `{changed}`.
async fn changed(
    app: &App,
    request: &ApiRequest,
    admin: &Administrator,
    id: &str,
    action: AccountAction,
) -> Result<Reply, Reply> {
    let client = super::client(app, request);
    let changed = app
        .accounts
        .act_on_account(admin, user_id(id)?, action, &client)
        .await
        .map_err(refused)?;
    let message = if changed {
        "The account was changed."
    } else {
        "Nothing changed: it already was so."
    };
    Ok(Reply::ok(
        StatusCode::OK,
        message,
        Some(json!({"changed": changed})),
    ))
}

/// `GET /api/admin/users/{id}/sessions` — the account's live sessions.
pub async fn user_sessions(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let detail = app
        .accounts
        .account_detail(&admin, user_id(id)?)
        .await
        .map_err(refused)?;
    let sessions = sessions_json(&detail.sessions, &admin);
    Ok(Reply::ok(
        StatusCode::OK,
        "The sessions were retrieved.",
        Some(json!({"sessions": sessions})),
    ))
}

/// `DELETE /api/admin/sessions/{id}` — ends any account's session; 404 `session_not_found`
/// for an id that is none (or no longer) live.
pub async fn end_session(app: &App, request: &ApiRequest, id: &str) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let session = id
        .parse::<SessionId>()
        .map_err(|_| AccountError::SessionNotFound)?;
    let client = super::client(app, request);
    app.accounts
        .end_any_session(&admin, session, None, &client)
        .await
        .map_err(refused)?;
    Ok(Reply::ok(StatusCode::OK, "The session was ended.", None))
}

/// `GET /api/admin/invitations` — every invitation, newest first, with its state.
pub async fn list_invitations(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    administrator(app, request, &[]).await?;
    let invitations = app.accounts.list_invitations().await.map_err(refused)?;
    let now = Utc::now();
    let listed: Vec<Value> = invitations
        .iter()
        .map(|i| invitation_json(i, now))
        .collect();
    Ok(Reply::ok(
        StatusCode::OK,
        "The invitations were retrieved.",
        Some(json!({"invitations": listed})),
    ))
}

/// `POST /api/admin/invitations` — `{email, roles?}`: invites the address (201); the link
/// is mailed in the request's language. 409 `email_taken` when it has an account.
pub async fn invite(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let mut f = Fields::from_request(request)?;
    let email = f.text("email");
    let roles = f.string_list("roles").unwrap_or_default();
    check_role_names(&mut f, "roles", &roles);
    let mut found = f.found();
    let email = found.email("email", &email);
    let email = found.finish_with(email)?;
    let client = super::client(app, request);
    let invitation = app
        .accounts
        .invite_as(&admin, email, &roles, &client)
        .await
        .map_err(refused)?;
    Ok(Reply::ok(
        StatusCode::CREATED,
        "The invitation was sent.",
        Some(json!({"invitation": invitation_json(&invitation, Utc::now())})),
    ))
}

/// `POST /api/admin/invitations/revoke` — `{email}`: the address's pending invitations stop
/// working; `{revoked}` says how many there were.
pub async fn revoke_invitations(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let (admin, _) = administrator(app, request, &[]).await?;
    let mut f = Fields::from_request(request)?;
    let email = f.text("email");
    let mut found = f.found();
    let email = found.email("email", &email);
    let email = found.finish_with(email)?;
    let client = super::client(app, request);
    let revoked = app
        .accounts
        .revoke_invitations_as(&admin, &email, &client)
        .await
        .map_err(refused)?;
    Ok(Reply::ok(
        StatusCode::OK,
        "The pending invitations were revoked.",
        Some(json!({"revoked": revoked})),
    ))
}

/// One parameter of the audit query parsed by `parse`, its failure (a sentence naming
/// `key`) recorded under `key`.
fn audit_param<T>(
    query: &Query,
    key: &str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let value = query.get(key)?;
    parse(value)
        .map_err(|message| errors.push(FieldError::new(key, message)))
        .ok()
}

/// The sentence naming `key` that says it `predicate`.
fn about(key: &str, predicate: &str) -> String {
    FieldError::named(key, predicate).message
}

/// An RFC 3339 instant, for the parameter `key`.
fn instant(key: &str) -> impl FnOnce(&str) -> Result<DateTime<Utc>, String> {
    move |value| {
        DateTime::parse_from_rfc3339(value)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| {
                about(
                    key,
                    "must be an RFC 3339 time, such as 2026-12-01T00:00:00Z",
                )
            })
    }
}

/// The filters of `GET /api/admin/audit`, or the 400 naming each bad one.
fn audit_filter(query: &Query) -> Result<AuditFilter, Reply> {
    let mut errors = Vec::new();
    let e = &mut errors;
    let user = audit_param(query, "user", e, |v| {
        v.parse::<UserId>()
            .map_err(|_| about("user", "must be an account id (a UUID)"))
    });
    let email = audit_param(query, "email", e, |v| {
        Email::parse(v).map_err(|err| err.to_string())
    });
    let kind = audit_param(query, "kind", e, |v| {
        AuditKind::parse(v).ok_or_else(|| {
            let kinds = super::input::listed(&AuditKind::ALL.map(AuditKind::as_str));
            about("kind", &format!("must be one of {kinds}"))
        })
    });
    let since = audit_param(query, "since", e, instant("since"));
    let until = audit_param(query, "until", e, instant("until"));
    let before_id = audit_param(query, "before", e, |v| match v.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(about(
            "before",
            "must be an event id, a whole number from 1",
        )),
    });
    let limit = page_limit(query, DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE, e);
    if !errors.is_empty() {
        return Err(Reply::validation(&errors));
    }
    Ok(AuditFilter {
        user,
        email,
        kind,
        since,
        until,
        before_id,
        limit,
    })
}

/// `GET /api/admin/audit?user=&email=&kind=&since=&until=&before=&limit=` — one page of
/// the audit trail, newest first, with `next_before` (the last event's id) when the page is
/// full, else `null`.
pub async fn audit(app: &App, request: &ApiRequest) -> Result<Reply, Reply> {
    let (admin, query) = administrator(app, request, AUDIT_QUERY).await?;
    let filter = audit_filter(&query)?;
    let events = app
        .accounts
        .audit_trail(&admin, &filter)
        .await
        .map_err(refused)?;
    let full = events.len() >= filter.limit as usize;
    let next_before = events.last().filter(|_| full).map(|e| e.id);
    let listed: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Reply::ok(
        StatusCode::OK,
        "The audit events were retrieved.",
        Some(json!({"events": listed, "next_before": next_before})),
    ))
}
