//! The stored form of a passkey (a WebAuthn credential).

use std::fmt;

use chrono::{DateTime, Utc};

use crate::domain::{PasskeyId, UserId};

/// One registered passkey of an account.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// Our id of the key (in `/api/auth/passkeys/{id}`), not the authenticator's.
    pub id: PasskeyId,
    /// The account it signs in to.
    pub user_id: UserId,
    /// base64url (unpadded) of the credential id the authenticator chose; unique.
    pub credential_id: String,
    /// The name the user gave it ("Laptop", "YubiKey 5").
    pub name: String,
    /// The relying-party library's record of the key as JSON: public key, counter, flags.
    pub credential: String,
    /// The signature counter of the last accepted use (0 for keys that keep none).
    pub sign_count: u32,
    /// The authenticator said the key may be synced to other devices (WebAuthn BE flag).
    pub backup_eligible: bool,
    /// The key was synced (backed up) at its last use (WebAuthn BS flag).
    pub backup_state: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// Its last accepted use.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for StoredPasskey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPasskey")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("sign_count", &self.sign_count)
            .field("backup_eligible", &self.backup_eligible)
            .field("backup_state", &self.backup_state)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// A use of a passkey to record: the new counter and the library's updated record.
#[derive(Clone, Debug)]
pub struct PasskeyUse {
    /// The key used.
    pub id: PasskeyId,
    /// The counter the use was checked against; the write happens only over it.
    pub previous_sign_count: u32,
    /// The counter the authenticator reported.
    pub sign_count: u32,
    /// The backup state the authenticator reported.
    pub backup_state: bool,
    /// The updated record (JSON).
    pub credential: String,
}

/// Longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
