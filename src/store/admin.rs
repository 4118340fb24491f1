//! Operator commands on accounts (`portcullis user …`), as plain functions over a
//! [`UserStore`] so the CLI only parses arguments and prints the answer.
//!
//! Every change that a running gateway caches (roles, activation, 2FA) is also written to
//! the account change feed ([`UserStore::record_user_change`]), which every instance polls,
//! so it holds on every gateway within a second, whatever the session backend.
//!
//! Every change is written to the audit trail with the operator as its actor
//! ([`Actor::Operator`]: the command line has no account); a failure to write it is
//! logged, never the command's answer.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{
    Actor, AuditEvent, AuditFilter, AuditKind, Invitation, NewAuditEvent, NewUser, StoreError,
    User, UserChange, UserStore,
};
use crate::config::is_role_name;
use crate::domain::{Email, EmailError, UserId};

/// One `portcullis user …` subcommand, with its arguments as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    /// `user list [--json]`: every account as a table, or as a JSON array of
    /// [`AccountSummary`].
    List {
        /// JSON instead of the table.
        json: bool,
    },
    /// `user show EMAIL [--json]`: one account in full ([`AccountView`]).
    Show {
        /// The account's address (any case).
        email: String,
        /// JSON instead of `key: value` lines.
        json: bool,
    },
    /// `user grant-role EMAIL ROLE`.
    GrantRole {
        /// The account's address (any case).
        email: String,
        /// The role to grant.
        role: String,
    },
    /// `user revoke-role EMAIL ROLE`.
    RevokeRole {
        /// The account's address (any case).
        email: String,
        /// The role to revoke.
        role: String,
    },
    /// `user deactivate EMAIL`: the account can no longer log in.
    Deactivate {
        /// The account's address (any case).
        email: String,
    },
    /// `user activate EMAIL`: undoes a deactivation.
    Activate {
        /// The account's address (any case).
        email: String,
    },
    /// `user unlock EMAIL`: clears a brute-force lockout and its failure count.
    Unlock {
        /// The account's address (any case).
        email: String,
    },
    /// `user reset-2fa EMAIL`: turns two-factor authentication off, deletes the secret, the
    /// recovery codes and the passkeys and ends every session (for a user who lost their
    /// authenticator).
    ResetTwoFactor {
        /// The account's address (any case).
        email: String,
    },
    /// `user create EMAIL [--role ROLE]…`: an account whose address counts as proven (the
    /// operator vouches for it), whatever `[registration]` says.
    Create {
        /// The address (any case).
        email: String,
        /// Roles to grant, each checked as a role name.
        roles: Vec<String>,
        /// The password, already hashed, or none usable.
        password: InitialPassword,
    },
    /// `user delete EMAIL`: the account goes, with its roles, 2FA, recovery codes, passkeys
    /// and mailed tokens; every session ends.
    Delete {
        /// The account's address (any case).
        email: String,
    },
    /// `user revoke-sessions EMAIL`: every session of the account ends (it may sign in again).
    RevokeSessions {
        /// The account's address (any case).
        email: String,
    },
    /// `user invitations`: every invitation as a table, newest first.
    Invitations,
    /// `user revoke-invitation EMAIL`: the address's pending invitations stop working.
    RevokeInvitation {
        /// The invitee's address (any case).
        email: String,
    },
}

/// The password of an account an operator creates.
#[derive(Clone, PartialEq, Eq)]
pub enum InitialPassword {
    /// The bcrypt hash of a password the operator chose (`--password-stdin`).
    Chosen(String),
    /// The bcrypt hash of a secret nobody holds: no password works until the user sets one
    /// through the reset mail ("Forgot password").
    Unusable(String),
}

impl InitialPassword {
    fn into_hash(self) -> String {
        match self {
            Self::Chosen(hash) | Self::Unusable(hash) => hash,
        }
    }
}

impl std::fmt::Debug for InitialPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Chosen(_) => "Chosen(<redacted>)",
            Self::Unusable(_) => "Unusable",
        })
    }
}

/// Why an operator command did nothing; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The EMAIL argument is not an address.
    #[error("{input:?}: {source}")]
    InvalidEmail {
        /// What was typed.
        input: String,
        /// What is wrong with it.
        source: EmailError,
    },
    /// The ROLE argument cannot be a role name.
    #[error(
        "invalid role {0:?}: use 1 to 64 characters from letters, digits, '-', '_', '.' and ':'"
    )]
    InvalidRole(String),
    /// No account has this address.
    #[error("no such user: {0}")]
    NoSuchUser(Email),
    /// `user create` for an address that already has an account.
    #[error(
        "{0} already has an account (see `portcullis user list`; one whose address is not \
         verified may be someone else's sign-up: `portcullis user delete` it first)"
    )]
    Taken(Email),
    /// `audit --kind` names no audit kind.
    #[error("unknown audit kind {0:?}; one of: {kinds}", kinds = audit_kind_names())]
    InvalidKind(String),
    /// `audit --since` is not an RFC 3339 time.
    #[error("invalid time {0:?}: write it as RFC 3339, such as 2026-12-01T00:00:00Z")]
    InvalidTime(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `portcullis audit`'s filters, as typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// `--user EMAIL`: events about this address's account (or, once it is deleted, about
    /// this address).
    pub user: Option<String>,
    /// `--kind KIND`: an [`AuditKind`] name.
    pub kind: Option<String>,
    /// `--since RFC3339`: events at or after this time.
    pub since: Option<String>,
    /// `--limit N`: at most this many, newest first.
    pub limit: u32,
}

fn audit_kind_names() -> String {
    AuditKind::ALL.map(AuditKind::as_str).join(", ")
}

/// `portcullis audit`: the events `query` selects, newest first, as a table.
pub async fn list_audit_events(
    store: &dyn UserStore,
    query: AuditQuery,
) -> Result<String, AdminError> {
    let mut filter = AuditFilter {
        limit: query.limit,
        ..AuditFilter::default()
    };
    if let Some(kind) = query.kind {
        filter.kind = Some(AuditKind::parse(kind.trim()).ok_or(AdminError::InvalidKind(kind))?);
    }
    if let Some(since) = query.since {
        let at = DateTime::parse_from_rfc3339(since.trim())
            .map_err(|_| AdminError::InvalidTime(since.clone()))?;
        filter.since = Some(at.with_timezone(&Utc));
    }
    if let Some(user) = query.user {
        let email = parse_email(&user)?;
        match store.find_by_email(&email).await? {
            Some(account) => filter.user = Some(account.id),
            None => filter.email = Some(email),
        }
    }
    let events = store.audit_events(&filter).await?;
    Ok(format_audit_table(&events))
}

/// Renders audit events as an aligned table, one line each, with a count.
pub fn format_audit_table(events: &[AuditEvent]) -> String {
    if events.is_empty() {
        return "no audit events\n".into();
    }
    let header = [
        "ID", "TIME", "KIND", "OUTCOME", "ACTOR", "SUBJECT", "CLIENT", "DETAIL",
    ];
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let actor = match e.actor.user_id() {
                Some(id) => format!("{} {id}", e.actor.kind()),
                None => e.actor.kind().to_owned(),
            };
            vec![
                e.id.to_string(),
                format_time(Some(e.at)),
                e.kind.clone(),
                e.outcome.as_str().to_owned(),
                actor,
                dash(e.subject_email.clone().or(e.subject.map(|s| s.to_string()))),
                dash(e.client_ip.clone()),
                if e.detail.is_empty() {
                    "-".into()
                } else {
                    e.detail.clone()
                },
            ]
        })
        .collect();
    let mut out = format_table(&header, &rows);
    let n = events.len();
    out.push_str(&format!("{n} event{}\n", if n == 1 { "" } else { "s" }));
    out
}

/// Runs one command and returns the text to print.
pub async fn run_user_command(
    store: &dyn UserStore,
    cmd: UserCommand,
) -> Result<String, AdminError> {
    match cmd {
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            Ok(if json {
                let summaries: Vec<AccountSummary> = users.iter().map(AccountSummary::of).collect();
                to_json(&summaries)
            } else {
                format_user_table(&users, Utc::now())
            })
        }
        UserCommand::Show { email, json } => {
            let view = account_view(store, &email).await?;
            Ok(if json {
                to_json(&view)
            } else {
                view.to_string()
            })
        }
        UserCommand::GrantRole { email, role } => grant_role(store, &email, &role).await,
        UserCommand::RevokeRole { email, role } => revoke_role(store, &email, &role).await,
        UserCommand::Deactivate { email } => set_active(store, &email, false).await,
        UserCommand::Activate { email } => set_active(store, &email, true).await,
        UserCommand::Unlock { email } => unlock(store, &email).await,
        UserCommand::ResetTwoFactor { email } => reset_two_factor(store, &email).await,
        UserCommand::Create {
            email,
            roles,
            password,
        } => create(store, &email, &roles, password).await,
        UserCommand::Delete { email } => delete(store, &email).await,
        UserCommand::RevokeSessions { email } => revoke_sessions(store, &email).await,
        UserCommand::Invitations => {
            let invitations = store.list_invitations().await?;
            Ok(format_invitation_table(&invitations, Utc::now()))
        }
        UserCommand::RevokeInvitation { email } => {
            let email = parse_email(&email)?;
            Ok(
                match revoke_invitations(store, &email, By::OPERATOR).await? {
                    0 => format!("{email} has no pending invitation"),
                    n => format!("revoked {n} pending invitation(s) of {email}"),
                },
            )
        }
    }
}

/// Revokes the pending invitations of `email`; when there were any, audits it as done by
/// `by` (a failed audit write is a warning, not a failure). Answers how many.
pub async fn revoke_invitations(
    store: &dyn UserStore,
    email: &Email,
    by: By,
) -> Result<u64, StoreError> {
    let revoked = store.revoke_invitations(email).await?;
    if revoked > 0 {
        let mut event = NewAuditEvent::new(AuditKind::InvitationRevoke, by.actor, None);
        event.subject_email = Some(email.clone());
        event.client_ip = by.ip;
        let event = event.detail(format!("{revoked} pending"));
        if let Err(e) = store.record_audit_event(&event).await {
            tracing::warn!(error = %e, "could not write an audit event");
        }
    }
    Ok(revoked)
}

/// An account as `user list --json` gives it: never a hash or a secret.
#[derive(Clone, Debug, Serialize)]
pub struct AccountSummary {
    /// The account's id (JWT `sub`).
    pub id: UserId,
    /// Its address, lower-cased.
    pub email: Email,
    /// Given name (`""` when none).
    pub first_name: String,
    /// Family name (`""` when none).
    pub last_name: String,
    /// Whether the address was proven.
    pub verified: bool,
    /// False once deactivated.
    pub active: bool,
    /// Whether TOTP is on.
    pub two_factor: bool,
    /// Sign-ins are refused until then (RFC 3339), when set and in the future.
    pub locked_until: Option<DateTime<Utc>>,
    /// Wrong guesses counted towards the lockout.
    pub failed_login_attempts: u32,
    /// The last successful sign-in (RFC 3339).
    pub last_login: Option<DateTime<Utc>>,
    /// When the account was made (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Role names, sorted.
    pub roles: Vec<String>,
}

impl AccountSummary {
    /// What of `user` may be shown.
    pub fn of(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            verified: user.is_verified,
            active: user.is_active,
            two_factor: user.two_factor_enabled,
            locked_until: user.locked_until.filter(|t| *t > Utc::now()),
            failed_login_attempts: user.failed_login_attempts,
            last_login: user.last_login,
            created_at: user.created_at,
            roles: user.roles.clone(),
        }
    }
}

/// One account as `user show` gives it: the summary, its passkeys' names and its linked
/// identities (provider, subject, address).
#[derive(Clone, Debug, Serialize)]
pub struct AccountView {
    /// The account itself.
    #[serde(flatten)]
    pub account: AccountSummary,
    /// The names of its passkeys.
    pub passkeys: Vec<String>,
    /// Its identities at identity providers.
    pub linked_identities: Vec<LinkedIdentityView>,
}

/// A linked identity as `user show` gives it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkedIdentityView {
    /// The provider's config `id`.
    pub provider: String,
    /// The provider's `sub`.
    pub subject: String,
    /// The address it last asserted (`""` when none).
    pub email: String,
    /// When it was linked (RFC 3339).
    pub linked_at: DateTime<Utc>,
}

/// `user show`: the account at `email` with its passkeys and linked identities.
pub async fn account_view(store: &dyn UserStore, email: &str) -> Result<AccountView, AdminError> {
    let user = find_user(store, email).await?;
    let passkeys = store.list_passkeys(user.id).await?;
    let linked = store.linked_identities(user.id).await?;
    Ok(AccountView {
        account: AccountSummary::of(&user),
        passkeys: passkeys.into_iter().map(|p| p.name).collect(),
        linked_identities: linked
            .into_iter()
            .map(|l| LinkedIdentityView {
                provider: l.provider,
                subject: l.subject,
                email: l.email,
                linked_at: l.created_at,
            })
            .collect(),
    })
}

impl std::fmt::Display for AccountView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = &self.account;
        let name = format!("{} {}", a.first_name, a.last_name);
        let lines = [
            ("id", a.id.to_string()),
            ("email", a.email.to_string()),
            ("name", dash_if_empty(name.trim())),
            ("verified", yes_no(a.verified).into()),
            ("active", yes_no(a.active).into()),
            ("2fa", yes_no(a.two_factor).into()),
            ("locked until", format_time(a.locked_until)),
            ("failed sign-ins", a.failed_login_attempts.to_string()),
            ("last sign-in", format_time(a.last_login)),
            ("created", format_time(Some(a.created_at))),
            ("roles", dash_if_empty(&a.roles.join(","))),
            ("passkeys", dash_if_empty(&self.passkeys.join(", "))),
        ];
        for (key, value) in lines {
            writeln!(f, "{key:<16}{value}")?;
        }
        for l in &self.linked_identities {
            let email = dash_if_empty(&l.email);
            writeln!(
                f,
                "{:<16}{} {} ({email})",
                "identity", l.provider, l.subject
            )?;
        }
        Ok(())
    }
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.into()
    }
}

/// Pretty JSON with a final newline; the views hold nothing that cannot be written.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// `user set-password`: `user`'s password becomes `password_hash` (already held to the
/// password rules and hashed) and its sessions end everywhere, as after a change by its
/// owner; audited as a password change by `by`. A lockout stays (`user unlock`).
pub async fn set_password(
    store: &dyn UserStore,
    user: &User,
    password_hash: &str,
    by: By,
) -> Result<(), StoreError> {
    store.set_password_hash(user.id, password_hash).await?;
    store
        .record_user_change(user.id, UserChange::SessionsEnded)
        .await?;
    by.audit(store, AuditKind::PasswordChange, user, "set by an operator")
        .await;
    Ok(())
}

/// Who makes an account change, and from where: written into its audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct By {
    /// The operator at the command line, or an administrator.
    pub actor: Actor,
    /// The administrator's client address; `None` at the command line.
    pub ip: Option<IpAddr>,
}

impl By {
    /// An operator at the command line.
    pub const OPERATOR: Self = Self {
        actor: Actor::Operator,
        ip: None,
    };

    /// Writes `kind` on `user` to the audit trail; a failure is logged as a warning (the
    /// change is made, and the caller says so).
    async fn audit(self, store: &dyn UserStore, kind: AuditKind, user: &User, detail: &str) {
        let mut event = NewAuditEvent::new(kind, self.actor, Some((user.id, &user.email)));
        event.client_ip = self.ip;
        if let Err(e) = store.record_audit_event(&event.detail(detail)).await {
            tracing::warn!(error = %e, kind = kind.as_str(), "could not write an audit event");
        }
    }
}

/// Creates an account whose address counts as proven, with `roles` (each a role name), in
/// one transaction; audited. `StoreError::DuplicateEmail` when the address is taken.
pub async fn create_vouched(
    store: &dyn UserStore,
    email: &Email,
    roles: &[String],
    password: InitialPassword,
    by: By,
) -> Result<User, StoreError> {
    let new = NewUser {
        email: email.clone(),
        password_hash: password.into_hash(),
        first_name: String::new(),
        last_name: String::new(),
        language: String::new(),
    };
    let user = store.create_vouched_user(new, roles).await?;
    let roles = if user.roles.is_empty() {
        "no roles".to_owned()
    } else {
        format!("roles {}", user.roles.join(","))
    };
    by.audit(store, AuditKind::UserCreate, &user, &roles).await;
    Ok(user)
}

/// Deletes `user` with its roles, 2FA, recovery codes, passkeys, mailed links and pending
/// invitations, in one transaction with the change-feed entry that ends its sessions on
/// every instance; audited (the trail stays). `false` when it was already gone.
pub async fn delete_account(
    store: &dyn UserStore,
    user: &User,
    by: By,
) -> Result<bool, StoreError> {
    if !store.delete_user(user.id).await? {
        return Ok(false);
    }
    by.audit(store, AuditKind::UserDelete, user, "").await;
    Ok(true)
}

/// Ends every session of `user` on every instance (the change feed); audited with
/// `detail` (what the caller knows of how many ended).
pub async fn end_sessions(
    store: &dyn UserStore,
    user: &User,
    by: By,
    detail: &str,
) -> Result<(), StoreError> {
    store
        .record_user_change(user.id, UserChange::SessionsEnded)
        .await?;
    by.audit(store, AuditKind::SessionsRevoke, user, detail)
        .await;
    Ok(())
}

/// Grants `role` (a role name) to `user`; `false` (and nothing recorded) when it had it.
pub async fn grant_role_to(
    store: &dyn UserStore,
    user: &User,
    role: &str,
    by: By,
) -> Result<bool, StoreError> {
    if !store.grant_role(user.id, role).await? {
        return Ok(false);
    }
    store
        .record_user_change(user.id, UserChange::Updated)
        .await?;
    by.audit(store, AuditKind::RoleGrant, user, role).await;
    Ok(true)
}

/// Revokes `role` from `user`; `false` (and nothing recorded) when it did not have it.
pub async fn revoke_role_from(
    store: &dyn UserStore,
    user: &User,
    role: &str,
    by: By,
) -> Result<bool, StoreError> {
    if !store.revoke_role(user.id, role).await? {
        return Ok(false);
    }
    store
        .record_user_change(user.id, UserChange::Updated)
        .await?;
    by.audit(store, AuditKind::RoleRevoke, user, role).await;
    Ok(true)
}

/// Activates or deactivates `user`; a deactivation also ends its sessions everywhere.
/// `false` (and nothing recorded) when it already was so.
pub async fn set_user_active(
    store: &dyn UserStore,
    user: &User,
    active: bool,
    by: By,
) -> Result<bool, StoreError> {
    if user.is_active == active {
        return Ok(false);
    }
    store.set_active(user.id, active).await?;
    let (change, kind) = if active {
        (UserChange::Updated, AuditKind::UserActivate)
    } else {
        (UserChange::SessionsEnded, AuditKind::UserDeactivate)
    };
    store.record_user_change(user.id, change).await?;
    by.audit(store, kind, user, "").await;
    Ok(true)
}

/// Clears `user`'s lockout and failure count; audited with the count cleared.
pub async fn unlock_user(store: &dyn UserStore, user: &User, by: By) -> Result<(), StoreError> {
    store.unlock(user.id).await?;
    let detail = format!("{} failed attempts cleared", user.failed_login_attempts);
    by.audit(store, AuditKind::UserUnlock, user, &detail).await;
    Ok(())
}

/// Marks `user`'s address as proven (an administrator vouches for it); `false` (and nothing
/// recorded) when it already was.
pub async fn mark_user_verified(
    store: &dyn UserStore,
    user: &User,
    by: By,
) -> Result<bool, StoreError> {
    if user.is_verified {
        return Ok(false);
    }
    store.mark_verified(user.id).await?;
    store
        .record_user_change(user.id, UserChange::Updated)
        .await?;
    by.audit(store, AuditKind::UserVerify, user, "").await;
    Ok(true)
}

/// Turns `user`'s second factors off — the TOTP secret, recovery codes and passkeys go —
/// and ends its sessions everywhere, for a user who lost their authenticator. Done even
/// when 2FA looks off (a half-finished state is cleared all the same). Answers how many
/// passkeys were removed.
pub async fn reset_second_factors(
    store: &dyn UserStore,
    user: &User,
    by: By,
) -> Result<usize, StoreError> {
    store.set_two_factor(user.id, None).await?;
    // Passkeys are second factors too: a user who lost theirs gets back in with the
    // password alone.
    let passkeys = store.list_passkeys(user.id).await?;
    for passkey in &passkeys {
        store.remove_passkey(user.id, passkey.id).await?;
    }
    store
        .record_user_change(user.id, UserChange::SessionsEnded)
        .await?;
    let detail = format!("{} passkeys removed", passkeys.len());
    by.audit(store, AuditKind::TwoFactorReset, user, &detail)
        .await;
    Ok(passkeys.len())
}

/// `user create`: the account, its proven address and its roles in one transaction.
async fn create(
    store: &dyn UserStore,
    email: &str,
    roles: &[String],
    password: InitialPassword,
) -> Result<String, AdminError> {
    let email = parse_email(email)?;
    let mut checked = Vec::with_capacity(roles.len());
    for role in roles {
        checked.push(parse_role(role)?);
    }
    let chosen = matches!(password, InitialPassword::Chosen(_));
    let user = match create_vouched(store, &email, &checked, password, By::OPERATOR).await {
        Err(StoreError::DuplicateEmail) => return Err(AdminError::Taken(email)),
        other => other?,
    };
    let roles = if user.roles.is_empty() {
        "no roles".to_owned()
    } else {
        format!("roles {}", user.roles.join(","))
    };
    let next = if chosen {
        "they sign in with the password given"
    } else {
        "no password works yet: they choose one through \"Forgot password?\" on the sign-in \
         page (POST /api/auth/request-password-reset), which mails them a link"
    };
    Ok(format!(
        "created {} ({}; address verified, {roles}); {next}",
        user.email, user.id
    ))
}

/// `user delete`.
async fn delete(store: &dyn UserStore, email: &str) -> Result<String, AdminError> {
    let user = find_user(store, email).await?;
    if !delete_account(store, &user, By::OPERATOR).await? {
        return Err(AdminError::NoSuchUser(user.email));
    }
    Ok(format!(
        "deleted {} ({}): roles, two-factor secret, recovery codes, passkeys and mailed links \
         with it; its sessions end",
        user.email, user.id
    ))
}

/// `user revoke-sessions`.
async fn revoke_sessions(store: &dyn UserStore, email: &str) -> Result<String, AdminError> {
    let user = find_user(store, email).await?;
    end_sessions(
        store,
        &user,
        By::OPERATOR,
        "on every instance within a second",
    )
    .await?;
    Ok(format!("ending every session of {}", user.email))
}

/// `user grant-role`.
async fn grant_role(store: &dyn UserStore, email: &str, role: &str) -> Result<String, AdminError> {
    let role = parse_role(role)?;
    let user = find_user(store, email).await?;
    Ok(if grant_role_to(store, &user, &role, By::OPERATOR).await? {
        format!("granted role {role} to {}", user.email)
    } else {
        format!("{} already has role {role}", user.email)
    })
}

/// `user revoke-role`.
async fn revoke_role(store: &dyn UserStore, email: &str, role: &str) -> Result<String, AdminError> {
    let role = parse_role(role)?;
    let user = find_user(store, email).await?;
    Ok(
        if revoke_role_from(store, &user, &role, By::OPERATOR).await? {
            format!("revoked role {role} from {}", user.email)
        } else {
            format!("{} does not have role {role}", user.email)
        },
    )
}

/// `user activate` / `user deactivate`.
async fn set_active(
    store: &dyn UserStore,
    email: &str,
    active: bool,
) -> Result<String, AdminError> {
    let user = find_user(store, email).await?;
    let changed = set_user_active(store, &user, active, By::OPERATOR).await?;
    Ok(match (changed, active) {
        (false, true) => format!("{} is already active", user.email),
        (false, false) => format!("{} is already deactivated", user.email),
        (true, true) => format!("activated {}", user.email),
        (true, false) => format!("deactivated {}", user.email),
    })
}

/// `user unlock`: clears the lockout and the failure count, saying what there was.
async fn unlock(store: &dyn UserStore, email: &str) -> Result<String, AdminError> {
    let user = find_user(store, email).await?;
    unlock_user(store, &user, By::OPERATOR).await?;
    Ok(if user.is_locked(Utc::now()) {
        format!(
            "unlocked {} (was locked until {} after {} failed attempts)",
            user.email,
            format_time(user.locked_until),
            user.failed_login_attempts
        )
    } else {
        format!(
            "{} was not locked; failed attempts reset (was {})",
            user.email, user.failed_login_attempts
        )
    })
}

/// `user reset-2fa`.
async fn reset_two_factor(store: &dyn UserStore, email: &str) -> Result<String, AdminError> {
    let user = find_user(store, email).await?;
    let removed = reset_second_factors(store, &user, By::OPERATOR).await?;
    let passkeys = match removed {
        0 => String::new(),
        1 => ", 1 passkey removed".to_owned(),
        n => format!(", {n} passkeys removed"),
    };
    Ok(if user.two_factor_enabled {
        format!(
            "reset two-factor authentication of {}: secret and recovery codes deleted, sessions ended{passkeys}",
            user.email
        )
    } else {
        format!(
            "{} did not have two-factor authentication on; sessions ended{passkeys}",
            user.email
        )
    })
}

fn parse_role(role: &str) -> Result<String, AdminError> {
    let role = role.trim();
    if is_role_name(role) {
        Ok(role.to_owned())
    } else {
        Err(AdminError::InvalidRole(role.to_owned()))
    }
}

fn parse_email(input: &str) -> Result<Email, AdminError> {
    Email::parse(input).map_err(|source| AdminError::InvalidEmail {
        input: input.to_owned(),
        source,
    })
}

/// The account with the address `input`, or [`AdminError::NoSuchUser`].
pub async fn find_user(store: &dyn UserStore, input: &str) -> Result<User, AdminError> {
    let email = parse_email(input)?;
    store
        .find_by_email(&email)
        .await?
        .ok_or(AdminError::NoSuchUser(email))
}

/// A time as the CLI's tables show it (`2026-01-31 14:05:09Z`), `-` for none.
pub fn format_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Renders accounts as an aligned table, one line per user, with a header and a count.
pub fn format_user_table(users: &[User], now: DateTime<Utc>) -> String {
    if users.is_empty() {
        return "no users\n".into();
    }
    let header = [
        "ID", "EMAIL", "VERIFIED", "ACTIVE", "2FA", "LOCKED", "ROLES",
    ];
    let rows: Vec<[String; 7]> = users
        .iter()
        .map(|u| {
            let locked = if u.is_locked(now) {
                format!("until {}", format_time(u.locked_until))
            } else {
                "no".into()
            };
            let roles = if u.roles.is_empty() {
                "-".into()
            } else {
                u.roles.join(",")
            };
            [
                u.id.to_string(),
                u.email.to_string(),
                yes_no(u.is_verified).into(),
                yes_no(u.is_active).into(),
                yes_no(u.two_factor_enabled).into(),
                locked,
                roles,
            ]
        })
        .collect();

    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    let mut out = format_table(&header, &rows);
    let n = users.len();
    out.push_str(&format!("{n} user{}\n", if n == 1 { "" } else { "s" }));
    out
}

/// Renders invitations as an aligned table (address, state, roles, times) with a count.
pub fn format_invitation_table(invitations: &[Invitation], now: DateTime<Utc>) -> String {
    if invitations.is_empty() {
        return "no invitations\n".into();
    }
    let header = ["EMAIL", "STATE", "ROLES", "CREATED", "EXPIRES", "USED"];
    let rows: Vec<Vec<String>> = invitations
        .iter()
        .map(|i| {
            let roles = if i.roles.is_empty() {
                "-".into()
            } else {
                i.roles.join(",")
            };
            vec![
                i.email.to_string(),
                i.state(now).as_str().into(),
                roles,
                format_time(Some(i.created_at)),
                format_time(Some(i.expires_at)),
                format_time(i.used_at),
            ]
        })
        .collect();
    let mut out = format_table(&header, &rows);
    let n = invitations.len();
    out.push_str(&format!(
        "{n} invitation{}\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

/// Renders a header and rows as columns aligned by two spaces, one line each (the last
/// column unpadded); a row has as many cells as the header.
pub fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut cells = cells.zip(&widths).peekable();
        while let Some((cell, w)) = cells.next() {
            out.push_str(cell);
            if cells.peek().is_some() {
                let pad = w - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    push_line(&mut header.iter().copied());
    for row in rows {
        push_line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_restricted() {
        for ok in ["admin", "billing-reader", "team:ops", "v1.editor", "A_B"] {
            assert!(is_role_name(ok), "{ok}");
        }
        for bad in ["", "a,b", "has space", "ünïcode", "x\n", &"r".repeat(65)] {
            assert!(!is_role_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn empty_table_says_so() {
        assert_eq!(format_user_table(&[], Utc::now()), "no users\n");
    }

    #[test]
    fn invalid_email_error_names_the_input() {
        let err = AdminError::InvalidEmail {
            input: "bob".into(),
            source: EmailError::Invalid,
        };
        assert_eq!(
            err.to_string(),
            "\"bob\": Email must be a valid address such as name@example.com."
        );
    }
}
