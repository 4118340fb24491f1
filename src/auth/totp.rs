//! The TOTP second factor: secrets, their encryption at rest, provisioning, code checks and
//! recovery codes.
//!
//! Codes follow RFC 6238 with the parameters every authenticator app assumes: HMAC-SHA-1,
//! 6 digits, 30-second steps. A code is accepted for the current step and one step either
//! side, to absorb clock drift and typing time. [`verify_code`] returns the step that
//! matched; the caller makes each step usable once per user by claiming [`replay_key`] in
//! the shared store, so a code seen over someone's shoulder cannot be replayed.
//!
//! TOTP secrets are 160 random bits. In the database they only exist sealed by
//! [`SecretBox`] (AES-256-GCM under a key kept in a file, bound to the user's id), so a
//! database dump alone yields no working second factor.
//!
//! Recovery codes stand in for a TOTP code once each. They are 60 random bits, stored as a
//! salted SHA-256 hash ([`hash_recovery_code`]).

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::TwoFactorConfig;
use crate::domain::UserId;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use data_encoding::BASE32_NOPAD;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::secrets::{self, KeyFile, KeyFileError};

/// Bytes in a TOTP secret: 160 bits, the size RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

/// Length of a secret in base32 (20 bytes are exactly 32 characters, no padding).
pub const SECRET_BASE32_CHARS: usize = 32;

/// Digits in a code.
pub const CODE_DIGITS: usize = 6;

/// Seconds in one time step.
pub const STEP_SECS: u64 = 30;

/// How long a claimed step must stay claimed: a step is accepted from the start of the step
/// before it to the end of the step after it (90 s); the rest covers clock skew between
/// instances.
pub const REPLAY_TTL: Duration = Duration::from_secs(120);

/// Recovery codes handed out when 2FA is enabled.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// Characters of a recovery code without its dashes: 12 × 5 bits = 60 random bits.
pub const RECOVERY_CODE_CHARS: usize = 12;

/// Longest input [`looks_like_recovery_code`] looks at; anything longer is junk.
const MAX_RECOVERY_INPUT: usize = 64;

/// Crockford's base32 alphabet in lower case: no `i`, `l`, `o` or `u`, so nothing reads
/// as another character. Its 32 symbols make each character exactly 5 random bits.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// First byte of every sealed secret; a new format gets a new number.
const SEAL_VERSION: u8 = 1;

/// AES-GCM nonce: 96 random bits per seal.
const NONCE_BYTES: usize = 12;

/// AES-GCM authentication tag.
const TAG_BYTES: usize = 16;

/// Bytes in the encryption key.
pub const ENCRYPTION_KEY_BYTES: usize = 32;

/// Why a second-factor operation failed. Never carries a secret, a code or key material.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The encryption key file exists but cannot be read.
    #[error("cannot read TOTP encryption key file {}: {source}", path.display())]
    KeyRead {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The encryption key file was absent and could not be created.
    #[error("cannot create TOTP encryption key file {}: {source}", path.display())]
    KeyCreate {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The encryption key file holds something other than a key.
    #[error(
        "TOTP encryption key file {} is not usable: expected 32 bytes in standard base64 \
         (as written by `openssl rand -base64 32`), {reason}",
        path.display()
    )]
    KeyInvalid {
        /// The file named in the configuration.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The operating system gave no randomness for a new key.
    #[error(
        "cannot generate a TOTP encryption key: the operating system's random source failed: {0}"
    )]
    Random(String),
    /// `two_factor.issuer` cannot be put in an otpauth URL.
    #[error("two_factor.issuer must be non-empty and must not contain ':'")]
    InvalidIssuer,
    /// The client sent a secret that is not one this server hands out.
    #[error("Secret must be {SECRET_BASE32_CHARS} base32 characters (A-Z, 2-7), and this one {0}.")]
    InvalidSecret(&'static str),
    /// The account name cannot be put in an otpauth URL (empty or containing ':').
    #[error("the account name cannot be used in an authenticator app: it is empty or contains ':'")]
    InvalidAccountName,
    /// The otpauth URL or its QR code could not be produced.
    #[error("cannot produce the authenticator provisioning data: {0}")]
    Provisioning(String),
    /// Encryption refused the input (only possible for absurdly long input).
    #[error("cannot encrypt the two-factor secret")]
    Encrypt,
    /// A sealed secret too short or of an unknown version.
    #[error("the stored two-factor secret is malformed")]
    MalformedSealed,
    /// Authentication failed: another encryption key, another user's record, or altered data.
    #[error(
        "the stored two-factor secret cannot be decrypted: wrong encryption key, \
         another account's record, or altered data"
    )]
    Decrypt,
}

/// Encrypts TOTP secrets at rest with AES-256-GCM, bound to the user they belong to.
///
/// A sealed secret is `version (1 byte) || nonce (12) || ciphertext || tag (16)`. The
/// associated data is the version byte followed by the 16 bytes of the user's id, so a
/// sealed secret copied onto another account's row does not decrypt.
///
/// The key file holds the 32-byte key in standard base64 on one line (surrounding
/// whitespace ignored), e.g. from `openssl rand -base64 32`. When the file is absent it
/// is created with a fresh key, mode 0600. Losing the key disables every user's 2FA
/// (their secrets cannot be opened), so back it up with the database.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SecretBox {
    /// Loads the key named by `two_factor.encryption_key_file`, creating it when absent.
    pub fn load(config: &TwoFactorConfig) -> Result<Self, TotpError> {
        Self::load_or_create(Path::new(&config.encryption_key_file))
    }

    /// Reads the key of `two_factor.encryption_key_file` when the file exists (an absent one
    /// is made at start), creating nothing: for `check-config` and the start's checks.
    pub fn check_file(config: &TwoFactorConfig) -> Result<(), TotpError> {
        let path = Path::new(&config.encryption_key_file);
        if path.exists() {
            Self::load_or_create(path)?;
        }
        Ok(())
    }

    /// Loads the key in `path`, creating the file with a fresh key when it is absent.
    ///
    /// Instances starting together against an absent file all end up with the same key.
    /// A key file readable by group or others is used but logged as a warning.
    pub fn load_or_create(path: &Path) -> Result<Self, TotpError> {
        let file = secrets::read_or_create_key_file(path, || {
            let key: [u8; ENCRYPTION_KEY_BYTES] =
                secrets::try_random_bytes().map_err(|e| e.to_string())?;
            let mut text = STANDARD.encode(key);
            text.push('\n');
            Ok(text)
        })
        .map_err(|e| match e {
            KeyFileError::Read(source) => TotpError::KeyRead {
                path: path.to_owned(),
                source,
            },
            KeyFileError::Create(source) => TotpError::KeyCreate {
                path: path.to_owned(),
                source,
            },
            KeyFileError::Generate(reason) => TotpError::Random(reason),
        })?;
        let key = Self::from_key(&parse_key(path, file.text())?);
        if let KeyFile::Created(_) = file {
            tracing::info!(path = %path.display(), "generated a new TOTP encryption key");
        }
        Ok(key)
    }

    /// Builds a box from a key already in memory (tests, tools).
    pub fn from_key(key: &[u8; ENCRYPTION_KEY_BYTES]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)),
        }
    }

    /// Seals `plaintext_secret` for `user_id` under a fresh random nonce.
    pub fn encrypt(&self, user_id: UserId, plaintext_secret: &[u8]) -> Result<Vec<u8>, TotpError> {
        let nonce_bytes: [u8; NONCE_BYTES] = secrets::random_bytes();
        let aad = associated_data(user_id);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext_secret,
                    aad: &aad,
                },
            )
            .map_err(|_| TotpError::Encrypt)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(SEAL_VERSION);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens a secret sealed by [`encrypt`](Self::encrypt) for the same `user_id` and key.
    pub fn decrypt(&self, user_id: UserId, sealed: &[u8]) -> Result<Vec<u8>, TotpError> {
        let (&version, rest) = sealed.split_first().ok_or(TotpError::MalformedSealed)?;
        if version != SEAL_VERSION || rest.len() < NONCE_BYTES + TAG_BYTES {
            return Err(TotpError::MalformedSealed);
        }
        let (nonce_bytes, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce_bytes
            .try_into()
            .map_err(|_| TotpError::MalformedSealed)?;
        let aad = associated_data(user_id);
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| TotpError::Decrypt)
    }

    /// Seals a TOTP secret for storage on `user_id`'s row.
    pub fn seal_secret(&self, user_id: UserId, secret: &TotpSecret) -> Result<Vec<u8>, TotpError> {
        self.encrypt(user_id, secret.as_bytes())
    }

    /// Opens a stored TOTP secret of `user_id`.
    pub fn open_secret(&self, user_id: UserId, sealed: &[u8]) -> Result<TotpSecret, TotpError> {
        let bytes = self.decrypt(user_id, sealed)?;
        let bytes: [u8; SECRET_BYTES] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| TotpError::MalformedSealed)?;
        Ok(TotpSecret(bytes))
    }
}

fn associated_data(user_id: UserId) -> [u8; 17] {
    let mut aad = [0u8; 17];
    aad[0] = SEAL_VERSION;
    aad[1..].copy_from_slice(user_id.as_uuid().as_bytes());
    aad
}

fn parse_key(path: &Path, text: &str) -> Result<[u8; ENCRYPTION_KEY_BYTES], TotpError> {
    let invalid = |reason: String| TotpError::KeyInvalid {
        path: path.to_owned(),
        reason,
    };
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| invalid(format!("but it is not base64 ({e})")))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| invalid(format!("but it decodes to {len} bytes")))
}

/// A TOTP shared secret: 160 bits, shown to users in RFC 4648 base32.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret([u8; SECRET_BYTES]);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Self {
        Self(secrets::random_bytes())
    }

    /// Wraps raw secret bytes (tests, stores).
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(bytes)
    }

    /// Parses the base32 form a client sends back when enabling 2FA.
    ///
    /// Lower case is accepted, and spaces (apps and people group the characters) and
    /// trailing `=` padding are ignored. Only the 32-character form of a 160-bit secret,
    /// which this server hands out, is accepted.
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        // Bounded before any work so junk input costs nothing.
        if text.len() > 4 * SECRET_BASE32_CHARS {
            return Err(TotpError::InvalidSecret("is too long"));
        }
        // The significant characters, upper-cased; one more than a secret has shows excess.
        // Padded with `A` (zero bits) to whole 8-character groups for the decoder.
        let mut symbols = [b'A'; SECRET_BASE32_CHARS + 8];
        let mut chars = 0usize;
        let mut padding = false;
        for b in text.bytes() {
            match b {
                b' ' | b'\t' => continue,
                b'=' => {
                    padding = true;
                    continue;
                }
                _ if padding => return Err(TotpError::InvalidSecret("has characters after '='")),
                _ if chars > SECRET_BASE32_CHARS => break,
                _ => {}
            }
            symbols[chars] = b.to_ascii_uppercase();
            chars += 1;
        }
        let mut decoded = [0u8; (SECRET_BASE32_CHARS + 8) / 8 * 5];
        BASE32_NOPAD
            .decode_mut(&symbols, &mut decoded)
            .map_err(|_| TotpError::InvalidSecret("has an invalid character"))?;
        match chars.cmp(&SECRET_BASE32_CHARS) {
            Ordering::Greater => Err(TotpError::InvalidSecret("is too long")),
            Ordering::Less => Err(TotpError::InvalidSecret("is too short")),
            // 32 characters are exactly 160 bits: the first 20 bytes, nothing left over.
            Ordering::Equal => Ok(Self(
                decoded[..SECRET_BYTES]
                    .try_into()
                    .map_err(|_| TotpError::InvalidSecret("is too short"))?,
            )),
        }
    }

    /// The RFC 4648 base32 form without padding (32 upper-case characters).
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// The raw secret bytes, the HMAC key of the codes.
    pub fn as_bytes(&self) -> &[u8; SECRET_BYTES] {
        &self.0
    }
}

/// What an authenticator app needs to add the account: the secret to type in, the otpauth
/// URL, and the same URL as a QR code. All three reveal the secret.
#[derive(Clone)]
pub struct Provisioning {
    /// The secret in base32, for typing into an app.
    pub secret_base32: String,
    /// `otpauth://totp/{issuer}:{account}?secret=…&issuer=…`, percent-encoded.
    pub otpauth_url: String,
    /// The otpauth URL as a QR code: `data:image/png;base64,…`.
    pub qr_code_data_url: String,
}

impl fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioning").finish_non_exhaustive()
    }
}

/// Whether `issuer` can be used as the otpauth issuer; checked at start.
pub fn validate_issuer(issuer: &str) -> Result<(), TotpError> {
    if issuer.trim().is_empty() || issuer.contains(':') {
        return Err(TotpError::InvalidIssuer);
    }
    Ok(())
}

/// The otpauth URL and QR code for `account_email`'s secret, as authenticator apps read them.
///
/// Issuer and account name are percent-encoded in the label and the query (a space becomes
/// `%20`, `+` becomes `%2B`). Algorithm, digits and period are the defaults every app
/// assumes (SHA1, 6, 30) and are therefore not spelled out. Neither the issuer nor the
/// account name may contain `:` (it separates them in the label) or be empty.
pub fn provisioning(
    issuer: &str,
    account_email: &str,
    secret: &TotpSecret,
) -> Result<Provisioning, TotpError> {
    validate_issuer(issuer)?;
    if account_email.is_empty() || account_email.contains(':') {
        return Err(TotpError::InvalidAccountName);
    }
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(CODE_DIGITS as u8)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.as_bytes().to_vec())
        .with_issuer(Some(issuer))
        .with_account_name(account_email)
        .build()
        .map_err(provisioning_error)?;
    let otpauth_url = totp.to_url().map_err(provisioning_error)?;
    // The QR code is drawn from the same `Totp`, so it encodes exactly `otpauth_url`.
    let png = totp.to_qr_png().map_err(provisioning_error)?;
    let mut qr_code_data_url = String::from("data:image/png;base64,");
    STANDARD.encode_string(png, &mut qr_code_data_url);
    Ok(Provisioning {
        secret_base32: secret.to_base32(),
        otpauth_url,
        qr_code_data_url,
    })
}

fn provisioning_error(e: totp_rs::TotpError) -> TotpError {
    match e {
        totp_rs::TotpError::InvalidIssuer { .. } => TotpError::InvalidIssuer,
        totp_rs::TotpError::InvalidAccountName { .. } | totp_rs::TotpError::AccountNameNotSet => {
            TotpError::InvalidAccountName
        }
        // `UrlTooLong` carries the URL, which holds the secret: keep only the kind.
        totp_rs::TotpError::UrlTooLong { .. } => {
            TotpError::Provisioning("the otpauth URL is too long for a QR code".into())
        }
        other => TotpError::Provisioning(format!("{other:?}")),
    }
}

/// Checks a 6-digit code against `secret` at `now_unix`, allowing one step of drift either
/// way, and returns the time step it belongs to (`None` when it matches none).
///
/// Only exactly six ASCII digits are considered. All three candidate codes are computed
/// and compared in constant time, so timing tells nothing about which one was close. The
/// caller must then claim [`replay_key`]`(user, step)` once, or a seen code could be replayed.
pub fn verify_code(secret: &[u8], code: &str, now_unix: u64) -> Option<u64> {
    if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Secrets shorter than 128 bits are refused by the library; this server never makes one.
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(CODE_DIGITS as u8)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.to_vec())
        .build()
        .ok()?;
    let current = now_unix / STEP_SECS;
    let mut found = Choice::from(0);
    let mut matched: u64 = 0;
    for step in [
        current.checked_sub(1),
        Some(current),
        current.checked_add(1),
    ]
    .into_iter()
    .flatten()
    {
        let Some(at) = step.checked_mul(STEP_SECS) else {
            continue;
        };
        let expected = totp.generate(at).to_string();
        let hit = expected.as_bytes().ct_eq(code.as_bytes());
        matched.conditional_assign(&step, hit);
        found |= hit;
    }
    bool::from(found).then_some(matched)
}

/// The key to claim once in the shared store when `user_id`'s code for `step` is used.
pub fn replay_key(user_id: UserId, step: u64) -> String {
    format!("totp:{user_id}:{step}")
}

/// Ten fresh recovery codes, each `xxxx-xxxx-xxxx` from an unambiguous alphabet (60 bits).
pub fn generate_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let random = u64::from_le_bytes(secrets::random_bytes());
            let mut code = String::with_capacity(RECOVERY_CODE_CHARS + 2);
            for i in 0..RECOVERY_CODE_CHARS {
                if i > 0 && i % 4 == 0 {
                    code.push('-');
                }
                let index = ((random >> (5 * i)) & 31) as usize;
                code.push(char::from(RECOVERY_ALPHABET[index]));
            }
            code
        })
        .collect()
}

/// The stored form of `user_id`'s recovery code: SHA-256 hex of the normalized code,
/// salted with the user id.
///
/// A fast hash is enough because the codes carry 60 random bits: guessing one from its hash
/// is out of reach, and the per-user salt stops one computation from testing a guess
/// against every account's codes at once. Normalization ignores case, spaces and dashes,
/// and reads the look-alikes `o`, `i` and `l` (absent from the alphabet) as `0`, `1`, `1`.
pub fn hash_recovery_code(user_id: UserId, code: &str) -> String {
    let mut input = String::with_capacity(37 + code.len());
    input.push_str(&user_id.to_string());
    input.push(':');
    input.push_str(&normalize_recovery_code(code));
    secrets::sha256_hex(&input)
}

/// Whether `input` has the shape of a recovery code (after normalization: 12 characters of
/// the recovery alphabet); a 6-digit input is a TOTP code instead.
pub fn looks_like_recovery_code(input: &str) -> bool {
    if input.len() > MAX_RECOVERY_INPUT {
        return false;
    }
    let normalized = normalize_recovery_code(input);
    normalized.len() == RECOVERY_CODE_CHARS
        && normalized.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))
}

fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '\t'))
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            other => other,
        })
        .collect()
}

/// The 2FA configuration in one place: the issuer shown in apps and the key that seals
/// secrets. Built once at start and shared.
#[derive(Debug)]
pub struct TwoFactor {
    issuer: String,
    secret_box: SecretBox,
}

impl TwoFactor {
    /// Checks the issuer and loads (or creates) the encryption key.
    pub fn load(config: &TwoFactorConfig) -> Result<Self, TotpError> {
        validate_issuer(&config.issuer)?;
        Ok(Self {
            issuer: config.issuer.clone(),
            secret_box: SecretBox::load(config)?,
        })
    }

    /// Builds from parts already in memory (tests, tools).
    pub fn new(issuer: &str, secret_box: SecretBox) -> Result<Self, TotpError> {
        validate_issuer(issuer)?;
        Ok(Self {
            issuer: issuer.to_owned(),
            secret_box,
        })
    }

    /// The issuer authenticator apps display.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The box that seals and opens stored secrets.
    pub fn secret_box(&self) -> &SecretBox {
        &self.secret_box
    }

    /// A fresh secret and its provisioning data for `account_email` (setup-2fa).
    pub fn setup(&self, account_email: &str) -> Result<Provisioning, TotpError> {
        provisioning(&self.issuer, account_email, &TotpSecret::generate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use uuid::Uuid;

    /// RFC 6238 appendix B seed for SHA-1.
    const RFC_SEED: &[u8; 20] = b"12345678901234567890";

    fn user() -> UserId {
        UserId::from_uuid(Uuid::from_u128(0x6f1c_1f8e_1111_4222_8333_4444_5555_6666))
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        // RFC 4648 section 10: "foobar" -> "MZXW6YTBOI" (+ padding).
        let mut bytes = [0u8; 20];
        bytes[..5].copy_from_slice(b"fooba");
        let text = TotpSecret::from_bytes(bytes).to_base32();
        assert!(text.starts_with("MZXW6YTB"), "{text}");
        let secret = TotpSecret::generate();
        let text = secret.to_base32();
        assert_eq!(text.len(), SECRET_BASE32_CHARS);
        assert_eq!(TotpSecret::from_base32(&text).unwrap(), secret);
        assert_eq!(
            TotpSecret::from_bytes(*RFC_SEED).to_base32(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn base32_parse_is_lenient_about_case_and_spacing_only() {
        let secret = TotpSecret::from_bytes(*RFC_SEED);
        for ok in [
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
            "gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
            " GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ ",
        ] {
            assert_eq!(TotpSecret::from_base32(ok).unwrap(), secret, "{ok}");
        }
        for bad in [
            "",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQA",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ0",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ8",
            "GEZDGNBVGY3TQOJQ-GEZDGNBVGY3TQOJQ",
            "GEZDGNBVGY3TQOJQ=GEZDGNBVGY3TQOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJÉ",
        ] {
            assert!(
                matches!(
                    TotpSecret::from_base32(bad),
                    Err(TotpError::InvalidSecret(_))
                ),
                "{bad}"
            );
        }
        let long = "A".repeat(10_000);
        assert!(TotpSecret::from_base32(&long).is_err());
    }

    #[test]
    fn base32_refusals_name_the_first_problem() {
        let ok = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        for (bad, reason) in [
            ("", "is too short"),
            (&ok[..31], "is too short"),
            (&format!("{ok}A"), "is too long"),
            (&format!("{ok}A!"), "is too long"),
            (&format!("{ok}!"), "has an invalid character"),
            (
                &format!("{}1{}", &ok[..4], &ok[5..]),
                "has an invalid character",
            ),
            (&format!("{}=A", &ok[..8]), "has characters after '='"),
            (&format!("{ok}=="), "ok"),
        ] {
            let got = match TotpSecret::from_base32(bad) {
                Ok(_) => "ok",
                Err(TotpError::InvalidSecret(reason)) => reason,
                Err(e) => panic!("{bad}: {e}"),
            };
            assert_eq!(got, reason, "{bad}");
        }
    }

    #[test]
    fn rfc_6238_sha1_vectors_verify() {
        // Appendix B, last six digits of the 8-digit values.
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(
                verify_code(RFC_SEED, code, time),
                Some(time / STEP_SECS),
                "{time}"
            );
        }
    }

    #[test]
    fn drift_of_one_step_is_accepted_and_reports_the_step() {
        // 287082 is the code of step 1 (t = 59).
        assert_eq!(verify_code(RFC_SEED, "287082", 30), Some(1));
        assert_eq!(verify_code(RFC_SEED, "287082", 0), Some(1));
        assert_eq!(verify_code(RFC_SEED, "287082", 89), Some(1));
        assert_eq!(verify_code(RFC_SEED, "287082", 90), None);
        assert_eq!(verify_code(RFC_SEED, "287082", 119), None);
    }

    #[test]
    fn malformed_codes_are_refused_before_any_work() {
        for bad in [
            "", "28708", "2870822", "28708a", "+87082", " 87082", "２87082",
        ] {
            assert_eq!(verify_code(RFC_SEED, bad, 59), None, "{bad:?}");
        }
        // A secret the library cannot use is a refusal, not a panic.
        assert_eq!(verify_code(b"short", "287082", 59), None);
    }

    #[test]
    fn edges_of_time_do_not_overflow() {
        assert_eq!(verify_code(RFC_SEED, "000000", 0), None);
        let _ = verify_code(RFC_SEED, "000000", u64::MAX);
    }

    #[test]
    fn sealed_secret_round_trips_and_is_bound_to_user_and_key() {
        let sealed_box = SecretBox::from_key(&[7; 32]);
        let secret = TotpSecret::generate();
        let sealed = sealed_box.seal_secret(user(), &secret).unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_BYTES + SECRET_BYTES + TAG_BYTES);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(sealed_box.open_secret(user(), &sealed).unwrap(), secret);
        // Fresh nonce every time.
        assert_ne!(sealed, sealed_box.seal_secret(user(), &secret).unwrap());
        assert!(matches!(
            sealed_box.open_secret(UserId::from_uuid(Uuid::from_u128(1)), &sealed),
            Err(TotpError::Decrypt)
        ));
        assert!(matches!(
            SecretBox::from_key(&[8; 32]).open_secret(user(), &sealed),
            Err(TotpError::Decrypt)
        ));
        for i in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert!(sealed_box.decrypt(user(), &tampered).is_err(), "byte {i}");
        }
        let mut other_version = sealed.clone();
        other_version[0] = 2;
        assert!(matches!(
            sealed_box.decrypt(user(), &other_version),
            Err(TotpError::MalformedSealed)
        ));
        for short in [&[][..], &[SEAL_VERSION][..], &sealed[..sealed.len() - 20]] {
            assert!(sealed_box.decrypt(user(), short).is_err());
        }
    }

    #[test]
    fn recovery_codes_are_ten_distinct_well_formed_codes() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        assert_eq!(codes.iter().collect::<HashSet<_>>().len(), codes.len());
        for code in &codes {
            assert_eq!(code.len(), 14, "{code}");
            assert_eq!(code.as_bytes()[4], b'-');
            assert_eq!(code.as_bytes()[9], b'-');
            assert!(looks_like_recovery_code(code), "{code}");
            assert!(!code.contains(['i', 'l', 'o', 'u']), "{code}");
        }
    }

    #[test]
    fn recovery_codes_use_every_symbol() {
        // 60 bits per code come from all 32 symbols being reachable in every position.
        let mut seen = HashSet::new();
        for _ in 0..50 {
            for code in generate_recovery_codes() {
                seen.extend(code.bytes().filter(|&b| b != b'-'));
            }
        }
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn recovery_code_hash_normalizes_and_is_salted_per_user() {
        let h = hash_recovery_code(user(), "abcd-efgh-1234");
        assert_eq!(h, hash_recovery_code(user(), "ABCD-efgh-1234"));
        assert_eq!(h, hash_recovery_code(user(), "abcdefgh1234"));
        assert_eq!(h, hash_recovery_code(user(), " abcd efgh 1234 "));
        assert_eq!(h, hash_recovery_code(user(), "abcd-efgh-I234"));
        assert_ne!(h, hash_recovery_code(user(), "abcd-efgh-1235"));
        assert_ne!(
            h,
            hash_recovery_code(UserId::from_uuid(Uuid::from_u128(1)), "abcd-efgh-1234")
        );
        assert_eq!(h, secrets::sha256_hex(&format!("{}:abcdefgh1234", user())));
    }

    #[test]
    fn recovery_code_shape() {
        assert!(looks_like_recovery_code("ABCD-efgh-1234"));
        assert!(looks_like_recovery_code("abcdefgh1234"));
        assert!(!looks_like_recovery_code("123456"));
        assert!(!looks_like_recovery_code("abcd-efgh-123"));
        assert!(!looks_like_recovery_code("abcd-efgh-12345"));
        assert!(!looks_like_recovery_code("abcd-efgh-123u"));
        assert!(!looks_like_recovery_code("abcd_efgh_1234"));
        assert!(!looks_like_recovery_code(&"-".repeat(1000)));
    }

    #[test]
    fn nothing_secret_in_debug() {
        let secret = TotpSecret::from_bytes(*RFC_SEED);
        let p = provisioning("Portcullis", "a@example.com", &secret).unwrap();
        let texts = [
            format!("{secret:?}"),
            format!("{p:?}"),
            format!("{:?}", SecretBox::from_key(&[0x41; 32])),
            format!(
                "{:?}",
                TwoFactor::new("Portcullis", SecretBox::from_key(&[0x41; 32])).unwrap()
            ),
        ];
        let key_b64 = STANDARD.encode([0x41u8; 32]);
        for text in texts {
            assert!(!text.contains("GEZDGNBV"), "{text}");
            assert!(!text.contains("12345678"), "{text}");
            assert!(!text.contains("otpauth"), "{text}");
            assert!(!text.contains("65, 65"), "{text}");
            assert!(!text.contains(&key_b64[..8]), "{text}");
        }
    }

    #[test]
    fn colons_and_empty_names_are_refused_without_panicking() {
        let secret = TotpSecret::generate();
        assert!(matches!(
            provisioning("Port:cullis", "a@example.com", &secret),
            Err(TotpError::InvalidIssuer)
        ));
        assert!(matches!(
            provisioning(" ", "a@example.com", &secret),
            Err(TotpError::InvalidIssuer)
        ));
        assert!(matches!(
            provisioning("Portcullis", "\"a:b\"@example.com", &secret),
            Err(TotpError::InvalidAccountName)
        ));
        assert!(matches!(
            provisioning("Portcullis", "", &secret),
            Err(TotpError::InvalidAccountName)
        ));
        let long = format!("{}@example.com", "a".repeat(5000));
        assert!(matches!(
            provisioning("Portcullis", &long, &secret),
            Err(TotpError::Provisioning(_))
        ));
    }

    #[test]
    fn replay_keys_name_user_and_step() {
        assert_eq!(
            replay_key(user(), 42),
            "totp:6f1c1f8e-1111-4222-8333-444455556666:42"
        );
    }
}
