//! The rules of the fields people type into account forms, written once for both ways in:
//! the API reads them out of a JSON body, the portal out of a posted form, and both hand
//! the raw text to these rules, which parse it into typed values or name every field at
//! fault (`AccountError::Invalid`), with the same field names and messages either way.

use super::AccountError;
use crate::domain::{Email, NewPassword, Password, PasswordPolicy};
use crate::reply::FieldError;

/// Longest first or last name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The field errors found while reading one form, in the order they were found.
///
/// A field that already has an error (say, a JSON value that is no string, found by the way
/// in) is not checked again, so each field is named for one reason at a time.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Records a problem with `field`, told by `message`: a sentence naming the field.
    pub fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records that `field` `predicate` (`is required`), told as a sentence naming the
    /// field ([`FieldError::named`]).
    pub fn reject_that(&mut self, field: &str, predicate: &str) {
        self.0.push(FieldError::named(field, predicate));
    }

    /// Whether no field was refused.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors found, in order.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// Whether `field` was refused already.
    fn refused(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }

    /// A required text field, trimmed; `… is required.` when nothing is left.
    pub fn required<'v>(&mut self, field: &str, value: &'v str) -> Option<&'v str> {
        if self.refused(field) {
            return None;
        }
        let value = value.trim();
        if value.is_empty() {
            self.reject_that(field, "is required");
            return None;
        }
        Some(value)
    }

    /// A required password field, kept exactly as typed (spaces are part of a password).
    fn required_raw<'v>(&mut self, field: &str, value: &'v str) -> Option<&'v str> {
        if self.refused(field) {
            return None;
        }
        if value.is_empty() {
            self.reject_that(field, "is required");
            return None;
        }
        Some(value)
    }

    /// A required email address (`Email::parse`: normalised, checked once).
    pub fn email(&mut self, field: &str, value: &str) -> Option<Email> {
        let value = self.required(field, value)?;
        Email::parse(value)
            .map_err(|e| self.reject(field, e.to_string()))
            .ok()
    }

    /// A required new password, exactly as typed: the core holds it to the policy
    /// ([`admit_password`]), knowing the account it is for.
    pub fn new_password(&mut self, field: &str, value: &str) -> Option<NewPassword> {
        self.required_raw(field, value)
            .map(|value| NewPassword::new(value.to_owned()))
    }

    /// A password as typed, to be checked against the stored hash (no policy: a guess).
    pub fn password(&mut self, field: &str, value: &str) -> Option<String> {
        self.required_raw(field, value).map(str::to_owned)
    }

    /// A required first or last name, trimmed ([`display_text_problem`], at most
    /// [`MAX_NAME_CHARS`]).
    pub fn name(&mut self, field: &str, value: &str) -> Option<String> {
        let value = self.required(field, value)?;
        self.display_text(field, value, MAX_NAME_CHARS)
            .then(|| value.to_owned())
    }

    /// A name that may be left out (`None`: unchanged), but not emptied.
    pub fn optional_name(&mut self, field: &str, value: Option<&str>) -> Option<String> {
        let value = value?.trim();
        if self.refused(field) {
            return None;
        }
        if value.is_empty() {
            self.reject_that(field, "must not be empty");
            return None;
        }
        self.display_text(field, value, MAX_NAME_CHARS)
            .then(|| value.to_owned())
    }

    /// Checks text shown to people against [`display_text_problem`]; `true` when it is fit.
    pub fn display_text(&mut self, field: &str, value: &str, max_chars: usize) -> bool {
        match display_text_problem(value, max_chars) {
            Some(problem) => {
                self.reject_that(field, &problem);
                false
            }
            None => true,
        }
    }

    /// The form's typed values when no field was refused, else `AccountError::Invalid`
    /// naming every field at fault. `values` is `None` only when a rule recorded why.
    pub fn finish_with<T>(self, values: Option<T>) -> Result<T, AccountError> {
        match values {
            Some(values) if self.0.is_empty() => Ok(values),
            _ => Err(AccountError::Invalid(self.0)),
        }
    }
}

pub use crate::domain::text::{display_text_problem, shown_text};

/// A new password held to `policy`, with the account's address and names as words an
/// attacker knows: the one door from what was typed to a [`Password`] that may be hashed.
/// `Invalid` names `field` once per broken rule and per hint of the estimator.
pub fn admit_password(
    policy: &PasswordPolicy,
    field: &str,
    typed: NewPassword,
    user_inputs: &[&str],
) -> Result<Password, AccountError> {
    let mut inputs: Vec<&str> = user_inputs
        .iter()
        .copied()
        .filter(|s| !s.is_empty())
        .collect();
    // The address's local part alone is a word an attacker knows too.
    inputs.extend(
        user_inputs
            .iter()
            .filter_map(|s| s.split_once('@').map(|(local, _)| local)),
    );
    policy.admit(typed, &inputs).map_err(|e| {
        let mut found = FieldErrors::default();
        for message in e.messages() {
            found.reject(field, message);
        }
        AccountError::Invalid(found.into_vec())
    })
}

/// A registration as typed: each field's raw text (`""` when absent).
#[derive(Clone, Copy, Debug, Default)]
pub struct Registration<'a> {
    /// The email address.
    pub email: &'a str,
    /// The new password, exactly as typed.
    pub password: &'a str,
    /// The first name.
    pub first_name: &'a str,
    /// The last name.
    pub last_name: &'a str,
}

/// A registration that passed the field rules (`Accounts::register` takes it).
pub struct NewAccount {
    /// The address, normalised.
    pub email: Email,
    /// The password as typed, held to the policy by the core.
    pub password: NewPassword,
    /// The first name, trimmed.
    pub first_name: String,
    /// The last name, trimmed.
    pub last_name: String,
    /// Where the portal's sign-in leads after the mailed link, carried in it (set by the
    /// portal, after its own `return_to` rule; `None` from the API).
    pub return_to: Option<String>,
}

impl Registration<'_> {
    /// The typed registration, or `Invalid` naming every field at fault.
    pub fn parse(self) -> Result<NewAccount, AccountError> {
        self.parse_after(FieldErrors::default())
    }

    /// As [`parse`](Self::parse), after the way in's own reading found `found` (those
    /// fields are not checked again, and their errors come first).
    pub fn parse_after(self, mut found: FieldErrors) -> Result<NewAccount, AccountError> {
        let email = found.email("email", self.email);
        let password = found.new_password("password", self.password);
        let first_name = found.name("first_name", self.first_name);
        let last_name = found.name("last_name", self.last_name);
        let ((email, password), (first_name, last_name)) =
            found.finish_with(email.zip(password).zip(first_name.zip(last_name)))?;
        Ok(NewAccount {
            email,
            password,
            first_name,
            last_name,
            return_to: None,
        })
    }
}

/// The answer to an invitation as typed: the address is the invitation's, so none is asked
/// (`email`, when a way in sends one, must be that address).
#[derive(Clone, Copy, Debug, Default)]
pub struct InvitationForm<'a> {
    /// The address the caller says the invitation is for; `None` or empty: not said.
    pub email: Option<&'a str>,
    /// The new password, exactly as typed.
    pub password: &'a str,
    /// The first name.
    pub first_name: &'a str,
    /// The last name.
    pub last_name: &'a str,
}

/// An answer to an invitation that passed the field rules (`Accounts::accept_invitation`).
pub struct InvitedAccount {
    /// The address the caller named, normalised, if any: it must be the invitation's.
    pub email: Option<Email>,
    /// The password as typed, held to the policy by the core.
    pub password: NewPassword,
    /// The first name, trimmed.
    pub first_name: String,
    /// The last name, trimmed.
    pub last_name: String,
}

impl InvitationForm<'_> {
    /// The typed answer, or `Invalid` naming every field at fault, after the way in's own
    /// reading found `found`.
    pub fn parse_after(self, mut found: FieldErrors) -> Result<InvitedAccount, AccountError> {
        let email = match self.email.map(str::trim).filter(|e| !e.is_empty()) {
            Some(email) => found.email("email", email).map(Some),
            None => Some(None),
        };
        let password = found.new_password("password", self.password);
        let first_name = found.name("first_name", self.first_name);
        let last_name = found.name("last_name", self.last_name);
        let ((email, password), (first_name, last_name)) =
            found.finish_with(email.zip(password).zip(first_name.zip(last_name)))?;
        Ok(InvitedAccount {
            email,
            password,
            first_name,
            last_name,
        })
    }
}

/// An invitee's names, when a passkey rather than a password will sign them in.
pub struct InvitedNames<'a> {
    /// The first name as typed.
    pub first_name: &'a str,
    /// The last name as typed.
    pub last_name: &'a str,
}

impl InvitedNames<'_> {
    /// The trimmed names, or `Invalid` naming each one at fault.
    pub fn parse(self) -> Result<(String, String), AccountError> {
        let mut found = FieldErrors::default();
        let first_name = found.name("first_name", self.first_name);
        let last_name = found.name("last_name", self.last_name);
        found.finish_with(first_name.zip(last_name))
    }
}

/// A change of one's name as typed: `None` leaves that name as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProfileChange<'a> {
    /// The new first name, if it changes.
    pub first_name: Option<&'a str>,
    /// The new last name, if it changes.
    pub last_name: Option<&'a str>,
}

/// A change of one's name that passed the field rules (`Accounts::update_profile`).
pub struct NewNames {
    /// The new first name, trimmed; `None`: unchanged.
    pub first_name: Option<String>,
    /// The new last name, trimmed; `None`: unchanged.
    pub last_name: Option<String>,
}

impl ProfileChange<'_> {
    /// The typed change, or `Invalid` naming every field at fault (an emptied name, one
    /// that would pose as another).
    pub fn parse(self) -> Result<NewNames, AccountError> {
        self.parse_after(FieldErrors::default())
    }

    /// As [`parse`](Self::parse), after the way in's own reading found `found`.
    pub fn parse_after(self, mut found: FieldErrors) -> Result<NewNames, AccountError> {
        let first_name = found.optional_name("first_name", self.first_name);
        let last_name = found.optional_name("last_name", self.last_name);
        found.finish_with(Some(NewNames {
            first_name,
            last_name,
        }))
    }
}

/// A mailed reset link's form as typed: its token and the new password.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResetForm<'a> {
    /// The token from the link.
    pub token: &'a str,
    /// The new password, exactly as typed.
    pub password: &'a str,
}

impl<'a> ResetForm<'a> {
    /// The token (trimmed; its shape is checked by `Accounts::reset_password`) and the new
    /// password, or `Invalid` naming every field at fault.
    pub fn parse(self) -> Result<(&'a str, NewPassword), AccountError> {
        self.parse_after(FieldErrors::default())
    }

    /// As [`parse`](Self::parse), after the way in's own reading found `found`.
    pub fn parse_after(
        self,
        mut found: FieldErrors,
    ) -> Result<(&'a str, NewPassword), AccountError> {
        let token = found.required("token", self.token);
        let password = found.new_password("password", self.password);
        found.finish_with(token.zip(password))
    }
}

/// A password change as typed: the current password (the step-up) and the new one.
#[derive(Clone, Copy, Debug, Default)]
pub struct PasswordChange<'a> {
    /// The current password, as typed.
    pub current_password: &'a str,
    /// The new password, as typed.
    pub new_password: &'a str,
}

impl PasswordChange<'_> {
    /// The current password (unchecked until the step-up) and the new one, or `Invalid`
    /// naming every field at fault.
    pub fn parse(self) -> Result<(String, NewPassword), AccountError> {
        self.parse_after(FieldErrors::default())
    }

    /// As [`parse`](Self::parse), after the way in's own reading found `found`.
    pub fn parse_after(
        self,
        mut found: FieldErrors,
    ) -> Result<(String, NewPassword), AccountError> {
        let current = found.password("current_password", self.current_password);
        let new = found.new_password("new_password", self.new_password);
        found.finish_with(current.zip(new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_elsewhere_is_shown_without_what_could_pose_or_hide() {
        let cases = [
            ("Ada\u{202E}ecilA", "AdaecilA"),
            ("Ada\u{200B}\u{2066}Lovelace\u{2069}", "AdaLovelace"),
            ("line\nbreak\u{7}\u{1b}[31m", "linebreak[31m"),
            ("Ада Лавлейс", "Ада Лавлейс"),
        ];
        for (raw, shown) in cases {
            assert_eq!(shown_text(raw, 100), shown, "{raw:?}");
            assert_eq!(display_text_problem(&shown_text(raw, 100), 100), None);
        }
        assert_eq!(shown_text(&"я".repeat(300), 100).chars().count(), 100);
    }

    fn fields(result: Result<impl Sized, AccountError>) -> Vec<(String, String)> {
        match result {
            Err(AccountError::Invalid(errors)) => {
                errors.into_iter().map(|e| (e.field, e.message)).collect()
            }
            Err(other) => panic!("not a field error: {other:?}"),
            Ok(_) => Vec::new(),
        }
    }

    #[test]
    fn every_field_of_a_registration_is_named() {
        let found = fields(
            Registration {
                email: "not-an-email",
                password: "",
                first_name: " ",
                last_name: "a\u{200B}b",
            }
            .parse(),
        );
        let names: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert!(names.starts_with(&["email", "password"]), "{found:?}");
        assert!(names.ends_with(&["first_name", "last_name"]), "{found:?}");
        assert!(found.contains(&("first_name".into(), "First name is required.".into())));
        assert!(
            found.contains(&(
                "email".into(),
                "Email must be a valid address such as name@example.com.".into()
            )),
            "{found:?}"
        );
        let invisible = "Last name must not contain invisible or direction-changing characters.";
        assert!(found.contains(&("last_name".into(), invisible.into())));
    }

    #[test]
    fn a_weak_new_password_names_its_field_once_per_rule_and_hint() {
        let policy = PasswordPolicy::default();
        let typed = |s: &str| NewPassword::new(s.to_owned());
        let weak = fields(admit_password(
            &policy,
            "new_password",
            typed("password123"),
            &[],
        ));
        assert!(weak.len() > 1, "{weak:?}");
        assert!(weak.iter().all(|(f, _)| f == "new_password"), "{weak:?}");
        assert_eq!(weak[0].1, "Password is too easy to guess.");
        let own = admit_password(
            &policy,
            "password",
            typed("lovelace1815"),
            &["lovelace1815@example.org"],
        );
        assert!(!fields(own).is_empty(), "the address's local part is known");
        let fine = admit_password(
            &policy,
            "password",
            typed("correct horse battery staple"),
            &[],
        );
        assert!(fine.is_ok());
    }

    #[test]
    fn a_field_the_way_in_refused_is_not_checked_again() {
        let mut found = FieldErrors::default();
        found.reject_that("last_name", "must be a string");
        let form = Registration {
            email: "a@example.com",
            password: "Str0ng-Passw0rd!",
            first_name: "Ada",
            last_name: "",
        };
        assert_eq!(
            fields(form.parse_after(found)),
            [("last_name".into(), "Last name must be a string.".into())]
        );
    }

    #[test]
    fn an_emptied_name_is_refused_and_a_left_out_one_is_unchanged() {
        let change = ProfileChange {
            first_name: Some("  "),
            last_name: None,
        };
        assert_eq!(
            fields(change.parse()),
            [("first_name".into(), "First name must not be empty.".into())]
        );
        let names = ProfileChange {
            first_name: Some(" Ada "),
            last_name: None,
        }
        .parse()
        .expect("fit");
        assert_eq!(names.first_name.as_deref(), Some("Ada"));
        assert!(names.last_name.is_none());
    }

    #[test]
    fn names_that_pose_as_others_are_refused() {
        for text in [
            "\u{202E}evil",
            "a\u{200B}b",
            "\u{2066}x\u{2069}",
            "\u{FEFF}k",
        ] {
            assert!(
                display_text_problem(text, MAX_NAME_CHARS).is_some(),
                "{text:?}"
            );
        }
        assert!(display_text_problem("Анна-Мария", MAX_NAME_CHARS).is_none());
        assert!(display_text_problem(&"x".repeat(101), MAX_NAME_CHARS).is_some());
    }
}
