//! An OpenID provider's discovery document (OpenID Connect Discovery 1.0 §4) and its JWKS:
//! fetched, checked and cached per provider.
//!
//! - checked: the document's `issuer` equals the configured one exactly (§4.3), and every
//!   endpoint it names is `https://`, or `http://` on loopback like the issuer
//!   ([`check_endpoint_url`]); nothing it names is fetched before that (the JWKS comes after);
//! - cached for [`METADATA_TTL`], with concurrent first uses coalesced into one fetch (the
//!   cache's lock is held across it: whoever waits finds the fresh document);
//! - a failed refresh keeps the old document, and is not retried for [`RETRY_FLOOR`], so a
//!   provider that is down is not asked once per sign-in;
//! - a JWKS refetch (a token signed by an unknown key) happens no more often than
//!   [`JWKS_REFETCH_FLOOR`].

use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, DiscoveryError, IssuerUrl, LogoutProviderMetadata, ProviderMetadata,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::FederationError;
use super::http::{Http, HttpError};
use crate::config::check_endpoint_url;

/// How long a discovery document is used before it is fetched again.
pub const METADATA_TTL: Duration = Duration::from_secs(3600);
/// How long after a failed fetch the next one may be tried; meanwhile the old document (or,
/// without one, the failure) answers.
pub const RETRY_FLOOR: Duration = Duration::from_secs(5);
/// The least time between two JWKS fetches caused by unknown keys: a stream of forged
/// tokens naming random `kid`s cannot turn into a stream of requests to the provider.
pub const JWKS_REFETCH_FLOOR: Duration = Duration::from_secs(30);

/// What the document says beyond OpenID Connect Discovery: RFC 9207's flag (whether every
/// authorization response carries `iss`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Rfc9207Metadata {
    /// `authorization_response_iss_parameter_supported` (RFC 9207 §3).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl AdditionalProviderMetadata for Rfc9207Metadata {}

/// A provider's discovery document with RP-Initiated Logout's and RFC 9207's fields.
pub type Metadata = ProviderMetadata<
    LogoutProviderMetadata<Rfc9207Metadata>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Why a document could not be had: the provider was not reached, or what it said is
/// refused. The text is logged (never shown); it carries no body and no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Transport, timeout, or a non-success status.
    Unreachable(String),
    /// An answer that is not a document this accepts.
    Invalid(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "could not be reached: {why}"),
            Self::Invalid(why) => write!(f, "answered a document that is refused: {why}"),
        }
    }
}

impl Failure {
    /// The flow's error (already logged where the failure happened).
    pub fn to_error(&self) -> FederationError {
        match self {
            Self::Unreachable(_) => FederationError::Unavailable,
            Self::Invalid(_) => FederationError::InvalidAnswer,
        }
    }
}

/// Fetches and checks `issuer`'s document, then its JWKS.
pub async fn fetch(http: &Http, issuer: &IssuerUrl) -> Result<Metadata, Failure> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.as_str().trim_end_matches('/')
    );
    let request = openidconnect::http::Request::get(url)
        .header(openidconnect::http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    let response = http
        .send(request)
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(Failure::Unreachable(format!(
            "discovery answered {}",
            response.status()
        )));
    }
    let metadata: Metadata = serde_json::from_slice(response.body())
        .map_err(|e| Failure::Invalid(format!("the discovery document does not parse: {e}")))?;
    // Discovery §4.3: the issuer as written, not as a URL parser would normalise it.
    if metadata.issuer().as_str() != issuer.as_str() {
        return Err(Failure::Invalid(format!(
            "the document names the issuer {:?}, not the configured {:?}",
            metadata.issuer().as_str(),
            issuer.as_str()
        )));
    }
    check_endpoints(&metadata).map_err(Failure::Invalid)?;
    let jwks = fetch_jwks(http, &metadata).await?;
    Ok(metadata.set_jwks(jwks))
}

/// The JWKS at the document's `jwks_uri`.
async fn fetch_jwks(http: &Http, metadata: &Metadata) -> Result<CoreJsonWebKeySet, Failure> {
    CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), http)
        .await
        .map_err(|e: DiscoveryError<HttpError>| match e {
            DiscoveryError::Request(e) => Failure::Unreachable(e.to_string()),
            DiscoveryError::Response(status, _, _) => {
                Failure::Unreachable(format!("the JWKS answered {status}"))
            }
            other => Failure::Invalid(format!("the JWKS: {other}")),
        })
}

/// Every endpoint the document names, each under the issuer's rule.
pub fn check_endpoints(metadata: &Metadata) -> Result<(), String> {
    let named = [
        (
            "authorization_endpoint",
            Some(metadata.authorization_endpoint().url()),
        ),
        ("token_endpoint", metadata.token_endpoint().map(|u| u.url())),
        ("jwks_uri", Some(metadata.jwks_uri().url())),
        (
            "userinfo_endpoint",
            metadata.userinfo_endpoint().map(|u| u.url()),
        ),
        (
            "end_session_endpoint",
            metadata
                .additional_metadata()
                .end_session_endpoint
                .as_ref()
                .map(|u| u.url()),
        ),
    ];
    for (name, url) in named {
        if let Some(url) = url {
            check_endpoint_url(url).map_err(|why| format!("{name}: {why}"))?;
        }
    }
    Ok(())
}

/// What the cache holds.
#[derive(Default)]
struct State {
    document: Option<Metadata>,
    fetched: Option<Instant>,
    jwks_fetched: Option<Instant>,
    failed: Option<(Instant, Failure)>,
}

/// What a use of the cache does, given its state at `now`.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The held document answers.
    Use,
    /// A fetch is due.
    Fetch,
    /// The last failure answers (no document, and it failed within the floor).
    Fail,
}

impl State {
    fn next(&self, now: Instant) -> Next {
        let fresh = self
            .fetched
            .is_some_and(|at| now.saturating_duration_since(at) < METADATA_TTL);
        let failed_lately = self
            .failed
            .as_ref()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) < RETRY_FLOOR);
        match (fresh, failed_lately, self.document.is_some()) {
            (true, _, _) => Next::Use,
            (false, true, true) => Next::Use,
            (false, true, false) => Next::Fail,
            (false, false, _) => Next::Fetch,
        }
    }
}

/// One provider's cached document.
#[derive(Default)]
pub struct Cache {
    state: Mutex<State>,
}

impl Cache {
    /// The document, fetched when missing or older than [`METADATA_TTL`] (one fetch however
    /// many ask at once); with `refetch_jwks`, the JWKS again unless fetched within the
    /// floor. `provider` names the provider in the log lines.
    pub async fn get(
        &self,
        http: &Http,
        issuer: &IssuerUrl,
        provider: &str,
        refetch_jwks: bool,
    ) -> Result<Metadata, FederationError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        match state.next(now) {
            Next::Use => {}
            Next::Fail => {
                if let Some((_, failure)) = &state.failed {
                    return Err(failure.to_error());
                }
            }
            Next::Fetch => match fetch(http, issuer).await {
                Ok(document) => {
                    *state = State {
                        document: Some(document),
                        fetched: Some(Instant::now()),
                        jwks_fetched: Some(Instant::now()),
                        failed: None,
                    };
                }
                Err(failure) => {
                    log_failure(provider, &failure, state.document.is_some());
                    let error = failure.to_error();
                    state.failed = Some((Instant::now(), failure));
                    if state.document.is_none() {
                        return Err(error);
                    }
                }
            },
        }
        if refetch_jwks {
            refetch(&mut state, http, provider).await?;
        }
        state.document.clone().ok_or(FederationError::Unavailable)
    }
}

/// The JWKS again, unless fetched within [`JWKS_REFETCH_FLOOR`].
async fn refetch(state: &mut State, http: &Http, provider: &str) -> Result<(), FederationError> {
    let due = state
        .jwks_fetched
        .is_none_or(|at| at.elapsed() >= JWKS_REFETCH_FLOOR);
    let Some(document) = state.document.as_ref().filter(|_| due) else {
        return Ok(());
    };
    state.jwks_fetched = Some(Instant::now());
    match fetch_jwks(http, document).await {
        Ok(jwks) => {
            state.document = Some(document.clone().set_jwks(jwks));
            Ok(())
        }
        Err(failure) => {
            log_failure(provider, &failure, true);
            Err(failure.to_error())
        }
    }
}

fn log_failure(provider: &str, failure: &Failure, kept: bool) {
    tracing::warn!(
        provider,
        reason = super::loggable(failure),
        old_document_kept = kept,
        "an identity provider's discovery document could not be used; sign-in through it \
         is refused until it can"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (fetched ago, failed ago, has a document) → what a use does.
    #[test]
    fn the_cache_refreshes_after_its_age_and_keeps_the_old_document_on_failure() {
        let now = Instant::now() + Duration::from_secs(100_000);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        let table = [
            (None, None, false, Next::Fetch),
            (ago(10), None, true, Next::Use),
            (ago(3599), None, true, Next::Use),
            (ago(3600), None, true, Next::Fetch),
            (ago(7200), ago(1), true, Next::Use),
            (ago(7200), ago(60), true, Next::Fetch),
            (None, ago(1), false, Next::Fail),
            (None, ago(60), false, Next::Fetch),
        ];
        for (fetched, failed, has, want) in table {
            let state = State {
                document: has.then(sample),
                fetched,
                jwks_fetched: None,
                failed: failed.map(|at| (at, Failure::Unreachable(String::new()))),
            };
            assert_eq!(state.next(now), want, "{fetched:?} {failed:?} {has}");
        }
    }

    fn sample() -> Metadata {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "https://idp.example.com/authorize",
            "jwks_uri": "https://idp.example.com/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
        .unwrap()
    }

    /// Every endpoint named is held to the issuer's rule.
    #[test]
    fn every_endpoint_of_a_document_is_https_or_loopback_http() {
        let table = [
            ("https://idp.example.com/x", true),
            ("https://idp.example.com/x?p=b2c_1_signin", true),
            ("http://127.0.0.1:8080/x", true),
            ("http://localhost/x", true),
            ("http://idp.example.com/x", false),
            ("javascript:alert(1)", false),
            ("data:text/html,hi", false),
            ("https://user@idp.example.com/x", false),
            ("https://user:pw@idp.example.com/x", false),
            ("ftp://idp.example.com/x", false),
            ("https://idp.example.com/x#frag", false),
        ];
        let fields = [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "end_session_endpoint",
        ];
        for (url, ok) in table {
            for field in fields {
                let mut doc = serde_json::to_value(sample()).unwrap();
                doc[field] = serde_json::json!(url);
                let metadata: Metadata = serde_json::from_value(doc).unwrap();
                let got = check_endpoints(&metadata);
                assert_eq!(got.is_ok(), ok, "{field} = {url}: {got:?}");
            }
        }
    }
}
