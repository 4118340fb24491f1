//! The admin console: server-rendered pages under `{portal.path_prefix}/admin` for the
//! accounts, one account, the invitations and the audit trail, over the account core's
//! admin operations ([`crate::accounts::admin`]) — the ones the admin API calls.
//!
//! Every request passes one gate ([`standing`]): signed in (else the sign-in page, coming
//! back here), the admin role (else a 403 page, written to the audit trail) and a second
//! factor proven within `admin.max_auth_age` in this session (else the step-up page, which
//! comes back to the page asked for). Forms are the portal's: CSRF-checked before anything
//! else, answered by a 303 back to their page with a notice (`?done=`), or by the page again
//! with the problems next to the fields.

mod audit;
mod invitations;
mod step_up;
mod user;
mod users;

use std::collections::HashMap;

use http::{Method, StatusCode};
use minijinja::Value;
use serde_json::json;

use super::{Feedback, Form, Page, Visit, to_value};
use crate::accounts::AccountError;
use crate::accounts::admin::Administrator;
use crate::api::endpoints::Limit;
use crate::domain::UserId;
use crate::reply::Reply;
use crate::session::SessionId;
use crate::store::{StoreError, User};

/// Notices a console page shows after a form succeeded (`?done=`), with their texts.
const NOTICES: &[(&str, &str)] = &[
    ("created", "admin_notice_created"),
    ("deleted", "admin_notice_deleted"),
    ("activated", "admin_notice_activated"),
    ("deactivated", "admin_notice_deactivated"),
    ("unlocked", "admin_notice_unlocked"),
    ("two_factor_reset", "admin_notice_two_factor_reset"),
    ("verified", "admin_notice_verified"),
    ("role_granted", "admin_notice_role_granted"),
    ("role_revoked", "admin_notice_role_revoked"),
    ("session_ended", "admin_notice_session_ended"),
    ("sessions_ended", "admin_notice_sessions_ended"),
    ("unchanged", "admin_notice_unchanged"),
    ("invited", "admin_notice_invited"),
    ("invitation_revoked", "admin_notice_invitation_revoked"),
    ("identity_unlinked", "admin_notice_identity_unlinked"),
];

/// Whether `sub` (a path below the portal's prefix) is the console's.
pub(super) fn owns(sub: &str) -> bool {
    sub == "/admin" || sub.starts_with("/admin/")
}

/// What a path under `{prefix}/admin` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// `/admin`: the accounts, a search and the form for a new one (GET).
    Users,
    /// `/admin/users`: a new account (POST).
    NewUser,
    /// `/admin/users/{id}`: one account (GET).
    User(UserId),
    /// `/admin/users/{id}/{action}`: a change to one account (POST).
    UserAction(UserId, user::Action),
    /// `/admin/invitations`: the invitations (GET), a new one (POST).
    Invitations,
    /// `/admin/invitations/revoke`: an address's pending invitations revoked (POST).
    RevokeInvitations,
    /// `/admin/audit`: the audit trail (GET).
    Audit,
    /// `/admin/step-up`: the second factor proven again (GET, POST).
    StepUp,
}

impl Route {
    /// The route of `sub`; `None` for a path the console does not have (404).
    fn parse(sub: &str) -> Option<Self> {
        let rest = sub.strip_prefix("/admin")?;
        Some(match rest {
            "" => Self::Users,
            "/users" => Self::NewUser,
            "/invitations" => Self::Invitations,
            "/invitations/revoke" => Self::RevokeInvitations,
            "/audit" => Self::Audit,
            "/step-up" => Self::StepUp,
            _ => {
                let rest = rest.strip_prefix("/users/")?;
                let (id, action) = match rest.split_once('/') {
                    Some((id, action)) => (id, Some(action)),
                    None => (rest, None),
                };
                // One spelling per account: the hyphenated lower-case UUID.
                let id = id.parse::<UserId>().ok().filter(|u| u.to_string() == id)?;
                match action {
                    None => Self::User(id),
                    Some(action) => Self::UserAction(id, user::Action::parse(action)?),
                }
            }
        })
    }

    /// Whether a GET shows a page here.
    fn shows_page(self) -> bool {
        matches!(
            self,
            Self::Users | Self::User(_) | Self::Invitations | Self::Audit | Self::StepUp
        )
    }

    /// Whether a POST takes a form here.
    fn takes_form(self) -> bool {
        !matches!(self, Self::Users | Self::User(_) | Self::Audit)
    }

    /// The `Allow` of a 405 here.
    fn allow(self) -> &'static str {
        match (self.shows_page(), self.takes_form()) {
            (true, true) => "GET, HEAD, POST",
            (true, false) => "GET, HEAD",
            _ => "POST",
        }
    }

    /// The console page (below the prefix) a form posted here belongs to: where a
    /// sign-in or a step-up in between comes back to.
    fn page(self) -> String {
        match self {
            Self::User(id) | Self::UserAction(id, _) => format!("/admin/users/{id}"),
            Self::Invitations | Self::RevokeInvitations => "/admin/invitations".to_owned(),
            Self::Audit => "/admin/audit".to_owned(),
            Self::Users | Self::NewUser | Self::StepUp => "/admin".to_owned(),
        }
    }
}

/// Answers one request under `{prefix}/admin` (`sub` is the path below the prefix).
pub(super) async fn dispatch(v: &mut Visit<'_>, sub: &str) -> Page {
    let Some(route) = Route::parse(sub) else {
        return v.not_found();
    };
    let method = v.request.method.clone();
    if (method == Method::GET || method == Method::HEAD) && route.shows_page() {
        if v.language_chosen {
            v.remember_language().await;
        }
        return show(v, route).await;
    }
    if method == Method::POST && route.takes_form() {
        return match v.read_form() {
            Ok(form) => take(v, route, form).await,
            Err(refusal) => refusal,
        };
    }
    v.method_not_allowed(route.allow())
}

/// Shows the page of `route` to an administrator.
async fn show(v: &mut Visit<'_>, route: Route) -> Page {
    if route == Route::StepUp {
        return match standing(v, route, Limit::Global).await {
            Ok(standing) => step_up::page(v, &standing).await,
            Err(page) => page,
        };
    }
    let admin = match administrator(v, route).await {
        Ok(admin) => admin,
        Err(page) => return page,
    };
    match route {
        Route::Users => users::page(v, &admin).await,
        Route::User(id) => user::page(v, &admin, id).await,
        Route::Invitations => invitations::page(v, &admin).await,
        Route::Audit => audit::page(v, &admin).await,
        _ => v.not_found(),
    }
}

/// Takes the form posted to `route`, CSRF already checked.
async fn take(v: &mut Visit<'_>, route: Route, form: Form) -> Page {
    if route == Route::StepUp {
        // A guess at a code: the per-IP limits of a sign-in.
        return match standing(v, route, Limit::Login).await {
            Ok(standing) => step_up::prove(v, &standing, &form).await,
            Err(page) => page,
        };
    }
    let admin = match administrator(v, route).await {
        Ok(admin) => admin,
        Err(page) => return page,
    };
    match route {
        Route::NewUser => users::create(v, &admin, &form).await,
        Route::UserAction(id, action) => user::act(v, &admin, id, action, &form).await,
        Route::Invitations => invitations::create(v, &admin, &form).await,
        Route::RevokeInvitations => invitations::revoke(v, &admin, &form).await,
        _ => v.not_found(),
    }
}

/// A signed-in holder of the admin role: with a second factor proven recently enough in
/// this session, or not (the step-up page takes either).
enum Standing {
    /// May use the console.
    Fresh(Administrator),
    /// Must prove the second factor again first: the account and its session.
    Stale(User, SessionId),
}

impl Standing {
    /// The account and the session the request came with.
    fn parts(&self) -> (&User, SessionId) {
        match self {
            Self::Fresh(admin) => (admin.user(), admin.session()),
            Self::Stale(user, session) => (user, *session),
        }
    }
}

/// The administrator behind this request, or the page that answers instead: the sign-in
/// page, the step-up page (coming back here), a 403.
async fn administrator(v: &mut Visit<'_>, route: Route) -> Result<Administrator, Page> {
    match standing(v, route, Limit::Global).await? {
        Standing::Fresh(admin) => Ok(admin),
        Standing::Stale(..) => {
            let back = back_to(v, route);
            let step_up = v.path_with_return("/admin/step-up", Some(&back));
            Err(v.redirect(&step_up))
        }
    }
}

/// Where this request stands, after the per-IP limits of `limit`: signed in (else the
/// sign-in page) with the admin role (else a 403 page, audited).
async fn standing(v: &mut Visit<'_>, route: Route, limit: Limit) -> Result<Standing, Page> {
    let Some(token) = v.signed_in().await else {
        return Err(to_sign_in(v, route));
    };
    let caller = match v.caller_within(&token, limit).await {
        Ok(caller) => caller,
        // The sign-in ended, or its account was deactivated: sign in again.
        Err(refusal)
            if refusal.status == StatusCode::UNAUTHORIZED
                || refusal.status == StatusCode::FORBIDDEN =>
        {
            v.end_sign_in();
            return Err(to_sign_in(v, route));
        }
        Err(refusal) => return Err(failure(v, &refusal)),
    };
    let (user, session) = (caller.user.id, caller.session.id);
    match v.app.accounts.administrator(user, session).await {
        Ok(admin) => Ok(Standing::Fresh(admin)),
        Err(AccountError::StepUpRequired) => Ok(Standing::Stale(caller.user, session)),
        Err(AccountError::NotAdministrator) => Err(forbidden(v, route, &caller.user)),
        Err(AccountError::SessionNotFound | AccountError::Deactivated) => {
            v.end_sign_in();
            Err(to_sign_in(v, route))
        }
        Err(e) => {
            let refusal = v.refusal(e);
            Err(failure(v, &refusal))
        }
    }
}

/// The page this request asked for (a GET's own path and query; a form's page), to come
/// back to after a sign-in or a step-up.
fn back_to(v: &Visit<'_>, route: Route) -> String {
    if v.request.method == Method::POST {
        return v.path(&route.page());
    }
    match v.request.query.as_deref().filter(|q| !q.is_empty()) {
        Some(query) => format!("{}?{query}", v.request.path),
        None => v.request.path.clone(),
    }
}

/// Sends a browser that is not signed in to the sign-in page, to come back here.
fn to_sign_in(v: &mut Visit<'_>, route: Route) -> Page {
    let back = back_to(v, route);
    let login = v.path_with_return("/login", Some(&back));
    v.redirect(&login)
}

/// The 403 page for a signed-in account without the admin role; the refusal is audited.
fn forbidden(v: &mut Visit<'_>, route: Route, user: &User) -> Page {
    let what = format!("console {} {}", v.request.method, v.path(&route.page()));
    let client = v.client();
    v.app
        .accounts
        .audit_admin_refusal(Some(user), &what, &AccountError::NotAdministrator, &client);
    let account = v.path("/account");
    v.message(
        StatusCode::FORBIDDEN,
        "admin_forbidden_title",
        &["admin_forbidden_text"],
        Some((account, "back_to_account")),
    )
}

/// A page for a refusal that is not about the form (a backend down, a rate limit).
fn failure(v: &mut Visit<'_>, response: &Reply) -> Page {
    let key = super::error_key(response);
    let back = v.path("/admin");
    v.message(
        response.status,
        "error_title",
        &[key],
        Some((back, "admin_back_to_console")),
    )
}

/// The page for an account that does not exist (any more).
fn no_such_account(v: &mut Visit<'_>) -> Page {
    let back = v.path("/admin");
    v.message(
        StatusCode::NOT_FOUND,
        "admin_no_account_title",
        &["admin_no_account_text"],
        Some((back, "admin_back_to_console")),
    )
}

/// The notice of `?done=`, when it names one.
fn notice(v: &Visit<'_>) -> Feedback {
    let notice = v
        .query("done")
        .and_then(|d| NOTICES.iter().find(|(name, _)| *name == d))
        .map(|(_, key)| v.t(key));
    Feedback {
        notice,
        ..Feedback::default()
    }
}

/// A 303 to the console page `sub` with the notice `done`.
fn done(v: &mut Visit<'_>, sub: &str, done: &str) -> Page {
    let target = format!("{}?done={done}", v.path(sub));
    v.redirect(&target)
}

/// The status and the problems of a refused form, in this language: each field's next to
/// it (`field_id` maps the core's field names to this page's input ids), or one message.
fn refused_form(
    v: &mut Visit<'_>,
    error: AccountError,
    field_id: impl Fn(&str) -> String,
) -> (StatusCode, Feedback) {
    let (status, own) = match &error {
        AccountError::OwnAccount => (StatusCode::CONFLICT, "admin_error_own_account"),
        AccountError::SessionNotFound => (StatusCode::NOT_FOUND, "admin_error_session_gone"),
        AccountError::Store(StoreError::DuplicateEmail) => {
            let mut feedback = Feedback::default();
            let message = v.t("admin_error_email_taken");
            feedback.errors.insert(field_id("email"), vec![message]);
            return (StatusCode::CONFLICT, feedback);
        }
        _ => {
            let refusal = v.refusal(error);
            return (refusal.status, v.feedback(&refusal, field_id));
        }
    };
    let feedback = Feedback {
        form_error: Some(v.t(own)),
        ..Feedback::default()
    };
    (status, feedback)
}

/// The console's sections, for its navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Users,
    Invitations,
    Audit,
    None,
}

/// Renders a console page: `template` with the console's navigation (`current` marked),
/// the wide layout and `extra`.
fn render(
    v: &mut Visit<'_>,
    template: &str,
    status: StatusCode,
    title_key: &str,
    current: Section,
    feedback: Feedback,
    mut extra: Vec<(&'static str, Value)>,
) -> Page {
    let sections = [
        (Section::Users, "/admin", "admin_nav_users"),
        (
            Section::Invitations,
            "/admin/invitations",
            "admin_nav_invitations",
        ),
        (Section::Audit, "/admin/audit", "admin_nav_audit"),
        (Section::None, "/account", "admin_nav_account"),
    ];
    let nav: Vec<serde_json::Value> = sections
        .iter()
        .map(|(section, sub, key)| {
            json!({
                "href": v.path(sub),
                "text": v.t(key),
                "current": *section == current && current != Section::None,
            })
        })
        .collect();
    extra.push(("console_nav", to_value(nav)));
    extra.push(("wide", Value::from(true)));
    v.render(template, status, title_key, feedback, extra)
}

/// The addresses of those of the accounts `ids` that exist, to name who did what.
async fn emails_of(
    v: &Visit<'_>,
    admin: &Administrator,
    ids: Vec<UserId>,
) -> HashMap<UserId, String> {
    let mut found = HashMap::new();
    for id in ids {
        if let Ok(detail) = v.app.accounts.account_detail(admin, id).await {
            found.insert(id, detail.user.email.into_string());
        }
    }
    found
}

/// An account's first and last name as one line (`""` when it has none).
fn full_name(user: &User) -> String {
    format!("{} {}", user.first_name, user.last_name)
        .trim()
        .to_owned()
}

/// When the account's lock ends, while it is locked.
fn locked_until(user: &User) -> Option<String> {
    user.locked_until
        .filter(|until| *until > chrono::Utc::now())
        .map(short_time)
}

/// A time as the console shows it: "2025-01-31 14:05 UTC".
fn short_time(time: chrono::DateTime<chrono::Utc>) -> String {
    super::pages::short_time(time)
}

/// Role names as typed in a form: separated by commas or spaces, each once, sorted. The
/// core refuses a name that cannot be a role.
fn role_names(text: &str) -> Vec<String> {
    let mut roles: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_console_paths_and_nothing_else() {
        let id = UserId::random();
        assert_eq!(Route::parse("/admin"), Some(Route::Users));
        assert_eq!(Route::parse("/admin/users"), Some(Route::NewUser));
        assert_eq!(
            Route::parse(&format!("/admin/users/{id}")),
            Some(Route::User(id))
        );
        assert_eq!(
            Route::parse(&format!("/admin/users/{id}/unlock")),
            Some(Route::UserAction(id, user::Action::Unlock))
        );
        assert_eq!(Route::parse("/admin/step-up"), Some(Route::StepUp));
        let upper = id.to_string().to_uppercase();
        for path in [
            "/admin/nothing".to_owned(),
            "/admin/users/42".to_owned(),
            format!("/admin/users/{upper}"),
            format!("/admin/users/{}", id.as_uuid().simple()),
            format!("/admin/users/{id}/explode"),
            format!("/admin/users/{id}/unlock/again"),
            "/administrator".to_owned(),
        ] {
            assert_eq!(Route::parse(&path), None, "{path}");
        }
        assert!(owns("/admin") && owns("/admin/x") && !owns("/administrator"));
    }

    #[test]
    fn each_route_allows_its_methods() {
        assert_eq!(Route::Users.allow(), "GET, HEAD");
        assert_eq!(Route::NewUser.allow(), "POST");
        assert_eq!(Route::Invitations.allow(), "GET, HEAD, POST");
        assert_eq!(Route::StepUp.allow(), "GET, HEAD, POST");
        assert_eq!(Route::Audit.allow(), "GET, HEAD");
    }

    #[test]
    fn every_kind_outcome_actor_and_state_has_a_text_in_every_language() {
        use crate::store::{Actor, AuditKind, AuditOutcome, InvitationState};
        let catalogs = crate::i18n::Catalogs::load(None, "en").expect("catalogues");
        let mut keys: Vec<String> = AuditKind::ALL
            .iter()
            .map(|k| format!("audit_kind_{k}"))
            .collect();
        for outcome in [
            AuditOutcome::Success,
            AuditOutcome::Failure,
            AuditOutcome::Refused,
        ] {
            keys.push(format!("audit_outcome_{}", outcome.as_str()));
        }
        let id = UserId::random();
        for actor in [
            Actor::User(id),
            Actor::Admin(id),
            Actor::Operator,
            Actor::Anonymous,
        ] {
            keys.push(format!("audit_actor_{}", actor.kind()));
        }
        for state in [
            InvitationState::Pending,
            InvitationState::Used,
            InvitationState::Revoked,
            InvitationState::Expired,
        ] {
            keys.push(format!("admin_state_{}", state.as_str()));
        }
        keys.extend(NOTICES.iter().map(|(_, key)| (*key).to_owned()));
        for catalog in catalogs.all() {
            for key in &keys {
                assert_ne!(catalog.text(key), key, "{} lacks {key}", catalog.code);
            }
        }
    }

    #[test]
    fn role_names_are_split_on_commas_and_spaces() {
        assert_eq!(
            role_names(" ops, admin  ops,,billing "),
            ["admin", "billing", "ops"]
        );
        assert!(role_names(" , ").is_empty());
    }
}
