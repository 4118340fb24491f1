//! The stored form of an invitation: one address may create an account, with roles, by a
//! single-use expiring link whose token only the mail holds (the store keeps its hash).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Email, UserId};

/// An invitation to store: the caller has generated the token and hashed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvitation {
    /// The invitee's canonical address: the account it creates has this one, no other.
    pub email: Email,
    /// SHA-256 hex of the mailed token.
    pub token_hash: String,
    /// Role names (already checked) the account gets.
    pub roles: Vec<String>,
    /// Who invited; `None` for the operator's CLI.
    pub created_by: Option<UserId>,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
}

/// A stored invitation (without its token's hash, which no caller needs back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    /// Its id.
    pub id: Uuid,
    /// The invitee's canonical address.
    pub email: Email,
    /// Role names the account gets, sorted.
    pub roles: Vec<String>,
    /// Who invited, while that account exists; `None` for the CLI.
    pub created_by: Option<UserId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was used to create the account.
    pub used_at: Option<DateTime<Utc>>,
    /// When it was revoked (or replaced by a newer invitation for the same address).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Where an invitation stands at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationState {
    /// It can still be used.
    Pending,
    /// The account was created with it.
    Used,
    /// It was revoked or replaced.
    Revoked,
    /// Its time ran out unused.
    Expired,
}

impl InvitationState {
    /// The state as the CLI prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Used => "used",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl Invitation {
    /// Where it stands at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> InvitationState {
        if self.used_at.is_some() {
            InvitationState::Used
        } else if self.revoked_at.is_some() {
            InvitationState::Revoked
        } else if self.expires_at <= now {
            InvitationState::Expired
        } else {
            InvitationState::Pending
        }
    }
}

/// The `roles` column: role names joined by commas (a role name holds none).
pub(super) fn roles_to_db(roles: &[String]) -> String {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles.join(",")
}

/// Reads the `roles` column back, sorted.
pub(super) fn roles_from_db(stored: &str) -> Vec<String> {
    let mut roles: Vec<String> = stored
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    roles.sort();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_sorted_and_deduplicated() {
        let stored = roles_to_db(&["ops".into(), "admin".into(), "ops".into()]);
        assert_eq!(stored, "admin,ops");
        assert_eq!(roles_from_db(&stored), vec!["admin", "ops"]);
        assert!(roles_from_db("").is_empty());
    }
}
