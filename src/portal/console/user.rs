//! One account in the console: its profile, roles, sessions, second factors and lock, and
//! the forms that change it, each posted to `/admin/users/{id}/{action}` and answered by a
//! 303 back to the page with a notice, or by the page with the problem.

use http::StatusCode;
use minijinja::Value;
use serde_json::json;

use super::{Section, render};
use crate::accounts::AccountError;
use crate::accounts::admin::{AccountAction, AccountDetail, Administrator};
use crate::domain::UserId;
use crate::portal::{Feedback, Form, Page, Visit, devices, to_value};
use crate::reply::FieldError;
use crate::session::SessionId;

/// A form of the account page, named by the last segment of its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// `activate`.
    Activate,
    /// `deactivate`.
    Deactivate,
    /// `unlock`.
    Unlock,
    /// `reset-2fa`: TOTP, recovery codes and passkeys go.
    ResetSecondFactors,
    /// `verify`: the address counts as proven.
    MarkVerified,
    /// `grant-role` (field `role`).
    GrantRole,
    /// `revoke-role` (field `role`).
    RevokeRole,
    /// `end-session` (field `session_id`).
    EndSession,
    /// `end-sessions`: every session.
    EndSessions,
    /// `delete` (field `confirm` = `yes`).
    Delete,
    /// `unlink-identity` (fields `provider`, `subject`, `confirm` = `yes`).
    UnlinkIdentity,
}

/// Each action's path segment and the notice its success shows.
const ACTIONS: &[(&str, Action, &str)] = &[
    ("activate", Action::Activate, "activated"),
    ("deactivate", Action::Deactivate, "deactivated"),
    ("unlock", Action::Unlock, "unlocked"),
    ("reset-2fa", Action::ResetSecondFactors, "two_factor_reset"),
    ("verify", Action::MarkVerified, "verified"),
    ("grant-role", Action::GrantRole, "role_granted"),
    ("revoke-role", Action::RevokeRole, "role_revoked"),
    ("end-session", Action::EndSession, "session_ended"),
    ("end-sessions", Action::EndSessions, "sessions_ended"),
    ("delete", Action::Delete, "deleted"),
    (
        "unlink-identity",
        Action::UnlinkIdentity,
        "identity_unlinked",
    ),
];

/// The actions that ask for the box `confirm` ticked first, with the id of the message
/// shown when it was not, and that message.
const CONFIRMED: &[(Action, &str, &str)] = &[
    (
        Action::Delete,
        "confirm_delete",
        "admin_error_confirm_delete",
    ),
    (
        Action::UnlinkIdentity,
        "confirm_unlink",
        "admin_error_confirm_unlink",
    ),
];

impl Action {
    /// The action of a path segment.
    pub(super) fn parse(segment: &str) -> Option<Self> {
        ACTIONS
            .iter()
            .find(|(name, _, _)| *name == segment)
            .map(|(_, action, _)| *action)
    }

    /// The notice of its success.
    fn notice(self) -> &'static str {
        ACTIONS
            .iter()
            .find(|(_, action, _)| *action == self)
            .map_or("unchanged", |(_, _, notice)| notice)
    }
}

/// `GET /admin/users/{id}`.
pub(super) async fn page(v: &mut Visit<'_>, admin: &Administrator, id: UserId) -> Page {
    let feedback = super::notice(v);
    render_user(v, admin, id, StatusCode::OK, feedback).await
}

/// `POST /admin/users/{id}/{action}`: the change, then back to the page (the list, after a
/// deletion) with a notice (`unchanged` when the account already was so); or the page with
/// the problem.
pub(super) async fn act(
    v: &mut Visit<'_>,
    admin: &Administrator,
    id: UserId,
    action: Action,
    form: &Form,
) -> Page {
    let unconfirmed = CONFIRMED.iter().find(|(a, _, _)| *a == action);
    if let Some((_, field, key)) = unconfirmed
        && form.get("confirm") != Some("yes")
    {
        let mut feedback = Feedback::default();
        let message = v.t(key);
        feedback.errors.insert((*field).into(), vec![message]);
        return render_user(v, admin, id, StatusCode::BAD_REQUEST, feedback).await;
    }
    let outcome = match action {
        Action::Delete => delete(v, admin, id).await,
        Action::EndSession => end_session(v, admin, id, form).await,
        Action::Activate => change(v, admin, id, Ok(AccountAction::Activate)).await,
        Action::Deactivate => change(v, admin, id, Ok(AccountAction::Deactivate)).await,
        Action::Unlock => change(v, admin, id, Ok(AccountAction::Unlock)).await,
        Action::ResetSecondFactors => {
            change(v, admin, id, Ok(AccountAction::ResetSecondFactors)).await
        }
        Action::MarkVerified => change(v, admin, id, Ok(AccountAction::MarkVerified)).await,
        Action::EndSessions => change(v, admin, id, Ok(AccountAction::EndSessions)).await,
        Action::GrantRole => {
            let grant = role(form).map(AccountAction::GrantRole);
            change(v, admin, id, grant).await
        }
        Action::RevokeRole => {
            let revoke = role(form).map(AccountAction::RevokeRole);
            change(v, admin, id, revoke).await
        }
        Action::UnlinkIdentity => {
            let unlink = AccountAction::UnlinkIdentity {
                provider: form.text("provider").to_owned(),
                subject: form.text("subject").to_owned(),
            };
            change(v, admin, id, Ok(unlink)).await
        }
    };
    match outcome {
        Ok(false) => super::done(v, &format!("/admin/users/{id}"), "unchanged"),
        Ok(true) if action == Action::Delete => super::done(v, "/admin", action.notice()),
        Ok(true) => super::done(v, &format!("/admin/users/{id}"), action.notice()),
        Err(AccountError::AccountNotFound) => super::no_such_account(v),
        Err(e) => {
            let (status, feedback) = super::refused_form(v, e, |field| match field {
                "roles" => "grant_role".to_owned(),
                other => other.to_owned(),
            });
            render_user(v, admin, id, status, feedback).await
        }
    }
}

/// The role a grant or revoke form names (`Field("roles")` when it names none).
fn role(form: &Form) -> Result<String, AccountError> {
    let role = form.text("role").trim();
    if role.is_empty() {
        let required = FieldError::required("roles");
        return Err(AccountError::Invalid(vec![required]));
    }
    Ok(role.to_owned())
}

/// Applies `change` (or its refusal) to the account; whether anything changed.
async fn change(
    v: &Visit<'_>,
    admin: &Administrator,
    id: UserId,
    change: Result<AccountAction, AccountError>,
) -> Result<bool, AccountError> {
    let client = v.client();
    let accounts = &v.app.accounts;
    accounts.act_on_account(admin, id, change?, &client).await
}

/// Ends one session of the account `id` (the form's `session_id`; another account's is
/// refused as unknown).
async fn end_session(
    v: &Visit<'_>,
    admin: &Administrator,
    id: UserId,
    form: &Form,
) -> Result<bool, AccountError> {
    let session = form
        .text("session_id")
        .parse::<SessionId>()
        .map_err(|_| AccountError::SessionNotFound)?;
    let client = v.client();
    let accounts = &v.app.accounts;
    accounts
        .end_any_session(admin, session, Some(id), &client)
        .await?;
    Ok(true)
}

/// Deletes the account (the form's box said so).
async fn delete(v: &Visit<'_>, admin: &Administrator, id: UserId) -> Result<bool, AccountError> {
    let client = v.client();
    v.app.accounts.delete_account(admin, id, &client).await?;
    Ok(true)
}

/// The page of the account `id`, with `feedback`.
async fn render_user(
    v: &mut Visit<'_>,
    admin: &Administrator,
    id: UserId,
    status: StatusCode,
    feedback: Feedback,
) -> Page {
    let detail = match v.app.accounts.account_detail(admin, id).await {
        Ok(detail) => detail,
        Err(AccountError::AccountNotFound) => return super::no_such_account(v),
        Err(e) => {
            let refusal = v.refusal(e);
            return super::failure(v, &refusal);
        }
    };
    let view = view(v, admin, &detail);
    let title = format!("{}: {}", v.t("admin_user_title"), detail.user.email);
    render(
        v,
        "admin_user.html",
        status,
        "admin_user_title",
        Section::Users,
        feedback,
        vec![
            ("page_title", Value::from(title)),
            ("account", to_value(view)),
        ],
    )
}

/// What the page shows of an account.
fn view(v: &Visit<'_>, admin: &Administrator, detail: &AccountDetail) -> serde_json::Value {
    let user = &detail.user;
    let admin_role = v.app.accounts.admin_role();
    let is_self = user.id == admin.user().id;
    let now = chrono::Utc::now();
    let sessions: Vec<serde_json::Value> = detail
        .sessions
        .iter()
        .map(|s| {
            let mut view = devices::session_view(s, s.id == admin.session(), now, v.lang);
            view["second_factor"] = json!(s.second_factor_at.is_some() || s.two_factor);
            view
        })
        .collect();
    let passkeys: Vec<serde_json::Value> = detail
        .passkeys
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "created_at": super::short_time(p.created_at),
                "last_used_at": p.last_used_at.map(super::short_time),
            })
        })
        .collect();
    let roles: Vec<serde_json::Value> = user
        .roles
        .iter()
        .map(|r| json!({"name": r, "revocable": !(is_self && r == admin_role)}))
        .collect();
    json!({
        "href": v.path(&format!("/admin/users/{}", user.id)),
        "id": user.id.to_string(),
        "email": user.email.as_str(),
        "name": super::full_name(user),
        "created_at": super::short_time(user.created_at),
        "last_login": user.last_login.map(super::short_time),
        "is_verified": user.is_verified,
        "is_active": user.is_active,
        "two_factor_enabled": user.two_factor_enabled,
        "failed_login_attempts": user.failed_login_attempts,
        "locked_until": super::locked_until(user),
        "roles": roles,
        "sessions": sessions,
        "passkeys": passkeys,
        "identities": identities_view(detail),
        "providers": !v.app.accounts.identity_providers().is_empty(),
        "is_self": is_self,
    })
}

/// What the page shows of the account's linked identities (`index` names each one's form).
fn identities_view(detail: &AccountDetail) -> Vec<serde_json::Value> {
    detail
        .identities
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "index": i,
                "provider": l.provider,
                "name": l.name,
                "subject": l.subject,
                "email": l.email,
                "linked_at": super::short_time(l.linked_at),
            })
        })
        .collect()
}
