use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::HumanDuration;

/// A rate limit written as `"COUNT/WINDOW"`, e.g. `"10/15m"` or `"3/1h"`.
///
/// In config, an empty string or `"0"` means "no limit" and deserializes to `None`
/// through [`deserialize_optional_rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// How many requests the window allows.
    pub limit: u32,
    /// The window length.
    pub window: Duration,
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hint = "write a rate like \"10/15m\" (ten per fifteen minutes), or \"\" to disable";
        let (count, window) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid rate {s:?}; {hint}"))?;
        let limit: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid count {count:?} in rate {s:?}; {hint}"))?;
        if limit == 0 {
            return Err(format!("rate {s:?} allows nothing; {hint}"));
        }
        let window: HumanDuration = window
            .parse()
            .map_err(|e| format!("invalid window in rate {s:?}: {e}"))?;
        if window.get().is_zero() {
            return Err(format!("rate {s:?} has an empty window; {hint}"));
        }
        Ok(Self {
            limit,
            window: window.get(),
        })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.window)
        )
    }
}

impl Serialize for RateSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserializes an optional rate: `""`, `"0"` and `"off"` disable it.
pub fn deserialize_optional_rate<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RateSpec>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(i64),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(0) => Ok(None),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "invalid rate {n}; write a rate like \"10/15m\", or \"\" to disable"
        ))),
        Raw::Text(s) => {
            let t = s.trim();
            if t.is_empty() || t == "0" || t.eq_ignore_ascii_case("off") {
                Ok(None)
            } else {
                t.parse().map(Some).map_err(serde::de::Error::custom)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_count_and_window() {
        let r: RateSpec = "10/15m".parse().unwrap();
        assert_eq!(r.limit, 10);
        assert_eq!(r.window, Duration::from_secs(900));
        let r: RateSpec = " 3 / 1h ".parse().unwrap();
        assert_eq!((r.limit, r.window), (3, Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_malformed_rates() {
        for bad in ["10", "ten/15m", "10/", "/15m", "0/15m", "10/0s", "-1/1m"] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad} should fail");
        }
    }
}
