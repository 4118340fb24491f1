use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What every UUID-backed id shares: `random`, `from_uuid`, `as_uuid`, the hyphenated
/// `Display`, a `Debug` that names the type, and `FromStr` (surrounding whitespace ignored;
/// anything but a UUID is `$invalid`).
macro_rules! uuid_id {
    ($id:ident, $invalid:ident) => {
        impl $id {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps a UUID read from storage (or, for an account, a verified token).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($id), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $id {
            type Err = $invalid;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| $invalid)
            }
        }
    };
}

/// The stable identifier of a user account (a random UUID, shown hyphenated).
///
/// A newtype so that a user id cannot be passed where a session or token id is expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

/// The text given is not a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid user id (expected a UUID)")]
pub struct InvalidUserId;

uuid_id!(UserId, InvalidUserId);

impl From<Uuid> for UserId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl From<UserId> for Uuid {
    fn from(id: UserId) -> Self {
        id.0
    }
}

/// Our id of a registered passkey (a random UUID, shown hyphenated, as in
/// `/api/auth/passkeys/{id}`), not the credential id the authenticator chose.
///
/// A newtype so that a passkey's id cannot be passed where an account's is expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasskeyId(Uuid);

/// The text given is not a passkey id (a UUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid passkey id (expected a UUID)")]
pub struct InvalidPasskeyId;

uuid_id!(PasskeyId, InvalidPasskeyId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = UserId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<UserId>().unwrap(), id);
    }

    #[test]
    fn rejects_non_uuids() {
        assert_eq!("42".parse::<UserId>(), Err(InvalidUserId));
        assert_eq!("".parse::<UserId>(), Err(InvalidUserId));
    }

    #[test]
    fn serializes_as_plain_string() {
        let id: UserId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"67e55044-10b1-426f-9247-bb680e5fe0c8\"");
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), id);
        assert_eq!(
            format!("{id:?}"),
            "UserId(67e55044-10b1-426f-9247-bb680e5fe0c8)"
        );
    }

    #[test]
    fn passkey_ids_parse_as_uuids_only() {
        let id = PasskeyId::random();
        assert_eq!(id.to_string().parse::<PasskeyId>(), Ok(id));
        assert_eq!("laptop".parse::<PasskeyId>(), Err(InvalidPasskeyId));
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(UserId::random(), UserId::random());
    }
}
