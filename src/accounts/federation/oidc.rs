//! `kind = "oidc"`: discovery, the authorization request (code flow, PKCE S256, `nonce`),
//! the code exchange and the ID token's checks, all through `openidconnect` (OpenID Connect
//! Core 1.0 §3.1.3.7). What this adds: the algorithms are the asymmetric ones the provider
//! advertises (never `none`, never an HMAC), `azp` and `iat` are checked, and a token signed
//! by a key the cached JWKS lacks refetches the JWKS once (no more often than
//! [`JWKS_REFETCH_FLOOR`]).

use std::time::{Duration, Instant};

use base64::Engine as _;
use openidconnect::ProviderMetadataWithLogout as CoreProviderMetadata;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    JwsSigningAlgorithm, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError, TokenResponse,
};
use tokio::sync::Mutex;

use super::http::Http;
use super::{Asserted, FederationError};
use crate::config::IdentityProviderConfig;

/// How long a discovery document is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The least time between two JWKS fetches caused by unknown keys: a stream of forged
/// tokens naming random `kid`s cannot turn into a stream of requests to the provider.
pub const JWKS_REFETCH_FLOOR: Duration = Duration::from_secs(30);
/// How far in the future an ID token's `iat` may lie (clock skew).
const IAT_SKEW: Duration = Duration::from_secs(60);
/// How old an ID token's `iat` may be: no flow lives longer than its stash.
const IAT_MAX_AGE: Duration = Duration::from_secs(600 + 60);

/// One OpenID provider: its client registration and the cached discovery document.
pub struct OidcProvider {
    issuer: IssuerUrl,
    client_id: ClientId,
    secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    metadata: CoreProviderMetadata,
    fetched: Instant,
    jwks_fetched: Instant,
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
        let issuer = config.issuer.as_ref().ok_or("no issuer")?;
        // The issuer is compared as written (OpenID Connect Discovery §4.3): `url` would add
        // a trailing slash to a bare origin.
        let written = issuer.as_str();
        let written = if issuer.path() == "/" {
            written.trim_end_matches('/')
        } else {
            written
        };
        Ok(Self {
            issuer: IssuerUrl::new(written.to_owned()).map_err(|e| e.to_string())?,
            client_id: ClientId::new(config.client_id.clone()),
            secret: ClientSecret::new(secret.to_owned()),
            redirect: RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| e.to_string())?,
            scopes: config.effective_scopes(),
            cache: Mutex::new(None),
        })
    }

    /// The discovery document (with its JWKS), fetched when missing or older than
    /// [`METADATA_TTL`]; with `refetch_jwks`, the JWKS again unless fetched within the floor.
    async fn metadata(
        &self,
        http: &Http,
        refetch_jwks: bool,
    ) -> Result<CoreProviderMetadata, FederationError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.fetched.elapsed() < METADATA_TTL);
        if !fresh {
            let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), http)
                .await
                .map_err(|e| FederationError::unavailable("discovery", &e))?;
            *cache = Some(Cached {
                metadata,
                fetched: Instant::now(),
                jwks_fetched: Instant::now(),
            });
        } else if refetch_jwks
            && let Some(cached) = cache.as_mut()
            && cached.jwks_fetched.elapsed() >= JWKS_REFETCH_FLOOR
        {
            let jwks = CoreJsonWebKeySet::fetch_async(cached.metadata.jwks_uri(), http)
                .await
                .map_err(|e| FederationError::unavailable("jwks", &e))?;
            cached.metadata = cached.metadata.clone().set_jwks(jwks);
            cached.jwks_fetched = Instant::now();
        }
        cache
            .as_ref()
            .map(|c| c.metadata.clone())
            .ok_or_else(|| FederationError::unavailable("discovery", &"no document"))
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
            .map_err(|e| FederationError::unavailable("token endpoint", &e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        let response = request.request_async(http).await.map_err(token_error)?;
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
        metadata: &CoreProviderMetadata,
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
            .map_err(claims_error)?;
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
            subject: claims.subject().as_str().to_owned(),
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
        other => FederationError::unavailable("token endpoint", &other),
    }
}

/// The reason label of a failed ID-token check (logged in full, shown as one sentence).
fn claims_error(e: ClaimsVerificationError) -> FederationError {
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
    tracing::warn!(target: crate::telemetry::SECURITY, event = "federated_token_refused", reason, error = %e);
    FederationError::InvalidToken(reason)
}
