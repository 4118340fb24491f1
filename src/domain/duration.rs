use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write them in config files: `"15m"`, `"7d"`, `"1h 30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// Wraps an already-known duration.
    pub const fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// Shorthand for a whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The underlying [`Duration`].
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole seconds, rounded up so that a non-zero duration never becomes zero.
    pub fn as_secs_ceil(self) -> u64 {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs
        }
    }
}

impl From<HumanDuration> for Duration {
    fn from(value: HumanDuration) -> Self {
        value.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("expected a duration such as \"30s\", \"15m\", \"7d\"".into());
        }
        humantime::parse_duration(s).map(Self).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write it like \"30s\", \"15m\", \"7d\"")
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(
            "15m".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(900)
        );
        assert_eq!(
            "7d".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            "1h 30m".parse::<HumanDuration>().unwrap().get(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().get(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!("".parse::<HumanDuration>().is_err());
        assert!("fifteen minutes".parse::<HumanDuration>().is_err());
        assert!("15".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn rounds_seconds_up() {
        assert_eq!(
            HumanDuration::new(Duration::from_millis(1500)).as_secs_ceil(),
            2
        );
        assert_eq!(HumanDuration::from_secs(3).as_secs_ceil(), 3);
    }
}
