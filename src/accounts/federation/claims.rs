//! The rules for what a provider asserts, one home each: the subject (OpenID Connect Core
//! §2; GitHub's numeric id). A value that breaks one is the provider's answer refused
//! ([`FederationError::InvalidAnswer`]), logged with the provider's id and never stored.

use super::FederationError;

/// The longest `sub` (OpenID Connect Core §2: "MUST NOT exceed 255 ASCII characters").
pub const MAX_SUBJECT_LEN: usize = 255;

/// An OpenID `sub` as it is stored: 1 to [`MAX_SUBJECT_LEN`] printable ASCII characters
/// (space included), compared as written (it is case-sensitive).
pub fn subject(provider: &str, raw: &str) -> Result<String, FederationError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_SUBJECT_LEN
        && raw.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !ok {
        return Err(FederationError::invalid_answer(
            provider,
            "sub",
            &format!(
                "not 1 to {MAX_SUBJECT_LEN} printable ASCII characters ({} bytes)",
                raw.len()
            ),
        ));
    }
    Ok(raw.to_owned())
}

/// A GitHub account's id as its subject: a positive integer.
pub fn github_subject(provider: &str, id: u64) -> Result<String, FederationError> {
    if id == 0 {
        return Err(FederationError::invalid_answer(
            provider,
            "user id",
            &"not a positive integer",
        ));
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_one_to_255_printable_ascii_characters() {
        let table = [
            ("248289761001", true),
            ("a", true),
            ("with space", true),
            ("CaseMatters", true),
            (&*"x".repeat(255), true),
            (&*"x".repeat(256), false),
            ("", false),
            ("é", false),
            ("ｖictim", false),
            ("a\u{0}b", false),
            ("a\nb", false),
            ("a\tb", false),
            ("a\u{7f}b", false),
        ];
        for (raw, ok) in table {
            assert_eq!(subject("p", raw).is_ok(), ok, "{raw:?}");
        }
        assert!(github_subject("p", 0).is_err());
        assert_eq!(github_subject("p", 583231).unwrap(), "583231");
    }
}
