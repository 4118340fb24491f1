//! Ed25519 keys, JWT access tokens, identity assertions for upstreams, and the JWKS.
//!
//! One [`KeyRing`] is loaded at start: the signing key from `tokens.signing_key_file` (created
//! on first start) plus any `tokens.verification_key_files` kept for a rotation. Every key is
//! named by its RFC 7638 thumbprint (`kid`), which is stable across restarts and machines.
//!
//! Verification runs on every proxied request, so everything it needs (decoding keys by
//! `kid`, the validation rules) is built once here. The algorithm is pinned to EdDSA before
//! anything else is looked at; `none`, HMAC and RSA/ECDSA tokens never reach a key.
//!
//! Signing is done directly with the cached Ed25519 key (the JWS compact form is three
//! base64url parts), which keeps identity assertions, minted per request, cheap.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::TokensConfig;

use super::secrets::{self, KeyFile, KeyFileError};

/// Longest token accepted for verification; anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The `aud` of identity assertions; upstreams must require it so that an access token
/// (which has no `aud`) is never mistaken for an assertion, and vice versa.
pub const ASSERTION_AUDIENCE: &str = "portcullis-upstream";

/// Longest lifetime of an identity assertion; longer requests are shortened to this.
pub const MAX_ASSERTION_TTL: Duration = Duration::from_secs(5 * 60);

/// The clock difference tolerated between the instances that share a signing key: a
/// token's `iat` may lie at most this far in the future, and its `exp - iat` may exceed
/// the configured lifetime by at most this much (RFC 7519 §4.1.6 leaves both checks to
/// the verifier). A token outside these bounds was not issued by a sane gateway: it is
/// refused, whatever its signature says (defence in depth against a leaked signing key or
/// a clock gone wrong).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// `amr` value of a password login.
pub const AMR_PASSWORD: &str = "pwd";

/// `amr` value added when a second factor (TOTP or recovery code) was given.
pub const AMR_OTP: &str = "otp";

/// `amr` value of a passkey (WebAuthn) sign-in: proof of possession of a key (RFC 8176 §2).
pub const AMR_HARDWARE_KEY: &str = "hwk";

/// `amr` value added to [`AMR_HARDWARE_KEY`] for a passwordless sign-in whose authenticator
/// verified the user (PIN or biometrics): more than one factor (RFC 8176 §2).
pub const AMR_MULTIPLE_FACTORS: &str = "mfa";

/// The label that derives the refresh-rotation HMAC key from the signing key.
const REFRESH_KEY_LABEL: &str = "portcullis/refresh-token-rotation/v1";

/// A key file that cannot be read, created or understood.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists but cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The signing key was absent and could not be created.
    #[error("cannot create signing key file {}: {source}", path.display())]
    Create {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file holds something other than a usable Ed25519 key.
    #[error("key file {} is not usable: {reason}", path.display())]
    Invalid {
        /// The file named in the configuration.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The operating system gave no randomness for a new key.
    #[error("cannot generate a signing key: the operating system's random source failed: {0}")]
    Random(String),
}

/// Why a token was not issued or not accepted. Never carries the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token is too long")]
    TooLong,
    /// Not three base64url parts with a JSON header, or an unsupported header field.
    #[error("token is malformed")]
    Malformed,
    /// The header names an algorithm other than EdDSA.
    #[error("token algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// No `kid`, or a `kid` this gateway does not know.
    #[error("token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token has expired")]
    Expired,
    /// `iss` is not this gateway's issuer.
    #[error("token was issued by someone else")]
    WrongIssuer,
    /// `aud` is present where none is expected, or is not the expected one.
    #[error("token is meant for another audience")]
    WrongAudience,
    /// A required claim is missing or has the wrong type.
    #[error("token claims are invalid")]
    InvalidClaims,
    /// `iat` is more than [`CLOCK_SKEW`] in the future.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the lifetime of its kind plus [`CLOCK_SKEW`].
    #[error("token lives longer than this gateway issues tokens for")]
    TooLongLived,
    /// Claims could not be serialised when issuing.
    #[error("cannot encode token claims: {0}")]
    Encode(String),
}

impl TokenError {
    /// A short fixed label for metrics and logs (bounded cardinality).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::WrongIssuer => "issuer",
            Self::WrongAudience => "audience",
            Self::InvalidClaims => "claims",
            Self::IssuedInFuture => "issued_in_future",
            Self::TooLongLived => "too_long_lived",
            Self::Encode(_) => "encode",
        }
    }
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id (UUID).
    pub sub: String,
    /// The session id; the gateway checks the session is still live.
    pub sid: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// The issuer (`tokens.issuer`).
    pub iss: String,
    /// A unique id of this token.
    pub jti: String,
    /// How the user authenticated (RFC 8176): `["pwd"]`, `["pwd", "otp"]`, `["pwd", "hwk"]`
    /// (a passkey as second factor) or `["hwk", "mfa"]` (a passkey alone, user verified).
    pub amr: Vec<String>,
    /// When the user last proved who they are in this session (OpenID Connect Core's
    /// `auth_time`, seconds since the epoch): the sign-in, or a later reauthentication or
    /// step-up; a refresh keeps it. Absent from tokens signed before it existed, which are
    /// read as proven at their `iat` ([`AccessClaims::proven_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl AccessClaims {
    /// When the user last proved who they are: `auth_time`, else `iat` (a token signed
    /// before the claim existed).
    pub fn proven_at(&self) -> i64 {
        self.auth_time.unwrap_or(self.iat)
    }

    /// Whether the session behind this token passed a second factor.
    pub fn has_second_factor(&self) -> bool {
        self.amr
            .iter()
            .any(|m| m == AMR_OTP || m == AMR_HARDWARE_KEY || m == AMR_MULTIPLE_FACTORS)
    }
}

/// The claims of an identity assertion forwarded to upstreams (`X-Identity-Assertion`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The user id (UUID).
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// The user's email address.
    pub email: String,
    /// Whether the user proved they own `email` (OpenID Connect's claim of the same name).
    pub email_verified: bool,
    /// The user's roles.
    pub roles: Vec<String>,
    /// The issuer (`tokens.issuer`).
    pub iss: String,
    /// Always [`ASSERTION_AUDIENCE`].
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, at most [`MAX_ASSERTION_TTL`] after `iat`.
    pub exp: i64,
    /// A unique id of this assertion.
    pub jti: String,
}

/// The keys that sign and verify tokens, and the rules tokens must meet.
pub struct KeyRing {
    issuer: String,
    signing_key: SigningKey,
    signing_kid: String,
    /// base64url of the JOSE header every issued token carries.
    header_b64: String,
    verifiers: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    /// `jwks` serialised once: the body of `GET /.well-known/jwks.json`.
    jwks_document: Bytes,
    refresh_key: [u8; 32],
    /// `tokens.access_ttl` in whole seconds: the longest `exp - iat` of an access token
    /// (plus [`CLOCK_SKEW`]).
    access_lifetime: i64,
    access_validation: Validation,
    assertion_validation: Validation,
    /// Which ring this is, unique in the process: what a cached verification was made under.
    serial: u64,
}

/// Gives every key ring built in this process its own [`KeyRing::serial`].
fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.verifiers.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("KeyRing")
            .field("issuer", &self.issuer)
            .field("signing_kid", &self.signing_kid)
            .field("verification_kids", &kids)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the signing key (creating it when the file is absent) and the verification keys.
    ///
    /// A private key file readable by group or others is used but logged as a warning.
    pub fn load(config: &TokensConfig) -> Result<Self, KeyError> {
        let signing_path = Path::new(&config.signing_key_file);
        let signing_key = load_or_create_signing_key(signing_path)?;
        let mut extra = Vec::with_capacity(config.verification_key_files.len());
        for file in &config.verification_key_files {
            extra.push(load_verification_key(Path::new(file))?);
        }
        Ok(Self::from_keys(&config.issuer, signing_key, &extra)
            .with_access_lifetime(config.access_ttl.get()))
    }

    /// Reads what [`KeyRing::load`] would, creating nothing: the signing key when its file
    /// exists (an absent one is made at start) and every verification key. For
    /// `check-config` and the start's checks before anything is opened.
    pub fn check_files(config: &TokensConfig) -> Result<(), KeyError> {
        let signing_path = Path::new(&config.signing_key_file);
        if signing_path.exists() {
            load_or_create_signing_key(signing_path)?;
        }
        for file in &config.verification_key_files {
            load_verification_key(Path::new(file))?;
        }
        Ok(())
    }

    /// The same ring, accepting access tokens that live at most `ttl` (plus
    /// [`CLOCK_SKEW`]); [`KeyRing::load`] sets `tokens.access_ttl`.
    #[must_use]
    pub fn with_access_lifetime(mut self, ttl: Duration) -> Self {
        self.access_lifetime = ttl_secs(ttl);
        self.serial = next_serial();
        self
    }

    /// This ring's number, unique among the rings built in this process: a verification
    /// remembered under another ring (before a reload changed the keys or their rules) must
    /// be made again under this one.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Builds a key ring from keys already in memory (tests, tools). Access tokens may
    /// live as long as the default `tokens.access_ttl`; see
    /// [`KeyRing::with_access_lifetime`].
    pub fn from_keys(issuer: &str, signing_key: SigningKey, verification: &[VerifyingKey]) -> Self {
        let signing_kid = jwk_thumbprint(&signing_key.verifying_key());
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": signing_kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());

        let mut verifiers = HashMap::new();
        let mut jwk_list = Vec::new();
        for key in std::iter::once(signing_key.verifying_key()).chain(verification.iter().copied())
        {
            let kid = jwk_thumbprint(&key);
            if verifiers.contains_key(&kid) {
                continue;
            }
            let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
            jwk_list.push(serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": x,
                "kid": kid,
                "use": "sig",
                "alg": "EdDSA",
            }));
            verifiers.insert(kid, DecodingKey::from_ed_der(key.as_bytes()));
        }
        let jwks = serde_json::json!({ "keys": jwk_list });
        let jwks_document = Bytes::from(jwks.to_string());

        let refresh_key = secrets::derive_key(signing_key.as_bytes(), REFRESH_KEY_LABEL);

        let mut access_validation = Validation::new(Algorithm::EdDSA);
        // All instances share one clock source in practice; tokens live 15 minutes, so a
        // minute of grace would be a long extension. No leeway.
        access_validation.leeway = 0;
        access_validation.validate_nbf = true;
        access_validation.set_issuer(&[issuer]);
        access_validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // With no audience configured, any `aud` in the token is refused: assertions
        // (which carry one) cannot be replayed as access tokens.
        access_validation.validate_aud = true;

        let mut assertion_validation = access_validation.clone();
        assertion_validation.set_audience(&[ASSERTION_AUDIENCE]);
        assertion_validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);

        Self {
            issuer: issuer.to_owned(),
            signing_key,
            signing_kid,
            header_b64,
            verifiers,
            jwks,
            jwks_document,
            refresh_key,
            access_lifetime: ttl_secs(TokensConfig::default().access_ttl.get()),
            access_validation,
            assertion_validation,
            serial: next_serial(),
        }
    }

    /// The `iss` of every token this ring issues and accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether `token` looks like one of this ring's tokens (a JWT whose header names one of
    /// its keys), valid or not: such a token is a Portcullis credential and never leaves the
    /// gateway. Reads the header only; no signature check.
    pub fn is_own_token(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
            .is_some_and(|kid| self.verifiers.contains_key(&kid))
    }

    /// Whether `text` carries one of this ring's tokens anywhere: any run of JWT characters
    /// (base64url and dots) that is such a token. For headers the gateway must not forward,
    /// whatever quoting or list syntax a client wraps its token in. Cheap when there is no
    /// JWT at all (every JWT starts with `eyJ`, the encoding of `{"`).
    pub fn appears_in(&self, text: &str) -> bool {
        text.contains("eyJ")
            && text
                .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .any(|word| word.matches('.').count() == 2 && self.is_own_token(word))
    }

    /// As [`Self::appears_in`], and also inside base64 words (HTTP Basic credentials, RFC 7617).
    pub fn appears_in_or_encoded(&self, text: &str) -> bool {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        self.appears_in(text)
            || text
                .split(|c: char| c.is_ascii_whitespace() || matches!(c, ',' | ';' | '"'))
                .filter(|word| word.len() >= 16)
                .filter_map(|word| {
                    STANDARD
                        .decode(word)
                        .or_else(|_| STANDARD_NO_PAD.decode(word))
                        .ok()
                })
                .any(|decoded| self.appears_in(&String::from_utf8_lossy(&decoded)))
    }

    /// The `kid` of the key that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The JWKS document: every public key that verifies tokens, the signing key first.
    pub fn jwks(&self) -> serde_json::Value {
        self.jwks.clone()
    }

    /// The JWKS document as served at `GET /.well-known/jwks.json`: serialised once, shared
    /// by every answer.
    pub fn jwks_document(&self) -> Bytes {
        self.jwks_document.clone()
    }

    /// The HMAC key for [`secrets::next_refresh_secret`].
    ///
    /// Derived from the signing key (HMAC-SHA256 of a fixed label keyed by the Ed25519 seed),
    /// so instances sharing the signing key file derive the same successors, and no second
    /// secret file is needed. Rotating the signing key changes it; that only affects refreshes
    /// racing inside the grace window at that moment.
    pub fn refresh_rotation_key(&self) -> &[u8; 32] {
        &self.refresh_key
    }

    /// Signs an access token for user `sub` in session `sid`, valid for `ttl`.
    pub fn issue_access(
        &self,
        sub: &str,
        sid: &str,
        amr: &[&str],
        ttl: Duration,
    ) -> Result<(String, AccessClaims), TokenError> {
        self.issue_access_at(sub, sid, amr, ttl, unix_now())
    }

    /// As [`KeyRing::issue_access`], with the `auth_time` claim: when the user last proved
    /// who they are in the session (seconds since the epoch).
    pub fn issue_session_access(
        &self,
        sub: &str,
        sid: &str,
        amr: &[&str],
        auth_time: i64,
        ttl: Duration,
    ) -> Result<(String, AccessClaims), TokenError> {
        let mut claims = self.unsigned_access(sub, sid, amr, ttl, unix_now());
        claims.auth_time = Some(auth_time);
        let token = self.sign(&claims)?;
        Ok((token, claims))
    }

    /// As [`KeyRing::issue_access`] with an explicit issue time (seconds since the epoch).
    pub(crate) fn issue_access_at(
        &self,
        sub: &str,
        sid: &str,
        amr: &[&str],
        ttl: Duration,
        now: i64,
    ) -> Result<(String, AccessClaims), TokenError> {
        let claims = self.unsigned_access(sub, sid, amr, ttl, now);
        let token = self.sign(&claims)?;
        Ok((token, claims))
    }

    /// The claims of an access token issued at `now`, without `auth_time`, not yet signed.
    fn unsigned_access(
        &self,
        sub: &str,
        sid: &str,
        amr: &[&str],
        ttl: Duration,
        now: i64,
    ) -> AccessClaims {
        AccessClaims {
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl_secs(ttl)),
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            auth_time: None,
        }
    }

    /// Checks an access token: EdDSA only, known `kid`, valid signature, this issuer,
    /// not expired, no `aud`, `iat` present and not ahead of the clock by more than
    /// [`CLOCK_SKEW`], and `exp - iat` within the configured access lifetime plus
    /// [`CLOCK_SKEW`]. The one check of the proxy, the account API and forward-auth.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims: AccessClaims = self.verify(token, &self.access_validation)?;
        if claims.sid.is_empty() || claims.sub.is_empty() {
            return Err(TokenError::InvalidClaims);
        }
        alive(claims.exp)?;
        issued_sanely(claims.iat, claims.exp, self.access_lifetime)?;
        Ok(claims)
    }

    /// Signs an identity assertion for upstreams, valid for `ttl` (at most five minutes).
    pub fn issue_assertion(
        &self,
        sub: &str,
        sid: &str,
        email: &str,
        email_verified: bool,
        roles: &[String],
        ttl: Duration,
    ) -> Result<(String, AssertionClaims), TokenError> {
        let now = unix_now();
        let claims = AssertionClaims {
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            email: email.to_owned(),
            email_verified,
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            aud: ASSERTION_AUDIENCE.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl_secs(ttl.min(MAX_ASSERTION_TTL))),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = self.sign(&claims)?;
        Ok((token, claims))
    }

    /// Checks an identity assertion as an upstream would: as for access tokens, plus
    /// `aud` must be [`ASSERTION_AUDIENCE`].
    pub fn verify_assertion(&self, token: &str) -> Result<AssertionClaims, TokenError> {
        let claims: AssertionClaims = self.verify(token, &self.assertion_validation)?;
        alive(claims.exp)?;
        issued_sanely(claims.iat, claims.exp, ttl_secs(MAX_ASSERTION_TTL))?;
        Ok(claims)
    }

    fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Encode(e.to_string()))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.signing_key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<C, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let header = peek_header(token)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.crit.is_some() {
            // RFC 7515 4.1.11: extensions we do not understand make the token unusable.
            return Err(TokenError::Malformed);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifiers.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        jsonwebtoken::decode::<C>(token, key, validation)
            .map(|data| data.claims)
            .map_err(map_jwt_error)
    }
}

/// The fields of a JOSE header needed to pick a key, read without trusting anything else.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

fn peek_header(token: &str) -> Result<PeekedHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => TokenError::Expired,
        K::InvalidIssuer => TokenError::WrongIssuer,
        K::InvalidAudience => TokenError::WrongAudience,
        K::InvalidSignature => TokenError::BadSignature,
        K::InvalidAlgorithm | K::UnsupportedAlgorithm | K::MissingAlgorithm => {
            TokenError::UnsupportedAlgorithm
        }
        K::MissingRequiredClaim(_)
        | K::InvalidClaimFormat(_)
        | K::Json(_)
        | K::ImmatureSignature
        | K::InvalidSubject => TokenError::InvalidClaims,
        _ => TokenError::Malformed,
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key, used as its `kid`:
/// base64url(SHA-256(`{"crv":"Ed25519","kty":"OKP","x":"…"}`)).
pub fn jwk_thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// RFC 7519 §4.1.4: a token must not be accepted "on or after" its `exp`. jsonwebtoken
/// still accepts `exp == now` (it refuses only `exp < now - leeway`), so the boundary
/// second is checked here: a token is dead from its `exp` second on, on every path.
fn alive(exp: i64) -> Result<(), TokenError> {
    if exp <= unix_now() {
        Err(TokenError::Expired)
    } else {
        Ok(())
    }
}

/// The bounds of [`CLOCK_SKEW`]: `iat` at most that far ahead of now, and `exp - iat` at
/// most `lifetime` (seconds) plus it.
fn issued_sanely(iat: i64, exp: i64, lifetime: i64) -> Result<(), TokenError> {
    let skew = ttl_secs(CLOCK_SKEW);
    if iat > unix_now().saturating_add(skew) {
        return Err(TokenError::IssuedInFuture);
    }
    if exp.saturating_sub(iat) > lifetime.saturating_add(skew) {
        return Err(TokenError::TooLongLived);
    }
    Ok(())
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Whole seconds, rounded up, at least one.
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_private_key(path: &Path, pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Invalid {
        path: path.to_owned(),
        reason: format!(
            "expected an Ed25519 private key in PKCS#8 PEM (\"-----BEGIN PRIVATE KEY-----\", \
             as written by `openssl genpkey -algorithm ed25519`): {e}"
        ),
    })
}

/// Loads the signing key; when the file is absent, creates it with a fresh key in PKCS#8 v1
/// PEM (seed only, the form OpenSSL writes, so other tools read it too).
fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let file = secrets::read_or_create_key_file(path, || {
        let seed: [u8; 32] = secrets::try_random_bytes().map_err(|e| e.to_string())?;
        KeypairBytes {
            secret_key: seed,
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the new key: {e}"))
    })
    .map_err(|e| match e {
        KeyFileError::Read(source) => KeyError::Read {
            path: path.to_owned(),
            source,
        },
        KeyFileError::Create(source) => KeyError::Create {
            path: path.to_owned(),
            source,
        },
        KeyFileError::Generate(reason) => KeyError::Random(reason),
    })?;
    let key = parse_private_key(path, file.text())?;
    if let KeyFile::Created(_) = file {
        tracing::info!(
            path = %path.display(),
            kid = %jwk_thumbprint(&key.verifying_key()),
            "generated a new Ed25519 token signing key"
        );
    }
    Ok(key)
}

fn load_verification_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = read_key_file(path)?;
    let key = if pem.contains("PRIVATE KEY-----") {
        secrets::warn_if_exposed(path);
        parse_private_key(path, &pem)?.verifying_key()
    } else {
        VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::Invalid {
            path: path.to_owned(),
            reason: format!(
                "expected an Ed25519 public key in SPKI PEM (\"-----BEGIN PUBLIC KEY-----\") \
                 or a private key in PKCS#8 PEM: {e}"
            ),
        })?
    };
    if key.is_weak() {
        return Err(KeyError::Invalid {
            path: path.to_owned(),
            reason: "the Ed25519 public key is a weak (small-order) point".into(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn ring() -> KeyRing {
        KeyRing::from_keys("portcullis", key(1), &[])
    }

    fn b64_json(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// A token with arbitrary header and claims, signed by `signer`.
    fn forge(
        signer: &SigningKey,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> String {
        let message = format!("{}.{}", b64_json(header), b64_json(claims));
        let sig = signer.sign(message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    fn valid_claims(ring: &KeyRing) -> serde_json::Value {
        let now = unix_now();
        serde_json::json!({
            "sub": "u1", "sid": "s1", "iat": now, "exp": now + 60,
            "iss": ring.issuer(), "jti": "j", "amr": ["pwd"],
        })
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.2/A.3.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(
            jwk_thumbprint(&key),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn issued_access_token_verifies_with_its_claims() {
        let ring = ring();
        let (token, claims) = ring
            .issue_access(
                "u1",
                "s1",
                &[AMR_PASSWORD, AMR_OTP],
                Duration::from_secs(900),
            )
            .unwrap();
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.amr, vec!["pwd", "otp"]);
        assert!(claims.has_second_factor());
        assert_eq!(ring.verify_access(&token).unwrap(), claims);
    }

    #[test]
    fn header_carries_kid_and_eddsa() {
        let ring = ring();
        let (token, _) = ring
            .issue_access("u1", "s1", &[AMR_PASSWORD], Duration::from_secs(60))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(ring.signing_kid()));
    }

    #[test]
    fn expired_token_is_refused_without_leeway() {
        let ring = ring();
        let (token, _) = ring
            .issue_access_at(
                "u1",
                "s1",
                &[AMR_PASSWORD],
                Duration::from_secs(60),
                unix_now() - 61,
            )
            .unwrap();
        assert_eq!(ring.verify_access(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_is_dead_from_its_exp_second_on() {
        let ring = ring();
        let ttl = Duration::from_secs(60);
        // exp == now: RFC 7519 says "on or after" the expiry it must be refused.
        let (token, claims) = ring
            .issue_access_at("u1", "s1", &[AMR_PASSWORD], ttl, unix_now() - 60)
            .unwrap();
        assert!(claims.exp <= unix_now());
        assert_eq!(ring.verify_access(&token), Err(TokenError::Expired));
        let (token, _) = ring
            .issue_access_at("u1", "s1", &[AMR_PASSWORD], ttl, unix_now() - 58)
            .unwrap();
        assert!(ring.verify_access(&token).is_ok(), "two seconds left");
    }

    #[test]
    fn token_length_is_capped_before_parsing() {
        let ring = ring();
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(ring.verify_access(&long), Err(TokenError::TooLong));
    }

    #[test]
    fn garbage_is_malformed() {
        let ring = ring();
        for bad in ["", "a", "a.b", "a.b.c", "a.b.c.d", "...", "eyJ.eyJ.sig"] {
            assert_eq!(ring.verify_access(bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn header_without_kid_or_with_unknown_kid_is_refused() {
        let ring = ring();
        let claims = valid_claims(&ring);
        let no_kid = forge(&key(1), &serde_json::json!({"alg": "EdDSA"}), &claims);
        assert_eq!(ring.verify_access(&no_kid), Err(TokenError::UnknownKey));
        let other = forge(
            &key(1),
            &serde_json::json!({"alg": "EdDSA", "kid": "nope"}),
            &claims,
        );
        assert_eq!(ring.verify_access(&other), Err(TokenError::UnknownKey));
    }

    #[test]
    fn forged_header_fields_are_handled() {
        let ring = ring();
        let claims = valid_claims(&ring);
        let kid = ring.signing_kid().to_owned();
        let good = forge(
            &key(1),
            &serde_json::json!({"alg": "EdDSA", "kid": kid}),
            &claims,
        );
        assert!(ring.verify_access(&good).is_ok());
        let crit = forge(
            &key(1),
            &serde_json::json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"]}),
            &claims,
        );
        assert_eq!(ring.verify_access(&crit), Err(TokenError::Malformed));
        let lower = forge(
            &key(1),
            &serde_json::json!({"alg": "eddsa", "kid": kid}),
            &claims,
        );
        assert_eq!(
            ring.verify_access(&lower),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn missing_claims_are_refused() {
        let ring = ring();
        let kid = ring.signing_kid().to_owned();
        let header = serde_json::json!({"alg": "EdDSA", "kid": kid});
        let now = unix_now();
        for claims in [
            serde_json::json!({"sub": "u", "sid": "s", "iat": now, "iss": "portcullis", "jti": "j", "amr": []}),
            serde_json::json!({"sub": "u", "iat": now, "exp": now + 60, "iss": "portcullis", "jti": "j", "amr": []}),
            serde_json::json!({"sub": "u", "sid": "s", "iat": now, "exp": now + 60, "jti": "j", "amr": []}),
            serde_json::json!({"sub": "u", "sid": "", "iat": now, "exp": now + 60, "iss": "portcullis", "jti": "j", "amr": []}),
            serde_json::json!({"sub": "u", "sid": "s", "iat": now, "exp": "later", "iss": "portcullis", "jti": "j", "amr": []}),
        ] {
            let token = forge(&key(1), &header, &claims);
            assert_eq!(
                ring.verify_access(&token),
                Err(TokenError::InvalidClaims),
                "{claims}"
            );
        }
    }

    #[test]
    fn times_beyond_the_skew_or_the_lifetime_are_refused_for_both_kinds() {
        let ring = ring().with_access_lifetime(Duration::from_secs(900));
        let kid = ring.signing_kid().to_owned();
        let header = serde_json::json!({"alg": "EdDSA", "kid": kid});
        // (iat from now, exp - iat, accepted as access, accepted as assertion)
        let cases = [
            (0, 300, Ok(()), Ok(())),
            (59, 300, Ok(()), Ok(())),
            (0, 900 + 60, Ok(()), Err(TokenError::TooLongLived)),
            (
                0,
                900 + 61,
                Err(TokenError::TooLongLived),
                Err(TokenError::TooLongLived),
            ),
            (0, 300 + 61, Ok(()), Err(TokenError::TooLongLived)),
            // 62, not 61: the verifier reads the clock after this test did, and a second
            // may tick in between; either way the token is more than a minute ahead.
            (
                62,
                300,
                Err(TokenError::IssuedInFuture),
                Err(TokenError::IssuedInFuture),
            ),
            (
                0,
                10 * 365 * 86_400,
                Err(TokenError::TooLongLived),
                Err(TokenError::TooLongLived),
            ),
        ];
        for (ahead, lifetime, access, assertion) in cases {
            let now = unix_now();
            let mut claims = valid_claims(&ring);
            claims["iat"] = (now + ahead).into();
            claims["exp"] = (now + ahead + lifetime).into();
            let token = forge(&key(1), &header, &claims);
            let case = format!("iat +{ahead}, exp - iat = {lifetime}");
            assert_eq!(ring.verify_access(&token).map(drop), access, "{case}");
            claims["aud"] = ASSERTION_AUDIENCE.into();
            claims["email"] = "a@example.com".into();
            claims["email_verified"] = true.into();
            claims["roles"] = serde_json::json!([]);
            let token = forge(&key(1), &header, &claims);
            assert_eq!(ring.verify_assertion(&token).map(drop), assertion, "{case}");
        }
        let ring = ring.with_access_lifetime(Duration::from_secs(60));
        let (long, _) = ring
            .issue_access("u1", "s1", &[AMR_PASSWORD], Duration::from_secs(900))
            .unwrap();
        assert_eq!(ring.verify_access(&long), Err(TokenError::TooLongLived));
    }

    #[test]
    fn assertion_and_access_tokens_are_not_interchangeable() {
        let ring = ring();
        let (assertion, claims) = ring
            .issue_assertion(
                "u1",
                "s1",
                "a@example.com",
                true,
                &["admin".into()],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert_eq!(claims.exp - claims.iat, 300, "capped at five minutes");
        assert_eq!(claims.aud, ASSERTION_AUDIENCE);
        assert_eq!(ring.verify_assertion(&assertion).unwrap(), claims);
        assert!(ring.verify_access(&assertion).is_err());
        // Even with every access-token claim present, an `aud` makes it a non-access token.
        let mut claims = valid_claims(&ring);
        claims["aud"] = ASSERTION_AUDIENCE.into();
        let kid = ring.signing_kid().to_owned();
        let forged = forge(
            &key(1),
            &serde_json::json!({"alg": "EdDSA", "kid": kid}),
            &claims,
        );
        assert_eq!(ring.verify_access(&forged), Err(TokenError::WrongAudience));

        let (access, _) = ring
            .issue_access("u1", "s1", &[AMR_PASSWORD], Duration::from_secs(60))
            .unwrap();
        assert!(ring.verify_assertion(&access).is_err());
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let ring = ring();
        let (token, _) = ring
            .issue_access("u1", "s1", &[AMR_PASSWORD], Duration::from_secs(60))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "someone-else".into();
        let tampered = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
        assert_eq!(ring.verify_access(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn jwks_lists_each_key_once_signing_key_first() {
        let old = key(2).verifying_key();
        let ring = KeyRing::from_keys("portcullis", key(1), &[old, old, key(1).verifying_key()]);
        let keys = ring.jwks()["keys"].as_array().unwrap().clone();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], ring.signing_kid());
        assert_eq!(keys[1]["kid"], jwk_thumbprint(&old));
        let parsed: serde_json::Value = serde_json::from_slice(&ring.jwks_document()).unwrap();
        assert_eq!(parsed, ring.jwks());
    }

    #[test]
    fn refresh_rotation_key_follows_the_signing_key() {
        assert_eq!(ring().refresh_rotation_key(), ring().refresh_rotation_key());
        let other = KeyRing::from_keys("portcullis", key(9), &[]);
        assert_ne!(ring().refresh_rotation_key(), other.refresh_rotation_key());
        assert_ne!(ring().refresh_rotation_key(), key(1).as_bytes());
    }

    #[test]
    fn debug_shows_kids_not_key_material() {
        let ring = ring();
        let text = format!("{ring:?}");
        assert!(text.contains(ring.signing_kid()));
        assert!(!text.contains("SigningKey"));
    }

    #[test]
    fn weak_public_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // The identity point: a small-order key that "verifies" forged signatures.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let path = dir.path().join("weak.pem");
        std::fs::write(&path, weak.to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
        let err = load_verification_key(&path).unwrap_err();
        assert!(err.to_string().contains("weak"), "{err}");
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(900)), 900);
    }
}
