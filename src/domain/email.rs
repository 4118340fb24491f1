use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// The longest local part (before the `@`) RFC 5321 allows.
const MAX_LOCAL_LEN: usize = 64;

/// The longest single DNS label.
const MAX_LABEL_LEN: usize = 63;

/// An email address that has been trimmed, normalised (Unicode NFKC), lower-cased and
/// checked for sane syntax.
///
/// Normalising at the edge is what makes addresses unique: the store only ever sees this
/// canonical form, so `Alice@example.com` and `ａlice@example.com` (a full-width first
/// letter) are one address. An address typed in another compatible form is mapped to its
/// canonical form, not refused: it is the same address to every mail system that applies
/// NFKC, and the user keeps the account it names. Quoted local parts, comments and IP
/// literals are refused on purpose; they are legal but no real sign-up uses them and
/// they are a favourite of parser-confusion attacks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a string is not an acceptable email address; the messages are written to be
/// shown next to the form field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing but whitespace was given.
    #[error("Email is required.")]
    Empty,
    /// Longer than [`MAX_EMAIL_LEN`] characters.
    #[error("Email must be at most 254 characters.")]
    TooLong,
    /// Not of the form `name@example.com`.
    #[error("Email must be a valid address such as name@example.com.")]
    Invalid,
}

impl Email {
    /// Parses user input: trims it, maps it to its canonical form (see [`canonical`]) and
    /// checks its syntax.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        let email = canonical(trimmed);
        let email = email.trim();
        if email.is_empty() {
            return Err(EmailError::Empty);
        }
        if email.chars().count() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = email.split_once('@').ok_or(EmailError::Invalid)?;
        let domain = unicode_domain(domain)?;
        if !valid_local_part(local) || !valid_domain(&domain) {
            return Err(EmailError::Invalid);
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// Wraps an address read back from storage, which was parsed when it was written.
    ///
    /// Not re-parsed, so that tightening the rules later never makes an existing
    /// account unreadable; made canonical again all the same, as the store relies on it.
    pub(crate) fn from_stored(stored: String) -> Self {
        if stored.is_ascii() && !stored.chars().any(|c| c.is_ascii_uppercase()) {
            Self(stored)
        } else {
            Self(canonical(&stored))
        }
    }

    /// The canonical (lower-cased) address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical address as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// The canonical form of an address: Unicode compatibility normalisation (NFKC), then
/// lower-casing, then NFKC again (lower-casing can leave a string that is not normalised).
///
/// This is the NFKC_Casefold idea of Unicode's identifier rules (UAX #31, UTS #39) with
/// the default lower-case mapping standing in for full case folding: full-width,
/// ligature and other compatibility forms become the plain letters they stand for, so
/// look-alike spellings of one address cannot register as two accounts.
pub fn canonical(input: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lowered: String = input.nfkc().collect::<String>().to_lowercase();
    lowered.nfkc().collect()
}

/// A domain in one spelling: an IDNA A-label (`xn--mnchen-3ya`) becomes the U-label it
/// stands for (`münchen`, UTS #46 `ToUnicode`), canonical like the rest of the address, so
/// the two spellings of one mailbox cannot register as two accounts. A domain without
/// A-labels is kept as it is; an A-label that decodes to nothing valid is `Invalid`.
fn unicode_domain(domain: &str) -> Result<String, EmailError> {
    if !domain.split('.').any(|label| label.starts_with("xn--")) {
        return Ok(domain.to_owned());
    }
    match idna::domain_to_unicode(domain) {
        (unicode, Ok(())) => Ok(canonical(&unicode)),
        (_, Err(_)) => Err(EmailError::Invalid),
    }
}

/// Dot-atom local part: printable atext characters (any Unicode letter or digit
/// counts as one, per RFC 6531), dots only between them.
fn valid_local_part(local: &str) -> bool {
    const ATEXT_SYMBOLS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && local.chars().count() <= MAX_LOCAL_LEN
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c == '.' || c.is_alphanumeric() || ATEXT_SYMBOLS.contains(c))
}

/// A host name with at least two labels; letters, digits and inner hyphens only,
/// and a top-level label that is not all digits (so `1.2.3.4` is refused).
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty()
            && label.chars().count() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c == '-' || c.is_alphanumeric())
    });
    let tld_ok = labels
        .last()
        .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    labels_ok && tld_ok
}

impl FromStr for Email {
    type Err = EmailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lower_cases() {
        let email = Email::parse("  Alice.Smith+Tag@Example.COM \n").unwrap();
        assert_eq!(email.as_str(), "alice.smith+tag@example.com");
        assert_eq!(email.domain(), "example.com");
        assert_eq!(email.to_string(), "alice.smith+tag@example.com");
    }

    #[test]
    fn an_idna_domain_has_one_spelling() {
        let cases = [
            ("dup@xn--mnchen-3ya.de", "dup@münchen.de"),
            ("dup@münchen.de", "dup@münchen.de"),
            ("dup@XN--MNCHEN-3YA.DE", "dup@münchen.de"),
            ("dup@MÜNCHEN.de", "dup@münchen.de"),
            ("dupb@xn--zca.corp.test", "dupb@ß.corp.test"),
            ("dupb@ß.corp.test", "dupb@ß.corp.test"),
            ("a@mail.xn--mnchen-3ya.de", "a@mail.münchen.de"),
            ("plain@example.com", "plain@example.com"),
        ];
        for (input, want) in cases {
            assert_eq!(Email::parse(input).unwrap().as_str(), want, "{input}");
        }
        for broken in ["a@xn--.de", "a@xn--a.de", "a@xn--zz-.de"] {
            assert_eq!(Email::parse(broken), Err(EmailError::Invalid), "{broken}");
        }
    }

    #[test]
    fn same_address_in_other_case_is_equal() {
        assert_eq!(
            Email::parse("BOB@example.org").unwrap(),
            Email::parse("bob@EXAMPLE.org").unwrap()
        );
    }

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@b.co",
            "first.last@sub.example.co.uk",
            "o'neil@example.ie",
            "user_name-1@my-host.example",
            "x@xn--80ak6aa92e.com",
            "jörg@müller.de",
        ] {
            assert!(Email::parse(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "plainaddress",
            "@example.com",
            "user@",
            "user@localhost",
            "user@@example.com",
            "user@exa@mple.com",
            ".user@example.com",
            "user.@example.com",
            "us..er@example.com",
            "user@example..com",
            "user@.example.com",
            "user@example.com.",
            "user@-example.com",
            "user@example-.com",
            "user name@example.com",
            "user@exam ple.com",
            "\"quoted\"@example.com",
            "user@[127.0.0.1]",
            "user@127.0.0.1",
            "user\u{0}@example.com",
            "user@example.com\r\nBcc: x@example.com",
            "<user@example.com>",
            "user(comment)@example.com",
        ] {
            assert_eq!(
                Email::parse(bad),
                Err(EmailError::Invalid),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn empty_input_says_required() {
        assert_eq!(Email::parse(""), Err(EmailError::Empty));
        assert_eq!(Email::parse("   \t"), Err(EmailError::Empty));
        assert_eq!(EmailError::Empty.to_string(), "Email is required.");
    }

    #[test]
    fn enforces_length_limits() {
        let address = |last_label: usize| {
            format!(
                "{}@{}.{}.{}.com",
                "l".repeat(64),
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(last_label)
            )
        };
        let longest = address(57);
        assert_eq!(longest.len(), MAX_EMAIL_LEN);
        assert!(Email::parse(&longest).is_ok());
        assert_eq!(Email::parse(&address(58)), Err(EmailError::TooLong));

        let long_local = format!("{}@example.com", "l".repeat(65));
        assert_eq!(Email::parse(&long_local), Err(EmailError::Invalid));

        let long_label = format!("user@{}.com", "d".repeat(64));
        assert_eq!(Email::parse(&long_label), Err(EmailError::Invalid));
    }

    #[test]
    fn serde_round_trip_parses_on_the_way_in() {
        let email: Email = serde_json::from_str("\" Carol@Example.com \"").unwrap();
        assert_eq!(email.as_str(), "carol@example.com");
        assert_eq!(
            serde_json::to_string(&email).unwrap(),
            "\"carol@example.com\""
        );
        assert!(serde_json::from_str::<Email>("\"not-an-email\"").is_err());
    }

    #[test]
    fn compatibility_forms_map_to_one_address() {
        let plain = Email::parse("alice@example.com").unwrap();
        for look_alike in [
            "\u{ff41}lice@example.com",        // full-width a
            "\u{ff21}LICE@example.com",        // full-width A
            "alice\u{ff20}example\u{ff0e}com", // full-width @ and .
            "ALICE@EXAMPLE.COM",
        ] {
            assert_eq!(Email::parse(look_alike).unwrap(), plain, "{look_alike:?}");
        }
        // A ligature becomes its letters; a composed and a decomposed ü are one address.
        assert_eq!(
            Email::parse("\u{fb01}n@example.com").unwrap().as_str(),
            "fin@example.com"
        );
        assert_eq!(
            Email::parse("ju\u{0308}rg@example.de").unwrap(),
            Email::parse("j\u{00fc}rg@example.de").unwrap()
        );
        assert_eq!(Email::from_stored("\u{ff41}lice@example.com".into()), plain);
    }

    #[test]
    fn from_str_matches_parse() {
        let email: Email = "Dave@Example.com".parse().unwrap();
        assert_eq!(email, Email::parse("dave@example.com").unwrap());
    }
}
