//! Authentication building blocks: password hashing, tokens and their keys, random secrets,
//! the TOTP second factor.
//!
//! These are plain types with no I/O beyond the key files read at start; the account API
//! and the gateway combine them with the user and session stores.

pub mod jwt;
pub mod password;
pub mod secrets;
pub mod totp;

pub use jwt::{AccessClaims, AssertionClaims, KeyError, KeyRing, TokenError};
pub use password::{PasswordError, PasswordHasher, Verified};
pub use totp::{Provisioning, SecretBox, TotpError, TotpSecret, TwoFactor};

#[cfg(test)]
mod tests {
    /// These are shared across the API runtime and Pingora's runtimes behind an `Arc`.
    #[test]
    fn shared_types_are_send_and_sync() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<super::KeyRing>();
        shareable::<super::PasswordHasher>();
        shareable::<super::TwoFactor>();
    }
}
