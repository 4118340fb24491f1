//! `kind = "oidc"`: discovery, the authorization request (code flow, PKCE S256, `nonce`),
//! the code exchange and the ID token's checks, all through `openidconnect` (OpenID Connect
//! Core 1.0 §3.1.3.7). What this adds: the algorithms are the asymmetric ones the provider
//! advertises (never `none`, never an HMAC), `azp` and `iat` are checked, and a token signed
//! by a key the cached JWKS lacks refetches the JWKS once (no more often than
//! [`JWKS_REFETCH_FLOOR`]), the authorization response's `iss` is checked (RFC 9207), and
//! `sub` is held to OpenID Connect Core §2. The discovery document and its cache are
//! `discovery.rs`'s.

use std::time::Duration;

use base64::Engine as _;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    JwsSigningAlgorithm, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse,
};

use super::discovery::{Cache, Metadata};
use super::http::Http;
use super::{Asserted, FederationError, claims};
use crate::config::IdentityProviderConfig;

pub use super::discovery::JWKS_REFETCH_FLOOR;
/// How far in the future an ID token's `iat` may lie (clock skew).
const IAT_SKEW: Duration = Duration::from_secs(60);
/// How old an ID token's `iat` may be: no flow lives longer than its stash.
const IAT_MAX_AGE: Duration = Duration::from_secs(600 + 60);

/// One OpenID provider: its client registration and the cached discovery document.
pub struct OidcProvider {
    id: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    cache: Cache,
}

/// What the authorization request carries, for the stash.
pub struct Started {
    /// The provider's authorization URL with every parameter.
    pub url: String,
    /// The `state` sent.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE verifier whose S256 challenge was sent.
    pub verifier: String,
}

impl OidcProvider {
    /// The provider of `config` (whose `issuer` validation made present) with its secret.
    pub fn new(
        config: &IdentityProviderConfig,
        secret: &str,
        redirect_uri: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            id: config.id.to_string(),
            issuer: issuer_of(config)?,
            client_id: ClientId::new(config.client_id.clone()),
            secret: ClientSecret::new(secret.to_owned()),
            redirect: RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| e.to_string())?,
            scopes: config.effective_scopes(),
            cache: Cache::default(),
        })
    }

    /// The discovery document (with its JWKS), cached; with `refetch_jwks`, the JWKS again
    /// unless fetched within the floor.
    async fn metadata(&self, http: &Http, refetch_jwks: bool) -> Result<Metadata, FederationError> {
        self.cache
            .get(http, &self.issuer, &self.id, refetch_jwks)
            .await
    }

    /// RFC 9207 §2.4: an authorization response's `iss`, when present, is this provider's
    /// issuer exactly; when the provider says it always sends one, it must be present. A
    /// response from another provider (a mix-up) is refused before its code is used.
    pub async fn check_response_issuer(
        &self,
        http: &Http,
        iss: Option<&str>,
    ) -> Result<(), FederationError> {
        let required = || async {
            self.metadata(http, false).await.map(|m| {
                m.additional_metadata()
                    .additional_metadata
                    .authorization_response_iss_parameter_supported
                    == Some(true)
            })
        };
        let refused = match iss {
            Some(iss) => iss != self.issuer.as_str(),
            None => required().await?,
        };
        if refused {
            tracing::warn!(target: crate::telemetry::SECURITY, event = "federated_callback_refused", provider = %self.id, reason = "iss", present = iss.is_some());
            return Err(FederationError::InvalidToken("iss"));
        }
        Ok(())
    }

    /// The authorization request: a fresh `state`, `nonce` and PKCE (S256) verifier.
    pub async fn start(&self, http: &Http) -> Result<Started, FederationError> {
        let metadata = self.metadata(http, false).await?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            self.client_id.clone(),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE verifier) and checks the ID token against `nonce`.
    pub async fn finish(
        &self,
        http: &Http,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Asserted, FederationError> {
        let metadata = self.metadata(http, false).await?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone());
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| FederationError::unavailable(&self.id, "token endpoint", &e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        let response = request
            .request_async(http)
            .await
            .map_err(|e| token_error(&self.id, e))?;
        let id_token = response
            .id_token()
            .cloned()
            .ok_or(FederationError::InvalidToken("no_id_token"))?;
        drop(response);
        match self.check(&metadata, &id_token, nonce) {
            Err(FederationError::InvalidToken("unknown_key")) => {
                let refreshed = self.metadata(http, true).await?;
                self.check(&refreshed, &id_token, nonce)
            }
            checked => checked,
        }
    }

    /// The ID token's checks against `metadata`'s keys and algorithms.
    fn check(
        &self,
        metadata: &Metadata,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &str,
    ) -> Result<Asserted, FederationError> {
        let algorithms: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| !a.uses_shared_secret() && **a != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        if algorithms.is_empty() {
            return Err(FederationError::InvalidToken("no_asymmetric_algorithm"));
        }
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            self.client_id.clone(),
            Some(self.secret.clone()),
        );
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(algorithms)
            .set_issue_time_verifier_fn(check_iat);
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| claims_error(&self.id, e))?;
        // OpenID Connect Core §3.1.3.7 (4, 5): `openidconnect` leaves `azp` to its callers.
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != self.client_id.as_str() => {
                return Err(FederationError::InvalidToken("azp"));
            }
            None if claims.audiences().len() > 1 => {
                return Err(FederationError::InvalidToken("azp"));
            }
            _ => {}
        }
        let extra = verified_payload(&id_token.to_string());
        Ok(Asserted {
            subject: claims::subject(&self.id, claims.subject().as_str())?,
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            given_name: claims
                .given_name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            family_name: claims
                .family_name()
                .and_then(|n| n.get(None))
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            id_token: id_token.to_string(),
            amr: claims
                .auth_method_refs()
                .map(|a| a.iter().map(|m| m.as_str().to_owned()).collect())
                .unwrap_or_default(),
            auth_time: claims.auth_time().filter(|at| sane_auth_time(*at)),
            claims: extra,
        })
    }
}

impl OidcProvider {
    /// The provider's sign-out URL (RP-Initiated Logout 1.0 §2) for the session whose ID
    /// token was `id_token`, coming back to `post_logout`; `None` when the provider has no
    /// `end_session_endpoint` or cannot be reached.
    pub async fn end_session_url(
        &self,
        http: &Http,
        id_token: &str,
        post_logout: &str,
    ) -> Option<String> {
        let metadata = self.metadata(http, false).await.ok()?;
        let endpoint = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()?;
        let mut url = url::Url::parse(endpoint.as_str()).ok()?;
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token)
            .append_pair("client_id", self.client_id.as_str())
            .append_pair("post_logout_redirect_uri", post_logout);
        Some(url.to_string())
    }
}

/// The configured issuer as the discovery document must name it.
pub(super) fn issuer_of(config: &IdentityProviderConfig) -> Result<IssuerUrl, String> {
    let issuer = config.issuer.as_ref().ok_or("no issuer")?;
    // The issuer is compared as written (OpenID Connect Discovery §4.3): `url` would add a
    // trailing slash to a bare origin.
    let written = issuer.as_str();
    let written = if issuer.path() == "/" {
        written.trim_end_matches('/')
    } else {
        written
    };
    IssuerUrl::new(written.to_owned()).map_err(|e| e.to_string())
}

/// A provider's `auth_time` is taken when it is not in the future beyond the skew (one a
/// little ahead counts as now); an old one is only a stale proof, never more access.
fn sane_auth_time(at: chrono::DateTime<chrono::Utc>) -> bool {
    let skew = chrono::Duration::from_std(IAT_SKEW).unwrap_or_default();
    at <= chrono::Utc::now() + skew && at.timestamp() > 0
}

/// `iat` within the flow's life and not in the future beyond the skew.
fn check_iat(iat: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let now = chrono::Utc::now();
    let skew = chrono::Duration::from_std(IAT_SKEW).unwrap_or_default();
    let age = chrono::Duration::from_std(IAT_MAX_AGE).unwrap_or_default();
    if iat > now + skew {
        return Err("issued in the future".into());
    }
    if iat < now - age {
        return Err("issued too long ago".into());
    }
    Ok(())
}

/// The payload of an ID token whose signature was just checked, as JSON (for `groups_claim`,
/// which the standard claims do not name). An unreadable payload is an empty object.
fn verified_payload(compact: &str) -> serde_json::Map<String, serde_json::Value> {
    compact
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// A refused token exchange: the provider's own error (shown to the user, escaped) or a
/// transport failure.
fn token_error<E: std::error::Error + 'static>(
    provider: &str,
    e: RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> FederationError {
    match e {
        RequestTokenError::ServerResponse(answer) => FederationError::ProviderRefused {
            error: answer.error().to_string(),
            description: answer.error_description().cloned(),
        },
        // An answer that does not parse (an ID token whose claims have impossible types
        // among them): the provider was reached, and what it said is refused.
        RequestTokenError::Parse(e, _) => {
            FederationError::invalid_answer(provider, "token response", &e)
        }
        other => FederationError::unavailable(provider, "token endpoint", &other),
    }
}

/// The reason label of a failed ID-token check (logged in full, shown as one sentence).
fn claims_error(provider: &str, e: ClaimsVerificationError) -> FederationError {
    let reason = match &e {
        ClaimsVerificationError::InvalidIssuer(_) => "iss",
        ClaimsVerificationError::InvalidAudience(_) => "aud",
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidNonce(_) => "nonce",
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => "unknown_key",
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::DisallowedAlg(_) | SignatureVerificationError::NoSignature,
        ) => "algorithm",
        ClaimsVerificationError::SignatureVerification(_) => "signature",
        _ => "claims",
    };
    let error = super::loggable(&e);
    tracing::warn!(target: crate::telemetry::SECURITY, event = "federated_token_refused", provider, reason, error);
    FederationError::InvalidToken(reason)
}
