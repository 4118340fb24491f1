//! Parsed types: values that can only hold what is valid ("parse, don't validate").

mod duration;
pub mod email;
pub mod ids;
pub mod password;
pub mod rate;

pub use duration::HumanDuration;
pub use email::{Email, EmailError};
pub use ids::{InvalidUserId, UserId};
pub use password::{Password, PasswordPolicyError, PasswordRule};
pub use rate::RateSpec;
