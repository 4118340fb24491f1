//! A new password that satisfies the password policy, and the one form passwords are
//! compared in.
//!
//! Only passwords being *set* (register, reset, change, an invitation's, an operator's) go
//! through [`PasswordPolicy::admit`];
//! login checks whatever string it receives against the stored hash. Both sides see the
//! text through [`normalize`] (RFC 8265 OpaqueString), so a password typed on a keyboard
//! that composes characters differently (NFD, as macOS file names and some input methods
//! produce) is the same password.

use std::borrow::Cow;
use std::fmt;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
use zxcvbn::feedback::{Suggestion, Warning};

/// Fewest characters a password may be required to have (`passwords.min_length`): NIST SP
/// 800-63B §3.1.1.2 makes 8 the floor for a password chosen by its user.
pub const MIN_PASSWORD_FLOOR: usize = 8;

/// Fewest characters (Unicode scalar values) a new password has by default
/// (`passwords.min_length`).
pub const DEFAULT_MIN_PASSWORD_CHARS: usize = 10;

/// Most UTF-8 bytes a password may have: bcrypt reads only the first 72 bytes, so a longer
/// password would be silently truncated. Portcullis rejects it instead of pre-hashing it.
/// (NIST SP 800-63B §3.1.1.2 asks that at least 64 characters be allowed: 72 bytes hold
/// 72 ASCII characters.)
pub const MAX_PASSWORD_BYTES: usize = 72;

/// The estimator's score a new password needs by default (`passwords.min_score`): zxcvbn's
/// 3, "safely unguessable", more than 10^8 guesses.
pub const DEFAULT_MIN_SCORE: u8 = 3;

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

/// What a new password is held to (`[passwords]`): NIST SP 800-63B §3.1.1.2 — a minimum
/// length, bcrypt's byte limit as the maximum, no composition rules unless an operator keeps
/// them, and a strength estimate (zxcvbn, with its built-in dictionaries and the account's
/// own address and names) of at least `min_score`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters, at least [`MIN_PASSWORD_FLOOR`].
    pub min_chars: usize,
    /// Whether a lower-case and an upper-case letter, a digit and a symbol are required
    /// (off by default: SP 800-63B §3.1.1.2 advises against composition rules).
    pub require_classes: bool,
    /// zxcvbn's score (0 to 4) a new password must reach.
    pub min_score: u8,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: DEFAULT_MIN_PASSWORD_CHARS,
            require_classes: false,
            min_score: DEFAULT_MIN_SCORE,
        }
    }
}

/// One rule of the password policy that a candidate password breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordRule {
    /// Fewer characters than the policy's minimum.
    TooShort,
    /// More than [`MAX_PASSWORD_BYTES`] bytes in UTF-8.
    TooManyBytes,
    /// No lower-case letter (only with `require_classes`).
    NoLowercase,
    /// No upper-case letter (only with `require_classes`).
    NoUppercase,
    /// No digit (only with `require_classes`).
    NoDigit,
    /// No symbol, a character that is neither a letter nor a digit (only with
    /// `require_classes`).
    NoSymbol,
    /// A control character (NUL, newline, tab, …), which cannot be typed reliably.
    ControlCharacter,
    /// The strength estimate is below the policy's `min_score`.
    TooEasyToGuess,
}

impl PasswordRule {
    /// Every rule, for the catalogues' checks.
    pub const ALL: [Self; 8] = [
        Self::TooShort,
        Self::TooManyBytes,
        Self::NoLowercase,
        Self::NoUppercase,
        Self::NoDigit,
        Self::NoSymbol,
        Self::ControlCharacter,
        Self::TooEasyToGuess,
    ];

    /// The message shown to the user for this rule; `min_chars` is the policy's minimum.
    pub fn message(self, min_chars: usize) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::TooShort => {
                return Cow::Owned(format!(
                    "Password must be at least {min_chars} characters long."
                ));
            }
            Self::TooManyBytes => {
                "Password must be at most 72 bytes in UTF-8 (a letter outside ASCII takes \
                 2 to 4 bytes); a longer one is refused rather than truncated."
            }
            Self::NoLowercase => "Password must contain at least one lower-case letter.",
            Self::NoUppercase => "Password must contain at least one upper-case letter.",
            Self::NoDigit => "Password must contain at least one digit.",
            Self::NoSymbol => {
                "Password must contain at least one symbol (a character that is not a letter or digit)."
            }
            Self::ControlCharacter => {
                "Password must not contain control characters such as NUL, tab or newline."
            }
            Self::TooEasyToGuess => "Password is too easy to guess.",
        })
    }
}

/// What the strength estimator says about a weak password: its warning, then its
/// suggestions, each one sentence (the portal's catalogues translate them by this text).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hint {
    /// What makes it weak.
    Warning(Warning),
    /// How to make it stronger.
    Suggestion(Suggestion),
}

impl Hint {
    /// Every hint the estimator can give, for the catalogues' checks.
    pub const ALL: [Self; 27] = {
        use Suggestion as S;
        use Warning as W;
        [
            Self::Warning(W::StraightRowsOfKeysAreEasyToGuess),
            Self::Warning(W::ShortKeyboardPatternsAreEasyToGuess),
            Self::Warning(W::RepeatsLikeAaaAreEasyToGuess),
            Self::Warning(W::RepeatsLikeAbcAbcAreOnlySlightlyHarderToGuess),
            Self::Warning(W::ThisIsATop10Password),
            Self::Warning(W::ThisIsATop100Password),
            Self::Warning(W::ThisIsACommonPassword),
            Self::Warning(W::ThisIsSimilarToACommonlyUsedPassword),
            Self::Warning(W::SequencesLikeAbcAreEasyToGuess),
            Self::Warning(W::RecentYearsAreEasyToGuess),
            Self::Warning(W::AWordByItselfIsEasyToGuess),
            Self::Warning(W::DatesAreOftenEasyToGuess),
            Self::Warning(W::NamesAndSurnamesByThemselvesAreEasyToGuess),
            Self::Warning(W::CommonNamesAndSurnamesAreEasyToGuess),
            Self::Suggestion(S::UseAFewWordsAvoidCommonPhrases),
            Self::Suggestion(S::NoNeedForSymbolsDigitsOrUppercaseLetters),
            Self::Suggestion(S::AddAnotherWordOrTwo),
            Self::Suggestion(S::CapitalizationDoesntHelpVeryMuch),
            Self::Suggestion(S::AllUppercaseIsAlmostAsEasyToGuessAsAllLowercase),
            Self::Suggestion(S::ReversedWordsArentMuchHarderToGuess),
            Self::Suggestion(S::PredictableSubstitutionsDontHelpVeryMuch),
            Self::Suggestion(S::UseALongerKeyboardPatternWithMoreTurns),
            Self::Suggestion(S::AvoidRepeatedWordsAndCharacters),
            Self::Suggestion(S::AvoidSequences),
            Self::Suggestion(S::AvoidRecentYears),
            Self::Suggestion(S::AvoidYearsThatAreAssociatedWithYou),
            Self::Suggestion(S::AvoidDatesAndYearsThatAreAssociatedWithYou),
        ]
    };

    /// The hint as one English sentence.
    pub fn message(self) -> &'static str {
        match self {
            Self::Warning(w) => warning_text(w),
            Self::Suggestion(s) => suggestion_text(s),
        }
    }
}

/// zxcvbn's warnings, one sentence each (written here, not taken from the crate's
/// `Display`, so that a new version cannot change a catalogue key unseen).
fn warning_text(warning: Warning) -> &'static str {
    use Warning as W;
    match warning {
        W::StraightRowsOfKeysAreEasyToGuess => "Straight rows of keys are easy to guess.",
        W::ShortKeyboardPatternsAreEasyToGuess => "Short keyboard patterns are easy to guess.",
        W::RepeatsLikeAaaAreEasyToGuess => "Repeats like \"aaa\" are easy to guess.",
        W::RepeatsLikeAbcAbcAreOnlySlightlyHarderToGuess => {
            "Repeats like \"abcabcabc\" are only slightly harder to guess than \"abc\"."
        }
        W::ThisIsATop10Password => "This is a top-10 common password.",
        W::ThisIsATop100Password => "This is a top-100 common password.",
        W::ThisIsACommonPassword => "This is a very common password.",
        W::ThisIsSimilarToACommonlyUsedPassword => "This is similar to a commonly used password.",
        W::SequencesLikeAbcAreEasyToGuess => "Sequences like abc or 6543 are easy to guess.",
        W::RecentYearsAreEasyToGuess => "Recent years are easy to guess.",
        W::AWordByItselfIsEasyToGuess => "A word by itself is easy to guess.",
        W::DatesAreOftenEasyToGuess => "Dates are often easy to guess.",
        W::NamesAndSurnamesByThemselvesAreEasyToGuess => {
            "Names and surnames by themselves are easy to guess."
        }
        W::CommonNamesAndSurnamesAreEasyToGuess => "Common names and surnames are easy to guess.",
    }
}

/// zxcvbn's suggestions, one sentence each.
fn suggestion_text(suggestion: Suggestion) -> &'static str {
    use Suggestion as S;
    match suggestion {
        S::UseAFewWordsAvoidCommonPhrases => "Use a few words, avoid common phrases.",
        S::NoNeedForSymbolsDigitsOrUppercaseLetters => {
            "No need for symbols, digits, or upper-case letters."
        }
        S::AddAnotherWordOrTwo => "Add another word or two. Uncommon words are better.",
        S::CapitalizationDoesntHelpVeryMuch => "Capitalization doesn't help very much.",
        S::AllUppercaseIsAlmostAsEasyToGuessAsAllLowercase => {
            "All-uppercase is almost as easy to guess as all-lowercase."
        }
        S::ReversedWordsArentMuchHarderToGuess => "Reversed words aren't much harder to guess.",
        S::PredictableSubstitutionsDontHelpVeryMuch => {
            "Predictable substitutions like '@' instead of 'a' don't help very much."
        }
        S::UseALongerKeyboardPatternWithMoreTurns => {
            "Use a longer keyboard pattern with more turns."
        }
        S::AvoidRepeatedWordsAndCharacters => "Avoid repeated words and characters.",
        S::AvoidSequences => "Avoid sequences.",
        S::AvoidRecentYears => "Avoid recent years.",
        S::AvoidYearsThatAreAssociatedWithYou => "Avoid years that are associated with you.",
        S::AvoidDatesAndYearsThatAreAssociatedWithYou => {
            "Avoid dates and years that are associated with you."
        }
    }
}

/// A password that breaks one or more rules; lists every broken rule so the user can fix
/// all at once, and, for a weak one, the estimator's hints.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct PasswordPolicyError {
    violations: Vec<PasswordRule>,
    hints: Vec<Hint>,
    min_chars: usize,
}

impl PasswordPolicyError {
    /// The broken rules, in a stable order.
    pub fn violations(&self) -> &[PasswordRule] {
        &self.violations
    }

    /// The estimator's warning and suggestions, for a password too easy to guess.
    pub fn hints(&self) -> &[Hint] {
        &self.hints
    }

    /// One message per broken rule, then one per hint, for the API's `errors` array.
    pub fn messages(&self) -> Vec<String> {
        let rules = self.violations.iter().map(|r| r.message(self.min_chars));
        let hints = self.hints.iter().map(|h| Cow::Borrowed(h.message()));
        rules.chain(hints).map(Cow::into_owned).collect()
    }
}

impl fmt::Display for PasswordPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.messages().join(" "))
    }
}

/// A new password as typed, not yet held to the policy ([`PasswordPolicy::admit`] makes
/// it a [`Password`]); its text never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl NewPassword {
    /// The text exactly as typed.
    pub fn new(typed: String) -> Self {
        Self(typed)
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// A password that meets the policy; its text never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl PasswordPolicy {
    /// Checks every rule and returns the password, or every rule it breaks. The strength
    /// estimate runs only on a password that passes the others; `user_inputs` (the
    /// account's address and names) count as words an attacker knows.
    ///
    /// The rules apply to, and the password keeps, the text in its [`normalize`]d form
    /// (RFC 8265 OpaqueString); nothing is trimmed.
    pub fn admit(
        &self,
        candidate: NewPassword,
        user_inputs: &[&str],
    ) -> Result<Password, PasswordPolicyError> {
        let candidate = match normalize(&candidate.0) {
            Cow::Borrowed(_) => candidate.0,
            Cow::Owned(normalized) => normalized,
        };
        let mut violations = self.broken_rules(&candidate);
        let mut hints = Vec::new();
        if violations.is_empty() {
            let estimate = weakest_estimate(&candidate, user_inputs);
            if u8::from(estimate.score()) < self.min_score {
                violations.push(PasswordRule::TooEasyToGuess);
                hints = hints_of(estimate.feedback());
            }
        }
        if violations.is_empty() {
            Ok(Password(candidate))
        } else {
            Err(PasswordPolicyError {
                violations,
                hints,
                min_chars: self.min_chars,
            })
        }
    }

    /// The rules other than strength that `candidate` breaks, in a stable order.
    fn broken_rules(&self, candidate: &str) -> Vec<PasswordRule> {
        let has = |test: fn(&char) -> bool| candidate.chars().any(|c| test(&c));
        let classes = self.require_classes;
        let checks = [
            (
                candidate.chars().count() < self.min_chars,
                PasswordRule::TooShort,
            ),
            (
                candidate.len() > MAX_PASSWORD_BYTES,
                PasswordRule::TooManyBytes,
            ),
            (
                classes && !has(|c| c.is_lowercase()),
                PasswordRule::NoLowercase,
            ),
            (
                classes && !has(|c| c.is_uppercase()),
                PasswordRule::NoUppercase,
            ),
            (classes && !has(|c| c.is_numeric()), PasswordRule::NoDigit),
            (
                classes && !has(|c| !c.is_alphanumeric() && !c.is_control()),
                PasswordRule::NoSymbol,
            ),
            (has(|c| c.is_control()), PasswordRule::ControlCharacter),
        ];
        checks
            .into_iter()
            .filter_map(|(broken, rule)| broken.then_some(rule))
            .collect()
    }
}

/// The estimate of `candidate` as an attacker who knows `user_inputs` would make it: each
/// input, its letters and digits run together, and each of its words (`Grace Hopper`,
/// `grace.hopper@example.com` → `grace`, `hopper`, `example`) count as known words; the password is also judged with its spaces,
/// dots, hyphens and underscores left out (words an attacker knows are no stronger for a
/// separator between them) and as the keys pressed when it was typed in the Russian layout
/// (`йцукенгшщз` is `qwertyuiop`, `пароль` is `gfhjkm`, both in the estimator's lists). The
/// weakest estimate is the answer.
fn weakest_estimate(candidate: &str, user_inputs: &[&str]) -> zxcvbn::Entropy {
    let words: Vec<String> = user_inputs
        .iter()
        .flat_map(|input| {
            let pieces = input
                .split(|c: char| !c.is_alphanumeric())
                .filter(|word| word.chars().count() >= 3)
                .map(str::to_owned);
            let joined: String = input.chars().filter(|c| c.is_alphanumeric()).collect();
            [input.to_string(), joined].into_iter().chain(pieces)
        })
        .map(|word| word.to_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let joined: String = candidate
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '.' | '-' | '_'))
        .collect();
    let keys: String = candidate.chars().map(latin_key).collect();
    let joined_keys: String = joined.chars().map(latin_key).collect();
    let mut weakest = zxcvbn::zxcvbn(candidate, &words);
    for variant in [joined, keys, joined_keys] {
        if variant != candidate && !variant.is_empty() {
            let estimate = zxcvbn::zxcvbn(&variant, &words);
            if estimate.guesses() < weakest.guesses() {
                weakest = estimate;
            }
        }
    }
    weakest
}

/// The key of the US layout that types `c` in the Russian ЙЦУКЕН layout (GOST R 58289), or
/// `c` itself: where a Russian speaker's keyboard walks and transliterated words become
/// the estimator's own patterns.
fn latin_key(c: char) -> char {
    const RUSSIAN: &str = "йцукенгшщзхъфывапролджэячсмитьбюё";
    const LATIN: &str = "qwertyuiop[]asdfghjkl;'zxcvbnm,.`";
    let lower = c.to_lowercase().next().unwrap_or(c);
    match RUSSIAN.chars().position(|r| r == lower) {
        Some(i) => {
            let key = LATIN.chars().nth(i).unwrap_or(c);
            if c == lower {
                key
            } else {
                key.to_ascii_uppercase()
            }
        }
        None => c,
    }
}

/// The estimator's feedback as hints; a general one when it gave none (it gives feedback
/// only below score 3, while `min_score` may be 4).
fn hints_of(feedback: Option<&zxcvbn::feedback::Feedback>) -> Vec<Hint> {
    let Some(feedback) = feedback else {
        return vec![Hint::Suggestion(Suggestion::AddAnotherWordOrTwo)];
    };
    let warning = feedback.warning().map(Hint::Warning);
    let suggestions = feedback.suggestions().iter().copied().map(Hint::Suggestion);
    warning.into_iter().chain(suggestions).collect()
}

impl Password {
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

    fn admit(policy: &PasswordPolicy, s: &str) -> Result<Password, PasswordPolicyError> {
        policy.admit(NewPassword::new(s.to_owned()), &[])
    }

    fn violations(s: &str) -> Vec<PasswordRule> {
        match admit(&PasswordPolicy::default(), s) {
            Ok(_) => Vec::new(),
            Err(e) => e.violations().to_vec(),
        }
    }

    /// 64 characters no estimator finds a pattern in.
    const RANDOM_64: &str = "k9Vw2pLr7Qx4Tz8Nm3Hb6Jd1Fs5Gy0Ce4Ua7Ro2Wi9Pe3Ln8Kt6Dv1Bq5Zs0Mh7X";

    fn with_classes() -> PasswordPolicy {
        PasswordPolicy {
            require_classes: true,
            min_score: 0,
            ..PasswordPolicy::default()
        }
    }

    /// What an attacker knows of the account, and a second keyboard layout, weaken an
    /// estimate: each row is refused by default (score 3) for the account of Grace Hopper,
    /// grace.hopper@example.com.
    #[test]
    fn names_words_of_the_address_and_russian_layout_patterns_are_known_words() {
        let inputs = ["grace.hopper@example.com", "Grace", "Hopper"];
        let policy = PasswordPolicy::default();
        for refused in [
            "Grace Hopper",
            "grace hopper grace hopper",
            "grace.hopper example.com",
            "hopper.grace",
            "йцукенгшщз",
            "фывапролдж",
            "пароль12345",
            "ПАРОЛЬ12345",
        ] {
            let outcome = policy.admit(NewPassword::new(refused.to_owned()), &inputs);
            assert!(outcome.is_err(), "{refused:?} was admitted");
        }
        for admitted in [
            "correct horse battery staple",
            "Съешь же ещё этих мягких булок",
        ] {
            let outcome = policy.admit(NewPassword::new(admitted.to_owned()), &inputs);
            assert!(outcome.is_ok(), "{admitted:?} was refused");
        }
    }

    #[test]
    fn russian_layout_keys_map_to_the_us_keys_in_either_case() {
        assert_eq!("йЦуК".chars().map(latin_key).collect::<String>(), "qWeR");
        assert_eq!(
            "пароль".chars().map(latin_key).collect::<String>(),
            "gfhjkm"
        );
        assert_eq!("ab1!".chars().map(latin_key).collect::<String>(), "ab1!");
    }

    #[test]
    fn a_long_passphrase_needs_no_composition() {
        let p = admit(&PasswordPolicy::default(), "correct horse battery staple").unwrap();
        assert_eq!(p.expose(), "correct horse battery staple");
    }

    #[test]
    fn composition_rules_apply_only_when_configured() {
        let classes = |s: &str| {
            admit(&with_classes(), s)
                .err()
                .map(|e| e.violations().to_vec())
                .unwrap_or_default()
        };
        assert_eq!(
            classes("abcdefghij"),
            [
                PasswordRule::NoUppercase,
                PasswordRule::NoDigit,
                PasswordRule::NoSymbol
            ]
        );
        assert!(classes("Secure Pass 123").is_empty(), "a space is a symbol");
        assert!(
            classes("Пароль1234!").is_empty(),
            "any script's cases count"
        );
    }

    #[test]
    fn a_weak_password_is_refused_with_the_estimators_hints() {
        let err = admit(&PasswordPolicy::default(), "qwertyuiop").unwrap_err();
        assert_eq!(err.violations(), [PasswordRule::TooEasyToGuess]);
        assert!(
            err.hints().iter().any(|h| matches!(h, Hint::Warning(_))),
            "{err}"
        );
        let walk = admit(&PasswordPolicy::default(), "asdfghjkl;").unwrap_err();
        assert!(
            walk.hints()
                .contains(&Hint::Warning(Warning::StraightRowsOfKeysAreEasyToGuess)),
            "{walk}"
        );
        assert!(err.messages().len() > 1, "{err}");
    }

    #[test]
    fn the_accounts_own_address_counts_as_known() {
        let policy = PasswordPolicy::default();
        let typed = || NewPassword::new("ada.lovelace@example.org".to_owned());
        assert!(policy.admit(typed(), &[]).is_ok());
        assert!(
            policy
                .admit(typed(), &["ada.lovelace@example.org"])
                .is_err()
        );
    }

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(
            violations("Secure\tPass123!zz"),
            vec![PasswordRule::ControlCharacter]
        );
    }

    #[test]
    fn length_is_counted_in_characters_from_the_policys_minimum() {
        assert_eq!(violations("x7#Kq2!mZ"), vec![PasswordRule::TooShort]);
        assert!(violations("x7#Kq2!mZp").is_empty());
        let err = admit(&PasswordPolicy::default(), "short").unwrap_err();
        assert_eq!(
            err.messages()[0],
            "Password must be at least 10 characters long."
        );
        let eight = PasswordPolicy {
            min_chars: 8,
            min_score: 0,
            ..PasswordPolicy::default()
        };
        assert!(admit(&eight, "x7#Kq2!m").is_ok());
    }

    #[test]
    fn at_most_72_bytes_counting_multibyte_characters() {
        // 68 ASCII + one 4-byte emoji = 72 bytes, 69 characters: accepted.
        let exactly_72 = format!("Ab1!{RANDOM_64}\u{1F600}");
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
        let err = admit(
            &PasswordPolicy::default(),
            &("A1!".to_owned() + &"x".repeat(80)),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("72 bytes"), "{text}");
        assert!(text.contains("rather than truncated"), "{text}");
        assert!(!text.contains("bcrypt"), "no internal name: {text}");
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let p = admit(&PasswordPolicy::default(), "SecurePass123!").unwrap();
        assert!(!format!("{p:?}").contains("SecurePass"));
        assert!(!format!("{p}").contains("SecurePass"));
        let typed = NewPassword::new("SecurePass123!".to_owned());
        assert!(!format!("{typed:?}").contains("SecurePass"));
    }

    #[test]
    fn passwords_are_kept_in_nfc_with_plain_spaces() {
        let nfc = "Caf\u{e9}-Secure1!";
        let nfd = "Cafe\u{301}-Secure1!";
        for typed in [nfc, nfd] {
            assert_eq!(
                admit(&PasswordPolicy::default(), typed).unwrap().expose(),
                nfc
            );
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
        let nfd = format!("Ab1!{RANDOM_64}zye\u{301}");
        assert_eq!(nfd.len(), 73);
        let admitted = admit(&PasswordPolicy::default(), &nfd).unwrap();
        assert_eq!(admitted.expose().len(), 72);
    }
}
