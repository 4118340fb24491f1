//! Random tokens, their stored hashes, constant-time comparison and the refresh-token format.
//!
//! Tokens that travel in mail links or to clients (verification, reset, refresh secrets) are
//! 256 random bits from the operating system, URL-safe base64 without padding (43 characters).
//! The database and the session store only ever see their SHA-256 hash ([`sha256_hex`]).
//!
//! # Refresh tokens
//!
//! A refresh token is `"{session_id}.{secret}"`. The secret is always 43 URL-safe base64
//! characters, which never include `.`, so the token is split at its **last** `.`: whatever
//! precedes it is the session id, kept opaque (it may itself contain `.`).
//!
//! Each refresh replaces the secret by [`next_refresh_secret`], an HMAC of the previous one.
//! Being deterministic, two concurrent refreshes of the same token (a browser with two tabs,
//! a retried request) get the same new token, so the session store can accept the previous
//! secret again within a short grace window without minting two live successors. Without the
//! HMAC key (see [`crate::auth::KeyRing::refresh_rotation_key`]) nobody can compute a successor.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in every token: 256 bits.
pub const TOKEN_BYTES: usize = 32;

/// Length of a token in URL-safe base64 without padding.
pub const TOKEN_CHARS: usize = 43;

/// Longest session id a refresh token may carry.
pub const MAX_SESSION_ID_CHARS: usize = 128;

/// Fills an array from the operating system's random source.
pub(crate) fn try_random_bytes<const N: usize>() -> Result<[u8; N], rand::rngs::SysError> {
    let mut bytes = [0u8; N];
    SysRng.try_fill_bytes(&mut bytes)?;
    Ok(bytes)
}

/// `N` bytes from the operating system's random source.
///
/// # Panics
/// When the operating system cannot provide randomness, which on a working system does not
/// happen; continuing would hand out guessable tokens.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    match try_random_bytes() {
        Ok(bytes) => bytes,
        Err(e) => panic!("the operating system's random number generator failed: {e}"),
    }
}

/// A fresh unguessable token: 256 bits from the OS, URL-safe base64 without padding.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_BYTES>())
}

/// Whether `s` has the shape of a [`random_token`]: exactly 43 URL-safe base64 characters.
///
/// Checked before any lookup so that junk input never reaches a store.
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == TOKEN_CHARS && s.bytes().all(is_base64url_byte)
}

/// The lower-case hex SHA-256 of a token: what the stores keep instead of the token itself.
pub fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets without leaking, through timing, how long a prefix they share.
///
/// Slices of different lengths compare unequal (the length itself is not hidden).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A 32-byte key for one purpose, derived from a master secret: HMAC-SHA256(master, label).
///
/// Different labels give independent keys, so one secret on disk can serve several uses.
pub fn derive_key(master: &[u8], label: &str) -> [u8; 32] {
    let mut mac = hmac_sha256(master);
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Joins a session id and a secret into a refresh token.
pub fn format_refresh_token(session_id: &str, secret: &str) -> String {
    let mut token = String::with_capacity(session_id.len() + 1 + secret.len());
    token.push_str(session_id);
    token.push('.');
    token.push_str(secret);
    token
}

/// Splits a refresh token into `(session_id, secret)`, or `None` when it is malformed.
///
/// The split is at the last `.` (secrets never contain one). The secret must be exactly
/// [`TOKEN_CHARS`] URL-safe base64 characters; the session id 1 to [`MAX_SESSION_ID_CHARS`]
/// characters from the URL "unreserved" set (`A-Z a-z 0-9 - . _ ~`).
pub fn parse_refresh_token(token: &str) -> Option<(String, String)> {
    if token.len() > MAX_SESSION_ID_CHARS + 1 + TOKEN_CHARS {
        return None;
    }
    let (session_id, secret) = token.rsplit_once('.')?;
    let session_id_ok = !session_id.is_empty()
        && session_id.len() <= MAX_SESSION_ID_CHARS
        && session_id
            .bytes()
            .all(|b| is_base64url_byte(b) || b == b'.' || b == b'~');
    if !session_id_ok || !is_token_shaped(secret) {
        return None;
    }
    Some((session_id.to_owned(), secret.to_owned()))
}

/// Whether `text` holds something shaped like one of our refresh tokens anywhere: 32 hex
/// digits (a session id), a dot and a [`random_token`]. For the headers the gateway must
/// not forward: a refresh token under another cookie name is still ours.
pub fn contains_refresh_token(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .flat_map(|word| word.match_indices('.').map(move |(i, _)| (word, i)))
        .any(|(word, dot)| {
            dot >= 32
                && word[dot - 32..dot].bytes().all(|b| b.is_ascii_hexdigit())
                && word
                    .get(dot + 1..dot + 1 + TOKEN_CHARS)
                    .is_some_and(is_token_shaped)
        })
}

/// The secret that replaces `previous_secret` when the session's refresh token rotates:
/// base64url(HMAC-SHA256(key, session_id || 0x00 || previous_secret)).
///
/// The NUL separator keeps `("ab", "c")` and `("a", "bc")` apart.
pub fn next_refresh_secret(key: &[u8; 32], session_id: &str, previous_secret: &str) -> String {
    let mut mac = hmac_sha256(key);
    mac.update(session_id.as_bytes());
    mac.update(&[0]);
    mac.update(previous_secret.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Creates the secret file `path` holding `contents`, readable by its owner only (0600),
/// unless the file already exists.
///
/// The contents are written beside `path` and linked into place, so that a reader never
/// sees a half-written file and two instances starting together agree on one secret.
/// Returns `Ok(true)` when this call created the file, `Ok(false)` when it was already
/// there (another process won the race): the caller then reads the existing file.
/// Missing parent directories are created.
pub(crate) fn write_new_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secret".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", random_token()));

    if let Err(e) = write_private_file(&tmp, contents) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // A hard link fails if the target exists, unlike rename: whoever links first wins.
    let placed = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // Some file systems have no hard links; rename is atomic there too.
        Err(_) => std::fs::rename(&tmp, path).map(|()| true),
    };
    let _ = std::fs::remove_file(&tmp);
    if let Ok(true) = placed {
        sync_dir(&dir);
    }
    placed
}

/// What a key file held: the text already there, or the text this call wrote.
pub(crate) enum KeyFile<T> {
    /// The file existed (or another process created it first); its whole text.
    Found(String),
    /// The file was absent and this call created it with the generated text.
    Created(T),
}

impl<T: AsRef<str>> KeyFile<T> {
    /// The file's text, to be parsed the same way whichever way it came.
    pub(crate) fn text(&self) -> &str {
        match self {
            Self::Found(text) => text,
            Self::Created(text) => text.as_ref(),
        }
    }
}

/// Why [`read_or_create_key_file`] has no text; each key maps it to its own error.
pub(crate) enum KeyFileError<E> {
    /// The file exists but cannot be read.
    Read(std::io::Error),
    /// The file was absent and could not be created.
    Create(std::io::Error),
    /// The generator failed (no randomness, or the new key could not be encoded).
    Generate(E),
}

/// The one routine behind the gateway's key files (the token signing key and the TOTP
/// encryption key): reads `path`; when it is absent, writes what `generate` returns with
/// [`write_new_secret_file`] (mode 0600, never overwriting), and when another instance
/// created it first, reads theirs. An existing file readable by group or others is used but
/// logged as a warning ([`warn_if_exposed`]). The caller parses [`KeyFile::text`].
pub(crate) fn read_or_create_key_file<T: AsRef<str>, E>(
    path: &Path,
    generate: impl FnOnce() -> Result<T, E>,
) -> Result<KeyFile<T>, KeyFileError<E>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_exposed(path);
            Ok(KeyFile::Found(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = generate().map_err(KeyFileError::Generate)?;
            let created = write_new_secret_file(path, fresh.as_ref().as_bytes())
                .map_err(KeyFileError::Create)?;
            if created {
                Ok(KeyFile::Created(fresh))
            } else {
                std::fs::read_to_string(path)
                    .map(KeyFile::Found)
                    .map_err(KeyFileError::Read)
            }
        }
        Err(e) => Err(KeyFileError::Read(e)),
    }
}

/// Logs a warning when a secret file can be read by group or others.
pub(crate) fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "secret key file is accessible to group or others; run `chmod 600` on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the new directory entry durable; failure only weakens crash safety.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC pads or hashes keys of any length; this arm cannot be reached.
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn is_base64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_tokens_are_43_url_safe_characters_of_256_bits() {
        let t = random_token();
        assert_eq!(t.len(), TOKEN_CHARS);
        assert!(is_token_shaped(&t));
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
    }

    #[test]
    fn random_tokens_do_not_repeat() {
        let tokens: HashSet<String> = (0..1000).map(|_| random_token()).collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn token_shape_rejects_other_lengths_and_characters() {
        assert!(!is_token_shaped(""));
        assert!(!is_token_shaped(&"a".repeat(42)));
        assert!(!is_token_shaped(&"a".repeat(44)));
        assert!(!is_token_shaped(&format!("{}+", "a".repeat(42))));
        assert!(!is_token_shaped(&format!("{}=", "a".repeat(42))));
        assert!(!is_token_shaped(&format!("{}é", "a".repeat(41))));
    }

    #[test]
    fn sha256_hex_matches_the_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn refresh_tokens_are_found_wherever_they_stand() {
        let token = format_refresh_token(&"a1".repeat(16), &random_token());
        for text in [
            token.clone(),
            format!("x={token}"),
            format!("a=1, b=\"{token}\""),
            format!("{token}; k=v"),
        ] {
            assert!(contains_refresh_token(&text), "{text}");
        }
        for text in [
            "x=1",
            "s:abc.def",
            "eyJhbGciOi.eyJzdWIi.c2ln",
            &random_token(),
        ] {
            assert!(!contains_refresh_token(text), "{text}");
        }
    }

    #[test]
    fn refresh_token_round_trips_and_splits_at_the_last_dot() {
        let secret = random_token();
        let token = format_refresh_token("sess.with.dots", &secret);
        assert_eq!(
            parse_refresh_token(&token),
            Some(("sess.with.dots".to_owned(), secret.clone()))
        );
        let token = format_refresh_token("abc_DEF-123~", &secret);
        assert_eq!(
            parse_refresh_token(&token),
            Some(("abc_DEF-123~".to_owned(), secret))
        );
    }

    #[test]
    fn malformed_refresh_tokens_are_refused() {
        let secret = random_token();
        for bad in [
            String::new(),
            secret.clone(),
            format!(".{secret}"),
            format!("sid.{}", &secret[1..]),
            format!("sid.{secret}x"),
            format!("sid.{secret}."),
            format!("s/d.{secret}"),
            format!("s d.{secret}"),
            format!("sïd.{secret}"),
            format!("{}.{secret}", "a".repeat(MAX_SESSION_ID_CHARS + 1)),
            format!("sid.{}", "a".repeat(10_000)),
        ] {
            assert_eq!(parse_refresh_token(&bad), None, "{bad:?}");
        }
        let longest = format!("{}.{secret}", "a".repeat(MAX_SESSION_ID_CHARS));
        assert!(parse_refresh_token(&longest).is_some());
    }

    #[test]
    fn next_secret_is_deterministic_and_depends_on_every_input() {
        let key = [7u8; 32];
        let prev = random_token();
        let a = next_refresh_secret(&key, "sid", &prev);
        assert_eq!(a, next_refresh_secret(&key, "sid", &prev));
        assert!(is_token_shaped(&a));
        assert_ne!(a, next_refresh_secret(&[8u8; 32], "sid", &prev));
        assert_ne!(a, next_refresh_secret(&key, "sid2", &prev));
        assert_ne!(a, next_refresh_secret(&key, "sid", &random_token()));
        // The separator keeps the boundary between id and secret.
        assert_ne!(
            next_refresh_secret(&key, "ab", "c"),
            next_refresh_secret(&key, "a", "bc")
        );
    }

    #[test]
    fn next_secret_is_hmac_sha256_of_id_nul_secret() {
        // RFC 4231 test case 2 checks the HMAC itself: key "Jefe", "what do ya want for nothing?".
        let mut mac = hmac_sha256(b"Jefe");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let key = [0x0bu8; 32];
        let mut mac = hmac_sha256(&key);
        mac.update(b"sid\0prev");
        let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(next_refresh_secret(&key, "sid", "prev"), expected);
    }

    #[test]
    fn new_secret_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/key");
        assert!(write_new_secret_file(&path, b"first").unwrap());
        assert!(!write_new_secret_file(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temporary files are left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key")]);
    }

    #[test]
    fn derived_keys_differ_by_label() {
        let master = [1u8; 32];
        assert_eq!(derive_key(&master, "a"), derive_key(&master, "a"));
        assert_ne!(derive_key(&master, "a"), derive_key(&master, "b"));
        assert_ne!(derive_key(&master, "a"), derive_key(&[2u8; 32], "a"));
    }
}
