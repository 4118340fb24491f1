//! The browser and system a `User-Agent` names ("Chrome", "Linux"), by woothee's rules
//! (compiled-in data, no network): how a signed-in device is shown on pages and in mails,
//! rather than the header's own text, which the client writes as it likes.

use std::fmt;

/// What woothee answers for a part it could not tell.
const UNKNOWN: &str = "UNKNOWN";

/// A device as a `User-Agent` names it; either part may be unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    /// The browser or program: `Chrome`, `Firefox`, `curl`.
    pub browser: Option<String>,
    /// The operating system as its maker names it today: `Linux`, `macOS`, `iPhone`.
    pub os: Option<String>,
}

impl Device {
    /// The browser and system of `user_agent`; [`Device::default`] (both unknown) for a
    /// header woothee's rules do not know.
    pub fn of(user_agent: &str) -> Self {
        let Some(found) = woothee::parser::Parser::new().parse(user_agent) else {
            return Self::default();
        };
        let known = |part: &str| (!part.is_empty() && part != UNKNOWN).then(|| part.to_owned());
        Self {
            browser: known(found.name),
            os: known(found.os).map(system_name),
        }
    }
}

/// "Firefox · Linux", one part alone when the other is unknown, `""` when both are: the
/// language-neutral form (mails); pages use their catalogue's "Firefox on Linux".
impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.browser, &self.os) {
            (Some(browser), Some(os)) => write!(f, "{browser} · {os}"),
            (Some(one), None) | (None, Some(one)) => f.write_str(one),
            (None, None) => Ok(()),
        }
    }
}

/// A system's name as its maker writes it today, where woothee's data has an older one.
fn system_name(os: String) -> String {
    match os.as_str() {
        "Mac OSX" => "macOS".to_owned(),
        "Windows UNKNOWN Ver" => "Windows".to_owned(),
        _ => os,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_agent_is_a_browser_and_a_system_never_its_own_text() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(Device::of(firefox).to_string(), "Firefox · Linux");
        let mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 \
                   (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
        assert_eq!(Device::of(mac).to_string(), "Safari · macOS");
        for hostile in [
            "<a href=\"https://evil.example/reset\">Click here to secure your account</a>",
            "Click here: https://evil.example/\u{202e}",
            "",
        ] {
            assert_eq!(Device::of(hostile), Device::default(), "{hostile}");
            assert_eq!(Device::of(hostile).to_string(), "");
        }
    }
}
