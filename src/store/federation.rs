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
}
