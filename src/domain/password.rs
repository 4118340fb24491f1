//! A new password that satisfies the password policy, and the one form passwords are
//! compared in.
//!
//! Only passwords being *set* (register, reset, change) go through [`Password::parse`];
//! login checks whatever string it receives against the stored hash. Both sides see the
//! text through [`normalize`] (RFC 8265 OpaqueString), so a password typed on a keyboard
//! that composes characters differently (NFD, as macOS file names and some input methods
//! produce) is the same password.

use std::borrow::Cow;
use std::fmt;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Fewest characters (Unicode scalar values) a password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Most characters a password may have.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Most UTF-8 bytes a password may have: bcrypt reads only the first 72 bytes, so a longer
/// password would be silently truncated. Portcullis rejects it instead of pre-hashing it.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// A password as RFC 8265 §4.2 (the OpaqueString profile) compares it: every non-ASCII
/// space (Unicode general category Zs) mapped to U+0020 (§4.2.1, additional mapping rule),
/// then Unicode Normalization Form C (§4.2.1, normalization rule). No case or width
/// mapping. Borrows when the text is already in that form, as ASCII always is.
pub fn normalize(text: &str) -> Cow<'_, str> {
    let spaced = text.chars().any(is_non_ascii_space);
    if !spaced && is_nfc_quick(text.chars()) == IsNormalized::Yes {
        return Cow::Borrowed(text);
    }
    let mapped = text
        .chars()
        .map(|c| if is_non_ascii_space(c) { ' ' } else { c });
    Cow::Owned(mapped.nfc().collect())
}

/// Unicode's space separators (general category Zs) other than U+0020.
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// One rule of the password policy that a candidate password breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordRule {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    TooShort,
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    TooManyCharacters,
    /// More than [`MAX_PASSWORD_BYTES`] bytes in UTF-8.
    TooManyBytes,
    /// No lower-case letter.
    NoLowercase,
    /// No upper-case letter.
    NoUppercase,
    /// No digit.
    NoDigit,
    /// No symbol (a character that is neither a letter nor a digit).
    NoSymbol,
    /// A control character (NUL, newline, tab, …), which cannot be typed reliably.
    ControlCharacter,
}

impl PasswordRule {
    /// The message shown to the user for this rule.
    pub fn message(self) -> &'static str {
        match self {
            Self::TooShort => "Password must be at least 8 characters long",
            Self::TooManyCharacters => "Password must be at most 128 characters long",
            Self::TooManyBytes => {
                "Password must be at most 72 bytes in UTF-8: bcrypt ignores anything beyond, \
                 so longer passwords are refused rather than truncated \
                 (letters outside ASCII take 2 to 4 bytes each)"
            }
            Self::NoLowercase => "Password must contain at least one lower-case letter",
            Self::NoUppercase => "Password must contain at least one upper-case letter",
            Self::NoDigit => "Password must contain at least one digit",
            Self::NoSymbol => {
                "Password must contain at least one symbol (a character that is not a letter or digit)"
            }
            Self::ControlCharacter => {
                "Password must not contain control characters such as NUL, tab or newline"
            }
        }
    }
}

impl fmt::Display for PasswordRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A password that breaks one or more rules; lists every broken rule so the user can fix all at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PasswordPolicyError {
    violations: Vec<PasswordRule>,
}

impl PasswordPolicyError {
    /// The broken rules, in a stable order.
    pub fn violations(&self) -> &[PasswordRule] {
        &self.violations
    }

    /// One message per broken rule, for the API's `errors` array.
    pub fn messages(&self) -> Vec<String> {
        self.violations
            .iter()
            .map(|r| r.message().to_owned())
            .collect()
    }
}

impl fmt::Display for PasswordPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(rule.message())?;
        }
        Ok(())
    }
}

/// A password that meets the policy; its text never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Checks every rule and returns the password, or every rule it breaks.
    ///
    /// The rules apply to, and the password keeps, the text in its [`normalize`]d form
    /// (RFC 8265 OpaqueString); nothing is trimmed.
    pub fn parse(candidate: String) -> Result<Self, PasswordPolicyError> {
        let candidate = match normalize(&candidate) {
            Cow::Borrowed(_) => candidate,
            Cow::Owned(normalized) => normalized,
        };
        let mut chars = 0usize;
        let (mut lower, mut upper, mut digit, mut symbol, mut control) =
            (false, false, false, false, false);
        for c in candidate.chars() {
            chars += 1;
            if c.is_control() {
                control = true;
            } else if c.is_lowercase() {
                lower = true;
            } else if c.is_uppercase() {
                upper = true;
            } else if c.is_numeric() {
                digit = true;
            } else if !c.is_alphanumeric() {
                symbol = true;
            }
        }

        let checks = [
            (chars < MIN_PASSWORD_CHARS, PasswordRule::TooShort),
            (chars > MAX_PASSWORD_CHARS, PasswordRule::TooManyCharacters),
            (
                candidate.len() > MAX_PASSWORD_BYTES,
                PasswordRule::TooManyBytes,
            ),
            (!lower, PasswordRule::NoLowercase),
            (!upper, PasswordRule::NoUppercase),
            (!digit, PasswordRule::NoDigit),
            (!symbol, PasswordRule::NoSymbol),
            (control, PasswordRule::ControlCharacter),
        ];
        let violations: Vec<PasswordRule> = checks
            .into_iter()
            .filter_map(|(broken, rule)| broken.then_some(rule))
            .collect();
        if violations.is_empty() {
            Ok(Self(candidate))
        } else {
            Err(PasswordPolicyError { violations })
        }
    }

    /// The password text in its [`normalize`]d form, for hashing; keep the borrow short
    /// and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(s: &str) -> Vec<PasswordRule> {
        match Password::parse(s.to_owned()) {
            Ok(_) => Vec::new(),
            Err(e) => e.violations().to_vec(),
        }
    }

    #[test]
    fn accepts_a_password_meeting_every_rule() {
        let p = Password::parse("SecurePass123!".into()).unwrap();
        assert_eq!(p.expose(), "SecurePass123!");
    }

    #[test]
    fn lists_every_broken_rule_at_once() {
        assert_eq!(
            violations("abc"),
            vec![
                PasswordRule::TooShort,
                PasswordRule::NoUppercase,
                PasswordRule::NoDigit,
                PasswordRule::NoSymbol
            ]
        );
        assert_eq!(
            violations(""),
            vec![
                PasswordRule::TooShort,
                PasswordRule::NoLowercase,
                PasswordRule::NoUppercase,
                PasswordRule::NoDigit,
                PasswordRule::NoSymbol
            ]
        );
    }

    #[test]
    fn each_character_class_is_required() {
        assert_eq!(
            violations("SECUREPASS123!"),
            vec![PasswordRule::NoLowercase]
        );
        assert_eq!(
            violations("securepass123!"),
            vec![PasswordRule::NoUppercase]
        );
        assert_eq!(violations("SecurePass!!!!"), vec![PasswordRule::NoDigit]);
        assert_eq!(violations("SecurePass1234"), vec![PasswordRule::NoSymbol]);
    }

    #[test]
    fn a_space_counts_as_a_symbol_but_control_characters_are_refused() {
        assert!(violations("Secure Pass 123").is_empty());
        assert_eq!(
            violations("Secure\tPass123!"),
            vec![PasswordRule::ControlCharacter]
        );
        assert_eq!(
            violations("SecurePass123!\0"),
            vec![PasswordRule::ControlCharacter]
        );
    }

    #[test]
    fn length_is_counted_in_characters_between_8_and_128() {
        assert_eq!(violations("Ab1!xyz"), vec![PasswordRule::TooShort]);
        assert!(violations("Ab1!wxyz").is_empty());
        // 8 characters, 16 bytes: the minimum counts characters, not bytes.
        assert!(violations("Жж1!жжжж").is_empty());
        let long = format!("Ab1!{}", "x".repeat(125));
        assert_eq!(long.chars().count(), 129);
        let v = violations(&long);
        assert!(v.contains(&PasswordRule::TooManyCharacters));
        assert!(v.contains(&PasswordRule::TooManyBytes));
    }

    #[test]
    fn at_most_72_bytes_counting_multibyte_characters() {
        // 68 ASCII + one 4-byte emoji = 72 bytes, 69 characters: accepted.
        let exactly_72 = format!("Ab1!{}\u{1F600}", "x".repeat(64));
        assert_eq!(exactly_72.len(), 72);
        assert!(violations(&exactly_72).is_empty());

        // 71 ASCII + 'é' (2 bytes) = 73 bytes in only 72 characters: refused.
        let bytes_73 = format!("Ab1!{}é", "x".repeat(67));
        assert_eq!(bytes_73.len(), 73);
        assert_eq!(bytes_73.chars().count(), 72);
        assert_eq!(violations(&bytes_73), vec![PasswordRule::TooManyBytes]);

        // 40 characters but 77 bytes: each Cyrillic letter takes two.
        let cyrillic = format!("Aж1!{}", "ж".repeat(36));
        assert_eq!(violations(&cyrillic), vec![PasswordRule::TooManyBytes]);
    }

    #[test]
    fn the_byte_limit_message_says_why() {
        let err = Password::parse("A1!".to_owned() + &"x".repeat(80)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("72 bytes"), "{text}");
        assert!(text.contains("bcrypt"), "{text}");
        assert_eq!(err.messages().len(), err.violations().len());
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let p = Password::parse("SecurePass123!".into()).unwrap();
        assert!(!format!("{p:?}").contains("SecurePass"));
        assert!(!format!("{p}").contains("SecurePass"));
    }

    #[test]
    fn passwords_are_kept_in_nfc_with_plain_spaces() {
        let nfc = "Caf\u{e9}-Secure1!";
        let nfd = "Cafe\u{301}-Secure1!";
        for typed in [nfc, nfd] {
            assert_eq!(Password::parse(typed.into()).unwrap().expose(), nfc);
            assert_eq!(normalize(typed), nfc);
        }
        assert!(matches!(normalize(nfc), Cow::Borrowed(_)));
        assert!(matches!(normalize("Secure Pass 1!"), Cow::Borrowed(_)));
        for space in ['\u{a0}', '\u{2003}', '\u{3000}', '\u{202f}'] {
            assert_eq!(normalize(&format!("Secure{space}Pass1!")), "Secure Pass1!");
        }
        // Neither case nor width is mapped.
        assert_eq!(normalize("\u{ff21}bc"), "\u{ff21}bc");
        assert_eq!(normalize("ABC"), "ABC");
    }

    #[test]
    fn the_byte_limit_applies_to_the_normalised_form() {
        // 73 bytes in NFD (e + a 2-byte combining accent), 72 in NFC (one 2-byte é):
        // accepted, as the form that is hashed fits bcrypt's 72 bytes.
        let nfd = format!("Ab1!{}e\u{301}", "x".repeat(66));
        assert_eq!(nfd.len(), 73);
        assert_eq!(Password::parse(nfd).unwrap().expose().len(), 72);
    }

    #[test]
    fn non_latin_letters_count_as_lower_and_upper_case() {
        assert!(violations("Пароль12!").is_empty());
    }
}
