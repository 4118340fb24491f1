//! The stored form of an identity at an `[[identity_providers]]` entry linked to an account:
//! (provider, subject), never an address.

use chrono::{DateTime, Utc};

use crate::domain::UserId;

/// An identity to link: which provider, its stable subject, and the address it asserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLinkedIdentity {
    /// The account it signs in to.
    pub user_id: UserId,
    /// The provider's config `id`.
    pub provider: String,
    /// The provider's `sub` (GitHub: its numeric user id).
    pub subject: String,
    /// The address the provider asserted, for display; `""` when none.
    pub email: String,
}

/// A linked identity as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// The account it signs in to.
    pub user_id: UserId,
    /// The provider's config `id`.
    pub provider: String,
    /// The provider's `sub`.
    pub subject: String,
    /// The address the provider last asserted; `""` when none.
    pub email: String,
    /// When it was linked.
    pub created_at: DateTime<Utc>,
    /// When it was last used to sign in.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The roles `role_mapping` granted through it (sorted): the only ones a sign-in
    /// through it may take back.
    pub mapped_roles: Vec<String>,
}

/// What [`UserStore::apply_role_mapping`](super::UserStore::apply_role_mapping) changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedRoles {
    /// Roles the account lacked and now holds through the mapping (recorded as mapped).
    pub granted: Vec<String>,
    /// Roles recorded as mapped that the provider no longer gives, taken back.
    pub revoked: Vec<String>,
}

impl MappedRoles {
    /// Whether the account's roles changed.
    pub fn changed(&self) -> bool {
        !self.granted.is_empty() || !self.revoked.is_empty()
    }
}

/// What a password reset removed because it proved an address that was unproven until
/// then ([`UserStore::reset_password`](super::UserStore::reset_password)): whatever the
/// account's first registrant planted, who need not own the mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordReset {
    /// The address was unproven before this reset (and the rest below was removed).
    pub proved_address: bool,
    /// Linked identities removed.
    pub identities: u64,
    /// Passkeys removed.
    pub passkeys: u64,
    /// Whether a TOTP secret was removed (two-factor turned off).
    pub totp: bool,
    /// Recovery codes removed.
    pub recovery_codes: u64,
    /// Roles `role_mapping` had granted through the removed identities, taken back (sorted).
    pub mapped_roles: Vec<String>,
}

impl PasswordReset {
    /// The audit trail's note on what was removed; `None` when the address was proven
    /// already (nothing removed).
    pub fn note(&self) -> Option<String> {
        if !self.proved_address {
            return None;
        }
        let mut removed = vec![
            format!("{} linked identities", self.identities),
            format!("{} passkeys", self.passkeys),
        ];
        if self.totp {
            removed.push("the TOTP secret".to_owned());
        }
        removed.push(format!("{} recovery codes", self.recovery_codes));
        if !self.mapped_roles.is_empty() {
            removed.push(format!("mapped roles {}", self.mapped_roles.join(" ")));
        }
        Some(format!(
            "the address was unproven until now: removed {}",
            removed.join(", ")
        ))
    }
}
