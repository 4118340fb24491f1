//! The server-side state of a WebAuthn ceremony between its options and its answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, PasskeyAuthentication, PasskeyRegistration,
};

use super::CEREMONY_TTL;
use crate::domain::UserId;
use crate::session::{SessionError, SessionStore};

/// What a ceremony was begun for, with the library's state (the challenge among it).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ceremony {
    /// Adding a passkey to `user_id`'s account, from the session `session_id`.
    Registration {
        /// The account the passkey is added to.
        user_id: UserId,
        /// The session that began it; only that session may finish it.
        session_id: String,
        /// The library's registration state, challenge included.
        state: PasskeyRegistration,
    },
    /// A passkey as the second factor of `user_id`'s password sign-in.
    SecondFactor {
        /// The account whose password was just proven.
        user_id: UserId,
        /// The library's authentication state, challenge included.
        state: PasskeyAuthentication,
    },
    /// The first passkey of an invitee's account, made before the account exists: it is
    /// created (with the id `user_id`, the passkey's user handle) when the answer comes.
    Invitation {
        /// The SHA-256 (hex) of the invitation's token; only that invitation may finish it.
        token_hash: String,
        /// The id the account will have.
        user_id: UserId,
        /// The library's registration state, challenge included.
        state: PasskeyRegistration,
    },
    /// A sign-in with a discoverable passkey alone; the passkey names the user.
    Passwordless {
        /// The library's discoverable-authentication state, challenge included.
        state: DiscoverableAuthentication,
    },
}

/// The random id a ceremony's state is stashed under: 256 bits, 64 lowercase hex
/// characters. Knowing it is not enough to finish a ceremony; the signed answer is.
#[derive(Clone, PartialEq, Eq)]
pub struct CeremonyId(String);

impl CeremonyId {
    fn generate() -> Self {
        Self(hex::encode(rand::random::<[u8; 32]>()))
    }

    /// The id as sent to clients.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn key(&self) -> String {
        format!("passkey-ceremony:{}", self.0)
    }
}

impl fmt::Debug for CeremonyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CeremonyId(…)")
    }
}

/// The text was not a ceremony id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a ceremony id: expected 64 lowercase hex characters")]
pub struct InvalidCeremonyId;

impl FromStr for CeremonyId {
    type Err = InvalidCeremonyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidCeremonyId)
        }
    }
}

pub(super) async fn begin(
    sessions: &dyn SessionStore,
    ceremony: &Ceremony,
) -> Result<CeremonyId, SessionError> {
    let id = CeremonyId::generate();
    let state = serde_json::to_string(ceremony)
        .map_err(|e| SessionError::Corrupt(format!("a ceremony state cannot be written: {e}")))?;
    sessions.stash(&id.key(), &state, CEREMONY_TTL).await?;
    Ok(id)
}

pub(super) async fn finish(
    sessions: &dyn SessionStore,
    id: &CeremonyId,
) -> Result<Option<Ceremony>, SessionError> {
    match sessions.take_stash(&id.key()).await? {
        None => Ok(None),
        Some(state) => serde_json::from_str(&state)
            .map(Some)
            .map_err(|e| SessionError::Corrupt(format!("a stashed ceremony state: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_parse_only_in_their_canonical_form() {
        let a = CeremonyId::generate();
        assert_ne!(a, CeremonyId::generate());
        assert_eq!(a.as_str().parse::<CeremonyId>(), Ok(a.clone()));
        for bad in [
            "",
            "abc",
            &a.as_str().to_uppercase(),
            &format!("{}0", a.as_str()),
        ] {
            assert_eq!(bad.parse::<CeremonyId>(), Err(InvalidCeremonyId), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_ceremony_is_taken_back_once() {
        let sessions = crate::session::MemorySessionStore::new();
        let rp = webauthn_rs::prelude::WebauthnBuilder::new(
            "localhost",
            &url::Url::parse("http://localhost:8080").unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let (_, state) = rp.start_discoverable_authentication().unwrap();
        let id = begin(&sessions, &Ceremony::Passwordless { state })
            .await
            .unwrap();
        assert!(matches!(
            finish(&sessions, &id).await.unwrap(),
            Some(Ceremony::Passwordless { .. })
        ));
        assert!(
            finish(&sessions, &id).await.unwrap().is_none(),
            "single use"
        );
    }
}
