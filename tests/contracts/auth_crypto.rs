//! The cryptographic building blocks of authentication, checked from the outside:
//! key files on disk, tokens as another implementation sees them, attacks on the token
//! format, the password policy, and bcrypt that must not stall the event loop.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use portcullis::auth::jwt::{AMR_OTP, AMR_PASSWORD, ASSERTION_AUDIENCE};
use portcullis::auth::{KeyError, KeyRing, PasswordHasher, TokenError};
use portcullis::config::TokensConfig;
use portcullis::domain::{
    NewPassword, Password, PasswordPolicy, PasswordPolicyError, PasswordRule,
};

const TTL: Duration = Duration::from_secs(900);

fn tokens_config(signing: &Path, verification: &[&Path]) -> TokensConfig {
    TokensConfig {
        issuer: "https://auth.example.test".into(),
        signing_key_file: signing.to_string_lossy().into_owned(),
        verification_key_files: verification
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        ..TokensConfig::default()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Claims a correct access token of `issuer` would carry.
fn claims(issuer: &str, exp: i64) -> Value {
    json!({
        "sub": "6f1c1f8e-1111-4222-8333-444455556666",
        "sid": "session-1",
        "iat": now(),
        "exp": exp,
        "iss": issuer,
        "jti": "jti-1",
        "amr": ["pwd"],
    })
}

/// A token signed through the `jsonwebtoken` crate with the key file's private key,
/// i.e. not through `KeyRing`.
fn sign_with_key_file(key_file: &Path, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read(key_file).unwrap();
    let key = EncodingKey::from_ed_pem(&pem).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A loaded ring and the file its signing key lives in.
fn fresh_ring() -> (tempfile::TempDir, std::path::PathBuf, KeyRing) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key.pem");
    let ring = KeyRing::load(&tokens_config(&path, &[])).unwrap();
    (dir, path, ring)
}

// ---------------------------------------------------------------- key files

#[test]
fn signing_key_is_created_private_on_first_load_and_reused_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/signing-key.pem");
    let config = tokens_config(&path, &[]);

    let first = KeyRing::load(&config).unwrap();
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }
    // No temporary files are left beside the key.
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1);

    let second = KeyRing::load(&config).unwrap();
    assert_eq!(first.signing_kid(), second.signing_kid());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
    assert_eq!(first.refresh_rotation_key(), second.refresh_rotation_key());

    // A token from the first load verifies after the "restart".
    let (token, _) = first.issue_access("u", "s", &[AMR_PASSWORD], TTL).unwrap();
    assert!(second.verify_access(&token).is_ok());
}

#[test]
fn instances_starting_together_agree_on_one_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key.pem");
    let config = tokens_config(&path, &[]);
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let kids: Vec<String> = (0..8)
        .map(|_| {
            let (config, barrier) = (config.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                KeyRing::load(&config).unwrap().signing_kid().to_owned()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
    let on_disk = KeyRing::load(&config).unwrap();
    assert_eq!(on_disk.signing_kid(), kids[0]);
}

#[test]
fn a_key_written_by_another_tool_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key.pem");
    let key = SigningKey::from_bytes(&[42u8; 32]);
    // PKCS#8 v2 (with the public key), as ed25519-dalek writes it.
    std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let ring = KeyRing::load(&tokens_config(&path, &[])).unwrap();
    assert_eq!(ring.signing_kid(), thumbprint(&key.verifying_key()));
}

#[test]
fn unusable_key_files_are_reported_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let err = KeyRing::load(&tokens_config(&garbage, &[])).unwrap_err();
    assert!(matches!(err, KeyError::Invalid { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("garbage.pem") && text.contains("PKCS#8"),
        "{text}"
    );

    // A public key cannot sign.
    let public = dir.path().join("public.pem");
    let pk = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
    std::fs::write(&public, pk.to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
    let err = KeyRing::load(&tokens_config(&public, &[])).unwrap_err();
    assert!(err.to_string().contains("public.pem"), "{err}");

    // A verification file that is missing or garbage fails the load too.
    let good = dir.path().join("signing.pem");
    let missing = dir.path().join("missing.pem");
    let err = KeyRing::load(&tokens_config(&good, &[&missing])).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = KeyRing::load(&tokens_config(&good, &[&garbage])).unwrap_err();
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    // A directory where the key should be.
    let err = KeyRing::load(&tokens_config(dir.path(), &[])).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn a_readable_key_file_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key.pem");
    let config = tokens_config(&path, &[]);
    let kid = KeyRing::load(&config).unwrap().signing_kid().to_owned();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let logs = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer({
            let logs = Arc::clone(&logs);
            move || LogBuffer(Arc::clone(&logs))
        })
        .finish();
    let ring = tracing::subscriber::with_default(subscriber, || KeyRing::load(&config)).unwrap();
    assert_eq!(ring.signing_kid(), kid);
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN") && logs.contains("chmod 600"),
        "{logs}"
    );
    assert!(logs.contains("signing-key.pem"), "{logs}");
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");
}

struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- JWKS and independent verification

/// RFC 7638 thumbprint computed here, independently of the library.
fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!("{{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"{x}\"}}");
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[test]
fn jwks_describes_the_signing_key() {
    let (_dir, path, ring) = fresh_ring();
    let jwks = ring.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = keys[0].as_object().unwrap();
    let mut fields: Vec<&str> = jwk.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["alg", "crv", "kid", "kty", "use", "x"]);
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["kid"], ring.signing_kid());

    // `x` is the public half of the private key in the file, and `kid` its thumbprint.
    let pem = std::fs::read_to_string(&path).unwrap();
    let private =
        <SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem).unwrap();
    let x = jwk["x"].as_str().unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(x).unwrap(),
        private.verifying_key().as_bytes()
    );
    assert_eq!(ring.signing_kid(), thumbprint(&private.verifying_key()));

    let served: Value = serde_json::from_slice(&ring.jwks_document()).unwrap();
    assert_eq!(served, jwks);
}

#[test]
fn access_token_verifies_with_nothing_but_the_jwks() {
    let (_dir, _path, ring) = fresh_ring();
    let (token, issued) = ring
        .issue_access("user-1", "sess-1", &[AMR_PASSWORD, AMR_OTP], TTL)
        .unwrap();

    // Verify as an outside party would: split, find the key by kid, check the signature.
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = decode_part(parts[0]);
    assert_eq!(header["alg"], "EdDSA");
    let jwks = ring.jwks();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the JWKS");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = VerifyingKey::from_bytes(&x).unwrap();
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap()
        .try_into()
        .unwrap();
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    key.verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
        .expect("signature verifies with the published key");

    let claims = decode_part(parts[1]);
    assert_eq!(claims["sub"], "user-1");
    assert_eq!(claims["sid"], "sess-1");
    assert_eq!(claims["iss"], "https://auth.example.test");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(claims["exp"], issued.exp);

    // And a second, different library (jsonwebtoken) accepts it from the JWK alone.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["https://auth.example.test"]);
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["sid"], "sess-1");
}

#[test]
fn a_token_signed_elsewhere_with_the_same_key_is_accepted() {
    let (_dir, path, ring) = fresh_ring();
    let token = sign_with_key_file(
        &path,
        ring.signing_kid(),
        &claims(ring.issuer(), now() + 60),
    );
    let verified = ring.verify_access(&token).unwrap();
    assert_eq!(verified.sid, "session-1");
}

#[test]
fn identity_assertion_is_short_lived_and_verifiable_with_the_jwks() {
    let (_dir, _path, ring) = fresh_ring();
    let roles = vec!["admin".to_owned(), "billing".to_owned()];
    let (token, claims) = ring
        .issue_assertion(
            "user-1",
            "sess-1",
            "ann@example.test",
            true,
            &roles,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 60);

    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(ring.jwks()["keys"][0].clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[ASSERTION_AUDIENCE]);
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["email"], "ann@example.test");
    assert_eq!(data.claims["email_verified"], true);
    assert_eq!(data.claims["roles"], json!(["admin", "billing"]));
    assert_eq!(data.claims["aud"], ASSERTION_AUDIENCE);

    // Never accepted where an access token is expected.
    assert!(ring.verify_access(&token).is_err());
    let (_, long) = ring
        .issue_assertion("u", "s", "e@x.test", false, &[], Duration::from_secs(86400))
        .unwrap();
    assert!(long.exp - long.iat <= 300);
}

// ---------------------------------------------------------------- refused tokens

#[test]
fn expired_token_is_refused() {
    let (_dir, path, ring) = fresh_ring();
    let token = sign_with_key_file(&path, ring.signing_kid(), &claims(ring.issuer(), now() - 2));
    assert_eq!(ring.verify_access(&token), Err(TokenError::Expired));
}

#[test]
fn token_from_another_issuer_is_refused() {
    let (_dir, path, ring) = fresh_ring();
    let token = sign_with_key_file(
        &path,
        ring.signing_kid(),
        &claims("someone-else", now() + 60),
    );
    assert_eq!(ring.verify_access(&token), Err(TokenError::WrongIssuer));
}

#[test]
fn alg_none_is_refused() {
    let (_dir, _path, ring) = fresh_ring();
    let body = b64_json(&claims(ring.issuer(), now() + 60));
    for alg in ["none", "None", "NONE", ""] {
        let header = b64_json(&json!({"alg": alg, "typ": "JWT", "kid": ring.signing_kid()}));
        for token in [format!("{header}.{body}."), format!("{header}.{body}.AAAA")] {
            let err = ring.verify_access(&token).unwrap_err();
            assert!(
                matches!(
                    err,
                    TokenError::UnsupportedAlgorithm | TokenError::Malformed
                ),
                "alg {alg:?}: {err:?}"
            );
        }
    }
    // Without any header alg at all.
    let header = b64_json(&json!({"typ": "JWT", "kid": ring.signing_kid()}));
    assert!(ring.verify_access(&format!("{header}.{body}.")).is_err());
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let (_dir, _path, ring) = fresh_ring();
    let jwks = ring.jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let raw = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let public = VerifyingKey::from_bytes(&raw.clone().try_into().unwrap()).unwrap();
    let spki_pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let spki_der = public.to_public_key_der().unwrap().as_bytes().to_vec();
    let body = claims(ring.issuer(), now() + 60);

    for secret in [raw, spki_pem.into_bytes(), spki_der, x.into_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(ring.signing_kid().to_owned());
            let token =
                jsonwebtoken::encode(&header, &body, &EncodingKey::from_secret(&secret)).unwrap();
            assert_eq!(
                ring.verify_access(&token),
                Err(TokenError::UnsupportedAlgorithm),
                "{alg:?}"
            );
        }
    }
}

#[test]
fn rsa_and_ecdsa_headers_are_refused() {
    let (_dir, _path, ring) = fresh_ring();
    let body = b64_json(&claims(ring.issuer(), now() + 60));
    let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
    for alg in [
        "RS256", "PS256", "ES256", "ES384", "ES256K", "Ed25519", "EdDSA ",
    ] {
        let header = b64_json(&json!({"alg": alg, "kid": ring.signing_kid()}));
        assert_eq!(
            ring.verify_access(&format!("{header}.{body}.{sig}")),
            Err(TokenError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
}

#[test]
fn token_signed_by_another_ed25519_key_is_refused() {
    let (_dir, _path, ring) = fresh_ring();
    let intruder = SigningKey::from_bytes(&[9u8; 32]);
    let body = b64_json(&claims(ring.issuer(), now() + 60));
    let forge = |kid: &str| {
        let header = b64_json(&json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}));
        let input = format!("{header}.{body}");
        let sig = intruder.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    };
    // Claiming our kid: the signature does not match our key.
    assert_eq!(
        ring.verify_access(&forge(ring.signing_kid())),
        Err(TokenError::BadSignature)
    );
    // Claiming its own kid: we do not know that key.
    assert_eq!(
        ring.verify_access(&forge(&thumbprint(&intruder.verifying_key()))),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn oversized_and_garbled_tokens_are_refused_cheaply() {
    let (_dir, _path, ring) = fresh_ring();
    let (token, _) = ring.issue_access("u", "s", &[AMR_PASSWORD], TTL).unwrap();
    let padded = format!("{token}{}", "A".repeat(5000));
    assert_eq!(ring.verify_access(&padded), Err(TokenError::TooLong));
    assert!(ring.verify_access(&format!("{token}.")).is_err());
    assert!(ring.verify_access(&token[..token.len() - 2]).is_err());
    assert!(ring.verify_access(&format!("Bearer {token}")).is_err());
}

// ---------------------------------------------------------------- rotation

#[test]
fn rotation_keeps_old_tokens_valid_while_new_ones_use_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.pem");
    let new_path = dir.path().join("new.pem");

    let old_ring = KeyRing::load(&tokens_config(&old_path, &[])).unwrap();
    let (old_token, _) = old_ring
        .issue_access("u", "s", &[AMR_PASSWORD], TTL)
        .unwrap();

    // The operator moves the old key to verification_key_files and starts with a new one.
    let rotated = KeyRing::load(&tokens_config(&new_path, &[&old_path])).unwrap();
    assert_ne!(rotated.signing_kid(), old_ring.signing_kid());
    assert_eq!(rotated.verify_access(&old_token).unwrap().sid, "s");

    let (new_token, _) = rotated
        .issue_access("u", "s2", &[AMR_PASSWORD], TTL)
        .unwrap();
    let header = decode_part(new_token.split('.').next().unwrap());
    assert_eq!(header["kid"], rotated.signing_kid());
    // The old ring does not know the new key.
    assert_eq!(
        old_ring.verify_access(&new_token),
        Err(TokenError::UnknownKey)
    );

    let kids: Vec<Value> = rotated.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(
        kids,
        vec![json!(rotated.signing_kid()), json!(old_ring.signing_kid())]
    );

    // Only the public half of the old key is needed: an SPKI PEM works the same way.
    let pem = std::fs::read_to_string(&old_path).unwrap();
    let old_public = <SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
        .unwrap()
        .verifying_key();
    let public_path = dir.path().join("old.pub.pem");
    std::fs::write(
        &public_path,
        old_public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    let with_public = KeyRing::load(&tokens_config(&new_path, &[&public_path])).unwrap();
    assert_eq!(with_public.signing_kid(), rotated.signing_kid());
    assert!(with_public.verify_access(&old_token).is_ok());
}

// ---------------------------------------------------------------- password policy

fn admit(candidate: &str) -> Result<Password, PasswordPolicyError> {
    PasswordPolicy::default().admit(NewPassword::new(candidate.to_owned()), &[])
}

fn rules(candidate: &str) -> Vec<PasswordRule> {
    admit(candidate)
        .err()
        .map(|e| e.violations().to_vec())
        .unwrap_or_default()
}

/// NIST SP 800-63B §3.1.1.2 by default: length and strength, no composition rules.
#[test]
fn password_policy_matches_the_contract() {
    let cases: &[(&str, &[PasswordRule])] = &[
        ("correct horse battery staple", &[]),
        ("alllowercase words here", &[]),
        ("Sh0rt!", &[PasswordRule::TooShort]),
        ("password123", &[PasswordRule::TooEasyToGuess]),
        ("qwertyuiop", &[PasswordRule::TooEasyToGuess]),
        ("P@ssw0rd2024", &[PasswordRule::TooEasyToGuess]),
    ];
    for (candidate, expected) in cases {
        assert_eq!(rules(candidate), *expected, "{candidate:?}");
    }
    let err = admit("password123").unwrap_err();
    assert!(
        err.messages().len() >= 2,
        "a rule and the estimator's hints: {err}"
    );
}

#[test]
fn password_byte_limit_counts_utf8_bytes_not_characters() {
    // "Pässwörd1!" is 10 characters and 12 bytes; pad with 'ü' (2 bytes each).
    let base = "Pässwörd1!";
    let exactly_72 = format!("{base}{}", "ü".repeat(30));
    assert_eq!(exactly_72.len(), 72);
    assert_eq!(exactly_72.chars().count(), 40);
    let too_long = |s: &str| rules(s).contains(&PasswordRule::TooManyBytes);
    assert!(!too_long(&exactly_72));

    let bytes_73 = format!("{exactly_72}x");
    assert_eq!(bytes_73.len(), 73);
    assert_eq!(rules(&bytes_73), vec![PasswordRule::TooManyBytes]);

    // A 3-byte character crossing the limit: 70 + 3 = 73 bytes in 39 characters.
    let straddling = format!("{}€", &exactly_72[..70]);
    assert_eq!(straddling.len(), 73);
    assert_eq!(rules(&straddling), vec![PasswordRule::TooManyBytes]);

    let message = admit(&bytes_73).unwrap_err().to_string();
    assert!(
        message.contains("72 bytes") && message.contains("truncat"),
        "{message}"
    );
}

// ---------------------------------------------------------------- bcrypt

#[tokio::test]
async fn bcrypt_hashes_verify_and_report_stale_cost() {
    let hasher = PasswordHasher::new(4).unwrap();
    let hash = hasher.hash("SecurePass123!").await.unwrap();
    assert!(hash.starts_with("$2b$04$"));
    assert!(hasher.verify("SecurePass123!", &hash).await.unwrap());
    assert!(!hasher.verify("securepass123!", &hash).await.unwrap());
    assert!(!hasher.verify("SecurePass123", &hash).await.unwrap());
    assert!(!hasher.needs_rehash(&hash));

    let stronger = PasswordHasher::new(5).unwrap();
    assert!(stronger.needs_rehash(&hash));
    // The old hash still verifies under the new configuration, so login can upgrade it.
    assert!(stronger.verify("SecurePass123!", &hash).await.unwrap());

    assert!(
        !hasher
            .verify("SecurePass123!", "$2b$04$corrupt")
            .await
            .unwrap()
    );
    hasher.verify_dummy("SecurePass123!").await;
}

#[tokio::test]
async fn a_password_over_72_bytes_never_verifies() {
    let hasher = PasswordHasher::new(4).unwrap();
    let exactly_72 = format!("Pässwörd1!{}", "ü".repeat(30));
    let hash = hasher.hash(&exactly_72).await.unwrap();
    assert!(hasher.verify(&exactly_72, &hash).await.unwrap());
    // Plain bcrypt would accept these: they share the first 72 bytes.
    for longer in [
        format!("{exactly_72}x"),
        format!("{exactly_72}{}", "y".repeat(100)),
    ] {
        assert!(bcrypt::verify(&longer, &hash).unwrap());
        assert!(!hasher.verify(&longer, &hash).await.unwrap());
        assert!(hasher.hash(&longer).await.is_err());
    }
}

#[test]
fn hashing_leaves_the_event_loop_free() {
    // A single-threaded runtime: if bcrypt ran on it, nothing else could run meanwhile.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hasher = PasswordHasher::new(10).unwrap();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let ticks_while_hashing = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));

        let ticker = tokio::spawn({
            let (in_flight, ticks, stop) = (
                Arc::clone(&in_flight),
                Arc::clone(&ticks_while_hashing),
                Arc::clone(&stop),
            );
            async move {
                while !stop.load(Ordering::SeqCst) {
                    if in_flight.load(Ordering::SeqCst) > 0 {
                        ticks.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });

        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (hasher, in_flight) = (hasher.clone(), Arc::clone(&in_flight));
            jobs.spawn(async move {
                in_flight.fetch_add(1, Ordering::SeqCst);
                let hash = hasher.hash(&format!("SecurePass{i}!")).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                hash
            });
        }
        let mut hashes = Vec::new();
        while let Some(done) = jobs.join_next().await {
            hashes.push(done.unwrap().unwrap());
        }
        stop.store(true, Ordering::SeqCst);
        ticker.await.unwrap();

        assert_eq!(hashes.len(), 8);
        assert!(hashes.iter().all(|h| h.starts_with("$2b$10$")));
        // Had any hash blocked this thread, the ticker could not have observed a hash in
        // flight; it observed them over and over.
        let ticks = ticks_while_hashing.load(Ordering::SeqCst);
        assert!(
            ticks >= 20,
            "ticker ran only {ticks} times while hashes were running"
        );
    });
}
