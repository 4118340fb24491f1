//! The audit trail's vocabulary: what happened ([`AuditKind`], a closed list), who did it
//! ([`Actor`]), how it ended ([`AuditOutcome`]), an event to write ([`NewAuditEvent`]) and
//! one read back ([`AuditEvent`]), and the query over them ([`AuditFilter`]).
//!
//! An event never holds a secret: no password, token, code, hash or query string. Its
//! `detail` is a short note chosen by the code that writes it (a role, a factor, a count).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{Email, UserId};

/// How long events are kept when `[audit] retention` is not set: a year.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 86_400);
/// The most events one [`UserStore::audit_events`](super::UserStore::audit_events) call answers.
pub const MAX_AUDIT_PAGE: u32 = 1000;
/// The most characters of `detail` stored; longer notes are cut.
pub const MAX_DETAIL_CHARS: usize = 200;

/// What happened. The list is closed: each value is one `kind` column value
/// ([`AuditKind::as_str`]), and the CLI's `--kind` takes the same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// A sign-in with a password (and second factor), a passkey or an identity provider:
    /// success, a wrong guess or a callback that failed a check (`failure`) or a refusal
    /// (`refused`: locked, deactivated, no account for the identity).
    SignIn,
    /// A wrong guess locked the account.
    Lockout,
    /// A signed-in user proving it again (current password or code) before a security
    /// change: recorded when refused or wrong; the change itself has its own kind.
    StepUp,
    /// An account registered by its owner.
    Registration,
    /// An address proven through its mailed link.
    EmailVerification,
    /// A password changed by its owner (after the step-up), or set by an operator
    /// (`user set-password`).
    PasswordChange,
    /// A password reset link was asked for an existing account (or mailed by an operator:
    /// `user send-reset`).
    PasswordResetRequest,
    /// A password set through a mailed reset link.
    PasswordReset,
    /// TOTP turned on (with new recovery codes).
    TwoFactorEnable,
    /// TOTP turned off by its owner.
    TwoFactorDisable,
    /// New recovery codes made by the owner (after the step-up with a code): the old
    /// ones stop working.
    RecoveryCodesRegenerate,
    /// A passkey added.
    PasskeyAdd,
    /// A passkey renamed.
    PasskeyRename,
    /// A passkey removed.
    PasskeyRemove,
    /// One session ended by its owner (sign-out, or one session from the list).
    SessionEnd,
    /// Every session of the account ended by its owner.
    LogoutAll,
    /// The account deactivated by its owner.
    SelfDeactivate,
    /// `user create`.
    UserCreate,
    /// `user delete`.
    UserDelete,
    /// `user grant-role`.
    RoleGrant,
    /// `user revoke-role`.
    RoleRevoke,
    /// `user activate`.
    UserActivate,
    /// `user deactivate`.
    UserDeactivate,
    /// `user unlock`.
    UserUnlock,
    /// `user reset-2fa`.
    TwoFactorReset,
    /// `user revoke-sessions`.
    SessionsRevoke,
    /// An invitation created (for the invitee's address).
    InvitationCreate,
    /// An invitation revoked.
    InvitationRevoke,
    /// An invitation used to create an account.
    InvitationAccept,
    /// An administrator or operator marked an account's address as proven.
    UserVerify,
    /// A request to the admin API or console refused: no admin role, or a stale second factor.
    AdminRefused,
    /// A refresh token presented again after its rotation: the session ended.
    RefreshReuse,
    /// The account's names changed.
    ProfileUpdate,
    /// An identity at an identity provider linked to the account (from the account page, or
    /// by a verified address): the provider and subject; refused links too.
    IdentityLink,
    /// A linked identity detached, by the owner or an administrator: the provider and subject.
    IdentityUnlink,
}

impl AuditKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Self; 35] = [
        Self::SignIn,
        Self::Lockout,
        Self::StepUp,
        Self::Registration,
        Self::EmailVerification,
        Self::PasswordChange,
        Self::PasswordResetRequest,
        Self::PasswordReset,
        Self::TwoFactorEnable,
        Self::TwoFactorDisable,
        Self::RecoveryCodesRegenerate,
        Self::PasskeyAdd,
        Self::PasskeyRename,
        Self::PasskeyRemove,
        Self::SessionEnd,
        Self::LogoutAll,
        Self::SelfDeactivate,
        Self::UserCreate,
        Self::UserDelete,
        Self::RoleGrant,
        Self::RoleRevoke,
        Self::UserActivate,
        Self::UserDeactivate,
        Self::UserUnlock,
        Self::TwoFactorReset,
        Self::SessionsRevoke,
        Self::InvitationCreate,
        Self::InvitationRevoke,
        Self::InvitationAccept,
        Self::UserVerify,
        Self::AdminRefused,
        Self::RefreshReuse,
        Self::ProfileUpdate,
        Self::IdentityLink,
        Self::IdentityUnlink,
    ];

    /// The value stored in the `kind` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::Lockout => "lockout",
            Self::StepUp => "step_up",
            Self::Registration => "registration",
            Self::EmailVerification => "email_verification",
            Self::PasswordChange => "password_change",
            Self::PasswordResetRequest => "password_reset_request",
            Self::PasswordReset => "password_reset",
            Self::TwoFactorEnable => "two_factor_enable",
            Self::TwoFactorDisable => "two_factor_disable",
            Self::RecoveryCodesRegenerate => "recovery_codes_regenerate",
            Self::PasskeyAdd => "passkey_add",
            Self::PasskeyRename => "passkey_rename",
            Self::PasskeyRemove => "passkey_remove",
            Self::SessionEnd => "session_end",
            Self::LogoutAll => "logout_all",
            Self::SelfDeactivate => "self_deactivate",
            Self::UserCreate => "user_create",
            Self::UserDelete => "user_delete",
            Self::RoleGrant => "role_grant",
            Self::RoleRevoke => "role_revoke",
            Self::UserActivate => "user_activate",
            Self::UserDeactivate => "user_deactivate",
            Self::UserUnlock => "user_unlock",
            Self::TwoFactorReset => "two_factor_reset",
            Self::SessionsRevoke => "sessions_revoke",
            Self::InvitationCreate => "invitation_create",
            Self::InvitationRevoke => "invitation_revoke",
            Self::InvitationAccept => "invitation_accept",
            Self::UserVerify => "user_verify",
            Self::AdminRefused => "admin_refused",
            Self::RefreshReuse => "refresh_reuse",
            Self::ProfileUpdate => "profile_update",
            Self::IdentityLink => "identity_link",
            Self::IdentityUnlink => "identity_unlink",
        }
    }

    /// The kind named `name` (an [`as_str`](Self::as_str) value), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// It was done.
    Success,
    /// A wrong password, code or link.
    Failure,
    /// Refused by a rule (a lock, a deactivated account, a policy) before anything was checked.
    Refused,
}

impl AuditOutcome {
    /// The value stored in the `outcome` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Refused => "refused",
        }
    }

    /// Reads the `outcome` column (a CHECK keeps it to the three values).
    pub(crate) fn from_db(value: &str) -> Self {
        match value {
            "success" => Self::Success,
            "refused" => Self::Refused,
            _ => Self::Failure,
        }
    }
}

/// Who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// The account's owner, signed in (or proving it: a right password, a mailed link).
    User(UserId),
    /// An operator at the command line (no account).
    Operator,
    /// An administrator acting through the admin API or console.
    Admin(UserId),
    /// Someone not (yet) known: a wrong guess, a registration, a reset request.
    Anonymous,
}

impl Actor {
    /// The value stored in the `actor_kind` column.
    pub const fn kind(self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Operator => "operator",
            Self::Admin(_) => "admin",
            Self::Anonymous => "anonymous",
        }
    }

    /// The acting account, if there is one.
    pub const fn user_id(self) -> Option<UserId> {
        match self {
            Self::User(id) | Self::Admin(id) => Some(id),
            Self::Operator | Self::Anonymous => None,
        }
    }

    /// Rebuilds an actor from its columns; an unknown kind, or a user kind without an id,
    /// reads as anonymous.
    pub(crate) fn from_db(kind: &str, user: Option<UserId>) -> Self {
        match (kind, user) {
            ("user", Some(id)) => Self::User(id),
            ("admin", Some(id)) => Self::Admin(id),
            ("operator", _) => Self::Operator,
            _ => Self::Anonymous,
        }
    }
}

/// An event to append; the database stamps its id and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// Who did it.
    pub actor: Actor,
    /// The account it happened to, when there is one.
    pub subject: Option<UserId>,
    /// The subject's address at the time (or the address a failed sign-in named).
    pub subject_email: Option<Email>,
    /// The client address, when the event came over the network.
    pub client_ip: Option<IpAddr>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// A short note (at most [`MAX_DETAIL_CHARS`]): never a secret, token or query string.
    pub detail: String,
}

impl NewAuditEvent {
    /// A successful `kind` by `actor` on `subject`, with no client address and no note.
    pub fn new(kind: AuditKind, actor: Actor, subject: Option<(UserId, &Email)>) -> Self {
        Self {
            kind,
            actor,
            subject: subject.map(|(id, _)| id),
            subject_email: subject.map(|(_, email)| email.clone()),
            client_ip: None,
            outcome: AuditOutcome::Success,
            detail: String::new(),
        }
    }

    /// The same event with another outcome.
    pub fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// The same event from `ip`.
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// The same event with a note (cut to [`MAX_DETAIL_CHARS`]).
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        let detail: String = detail.into();
        self.detail = detail.chars().take(MAX_DETAIL_CHARS).collect();
        self
    }
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Its position in the trail (increasing per database): the pagination cursor.
    pub id: i64,
    /// When it was written, by the database's clock.
    pub at: DateTime<Utc>,
    /// The `kind` column as stored: an [`AuditKind::as_str`] value (text, so an older binary
    /// reads a newer one's events).
    pub kind: String,
    /// Who did it.
    pub actor: Actor,
    /// The account it happened to, if any; it may no longer exist.
    pub subject: Option<UserId>,
    /// The subject's address at the time, if any.
    pub subject_email: Option<String>,
    /// The client address, if any.
    pub client_ip: Option<String>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The short note, `""` when none.
    pub detail: String,
}

/// Which events [`UserStore::audit_events`](super::UserStore::audit_events) answers: all
/// the given conditions hold; newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events whose subject is this account.
    pub user: Option<UserId>,
    /// Events whose subject's address was this one (for accounts since deleted).
    pub email: Option<Email>,
    /// Events of this kind.
    pub kind: Option<AuditKind>,
    /// Events at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Events before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Events older than this id (the last id of the previous page).
    pub before_id: Option<i64>,
    /// At most this many events (0 is taken as 1; capped at [`MAX_AUDIT_PAGE`]).
    pub limit: u32,
}
