//! Passkeys: the WebAuthn relying party (W3C Web Authentication Level 3) through
//! `webauthn-rs`, and the state of its ceremonies.
//!
//! The relying-party id and origin come from `server.public_url`. Browsers allow WebAuthn
//! only in a secure context (https, or http on `localhost`), and an IP address cannot be
//! a relying-party id (WebAuthn §5.1.3 step 7, "effective domain"): for such a URL
//! passkeys are off, with one warning at start and the reason in `check-config`.
//!
//! A ceremony's state (its challenge) is stashed in the session backend under a random
//! id, for [`CEREMONY_TTL`], and taken back at most once ([`SessionStore::take_stash`]),
//! so a challenge is single-use and any instance sharing Redis can finish what another
//! began.

mod ceremony;

use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use url::Url;
use webauthn_rs::prelude::{Webauthn, WebauthnBuilder};

pub use ceremony::{Ceremony, CeremonyId};

use crate::metrics::Metrics;
use crate::session::{SessionError, SessionStore};

/// How long a ceremony may take, from its options to its answer; also the timeout the
/// browser is given.
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);

/// The relying party, or why passkeys are off.
pub struct Passkeys {
    relying_party: Result<Webauthn, String>,
    /// Passkey events by `event` (`registered`, `used`, `removed`, `refused`) and `reason`.
    events: IntCounterVec,
}

/// The relying-party id and origin a public URL gives, or why it gives none.
pub fn relying_party_of(public_url: &str) -> Result<(String, Url), String> {
    let url = Url::parse(public_url)
        .map_err(|e| format!("server.public_url is not a URL ({e}), so passkeys are off"))?;
    let Some(host) = url.host() else {
        return Err("server.public_url has no host, so passkeys are off".into());
    };
    let url::Host::Domain(domain) = host else {
        return Err(format!(
            "server.public_url names the IP address {host}; a WebAuthn relying-party id must \
             be a domain name, so passkeys are off (use a host name, or `localhost`)"
        ));
    };
    let local = domain == "localhost" || domain.ends_with(".localhost");
    if url.scheme() != "https" && !local {
        return Err(format!(
            "server.public_url is {} on {domain}; browsers allow WebAuthn only on https or \
             on localhost, so passkeys are off",
            url.scheme()
        ));
    }
    let origin = Url::parse(&url.origin().ascii_serialization())
        .map_err(|e| format!("server.public_url has no usable origin ({e})"))?;
    Ok((domain.to_ascii_lowercase(), origin))
}

impl Passkeys {
    /// The relying party for `public_url` (passkeys off when it cannot be one), with its
    /// metrics registered in `metrics`.
    pub fn new(public_url: &str, rp_name: &str, metrics: &Metrics) -> Self {
        let relying_party = relying_party_of(public_url).and_then(|(rp_id, origin)| {
            WebauthnBuilder::new(&rp_id, &origin)
                .and_then(|b| b.rp_name(rp_name).timeout(CEREMONY_TTL).build())
                .map_err(|e| format!("the WebAuthn relying party cannot be set up: {e}"))
        });
        let events = IntCounterVec::new(
            Opts::new(
                "passkey_events_total",
                "Passkey registrations, uses, removals and refusals, by event and reason",
            ),
            &["event", "reason"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        // The successful events from the start, at 0: a dashboard's rate shows 0 rather
        // than no data before the first passkey is used.
        for event in ["registered", "used", "removed"] {
            events.with_label_values(&[event, "ok"]);
        }
        metrics.register(Box::new(events.clone()));
        Self {
            relying_party,
            events,
        }
    }

    /// The relying party, when passkeys are on.
    pub fn relying_party(&self) -> Option<&Webauthn> {
        self.relying_party.as_ref().ok()
    }

    /// Why passkeys are off; `None` when they are on.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.relying_party.as_ref().err().map(String::as_str)
    }

    /// Counts a passkey event (bounded labels: fixed strings only).
    pub fn count(&self, event: &'static str, reason: &'static str) {
        self.events.with_label_values(&[event, reason]).inc();
    }

    /// Stashes a ceremony's state for [`CEREMONY_TTL`] and returns the id that finishes it.
    pub async fn begin(
        &self,
        sessions: &dyn SessionStore,
        ceremony: &Ceremony,
    ) -> Result<CeremonyId, SessionError> {
        ceremony::begin(sessions, ceremony).await
    }

    /// Takes a ceremony's state back, once; `None` when it expired, was used or never was.
    pub async fn finish(
        &self,
        sessions: &dyn SessionStore,
        id: &CeremonyId,
    ) -> Result<Option<Ceremony>, SessionError> {
        ceremony::finish(sessions, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_and_https_domains_can_be_relying_parties() {
        let (id, origin) = relying_party_of("http://localhost:8080").unwrap();
        assert_eq!(id, "localhost");
        assert_eq!(origin.as_str(), "http://localhost:8080/");
        let (id, origin) = relying_party_of("https://Auth.Example.com/base").unwrap();
        assert_eq!(id, "auth.example.com");
        assert_eq!(origin.as_str(), "https://auth.example.com/");
        assert!(relying_party_of("http://app.localhost").is_ok());
    }

    #[test]
    fn ip_addresses_and_plain_http_cannot() {
        for url in [
            "http://127.0.0.1:8080",
            "https://192.0.2.1",
            "https://[::1]:8443",
        ] {
            let reason = relying_party_of(url).unwrap_err();
            assert!(reason.contains("IP address"), "{url}: {reason}");
        }
        let reason = relying_party_of("http://auth.example.com").unwrap_err();
        assert!(reason.contains("https"), "{reason}");
    }

    #[test]
    fn an_unusable_url_turns_passkeys_off_with_the_reason() {
        let metrics = Metrics::new();
        let off = Passkeys::new("http://127.0.0.1:8080", "Portcullis", &metrics);
        assert!(off.relying_party().is_none());
        assert!(off.disabled_reason().unwrap().contains("IP address"));
        let on = Passkeys::new("http://localhost:8080", "Portcullis", &metrics);
        assert!(on.relying_party().is_some());
        assert_eq!(on.disabled_reason(), None);
    }
}
