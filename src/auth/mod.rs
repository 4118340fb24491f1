//! Authentication building blocks: password hashing, tokens and their keys, random secrets.
//!
//! These are plain types with no I/O beyond the key files read at start; the account API
//! and the gateway combine them with the user and session stores.

pub mod jwt;
pub mod password;
pub mod secrets;

pub use jwt::{AccessClaims, AssertionClaims, KeyError, KeyRing, TokenError};
pub use password::{PasswordError, PasswordHasher};
