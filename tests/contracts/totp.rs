//! The TOTP second factor from the outside: codes checked against an independent RFC 6238
//! implementation, provisioning data as an authenticator app reads it, secrets sealed at
//! rest under a key file, and recovery codes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Barrier};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use uuid::Uuid;

use portcullis::auth::totp::{
    self, SecretBox, TotpError, TotpSecret, TwoFactor, generate_recovery_codes, hash_recovery_code,
    looks_like_recovery_code, replay_key, verify_code,
};
use portcullis::config::TwoFactorConfig;
use portcullis::domain::UserId;

/// RFC 6238 appendix B: the SHA-1 seed.
const RFC_SEED: &[u8; 20] = b"12345678901234567890";

/// RFC 6238 appendix B, SHA-1 rows: (time, 8-digit TOTP).
const RFC_VECTORS: [(u64, &str); 6] = [
    (59, "94287082"),
    (1_111_111_109, "07081804"),
    (1_111_111_111, "14050471"),
    (1_234_567_890, "89005924"),
    (2_000_000_000, "69279037"),
    (20_000_000_000, "65353130"),
];

/// RFC 4226 HOTP with HMAC-SHA-1 and dynamic truncation, written from the RFC text.
fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).unwrap();
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    let value = binary % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// RFC 6238: HOTP over the number of 30-second steps since the epoch.
fn totp_at_step(secret: &[u8], step: u64) -> String {
    hotp(secret, step, 6)
}

fn user() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0123_4567_89ab_4cde_8f01_2345_6789_abcd))
}

fn config(key_file: &Path, issuer: &str) -> TwoFactorConfig {
    TwoFactorConfig {
        issuer: issuer.into(),
        encryption_key_file: key_file.to_string_lossy().into_owned(),
    }
}

#[test]
fn reference_implementation_reproduces_rfc_6238_appendix_b() {
    for (time, code) in RFC_VECTORS {
        assert_eq!(hotp(RFC_SEED, time / 30, 8), code, "t={time}");
    }
}

#[test]
fn rfc_6238_sha1_vectors_are_accepted_as_six_digit_codes() {
    for (time, code8) in RFC_VECTORS {
        let code6 = &code8[2..];
        assert_eq!(totp_at_step(RFC_SEED, time / 30), code6);
        assert_eq!(
            verify_code(RFC_SEED, code6, time),
            Some(time / 30),
            "t={time}"
        );
        // The 8-digit form is not a 6-digit code.
        assert_eq!(verify_code(RFC_SEED, code8, time), None);
    }
}

#[test]
fn previous_current_and_next_step_are_accepted_two_away_refused() {
    for _ in 0..50 {
        let secret = TotpSecret::generate();
        let key = secret.as_bytes();
        let now = 1_700_000_015u64;
        let step = now / 30;
        let window: Vec<String> = (step - 1..=step + 1)
            .map(|s| totp_at_step(key, s))
            .collect();
        for s in [step - 1, step, step + 1] {
            let code = totp_at_step(key, s);
            let matched = verify_code(key, &code, now).expect("code in the window");
            // Another step in the window may share the code (one in a million); either way
            // the step returned must produce this code.
            assert_eq!(totp_at_step(key, matched), code);
            if window.iter().filter(|c| **c == code).count() == 1 {
                assert_eq!(matched, s);
            }
        }
        for s in [step - 2, step + 2, step - 10, step + 10] {
            let code = totp_at_step(key, s);
            if !window.contains(&code) {
                assert_eq!(verify_code(key, &code, now), None, "step {s}");
            }
        }
    }
}

#[test]
fn acceptance_follows_the_clock_across_step_boundaries() {
    let code = totp_at_step(RFC_SEED, 100);
    // Step 100 is accepted while the clock is in step 99, 100 or 101: [2970, 3060).
    assert_eq!(verify_code(RFC_SEED, &code, 2969), None);
    assert_eq!(verify_code(RFC_SEED, &code, 2970), Some(100));
    assert_eq!(verify_code(RFC_SEED, &code, 3059), Some(100));
    assert_eq!(verify_code(RFC_SEED, &code, 3060), None);
}

#[test]
fn non_digits_and_wrong_lengths_are_refused() {
    let now = 1_111_111_111;
    let good = totp_at_step(RFC_SEED, now / 30);
    assert!(verify_code(RFC_SEED, &good, now).is_some());
    let bad_inputs = [
        String::new(),
        good[..5].to_owned(),
        format!("{good}0"),
        format!("0{good}"),
        format!(" {good}"),
        format!("{good} "),
        format!("{}-{}", &good[..3], &good[3..]),
        format!("{}a", &good[..5]),
        format!("+{}", &good[1..]),
        format!("-{}", &good[1..]),
        "٠١٢٣٤٥".to_owned(),
    ];
    for bad in bad_inputs {
        assert_eq!(verify_code(RFC_SEED, &bad, now), None, "{bad:?}");
    }
}

#[test]
fn otpauth_url_has_the_key_uri_shape_with_encoded_issuer_and_email() {
    let secret = TotpSecret::from_bytes(*RFC_SEED);
    let p = totp::provisioning("Acme Gate", "alice+2fa@example.com", &secret).unwrap();
    assert_eq!(p.secret_base32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    assert_eq!(
        p.otpauth_url,
        "otpauth://totp/Acme%20Gate:alice%2B2fa%40example.com\
         ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Gate"
    );

    // What a URL parser (as in an authenticator app) makes of it.
    let url = url::Url::parse(&p.otpauth_url).unwrap();
    assert_eq!(url.scheme(), "otpauth");
    assert_eq!(url.host_str(), Some("totp"));
    let label = percent_decode(url.path().trim_start_matches('/'));
    assert_eq!(label, "Acme Gate:alice+2fa@example.com");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        vec![
            ("secret".into(), p.secret_base32.clone()),
            ("issuer".into(), "Acme Gate".into()),
        ]
    );
}

/// Minimal percent-decoding for the URL path (the `url` crate leaves paths encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn qr_code_is_a_png_of_exactly_the_otpauth_url() {
    let secret = TotpSecret::generate();
    let p = totp::provisioning("Acme Gate", "alice+2fa@example.com", &secret).unwrap();
    let b64 = p
        .qr_code_data_url
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    let png = STANDARD.decode(b64).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    assert_eq!(image.width(), image.height());

    // The modules of the QR symbol for the otpauth URL, compared with the picture: a
    // 4-module quiet zone around the symbol, each module a square of `scale` pixels.
    let qr = qrcodegen::QrCode::encode_text(&p.otpauth_url, qrcodegen::QrCodeEcc::Medium).unwrap();
    let modules = qr.size() as u32 + 8;
    assert_eq!(image.width() % modules, 0, "whole pixels per module");
    let scale = image.width() / modules;
    for y in 0..modules {
        for x in 0..modules {
            let inside = (4..modules - 4).contains(&x) && (4..modules - 4).contains(&y);
            let dark = inside && qr.get_module(x as i32 - 4, y as i32 - 4);
            let pixel = image
                .get_pixel(x * scale + scale / 2, y * scale + scale / 2)
                .0[0];
            assert_eq!(pixel < 128, dark, "module ({x}, {y})");
        }
    }
}

#[test]
fn setup_secret_read_back_from_the_url_verifies_codes() {
    let dir = tempfile::tempdir().unwrap();
    let two_factor = TwoFactor::load(&config(&dir.path().join("totp.key"), "Portcullis")).unwrap();
    let p = two_factor.setup("bob@example.com").unwrap();
    let url = url::Url::parse(&p.otpauth_url).unwrap();
    let from_url = url
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(from_url, p.secret_base32);
    // The client sends the secret back, maybe in lower case and grouped.
    let grouped = p
        .secret_base32
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let secret = TotpSecret::from_base32(&grouped).unwrap();
    let now = 1_800_000_000;
    let code = totp_at_step(secret.as_bytes(), now / 30);
    assert_eq!(verify_code(secret.as_bytes(), &code, now), Some(now / 30));
    // Two setups never share a secret.
    assert_ne!(
        two_factor.setup("bob@example.com").unwrap().secret_base32,
        p.secret_base32
    );
}

#[test]
fn secrets_of_the_wrong_shape_are_refused_with_a_clear_error() {
    for bad in [
        "",
        "GEZDGNBVGY3TQOJQ",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZD",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ!",
    ] {
        let err = TotpSecret::from_base32(bad).unwrap_err();
        assert!(matches!(err, TotpError::InvalidSecret(_)), "{bad}");
        assert!(err.to_string().contains("base32"), "{err}");
    }
}

#[test]
fn key_file_is_created_private_and_reloads_to_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/keys/totp.key");
    let first = SecretBox::load(&config(&path, "Portcullis")).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    let secret = TotpSecret::generate();
    let sealed = first.seal_secret(user(), &secret).unwrap();
    let second = SecretBox::load(&config(&path, "Portcullis")).unwrap();
    assert_eq!(second.open_secret(user(), &sealed).unwrap(), secret);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "not rewritten"
    );

    // A key in another directory is another key.
    let other = SecretBox::load_or_create(&dir.path().join("other.key")).unwrap();
    assert!(matches!(
        other.open_secret(user(), &sealed),
        Err(TotpError::Decrypt)
    ));
}

#[test]
fn concurrent_first_starts_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(dir.path().join("totp.key"));
    let barrier = Arc::new(Barrier::new(8));
    let boxes: Vec<SecretBox> = (0..8)
        .map(|_| {
            let path = Arc::clone(&path);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                SecretBox::load_or_create(&path).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let secret = TotpSecret::generate();
    for sealer in &boxes {
        let sealed = sealer.seal_secret(user(), &secret).unwrap();
        for opener in &boxes {
            assert_eq!(opener.open_secret(user(), &sealed).unwrap(), secret);
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left behind");
}

#[test]
fn an_operator_supplied_key_file_is_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("totp.key");
    let key = [0x5au8; 32];
    std::fs::write(&path, format!("{}\n", STANDARD.encode(key))).unwrap();
    let loaded = SecretBox::load_or_create(&path).unwrap();
    let secret = TotpSecret::generate();
    let sealed = SecretBox::from_key(&key)
        .seal_secret(user(), &secret)
        .unwrap();
    assert_eq!(loaded.open_secret(user(), &sealed).unwrap(), secret);
}

#[test]
fn unusable_key_files_are_refused_with_the_path_and_the_expected_format() {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in [
        ("short.key", STANDARD.encode([1u8; 16])),
        ("garbage.key", "not a key at all".to_owned()),
        ("empty.key", String::new()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &contents).unwrap();
        let err = SecretBox::load_or_create(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, TotpError::KeyInvalid { .. }),
            "{name}: {text}"
        );
        assert!(text.contains(name), "{text}");
        assert!(text.contains("openssl rand -base64 32"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            contents,
            "left alone"
        );
    }
    // A directory where the file should be cannot be read.
    let err = SecretBox::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, TotpError::KeyRead { .. }), "{err}");
}

#[test]
fn sealed_secrets_are_bound_to_their_user_and_detect_tampering() {
    let sealer = SecretBox::from_key(&[3; 32]);
    let secret = TotpSecret::generate();
    let sealed = sealer.encrypt(user(), secret.as_bytes()).unwrap();
    assert_eq!(
        sealer.decrypt(user(), &sealed).unwrap(),
        secret.as_bytes().to_vec()
    );
    // The plaintext does not appear in the sealed form.
    assert!(
        !sealed
            .windows(secret.as_bytes().len())
            .any(|w| w == secret.as_bytes())
    );
    // Another account's row.
    let someone_else = UserId::from_uuid(Uuid::from_u128(user().as_uuid().as_u128() ^ 1));
    assert!(matches!(
        sealer.decrypt(someone_else, &sealed),
        Err(TotpError::Decrypt)
    ));
    // Any flipped bit, any truncation, any extension.
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut tampered = sealed.clone();
            tampered[i] ^= bit;
            assert!(sealer.decrypt(user(), &tampered).is_err(), "byte {i}");
        }
    }
    for len in 0..sealed.len() {
        assert!(sealer.decrypt(user(), &sealed[..len]).is_err(), "len {len}");
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(sealer.decrypt(user(), &longer).is_err());
    // Debug output of the box shows no key.
    assert!(!format!("{sealer:?}").contains('3'));
}

#[test]
fn recovery_codes_normalize_before_hashing() {
    let a = hash_recovery_code(user(), "ABCD-efgh-1234");
    assert_eq!(a, hash_recovery_code(user(), "abcdefgh1234"));
    assert_eq!(a, hash_recovery_code(user(), "abcd efgh 1234"));
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a, hash_recovery_code(user(), "abcd-efgh-1243"));

    let codes = generate_recovery_codes();
    assert_eq!(codes.len(), 10);
    let hashes: HashSet<String> = codes
        .iter()
        .map(|c| hash_recovery_code(user(), c))
        .collect();
    assert_eq!(hashes.len(), 10);
    for code in &codes {
        assert!(looks_like_recovery_code(code));
        assert!(looks_like_recovery_code(&code.to_uppercase()));
        assert!(hashes.contains(&hash_recovery_code(
            user(),
            &code.to_uppercase().replace('-', "")
        )));
    }
    assert!(!looks_like_recovery_code("123456"));
}

/// The whole story as the account API is meant to tell it: setup, enable with the secret the
/// client sends back, then logins with a code (once) or a recovery code (once).
#[test]
fn enable_then_login_with_single_use_codes() {
    let dir = tempfile::tempdir().unwrap();
    let two_factor = TwoFactor::load(&config(&dir.path().join("totp.key"), "Portcullis")).unwrap();
    let user_id = user();
    let mut claimed: HashSet<String> = HashSet::new();

    // setup-2fa: nothing stored yet.
    let p = two_factor.setup("carol@example.com").unwrap();

    // enable-2fa {secret, token}.
    let now = 1_750_000_000u64;
    let secret = TotpSecret::from_base32(&p.secret_base32).unwrap();
    let token = totp_at_step(secret.as_bytes(), now / 30);
    let step = verify_code(secret.as_bytes(), &token, now).unwrap();
    assert!(claimed.insert(replay_key(user_id, step)));
    let stored_secret = two_factor
        .secret_box()
        .seal_secret(user_id, &secret)
        .unwrap();
    let codes = generate_recovery_codes();
    let mut stored_codes: HashSet<String> = codes
        .iter()
        .map(|c| hash_recovery_code(user_id, c))
        .collect();

    // login with the same code in the same step: replay.
    let opened = two_factor
        .secret_box()
        .open_secret(user_id, &stored_secret)
        .unwrap();
    let step = verify_code(opened.as_bytes(), &token, now + 5).unwrap();
    assert!(!claimed.insert(replay_key(user_id, step)), "replay refused");

    // login in the next step with the next code.
    let later = now + 30;
    let token = totp_at_step(opened.as_bytes(), later / 30);
    let step = verify_code(opened.as_bytes(), &token, later).unwrap();
    assert!(claimed.insert(replay_key(user_id, step)));

    // login with a recovery code, typed in capitals: once only.
    let typed = codes[3].to_uppercase();
    assert!(looks_like_recovery_code(&typed));
    assert!(stored_codes.remove(&hash_recovery_code(user_id, &typed)));
    assert!(!stored_codes.remove(&hash_recovery_code(user_id, &typed)));
    assert_eq!(stored_codes.len(), 9);
}
