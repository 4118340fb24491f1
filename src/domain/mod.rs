//! Parsed types: values that can only hold what is valid ("parse, don't validate").

mod duration;
pub mod password;
pub mod rate;

pub use duration::HumanDuration;
pub use password::{Password, PasswordPolicyError, PasswordRule};
pub use rate::RateSpec;
