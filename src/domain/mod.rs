//! Parsed types: values that can only hold what is valid ("parse, don't validate").

/// sRGB colours and their WCAG contrast ([`Rgb`]).
pub mod colour;
/// The browser and system a `User-Agent` names ([`Device`]).
pub mod device;
mod duration;
/// Email addresses, normalised and checked once ([`Email`]).
pub mod email;
/// Identifiers of accounts ([`UserId`]) and their passkeys ([`PasskeyId`]).
pub mod ids;
pub mod password;
/// Rate limits written `COUNT/WINDOW`, e.g. `10/15m` ([`RateSpec`]).
pub mod rate;
pub mod text;

pub use colour::Rgb;
pub use device::Device;
pub use duration::HumanDuration;
pub use email::{Email, EmailError};
pub use ids::{InvalidPasskeyId, InvalidUserId, PasskeyId, UserId};
pub use password::{
    Hint, NewPassword, Password, PasswordPolicy, PasswordPolicyError, PasswordRule,
};
pub use rate::RateSpec;
