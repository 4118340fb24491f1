//! TOTP codes computed here by hand (RFC 6238, SHA-1, 6 digits, 30 s), as an authenticator
//! app would, not by the code under test.

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};

/// Decodes RFC 4648 base32 (no padding needed).
pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c.to_ascii_uppercase())
            .expect("base32") as u64;
        bits = (bits << 5) | v;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// The 30 s step of now (RFC 6238's counter).
pub fn current_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30
}

/// Waits, when the current 30 s step ends within `margin`, until the next one begins: a
/// code computed after this is still in the step it was computed for when the gateway
/// checks it (a code of the previous step sent at a step's very end is two steps old on
/// arrival, outside the accepted window).
pub async fn clear_of_step_end(margin: std::time::Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into_step = std::time::Duration::from_millis((now.as_millis() % 30_000) as u64);
    let left = std::time::Duration::from_secs(30) - into_step;
    if left < margin {
        tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    }
}

/// RFC 6238 TOTP for the 30 s step `offset` steps from now.
pub fn totp(secret_base32: &str, offset: i64) -> String {
    totp_at(secret_base32, (current_step() as i64 + offset) as u64)
}

/// RFC 6238 TOTP for the 30 s step `counter` (an absolute step, as [`current_step`]).
pub fn totp_at(secret_base32: &str, counter: u64) -> String {
    let key = base32_decode(secret_base32);
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let o = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        digest[o] & 0x7f,
        digest[o + 1],
        digest[o + 2],
        digest[o + 3],
    ]);
    format!("{:06}", value % 1_000_000)
}

/// Six-digit codes that are not valid for this secret now (nor one step either side).
pub fn wrong_codes(secret_base32: &str, n: usize) -> Vec<String> {
    let valid: Vec<String> = (-2..=2).map(|o| totp(secret_base32, o)).collect();
    (0..)
        .map(|i| format!("{:06}", 123_456 + i))
        .filter(|c| !valid.contains(c))
        .take(n)
        .collect()
}
