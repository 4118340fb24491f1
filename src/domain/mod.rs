//! Parsed types: values that can only hold what is valid ("parse, don't validate").

mod duration;
pub mod rate;

pub use duration::HumanDuration;
pub use rate::RateSpec;
